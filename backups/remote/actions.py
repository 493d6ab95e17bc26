"""The commands that change something: run, verify, restore, url, pause, resume. Each returns
its exit code: 0 done (or started, without --wait), 1 the work itself failed."""

from __future__ import annotations

import argparse
import urllib.parse

from backups.remote.config import site_root
from backups.remote.context import Context, need, segment
from backups.remote.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CtlError
from backups.remote.output import human_bytes, took, when
from backups.remote.waiting import RESTORE_AWAITING, Item, status_of, succeeded, verify_steps

OLDER_SERVER = "the server's API version may differ from this backupctl's"


def run(ctx: Context, args: argparse.Namespace) -> int:
    body = {"backup_type": args.type} if args.type else {}
    started = ctx.api.post(f"targets/{segment(args.target)}/run", body)
    backup_id = need(started, "backup_id")
    if not isinstance(backup_id, int):
        raise CtlError(
            f"the server's answer names no backup ({backup_id!r}): {OLDER_SERVER}", EXIT_UNREACHABLE
        )
    if not args.wait:
        if ctx.as_json:
            ctx.json(started)
        else:
            ctx.say(f"backup {backup_id} of {args.target} queued; now {started.get('status')}")
            ctx.note(f"follow it with `backupctl show {backup_id}`, or run with --wait next time")
        return EXIT_OK
    if not ctx.as_json:
        ctx.note(f"backup {backup_id} of {args.target} queued; waiting for it to finish")
    return _report_backup(ctx, ctx.waiting().backup(backup_id))


def _report_backup(ctx: Context, backup: Item) -> int:
    ok = succeeded(backup)
    if ctx.as_json:
        ctx.json(backup)
    head = f"backup {backup.get('id')} of {backup.get('target')}"
    if ok and not ctx.as_json:
        timing = took(backup.get("started_at"), backup.get("completed_at"))
        ctx.say(f"{head}: success, {human_bytes(backup.get('size_bytes'))} in {timing}")
    elif not ok:
        reason = backup.get("error_message") or "no reason recorded"
        ctx.note(f"backupctl: {head} ended {status_of(backup)}: {reason}")
    return EXIT_OK if ok else EXIT_FAILED


def verify(ctx: Context, args: argparse.Namespace) -> int:
    before = len(verify_steps(ctx.api.get(f"backups/{args.id}"))) if args.wait else 0
    queued = ctx.api.post(f"backups/{args.id}/verify", {"deep": True} if args.deep else {})
    if not args.wait:
        if ctx.as_json:
            ctx.json(queued)
        else:
            ctx.say(f"verification of backup {args.id} queued")
            ctx.note(f"see its result with `backupctl show {args.id}`, or run with --wait next time")
        return EXIT_OK
    backup = ctx.waiting().verification(args.id, before)
    last = verify_steps(backup)[-1]
    ok = str(last.get("status", "")).lower() == "success" and succeeded(backup)
    if ctx.as_json:
        ctx.json(backup)
    elif ok:
        ctx.say(f"backup {args.id} verified: {last.get('message') or 'ok'}")
    if not ok:
        reason = last.get("message") or backup.get("error_message") or status_of(backup)
        ctx.note(f"backupctl: verification of backup {args.id} failed: {reason}")
    return EXIT_OK if ok else EXIT_FAILED


def restore(ctx: Context, args: argparse.Namespace) -> int:
    if not args.yes:
        _confirm(ctx, args)
    body = {"to": args.to, "database": args.database}
    if args.reason:
        body["reason"] = args.reason
    started = ctx.api.post(f"backups/{args.id}/restore", body)
    restore_id = int(need(started, "restore_id"))
    head = f"restore {restore_id} of backup {args.id} into {args.to}"
    if not args.wait:
        if ctx.as_json:
            ctx.json(started)
        elif status_of(started) in RESTORE_AWAITING:
            ctx.say(f"{head} awaits approval by a second person (four-eyes)")
            ctx.note(f"follow it with `backupctl restore-status {restore_id}`")
        else:
            ctx.say(f"{head} started; now {started.get('status')}")
            ctx.note(f"follow it with `backupctl restore-status {restore_id}`, or run with --wait next time")
        return EXIT_OK
    if not ctx.as_json:
        ctx.note(f"{head} requested; waiting for it to finish")
    final = ctx.waiting().restore(restore_id)
    ok = succeeded(final)
    if ctx.as_json:
        ctx.json(final)
    elif ok:
        ctx.say(f"{head}: success in {took(final.get('created_at'), final.get('completed_at'))}")
    if not ok:
        reason = final.get("error_message") or "no reason recorded"
        ctx.note(f"backupctl: {head} ended {status_of(final)}: {reason}")
    return EXIT_OK if ok else EXIT_FAILED


def _confirm(ctx: Context, args: argparse.Namespace) -> None:
    """A typed confirmation: the destination's name, on a terminal. Without one, --yes."""
    if not ctx.stdin.isatty():
        raise CtlError(
            f"a restore replaces the data of {args.to} and there is no terminal to confirm on: "
            "pass --yes to confirm from a script"
        )
    backup = ctx.api.get(f"backups/{args.id}")
    what = (
        f"backup {args.id} of {backup.get('target')} "
        f"({when(backup.get('created_at'))}, {human_bytes(backup.get('size_bytes'))})"
    )
    into = f"{args.to} (its database {args.database})" if args.database else args.to
    ctx.err.write(
        f"This restores {what} into {into}, replacing the data there.\n"
        f"Type the destination's name ({args.to}) to go ahead: "
    )
    ctx.err.flush()
    answer = ctx.stdin.readline()
    if answer.strip() != args.to:
        raise CtlError("not confirmed: nothing was restored", EXIT_USAGE)


def url(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.post(f"backups/{args.id}/download-url")
    if ctx.as_json:
        ctx.json(answer)
        return EXIT_OK
    link = urllib.parse.urljoin(site_root(ctx.api.settings.api_url), str(need(answer, "url")))
    ctx.say(link)  # alone on stdout: curl -fO "$(backupctl url 42)"
    if answer.get("expires_at"):
        ctx.note(f"valid until {answer['expires_at']} ({when(answer['expires_at'])})")
    return EXIT_OK


def pause(ctx: Context, args: argparse.Namespace) -> int:
    return _switch(ctx, args.id, "pause")


def resume(ctx: Context, args: argparse.Namespace) -> int:
    return _switch(ctx, args.id, "resume")


def _switch(ctx: Context, schedule_id: int, action: str) -> int:
    schedule = ctx.api.post(f"schedules/{schedule_id}/{action}")
    if ctx.as_json:
        ctx.json(schedule)
        return EXIT_OK
    head = f"schedule {schedule_id} ({schedule.get('name')}, target {schedule.get('target')})"
    if schedule.get("enabled"):
        ctx.say(f"{head} resumed; next run {when(schedule.get('next_run_at'), never='not planned')}")
    else:
        ctx.say(f"{head} paused")
    return EXIT_OK
