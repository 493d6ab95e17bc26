"""backupctl, the remote command-line client of /api/v1/ (issue 23; docs/BACKUPCTL.md).

Standard library only (an import-linter contract in pyproject.toml; ``backups.humanize`` is
standard library too): it runs on machines that have neither Django nor the catalog.

- ``backupctl``: the command line (argparse) and ``main()``, the console script
- ``config``: the site's address and the token (environment, token file; never argv)
- ``client``: HTTP with urllib: timeouts, retries of GETs only, no redirects, errors
- ``errors``: exit codes and the one exception type
- ``reading`` and ``actions``: the commands that look and the ones that act
- ``waiting``: ``--wait``, polling until the work ends
- ``output``: tables, sizes, relative times, the progress line
- ``context``: what every command is handed
"""
