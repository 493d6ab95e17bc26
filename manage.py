#!/usr/bin/env python
"""Django's command-line utility for Backupsite.

Every command pays for start-up and exit, and so does every restore an operator waits for, so
both are kept short (see "Start-up and exit" in the README):

- While Django imports and sets up the apps (hundreds of modules whose objects all live until
  exit), the cyclic garbage collector is paused: a collection there would find nothing to free.
  The objects made then are frozen out of later collections (which also keeps their memory
  shared with forked children).
- A bad environment value (``DEBUG=maybe``) is one line naming the variable and exit status 2,
  not a traceback.
- A command that returns (or calls ``sys.exit`` with a number) when no other thread is running
  exits without tearing down every module: exit handlers run (logging is flushed and closed),
  standard output and error are flushed, and the exit status is the command's. Anything else (an
  exception, a message passed to ``sys.exit``, a thread still running, a profiler or debugger,
  output that cannot be flushed) takes Python's normal exit.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading


def load_settings() -> bool:
    """Load the settings. A value they refuse (``ImproperlyConfigured``, whose message names the
    variable) ends the process: that one line and status 2, like any usage error. False when
    they cannot be loaded otherwise: Django's command-line handling reports that its own way."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018  (loads the settings)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"Backupsite cannot start: {exc}\n")
        raise SystemExit(2) from None
    except Exception:
        return False
    return True


def setup() -> None:
    """``django.setup()`` with the cyclic garbage collector paused, when the settings load."""
    import django

    if not load_settings():
        return
    gc.disable()
    try:
        django.setup()
    finally:
        gc.enable()
    gc.freeze()


def exit_now(status: int) -> None:
    """Exit with ``status`` without tearing down modules, once exit handlers have run and the
    standard streams are flushed; return (for a normal exit) when that cannot be done safely."""
    if threading.active_count() > 1 or sys.getprofile() is not None or sys.gettrace() is not None:
        return  # a thread still working, or a profiler or debugger that reports at exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
    from django.core.management import execute_from_command_line

    if sys.argv[1:2] != ["runserver"]:
        setup()
    else:  # runserver's autoreloader sets Django up itself
        load_settings()
    try:
        execute_from_command_line(sys.argv)
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        exit_now(exc.code or 0)
        raise
    exit_now(0)


if __name__ == "__main__":
    main()
