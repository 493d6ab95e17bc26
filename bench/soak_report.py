"""The soak's evidence, its invariants and its report (``bench/soak.py`` runs it).

Evidence is read after the quiet period, once every worker has stopped: every ``backup_history``
row, the steps still RUNNING, every Notification row, the audit file's lines (what the alert
channel heard), every copy row, the files of the local storage, the bucket's objects and open
multipart uploads (asked of moto directly, not through the proxy), and the workers' and beat's
logs. Then the product's sweep of upload leftovers runs once with ``older_than=0`` (what beat's
``backupsite-sweep`` does a day later; the soak is over, so no upload is still in flight) and
the uploads still open after it are listed again: an upload an outage or a kill left open is the
sweep's to remove, one the sweep leaves is not.

A row belongs to the slot its firing claimed: the worker's log line ``schedule S slot T: backup
N ...`` names it; a run killed before that line is written belongs to the minute its row was
created in (the row is created right after the claim).
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: backups

from backups.storages.base import is_probe

ROOT = Path(__file__).resolve().parent.parent
RSS_WARMUP_SECONDS = 60  # a worker's first minute (imports, first runs) is not its steady state
RSS_MIN_LIFE_SECONDS = 300  # only a worker that lived this long is judged flat or not
RSS_FLAT_LIMIT = 1.10  # last / first (after the warm-up) at most this: flat

SLOT_LINE = re.compile(r"schedule (\S+) slot (\S+): backup (\d+) of target \S+ is (\w+)")
RUN_TIME_NOTE = re.compile(r"skipped: run time (\d{4}-\d\d-\d\d \d\d:\d\d) UTC of schedule ")
DUPLICATE_LINE = re.compile(r"schedule (\S+): this slot already ran; duplicate delivery ignored")
SENT_LINE = re.compile(
    r"\[(\d{4}-\d\d-\d\d \d\d:\d\d):\d\d,\d+: INFO/MainProcess\] Scheduler: Sending due task (\S+) "
)
ERROR_LINE = re.compile(r"^.*\b(ERROR|CRITICAL)\b.*$", re.MULTILINE)


@dataclass
class Incarnation:
    """One worker process (``w1-2``: worker w1's second start) and its RSS samples."""

    name: str
    worker: str
    pid: int
    started: float  # seconds after the first slot
    ended: float | None = None
    end: str = ""
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, main KiB, pool KiB)
    running_at_kill: list[int] = field(default_factory=list)  # backup ids in its pool when killed


@dataclass
class Phase:
    name: str
    start: float  # seconds after the first slot
    end: float


@dataclass
class SoakRun:
    """What happened while the soak ran (the orchestration fills it in)."""

    args: dict[str, Any]
    started_at: datetime
    first_slot: datetime | None = None
    slots: int = 0
    phases: list[Phase] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    load: list[tuple[float, str, int]] = field(default_factory=list)  # (t, loadavg, pytest processes)
    queue: list[tuple[float, int, int]] = field(default_factory=list)  # (t, waiting, unacked)
    incarnations: list[Incarnation] = field(default_factory=list)
    setup_seconds: float = 0.0
    quiet_seconds: float = 0.0
    seconds: float = 0.0
    reconcile_exit: int = -1
    reconcile_output: str = ""
    watch_worker: bool = False  # the watch ran on a worker of its own (False in older evidence)

    def event(self, at: float, text: str) -> None:
        self.events.append((round(at, 1), text))
        print(f"soak: {at / 60:+6.1f} min  {text}", flush=True)


@dataclass
class Row:
    id: int
    schedule: str | None
    status: str
    error_message: str
    notes: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker: str


Query = Callable[[str], list[tuple[Any, ...]]]
Sweep = Callable[[], tuple[list[str], list[str]]]  # the product's sweep: (removed, errors)


@dataclass
class Evidence:
    rows: list[Row]
    running_steps: list[tuple[int, str]]
    notifications: list[tuple[int, str, str, int | None]]  # id, event, status, backup id
    alert_lines: list[dict[str, Any]]
    copies: list[
        tuple[int, str, str, str, str, bool]
    ]  # backup, storage, path, copy status, backup status, deleted
    local_files: list[str]
    s3_objects: list[str]
    s3_uploads: list[str]  # open at the end, before the sweep: "KEY (upload ID)"
    logs: dict[str, str]
    # None in the evidence of a soak that ran no sweep (then every open upload counts).
    s3_uploads_after_sweep: list[str] | None = None
    sweep_removed: list[str] | None = None
    sweep_errors: list[str] | None = None

    @classmethod
    def collect(
        cls,
        query: Query,
        s3: Any,
        bucket: str,
        local_dir: Path,
        alerts: Path,
        logs: dict[str, str],
        sweep: Sweep,
    ) -> Evidence:
        rows = [
            Row(*found)
            for found in query(
                "SELECT b.id, s.name, b.status, b.error_message, b.notes, b.created_at, b.started_at, "
                "b.completed_at, b.worker FROM backup_history b "
                "LEFT JOIN backup_schedule s ON s.id = b.schedule_id ORDER BY b.id"
            )
        ]
        objects: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects += [item["Key"] for item in page.get("Contents", [])]
        # Listed before the sweep, which also removes the local storage's temporaries.
        local_files = (
            sorted(str(path.relative_to(local_dir)) for path in local_dir.rglob("*") if not path.is_dir())
            if local_dir.exists()
            else []
        )
        uploads = open_uploads(s3, bucket)
        removed, errors = sweep()
        lines = alerts.read_text().splitlines() if alerts.exists() else []
        return cls(
            rows=rows,
            running_steps=[
                (int(pk), str(name))
                for pk, name in query(
                    "SELECT backup_id, name FROM backups_backupstep WHERE status = 'running'"
                )
            ],
            notifications=[
                (int(pk), str(event), str(status), backup)
                for pk, event, status, backup in query(
                    "SELECT id, event, status, backup_id FROM backups_notification ORDER BY id"
                )
            ],
            alert_lines=[json.loads(line) for line in lines],
            copies=[
                (int(b), str(s), str(p), str(c), str(st), bool(d))
                for b, s, p, c, st, d in query(
                    "SELECT c.backup_id, s.name, c.path, c.status, b.status, b.deleted_at IS NOT NULL "
                    "FROM backups_backupcopy c JOIN backups_storage s ON s.id = c.storage_id "
                    "JOIN backup_history b ON b.id = c.backup_id"
                )
            ],
            local_files=local_files,
            s3_objects=sorted(objects),
            s3_uploads=uploads,
            logs=logs,
            s3_uploads_after_sweep=open_uploads(s3, bucket),
            sweep_removed=removed,
            sweep_errors=errors,
        )


def open_uploads(s3: Any, bucket: str) -> list[str]:
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(f"{item['Key']} (upload {item['UploadId']})" for item in uploads)


def upload_key(upload: str) -> str:
    return upload.rsplit(" (upload ", 1)[0]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class SoakResult:
    run: SoakRun
    checks: list[Check]
    figures: dict[str, Any]
    phases: list[dict[str, Any]]
    rss: list[dict[str, Any]]
    failures_by_reason: list[tuple[str, int]]
    violations: dict[str, list[str]]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _reason(text: str) -> str:
    """An error message with its numbers, paths and hosts blurred, to group failures."""
    text = re.sub(r"\S+:\d+\b", "HOST:PID", text.splitlines()[0] if text else "(none)")
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( \w+)?", "TIME", text)
    return re.sub(r"\d+", "N", text)[:160]


def _slope_kib_per_minute(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    times = [t / 60 for t, _ in samples]
    values = [float(v) for _, v in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    return (
        sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
        if spread
        else 0.0
    )


def _rss(run: SoakRun) -> tuple[list[dict[str, Any]], Check]:
    table, judged, bad = [], 0, []
    outage = next((phase for phase in run.phases if phase.name == "outage"), None)
    for incarnation in run.incarnations:
        totals = [(t, main + pool) for t, main, pool in incarnation.samples]
        # A worker's pool grows to its working size with its first successful backups: one alive
        # through the outage (failing runs only) is judged from a minute after the storage is back.
        steady_from = incarnation.started + RSS_WARMUP_SECONDS
        if outage is not None and incarnation.started < outage.end:
            steady_from = max(steady_from, outage.end + RSS_WARMUP_SECONDS)
        steady = [(t, kib) for t, kib in totals if t >= steady_from]
        life = (incarnation.ended or (totals[-1][0] if totals else incarnation.started)) - incarnation.started
        entry: dict[str, Any] = {
            "name": incarnation.name,
            "life_s": round(life),
            "end": incarnation.end,
            "samples": len(totals),
            "first_mib": round(totals[0][1] / 1024, 1) if totals else None,
            "steady_first_mib": round(steady[0][1] / 1024, 1) if steady else None,
            "steady_from_s": round(steady_from),
            "last_mib": round(totals[-1][1] / 1024, 1) if totals else None,
            "max_mib": round(max(kib for _, kib in totals) / 1024, 1) if totals else None,
            "main_max_mib": round(max((m for _, m, _ in incarnation.samples), default=0) / 1024, 1),
            "pool_max_mib": round(max((p for _, _, p in incarnation.samples), default=0) / 1024, 1),
            "slope_mib_per_hour": round(_slope_kib_per_minute(steady) * 60 / 1024, 1),
            "judged": False,
            "flat": None,
        }
        if (
            steady
            and steady[-1][0] - steady[0][0] >= RSS_MIN_LIFE_SECONDS - RSS_WARMUP_SECONDS
            and len(steady) >= 3
        ):
            judged += 1
            entry["judged"] = True
            entry["flat"] = steady[-1][1] <= steady[0][1] * RSS_FLAT_LIMIT
            if not entry["flat"]:
                bad.append(incarnation.name)
        table.append(entry)
    if not judged:
        check = Check(
            "worker RSS flat", True, f"not judged: no worker lived {RSS_MIN_LIFE_SECONDS // 60} min"
        )
    else:
        check = Check(
            "worker RSS flat",
            not bad,
            f"{judged} worker processes lived {RSS_MIN_LIFE_SECONDS // 60}+ min; "
            + (
                f"grew more than {RSS_FLAT_LIMIT - 1:.0%}: {', '.join(bad)}"
                if bad
                else f"all within +{RSS_FLAT_LIMIT - 1:.0%} of their steady start"
            ),
        )
    return table, check


def run_time_of(row: Row) -> datetime | None:
    """The run time a SKIPPED row records as never run (the soak's schedules are in UTC)."""
    match = RUN_TIME_NOTE.match(row.notes) if row.status == "skipped" else None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC) if match else None


def slot_of_rows(evidence: Evidence) -> dict[int, datetime]:
    """Each row's slot: the run time a SKIPPED row records as never run, else the worker's log
    line, else the minute its row was created in."""
    logged = {}
    for text in evidence.logs.values():
        for match in SLOT_LINE.finditer(text):
            logged[int(match.group(3))] = _minute(datetime.fromisoformat(match.group(2)))
    return {row.id: run_time_of(row) or logged.get(row.id, _minute(row.created_at)) for row in evidence.rows}


def fired_slots(run: SoakRun, evidence: Evidence) -> tuple[datetime, int]:
    """The first minute beat fired the schedules in and how many minutes it fired them (beat fires
    at the first minute boundary after it starts, which may come before the planned first slot)."""
    assert run.first_slot is not None
    minutes = sorted(
        {
            datetime.strptime(match.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            for match in SENT_LINE.finditer(evidence.logs.get("beat", ""))
            if match.group(2).startswith("backup-schedule:")
        }
    )
    if not minutes:
        return run.first_slot, run.slots
    return minutes[0], int((minutes[-1] - minutes[0]).total_seconds() // 60) + 1


def _missed_windows(evidence: Evidence) -> dict[str, list[tuple[datetime, datetime | None]]]:
    """Per schedule, from each missed alert's due slot to the next recovered alert (or never)."""
    windows: dict[str, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for line in evidence.alert_lines:
        fields = line.get("fields", {})
        if line["event"] == "missed":
            windows[fields["schedule"]].append((_minute(datetime.fromisoformat(fields["due"])), None))
        elif line["event"] == "recovered" and windows.get(fields["schedule"]):
            due, _ = windows[fields["schedule"]][-1]
            windows[fields["schedule"]][-1] = (due, datetime.fromisoformat(line["created_at"]))
    return windows


def analyse(run: SoakRun, evidence: Evidence) -> SoakResult:
    first, slots = fired_slots(run, evidence)
    schedules = sorted(
        {row.schedule for row in evidence.rows if row.schedule}
        | {f"s{i:03d}" for i in range(int(run.args["targets"]))}
    )
    slot_of = slot_of_rows(evidence)
    by_slot: dict[tuple[str, int], list[Row]] = defaultdict(list)
    outside: list[Row] = []
    late: list[Row] = []  # a firing taken after beat stopped claims the minute it is taken in
    for row in evidence.rows:
        index = int((slot_of[row.id] - first).total_seconds() // 60)
        if row.schedule is not None and index >= slots:
            late.append(row)
            if row.status not in ("success", "failed", "skipped"):
                outside.append(row)
        elif row.schedule is not None and index < 0 and run_time_of(row):
            late.append(row)  # a run time between the schedules' creation and beat's first firing
        elif row.schedule is None or index < 0:
            outside.append(row)
        else:
            by_slot[(row.schedule, index)].append(row)
    violations: dict[str, list[str]] = defaultdict(list)
    windows = _missed_windows(evidence)
    schedule_rows: dict[str, list[Row]] = defaultdict(list)
    for row in evidence.rows:
        if row.schedule is not None:
            schedule_rows[row.schedule].append(row)
    outcome: dict[tuple[str, int], str] = {}
    for schedule in schedules:
        for index in range(slots):
            rows = by_slot.get((schedule, index), [])
            slot = first + timedelta(minutes=index)
            if len(rows) > 1:
                outcome[(schedule, index)] = "twice"
                violations["slot ran more than once"].append(
                    f"{schedule} {slot:%H:%M}: "
                    + ", ".join(f"backup {r.id} {r.status} ({r.worker})" for r in rows)
                )
            elif not rows:
                spans = windows.get(schedule, [])
                slot_named = any(due <= slot and (end is None or end >= slot) for due, end in spans)
                # The watch's alert names the latest due slot and "Last success: ..." before it:
                # the slots between that success and the due slot are implied, not named.
                since = [
                    (due, end)
                    for due, end in spans
                    if slot < due
                    and (end is None or end >= slot)
                    and not any(
                        r.status == "success" and slot <= slot_of[r.id] < due for r in schedule_rows[schedule]
                    )
                    and any(r.status == "success" and slot_of[r.id] < slot for r in schedule_rows[schedule])
                ]
                covered = slot_named or bool(since)
                outcome[(schedule, index)] = (
                    "missing, alerted missed (slot named)"
                    if slot_named
                    else "missing, alerted missed (implied: no success since)"
                    if since
                    else "missing"
                )
                if not covered:
                    violations["slot without a row and no missed alert"].append(f"{schedule} {slot:%H:%M}")
            else:
                row = rows[0]
                outcome[(schedule, index)] = (
                    "skipped (never ran, recorded)" if run_time_of(row) else row.status
                )
                reason = row.error_message if row.status == "failed" else row.notes
                if row.status in ("failed", "skipped") and not reason.strip():
                    violations["failed or skipped without a reason"].append(
                        f"backup {row.id} ({schedule} {slot:%H:%M})"
                    )
                if row.status not in ("success", "failed", "skipped"):
                    violations["slot not finished"].append(
                        f"backup {row.id} {row.status} ({schedule} {slot:%H:%M})"
                    )
    for row in outside:
        violations["row outside the soak's slots"].append(
            f"backup {row.id} of {row.schedule} {row.status}, slot {slot_of[row.id]:%H:%M}, created {row.created_at:%H:%M:%S}"
        )
    unfinished = [r for r in evidence.rows if r.status in ("pending", "running")]
    violations["RUNNING or PENDING at the end"] += [
        f"backup {r.id} {r.status} ({r.worker})" for r in unfinished
    ]
    violations["step RUNNING at the end"] += [
        f"{name} step of backup {pk}" for pk, name in evidence.running_steps
    ]

    # -- alerts: one backup_failed per FAILED row, in the catalog and in the channel's file
    failed = {r.id for r in evidence.rows if r.status == "failed"}
    rows_alerted: Counter[int] = Counter(
        b
        for _, event, status, b in evidence.notifications
        if event == "backup_failed" and status == "sent" and b is not None
    )
    heard: Counter[int] = Counter()
    for line in evidence.alert_lines:
        if line["event"] == "backup_failed":
            heard[int(str(line["fields"].get("backup", "0")).split()[0])] += 1
    for pk in sorted(failed):
        if rows_alerted[pk] != 1 or heard[pk] != 1:
            violations["failure without exactly one alert"].append(
                f"backup {pk}: {rows_alerted[pk]} sent notification rows, {heard[pk]} lines in the alert file"
            )
    for stray in sorted((set(rows_alerted) | set(heard)) - failed):
        violations["backup_failed alert for a backup that did not fail"].append(f"backup {stray}")
    undelivered = [
        f"notification {pk} ({event}, backup {b}): {status}"
        for pk, event, status, b in evidence.notifications
        if status != "sent"
    ]
    violations["notification not sent"] += undelivered

    # -- killed workers' runs
    rows_by_id = {r.id: r for r in evidence.rows}
    lost_ids = [pk for i in run.incarnations for pk in i.running_at_kill]
    for lost_id in lost_ids:
        lost = rows_by_id.get(lost_id)
        if lost is None or lost.status != "failed" or not lost.error_message.startswith("worker lost"):
            violations["killed run not reaped as worker lost"].append(
                f"backup {lost_id}: {lost.status if lost else 'gone'} {lost.error_message[:120] if lost else ''}"
            )
    reaped_after: list[float] = []  # seconds from a kill to its runs' end (the watch reaping them)
    for incarnation in run.incarnations:
        if incarnation.ended is None or run.first_slot is None:
            continue
        killed_at = run.first_slot + timedelta(seconds=incarnation.ended)
        for pk in incarnation.running_at_kill:
            reaped = rows_by_id.get(pk)
            if reaped is not None and reaped.completed_at is not None:
                reaped_after.append((reaped.completed_at - killed_at).total_seconds())

    # -- storages: reconcile, and every object belongs to a stored copy of a live SUCCESS backup
    try:
        reports = json.loads(run.reconcile_output) if run.reconcile_output.strip() else []
    except json.JSONDecodeError:
        reports = []
    for report in reports:
        for label in ("missing", "size_differs", "unknown", "problems"):
            violations[f"reconcile: {label}"] += [
                f"{report['storage']}: {line}" for line in report.get(label, [])
            ]
    if run.reconcile_exit != 0 and not any(
        violations[k] for k in list(violations) if k.startswith("reconcile")
    ):
        violations["reconcile: exit status"].append(f"backup_reconcile exited {run.reconcile_exit}")
    expected: dict[str, set[str]] = defaultdict(set)
    for _backup, storage, path, copy_status, backup_status, deleted in evidence.copies:
        if copy_status == "stored" and backup_status == "success" and not deleted:
            expected[storage] |= {path, f"{path}.manifest.json"}
    for storage, present in (("local", evidence.local_files), ("offsite", evidence.s3_objects)):
        for path in sorted(set(present) - expected[storage]):
            violations["object no stored copy of a live backup owns"].append(f"{storage}: {path}")
        for path in sorted(expected[storage] - set(present)):
            violations["stored copy without its object"].append(f"{storage}: {path}")
    # Open multipart uploads: an outage or a kill leaves some (an abort that could not reach the
    # storage), and the product's sweep removes them once a day old; the soak ran it as if the
    # day had passed. Wrong: what the sweep left, and an upload under a name no writer of the
    # product uses (a backup's copy or its manifest, or a write probe; the soak's S3 storage has
    # no prefix, so keys are the copies' paths).
    product_keys = {path for _, storage, path, *_ in evidence.copies if storage == "offsite" and path}
    product_keys |= {f"{path}.manifest.json" for path in product_keys}
    violations["open multipart upload under a name the product never writes"] += [
        upload
        for upload in evidence.s3_uploads
        if upload_key(upload) not in product_keys and not is_probe(upload_key(upload).rsplit("/", 1)[-1])
    ]
    if evidence.s3_uploads_after_sweep is None:  # an older soak's evidence: no sweep was run
        violations["open multipart upload"] += evidence.s3_uploads
    else:
        violations["multipart upload still open after the sweep"] += evidence.s3_uploads_after_sweep
        violations["sweep error"] += evidence.sweep_errors or []

    rss, rss_check = _rss(run)
    named = {
        "every slot ran once, or FAILED/SKIPPED with a reason": [
            "slot ran more than once", "failed or skipped without a reason", "slot not finished",
            "slot without a row and no missed alert", "row outside the soak's slots",
        ],
        "nothing RUNNING": ["RUNNING or PENDING at the end", "step RUNNING at the end", "killed run not reaped as worker lost"],
        "every failure produced exactly one alert": [
            "failure without exactly one alert", "backup_failed alert for a backup that did not fail", "notification not sent",
        ],
        "backup_reconcile reports no disagreement": [k for k in violations if k.startswith("reconcile")],
        "no orphan object, no row without object": [
            "object no stored copy of a live backup owns", "stored copy without its object", "open multipart upload",
            "open multipart upload under a name the product never writes", "multipart upload still open after the sweep",
            "sweep error",
        ],
    }  # fmt: skip
    checks = []
    for name, kinds in named.items():
        found = {kind: violations[kind] for kind in kinds if violations.get(kind)}
        detail = "; ".join(f"{kind}: {len(items)}" for kind, items in found.items()) or "none broken"
        checks.append(Check(name, not found, detail))
    checks.append(rss_check)

    counts = Counter(outcome.values())
    statuses = Counter(r.status for r in evidence.rows)
    phases = [
        _phase(run, number, first, by_slot, outcome, schedules, slots) for number in range(len(run.phases))
    ]
    failures_by_reason = Counter(_reason(r.error_message) for r in evidence.rows if r.status == "failed")
    skipped_by_reason = Counter(_reason(r.notes) for r in evidence.rows if r.status == "skipped")
    sent = Counter(
        match.group(2).split(":")[0]
        for text in [evidence.logs.get("beat", "")]
        for match in SENT_LINE.finditer(text)
    )
    duplicates = sum(
        len(DUPLICATE_LINE.findall(text)) for name, text in evidence.logs.items() if name != "beat"
    )
    errors = Counter(
        _reason(line.split("]", 1)[-1].strip()) for name, text in evidence.logs.items() for line in ERROR_LINE.findall(text)
    )  # fmt: skip
    completed = [r.completed_at for r in evidence.rows if r.completed_at is not None]
    load_minutes = slots
    per_minute = Counter(int((c - first).total_seconds() // 60) for c in completed)
    busy_minutes = [per_minute.get(i, 0) for i in range(load_minutes)]
    figures = {
        "first_slot": first,
        "slots": slots,
        "expected_slots": len(schedules) * slots,
        "outcomes": dict(counts),
        "rows": len(evidence.rows),
        "statuses": dict(statuses),
        "rows_outside_slots": len(outside),
        "late_rows": dict(Counter(r.status for r in late)),
        "run_seconds_p50": {
            status: round(
                _percentile(
                    [
                        (r.completed_at - r.started_at).total_seconds()
                        for r in evidence.rows
                        if r.status == status and r.started_at and r.completed_at
                    ],
                    0.5,
                ),
                1,
            )
            for status in ("success", "failed")
        },
        "missed_alerts_per_schedule_max": max(
            Counter(
                line["fields"].get("schedule") for line in evidence.alert_lines if line["event"] == "missed"
            ).values(),
            default=0,
        ),
        "alerts": dict(Counter(line["event"] for line in evidence.alert_lines)),
        "notification_rows": dict(
            Counter(f"{event} {status}" for _, event, status, _ in evidence.notifications)
        ),
        "failed_rows": len(failed),
        "beat_sends": dict(sent),
        "duplicate_deliveries_ignored": duplicates,
        "log_errors": errors.most_common(12),
        "skipped_by_reason": skipped_by_reason.most_common(),
        "throughput_per_minute": round(
            sum(1 for c in completed if first <= c < first + timedelta(minutes=load_minutes)) / load_minutes,
            1,
        ),
        "completed_per_minute": busy_minutes,
        "queue_max": max((w for _, w, _ in run.queue), default=0),
        "unacked_max": max((u for _, _, u in run.queue), default=0),
        "unacked_end": run.queue[-1][2] if run.queue else 0,
        "objects": {"local": len(evidence.local_files), "offsite": len(evidence.s3_objects)},
        "kills": sum(1 for i in run.incarnations if i.end == "killed"),
        "killed_running": len(lost_ids),
        "reaped_after_s_p50": round(_percentile(reaped_after, 0.5), 1) if reaped_after else None,
        "reaped_after_s_max": round(max(reaped_after), 1) if reaped_after else None,
        "uploads_open_at_end": len(evidence.s3_uploads),
        "uploads_swept": None
        if evidence.s3_uploads_after_sweep is None
        else len(set(evidence.s3_uploads) - set(evidence.s3_uploads_after_sweep)),
        "uploads_open_after_sweep": None
        if evidence.s3_uploads_after_sweep is None
        else len(evidence.s3_uploads_after_sweep),
        "sweep_removed": evidence.sweep_removed,
        "host": socket.gethostname(),
    }
    return SoakResult(
        run=run, checks=checks, figures=figures, phases=phases, rss=rss,
        failures_by_reason=failures_by_reason.most_common(), violations={k: v for k, v in violations.items() if v},
    )  # fmt: skip


def _phase(
    run: SoakRun,
    number: int,
    first: datetime,
    by_slot: dict[tuple[str, int], list[Row]],
    outcome: dict[tuple[str, int], str],
    schedules: list[str],
    slots: int,
) -> dict[str, Any]:
    phase = run.phases[number]
    assert run.first_slot is not None
    # Seconds after the planned first slot; the first phase takes any slot beat fired earlier.
    start = -1e9 if number == 0 else phase.start
    end = 1e9 if number == len(run.phases) - 1 else phase.end
    offset = (first - run.first_slot).total_seconds()
    indexes = [i for i in range(slots) if start <= offset + i * 60 < end]
    lags, ends, drains = [], [], []
    for index in indexes:
        slot = first + timedelta(minutes=index)
        finished = []
        for schedule in schedules:
            for row in by_slot.get((schedule, index), []):
                lags.append(((row.started_at or row.created_at) - slot).total_seconds())
                if row.completed_at is not None:
                    ends.append((row.completed_at - slot).total_seconds())
                    finished.append(row.completed_at)
        if finished:
            drains.append((max(finished) - slot).total_seconds())
    counted = Counter(outcome[(s, i)] for s in schedules for i in indexes if (s, i) in outcome)
    return {
        "name": phase.name,
        "minutes": (
            f"{first + timedelta(minutes=indexes[0]):%H:%M}-{first + timedelta(minutes=indexes[-1]):%H:%M}"
            if indexes
            else ""
        ),
        "slots": len(indexes) * len(schedules),
        "outcomes": dict(counted),
        "start_lag_p50": round(_percentile(lags, 0.5), 1),
        "start_lag_p95": round(_percentile(lags, 0.95), 1),
        "start_lag_max": round(max(lags, default=0.0), 1),
        "end_p95": round(_percentile(ends, 0.95), 1),
        "drain_max": round(max(drains, default=0.0), 1),
    }


# -- the report ------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _machine() -> str:
    cpus = sum(1 for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor"))
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return f"{cpus} CPUs, {mem // 1024} MiB RAM"


def markdown(result: SoakResult) -> str:
    run, fig, args = result.run, result.figures, result.run.args
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    loads = [load for _, load, _ in run.load]
    tests = [count for _, _, count in run.load]
    lines = [
        "## Soak",
        "",
        f"Date: {run.started_at:%Y-%m-%d %H:%M} UTC. Code: commit {_git('rev-parse', '--short', 'HEAD')}{dirty}. "
        f"Machine: {_machine()}, shared: load average (1/5/15 min) {loads[0]} at the start, {loads[-1]} at the end, "
        f"highest 1-min {max(float(load.split()[0]) for load in loads):.2f}; other helpers' pytest processes "
        f"seen {min(tests)}-{max(tests)} (sampled every {args['sample_seconds']:g} s).",
        "",
        f"Command: `{args['command']}` (seed {args['seed']}). It took **{run.seconds / 60:.1f} min**: "
        f"set-up {run.setup_seconds:.0f} s, {fig['slots']} minute slots, quiet period {run.quiet_seconds / 60:.1f} min, "
        "then the checks.",
        "",
        f"Set-up: {args['targets']} SQLite targets (~28 KiB each) on `* * * * *` schedules (grace "
        f"{args['grace_minutes']} min, retention `max_backups = {args['keep']}`), each stored in a local storage and a "
        f"required S3 storage (moto through the suite's TCP proxy); PostgreSQL 15 catalog; Redis broker; "
        f"{args['workers']} workers x `--concurrency {args['concurrency']}`"
        + (
            " on the default queue, the watch's own worker (`-Q watch -c 1`, never killed)"
            if run.watch_worker
            else ""
        )
        + ", one beat (DatabaseScheduler, plus `backupsite-watch` every minute"
        + (", routed to the watch queue" if run.watch_worker else "")
        + "); an audit-file notifier hearing every alert. Storage down "
        f"+{args['outage_start']:g}..+{args['outage_start'] + args['outage_minutes']:g} min; {fig['kills']} worker "
        f"SIGKILLs ({fig['killed_running']} runs in flight in the killed pools"
        + (
            f", reaped {fig['reaped_after_s_p50']} s (median), at most {fig['reaped_after_s_max']} s after the kill"
            if fig["reaped_after_s_max"] is not None
            else ""
        )
        + f"). Beat fired the schedules in {fig['slots']} minutes, the first {fig['first_slot']:%H:%M} UTC.",
        "",
        "### Invariants",
        "",
        "| invariant | result | detail |",
        "|---|---|---|",
        *(f"| {c.name} | {'PASS' if c.passed else '**FAIL**'} | {c.detail} |" for c in result.checks),
        "",
        f"Verdict: **{'PASS' if result.passed else 'FAIL'}**.",
        "",
        "### Slots",
        "",
        f"{fig['expected_slots']} slots ({args['targets']} schedules x {fig['slots']} minutes): "
        + ", ".join(f"{n} {name}" for name, n in sorted(fig["outcomes"].items(), key=lambda kv: -kv[1]))
        + f". Rows: {fig['rows']} ({', '.join(f'{n} {s}' for s, n in sorted(fig['statuses'].items()))}); "
        f"{fig['rows_outside_slots']} outside the soak's slots; "
        f"{sum(fig['late_rows'].values())} for minutes beat did not fire (firings taken after it stopped, "
        "run times before its first firing recorded SKIPPED: "
        + (", ".join(f"{n} {s}" for s, n in sorted(fig["late_rows"].items())) or "none")
        + "). Beat sent "
        + ", ".join(f"{n} `{task}`" for task, n in sorted(fig["beat_sends"].items()))
        + f'; workers ignored {fig["duplicate_deliveries_ignored"]} deliveries as "this slot already ran".',
        "",
        "| phase | slots fired (UTC) | slots | outcomes | start lag p50 / p95 / max s | finished by p95 s | slowest slot drained in s |",
        "|---|---|---:|---|---|---:|---:|",
        *(
            f"| {p['name']} | {p['minutes']} | {p['slots']} | "
            + ", ".join(f"{n} {k}" for k, n in sorted(p["outcomes"].items(), key=lambda kv: -kv[1]))
            + f" | {p['start_lag_p50']} / {p['start_lag_p95']} / {p['start_lag_max']} | {p['end_p95']} | {p['drain_max']} |"
            for p in result.phases
        ),
        "",
        f"Throughput: {fig['throughput_per_minute']} backups finished a minute over the {fig['slots']} slots "
        f"(the schedules ask for {args['targets']}); per minute: {', '.join(map(str, fig['completed_per_minute']))}. Broker queue: at most {fig['queue_max']} waiting, "
        f"{fig['unacked_max']} delivered and unacknowledged; {fig['unacked_end']} unacknowledged at the end "
        "(the killed workers' messages, which Redis gives back only after the visibility timeout, 12 h).",
        "",
        f"A run took {fig['run_seconds_p50']['success']} s (median) when it succeeded and "
        f"{fig['run_seconds_p50']['failed']} s when it failed (`started_at` to `completed_at`).",
        "",
        "Failures by reason: "
        + ("; ".join(f"{n} x `{reason}`" for reason, n in result.failures_by_reason) or "none")
        + ". Skipped: "
        + ("; ".join(f"{n} x `{reason}`" for reason, n in fig["skipped_by_reason"]) or "none")
        + ".",
        "",
        "Alerts heard by the channel: "
        + (", ".join(f"{n} {event}" for event, n in sorted(fig["alerts"].items())) or "none")
        + f" ({fig['failed_rows']} FAILED rows; at most {fig['missed_alerts_per_schedule_max']} missed alerts for "
        "one schedule). Notification rows: "
        + ", ".join(f"{n} {k}" for k, n in sorted(fig["notification_rows"].items()))
        + ".",
        "",
        f"Storages at the end: {fig['objects']['local']} files in the local storage, {fig['objects']['offsite']} "
        f"objects in the bucket; `backup_reconcile` exit status {run.reconcile_exit}. "
        f"{fig['uploads_open_at_end']} multipart upload(s) open in the bucket (an abort an outage or a kill kept from "
        "the storage); "
        + (
            "the product's sweep was not run (evidence of an older soak): each counts as a violation."
            if fig["uploads_swept"] is None
            else f"the product's sweep, run with `older_than=0` as if the day had passed, removed {fig['uploads_swept']} "
            f"and left {fig['uploads_open_after_sweep']} open (its report: "
            + ("; ".join(fig["sweep_removed"] or []) or "nothing removed")
            + ")."
        ),
        "",
        "### Worker RSS (main process + pool children, VmRSS)",
        "",
        "| process | lived s | how it ended | samples | first MiB | steady start MiB | last MiB | max MiB | main / pool max MiB | slope MiB/h | flat |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|",
        *(
            f"| {r['name']} | {r['life_s']} | {r['end']} | {r['samples']} | {r['first_mib']} | {r['steady_first_mib']} | "
            f"{r['last_mib']} | {r['max_mib']} | {r['main_max_mib']} / {r['pool_max_mib']} | {r['slope_mib_per_hour']} | "
            f"{('yes' if r['flat'] else '**no**') if r['judged'] else '(too short to judge)'} |"
            for r in result.rss
        ),
        "",
        "### Timeline",
        "",
        *(f"- +{at / 60:.1f} min: {text}" for at, text in run.events),
        "",
    ]
    if fig["log_errors"]:
        lines += [
            "ERROR lines in the worker and beat logs, grouped: "
            + "; ".join(f"{n} x `{text}`" for text, n in fig["log_errors"])
            + ".",
            "",
        ]
    if result.violations:
        lines += ["### What broke (first 10 of each)", ""]
        for kind, items in result.violations.items():
            lines.append(f"- {kind} ({len(items)}): " + "; ".join(f"`{item}`" for item in items[:10]))
        lines.append("")
    lines += [
        "Method: `bench/soak.py` (orchestration) and `bench/soak_report.py` (evidence and checks). A row's slot "
        "is the one its worker's log line `schedule S slot T: backup N` names (else the minute its row was "
        'created in); start lag is `started_at` (or `created_at`) minus the slot; "drained" is the slot\'s '
        "last `completed_at`. A slot with no row counts as reported only when a `missed` alert covers it: one whose due slot "
        'is at or before it and whose recovery is not, or the watch\'s alert ("should have backed up at DUE ... Last success: ...") for the slots between that last success and its due slot. '
        "Alerts are matched to FAILED rows by backup id, both as Notification rows and as lines of the "
        "audit file. Beside `backup_reconcile`, every file of the local storage and every object of the "
        "bucket (listed from moto directly) must be a stored copy (or its manifest) of a live SUCCESS "
        "backup. A multipart upload left open (an abort that could not reach the storage) is the product's sweep's "
        "to remove once a day old: the evidence lists the open uploads, runs that sweep (`services.sweep_storages`, "
        "what beat's `backupsite-sweep` runs) with `older_than=0` as if the day had passed, and lists them again; an "
        "upload still open after it, or one under a name no writer of the product uses (a copy's path, its manifest, "
        "a write probe), breaks the invariant. RSS is sampled every "
        f"{args['sample_seconds']:g} s; a process that lived {RSS_MIN_LIFE_SECONDS // 60}+ min is flat when its "
        f"last sample is at most {RSS_FLAT_LIMIT - 1:.0%} above its first after {RSS_WARMUP_SECONDS} s (for a process alive during the outage, {RSS_WARMUP_SECONDS} s after the storage came back: until then its pool only failed runs and had not grown to its working size). Raw "
        "results in `bench/work/results-soak.json`, logs in `bench/work/logs/soak/`.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the ``## Soak`` section of ``path`` (up to the next ``## `` heading), or append it."""
    text = path.read_text()
    match = re.search(r"^## Soak\n.*?(?=^## |^<!-- bench:begin|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match:
        text = (
            text[: match.start()]
            + section.rstrip("\n")
            + "\n"
            + ("\n" if match.end() < len(text) else "")
            + text[match.end() :]
        )
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.write_text(text)


def save(result: SoakResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result), indent=2, default=str))
