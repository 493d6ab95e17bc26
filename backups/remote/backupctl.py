"""``backupctl``: the site's /api/v1/ from any machine, with the standard library only.

    export BACKUPCTL_URL=https://backups.example.net BACKUPCTL_TOKEN_FILE=~/.config/backupctl/token
    backupctl run app-db --wait        # exit 0 on success, 1 on failure

Exit codes: 0 ok, 1 the backup/restore/verification failed, 2 usage, configuration, or refused
by the API, 3 the server could not be reached or could not answer, 4 --wait-timeout passed,
130 interrupted. See docs/BACKUPCTL.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from backups.remote import actions, config, reading
from backups.remote.client import DEFAULT_TIMEOUT, Api
from backups.remote.context import Context
from backups.remote.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNREACHABLE, CtlError

Command = Callable[[Context, argparse.Namespace], int]
MAX_ID = 2**63 - 1
# What reading an answer of another shape than the contract's raises (a server of another version).
ANSWER_OF_ANOTHER_SHAPE = (AttributeError, KeyError, TypeError, ValueError)


def _positive(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value: float | None
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a number from {_number(low)} to {_number(high)}, got {text[:30]!r}"
            )
        return value

    return parse


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


backup_id = _positive(int, 1, MAX_ID)
seconds = _positive(float, 0.1, 86400)


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command (``backupctl --json targets`` and
    ``backupctl targets --json``); SUPPRESS keeps a command's parser from resetting them."""
    common = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    common.add_argument("--url", default=s, help=f"the site's address (default: ${config.URL_ENV})")
    common.add_argument(
        "--token-file",
        default=s,
        metavar="PATH",
        help=f"a file holding the API token (default: ${config.TOKEN_ENV}, else ${config.TOKEN_FILE_ENV})",
    )
    common.add_argument(
        "--timeout",
        type=seconds,
        default=s,
        metavar="SECONDS",
        help=f"per request (default {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument("--json", action="store_true", default=s, help="print the API's JSON")
    return common


def _waiting() -> argparse.ArgumentParser:
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--wait", action="store_true", help="follow it until it ends; the exit code says how"
    )
    waiting.add_argument(
        "--interval", type=seconds, default=2.0, metavar="SECONDS", help="between polls (default 2)"
    )
    waiting.add_argument(
        "--wait-timeout",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="give up waiting after this (exit 4)",
    )
    return waiting


def build_parser() -> argparse.ArgumentParser:
    common, waiting = _common(), _waiting()
    parser = argparse.ArgumentParser(
        prog="backupctl",
        parents=[common],
        description="Drive a Backupsite from anywhere through its /api/v1/.",
        epilog="Exit codes: 0 ok; 1 the backup/restore/verification failed (or the site is unhealthy); "
        "2 usage, configuration or refused by the API; 3 server unreachable or failing; "
        "4 --wait-timeout passed. Configure with BACKUPCTL_URL and BACKUPCTL_TOKEN (or BACKUPCTL_TOKEN_FILE).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, command: Command, help: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common, *parents], help=help, description=help)
        sub.set_defaults(command_function=command)
        return sub

    add("targets", reading.targets, "list the targets you may view, with their status")
    sub = add("backups", reading.backups, "list backups, newest first")
    sub.add_argument("--target", help="only this target's")
    sub.add_argument("--status", help="only these (success, failed, ...)")
    sub.add_argument("--since", metavar="ISO-TIME", help="created at or after")
    sub.add_argument("--until", metavar="ISO-TIME", help="created before")
    sub.add_argument(
        "--limit", type=_positive(int, 1, 200), help="per page, 1-200 (default: the server's, 50)"
    )
    sub.add_argument("--all", action="store_true", help="follow the pages to the end")
    add("show", reading.show, "one backup: status, steps, copies").add_argument("id", type=backup_id)
    sub = add("run", actions.run, "take a backup of a target now", waiting)
    sub.add_argument("target")
    sub.add_argument("--type", help="backup type (full, incremental, ...; default: the target's)")
    sub = add("verify", actions.verify, "re-read a backup's stored copies", waiting)
    sub.add_argument("id", type=backup_id)
    sub.add_argument("--deep", action="store_true", help="also restore it (a trial or sandbox restore)")
    sub = add("restore", actions.restore, "restore a backup into a target", waiting)
    sub.add_argument("id", type=backup_id)
    sub.add_argument("--to", required=True, metavar="TARGET", help="the destination target")
    sub.add_argument(
        "--database",
        metavar="NAME",
        help="the destination's database, as a second check: refused if it is not the destination's",
    )
    sub.add_argument("--reason", help="why (shown to the approver of a four-eyes destination)")
    sub.add_argument(
        "--yes", action="store_true", help="skip the typed confirmation (needed without a terminal)"
    )
    add("restore-status", reading.restore_status, "one restore's state").add_argument("id", type=backup_id)
    add("url", actions.url, "a temporary download URL for a backup").add_argument("id", type=backup_id)
    add("schedules", reading.schedules, "list the schedules")
    add("pause", actions.pause, "pause a schedule").add_argument("id", type=backup_id)
    add("resume", actions.resume, "resume a paused schedule").add_argument("id", type=backup_id)
    add("retention", reading.retention, "what retention would keep and delete now").add_argument("target")
    add("health", reading.health, "is the site up? (no token needed)")
    return parser


def _version() -> str:
    try:
        return metadata.version("backupsite")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 here, with argparse's message
    token: str | None = None
    try:
        settings = config.load(getattr(args, "url", None), getattr(args, "token_file", None))
        token = settings.token
        for warning in settings.warnings:
            sys.stderr.write(f"backupctl: warning: {warning}\n")
        ctx = Context(
            api=Api(settings, timeout=getattr(args, "timeout", DEFAULT_TIMEOUT)),
            as_json=getattr(args, "json", False),
            out=sys.stdout,
            err=sys.stderr,
            stdin=sys.stdin,
            interval=getattr(args, "interval", 2.0),
            wait_timeout=getattr(args, "wait_timeout", 0.0),
        )
        code: int = args.command_function(ctx, args)
        sys.stdout.flush()
        return code
    except CtlError as exc:
        sys.stderr.write(f"backupctl: {_redacted(exc.message, token)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\nbackupctl: interrupted\n")
        return EXIT_INTERRUPTED
    except ANSWER_OF_ANOTHER_SHAPE as exc:
        problem = _redacted(f"{type(exc).__name__}: {exc}", token)
        sys.stderr.write(f"backupctl: unexpected answer from the server ({problem})\n")
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # `backupctl backups | head`: the reader left; not an error worth a trace
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _redacted(text: str, token: str | None) -> str:
    """Belt and braces: nothing here builds a message with the token, but a server might echo it."""
    return text.replace(token, "[token]") if token else text


if __name__ == "__main__":
    sys.exit(main())
