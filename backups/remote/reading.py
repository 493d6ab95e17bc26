"""The commands that only look: targets, backups, show, restore-status, schedules, retention,
health. Each returns its exit code."""

from __future__ import annotations

import argparse
from typing import Any

from backups.remote.context import Context, need, segment
from backups.remote.errors import EXIT_FAILED, EXIT_OK
from backups.remote.output import human_bytes, parse_time, table, took, when
from backups.remote.waiting import status_of


def targets(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.get("targets")
    if ctx.as_json:
        ctx.json(answer)
        return EXIT_OK
    items = need(answer, "items")
    if not items:
        ctx.say("No targets (none exist, or your token's user may view none).")
        return EXIT_OK
    rows = [
        [
            str(item.get("name")),
            str(item.get("engine")),
            str(item.get("status")),
            when(item.get("last_success_at")),
            when(item.get("next_run_at"), never="-"),
            human_bytes(item.get("stored_bytes") or 0),
            "yes" if item.get("runnable", True) else "no",
            ",".join(item.get("tags") or []),
        ]
        for item in items
    ]
    headers = ["NAME", "ENGINE", "STATUS", "LAST SUCCESS", "NEXT RUN", "STORED", "RUNNABLE", "TAGS"]
    ctx.say(table(headers, rows, right=[5]))
    return EXIT_OK


def backups(ctx: Context, args: argparse.Namespace) -> int:
    query: dict[str, object] = {
        "target": args.target,
        "status": args.status,
        "since": args.since,
        "until": args.until,
        "limit": args.limit,
    }
    answer = ctx.api.get("backups", query)
    items = list(need(answer, "items"))
    cursor = answer.get("next_cursor")
    seen: set[str] = set()
    while args.all and cursor and cursor not in seen:  # a repeated cursor would loop forever
        seen.add(cursor)
        answer = ctx.api.get("backups", {**query, "cursor": cursor})
        items += need(answer, "items")
        cursor = answer.get("next_cursor")
    if ctx.as_json:
        ctx.json({"items": items, "next_cursor": cursor})
        return EXIT_OK
    if not items:
        ctx.say("No backups match.")
        return EXIT_OK
    rows = [
        [
            str(item.get("id")),
            str(item.get("target")),
            str(item.get("status")),
            str(item.get("backup_type") or ""),
            when(item.get("created_at")),
            took(item.get("started_at"), item.get("completed_at")),
            human_bytes(item.get("size_bytes")),
            str(item.get("proof") or "-"),
        ]
        for item in items
    ]
    headers = ["ID", "TARGET", "STATUS", "TYPE", "CREATED", "TOOK", "SIZE", "PROOF"]
    ctx.say(table(headers, rows, right=[0, 6]))
    if cursor:
        ctx.note(f"more backups than these {len(items)}: pass --all to list them all")
    return EXIT_OK


def show(ctx: Context, args: argparse.Namespace) -> int:
    backup = ctx.api.get(f"backups/{args.id}")
    if ctx.as_json:
        ctx.json(backup)
        return EXIT_OK
    ctx.say(f"backup {backup.get('id')} of {backup.get('target')}: {backup.get('status')}")
    size = human_bytes(backup.get("size_bytes"))
    extras = [str(backup["compression"])] if backup.get("compression") else []
    if backup.get("encrypted"):
        extras.append("encrypted")
    fields = [
        ("type", str(backup.get("backup_type") or "-")),
        ("created", _moment(backup.get("created_at"))),
        ("took", took(backup.get("started_at"), backup.get("completed_at"))),
        ("size", f"{size} ({', '.join(extras)})" if extras else size),
        ("sha256", str(backup.get("sha256") or "-")),
        ("proof", str(backup.get("proof") or "-")),
    ]
    progress = backup.get("progress")
    if status_of(backup) in ("pending", "running") and isinstance(progress, dict):
        fields.append(
            ("progress", f"{human_bytes(progress.get('bytes_done') or 0)} {progress.get('phase') or ''}")
        )
    if backup.get("error_message"):
        fields.append(("error", str(backup["error_message"])))
    ctx.say("\n".join(f"  {name:<9} {value}" for name, value in fields))
    steps = backup.get("steps") or []
    if steps:
        rows = [
            [
                str(s.get("name")),
                str(s.get("status")),
                took(s.get("started_at"), s.get("completed_at")),
                str(s.get("message") or ""),
            ]
            for s in steps
        ]
        ctx.say("\nsteps:\n" + _indent(table(["STEP", "STATUS", "TOOK", "MESSAGE"], rows)))
    copies = backup.get("copies") or []
    if copies:
        rows = [
            [
                str(c.get("storage")),
                str(c.get("status")),
                human_bytes(c.get("size_bytes")),
                str(c.get("path") or ""),
            ]
            for c in copies
        ]
        ctx.say("\ncopies:\n" + _indent(table(["STORAGE", "STATUS", "SIZE", "PATH"], rows, right=[2])))
    return EXIT_OK


def restore_status(ctx: Context, args: argparse.Namespace) -> int:
    restore = ctx.api.get(f"restores/{args.id}")
    if ctx.as_json:
        ctx.json(restore)
        return EXIT_OK
    ctx.say(
        f"restore {restore.get('id')} of backup {restore.get('backup_id')} into {restore.get('to')}: "
        f"{restore.get('status')}"
    )
    fields = [
        ("phase", str(restore.get("phase") or "-")),
        ("restored", human_bytes(restore.get("bytes_done") or 0)),
        ("created", _moment(restore.get("created_at"))),
        ("completed", _moment(restore.get("completed_at"), "-")),
    ]
    if restore.get("error_message"):
        fields.append(("error", str(restore["error_message"])))
    ctx.say("\n".join(f"  {name:<9} {value}" for name, value in fields))
    return EXIT_OK


def schedules(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.get("schedules")
    if ctx.as_json:
        ctx.json(answer)
        return EXIT_OK
    items = need(answer, "items")
    if not items:
        ctx.say("No schedules (none exist, or your token's user may view none).")
        return EXIT_OK
    rows = [
        [
            str(item.get("id")),
            str(item.get("name")),
            str(item.get("target")),
            str(item.get("cron")),
            str(item.get("timezone") or ""),
            "yes" if item.get("enabled") else "paused",
            when(item.get("next_run_at"), never="-") if item.get("enabled") else "-",
        ]
        for item in items
    ]
    ctx.say(table(["ID", "NAME", "TARGET", "CRON", "TIMEZONE", "ENABLED", "NEXT RUN"], rows, right=[0]))
    return EXIT_OK


def retention(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.api.get(f"targets/{segment(args.target)}/retention-preview")
    if ctx.as_json:
        ctx.json(answer)
        return EXIT_OK
    keep, delete = need(answer, "keep"), need(answer, "delete")
    ctx.say(f"retention of {args.target} now: keeps {len(keep)}, deletes {len(delete)}")
    if keep:
        rows = [
            [str(k.get("id")), when(k.get("created_at")), ", ".join(k.get("reasons") or [])] for k in keep
        ]
        ctx.say("\nkeeps:\n" + _indent(table(["ID", "CREATED", "WHY"], rows, right=[0])))
    if delete:
        rows = [[str(d.get("id")), when(d.get("created_at")), str(d.get("reason") or "")] for d in delete]
        ctx.say("\ndeletes:\n" + _indent(table(["ID", "CREATED", "WHY"], rows, right=[0])))
    if answer.get("refused"):
        ctx.say(f"\nthe safety brake would stop the next cleanup: {answer['refused']}")
    for problem in answer.get("errors") or []:
        ctx.note(f"backupctl: {problem}")
    return EXIT_OK


def health(ctx: Context, args: argparse.Namespace) -> int:
    answer: Any = ctx.api.get("health", auth=False, accept=(503,))
    ok = isinstance(answer, dict) and answer.get("status") == "ok"
    if ctx.as_json:
        ctx.json(answer)
    elif ok:
        ctx.say(f"ok: {ctx.api.settings.api_url} answers (version {answer.get('version', '?')})")
    else:
        found = answer if isinstance(answer, dict) else {"status": answer}
        details = found.get("detail") or found.get("message") or ""
        status = found.get("status")
        ctx.note(f"backupctl: {ctx.api.settings.api_url} is {status}{': ' + str(details) if details else ''}")
    return EXIT_OK if ok else EXIT_FAILED


def _moment(text: object, never: str = "never") -> str:
    moment = parse_time(text)
    if moment is None:
        return never
    return f"{moment:%Y-%m-%d %H:%M:%S %Z} ({when(text)})"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
