"""Property tests of the retention engine's contract (see the docstring of backups.retention.planner).

Backup sets mix every status, verified flags and equal timestamps, around DST changes, ISO week 53,
leap days and month ends; policies draw from every rule kind, tiers, caps and several timezones.
A model written from the rules' semantics (restic ``forget`` buckets, windows, greedy spacing,
caps, protection) is checked against the engine, next to each invariant on its own. No database.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from backups.retention.durations import Duration, parse_duration
from backups.retention.planner import BackupInfo, Plan, plan
from backups.retention.policy import Policy

PROPERTY = settings(max_examples=200, deadline=None, database=None)

TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
STATUSES = ("success",) * 5 + ("failed", "skipped", "corrupt", "running", "pending")
NON_SUCCESS = ("failed", "skipped", "corrupt", "running", "pending")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DST_CHANGES = (
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/Berlin"),  # 02:00 CET -> 03:00 CEST
    (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), "Europe/Berlin"),  # 03:00 CEST -> 02:00 CET
    (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), "America/New_York"),  # 02:00 EST -> 03:00 EDT
    (datetime(2026, 11, 1, 6, 0, tzinfo=UTC), "America/New_York"),  # 02:00 EDT -> 01:00 EST
)
BASES = (  # moments around which a backup set is drawn, with the zone where they are special
    *DST_CHANGES,
    (datetime(2021, 1, 1, 0, 0, tzinfo=UTC), "UTC"),  # 2020-W53
    (datetime(2027, 1, 3, 23, 30, tzinfo=UTC), "Europe/Berlin"),  # 2026-W53, Monday in Berlin
    (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), "Asia/Kolkata"),  # a leap day
    (datetime(2026, 1, 31, 23, 30, tzinfo=UTC), "Europe/Berlin"),  # a month end (February in Berlin)
)
SCALES = (
    timedelta(minutes=1),
    timedelta(minutes=7),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=5),
    timedelta(days=1),
    timedelta(days=9),
)
DURATIONS = ("30min", "2h", "36h", "1d", "3d", "1w", "2w3d", "1mo", "1y", "1y5mo7d2h")
TIERS = (
    "15min:24h",
    "1h:72h",
    "1d:14d",
    "1w:1y",
    "7h:3d",
    "45min:6h",
    "10min:90min",
    "1d:1mo",
    "1mo:2y",
    "1y:10y",
)
RULES = ("3.1", "2.15", "1.0", "4.2", "2.7")
ZONES: tuple[tzinfo, ...] = (
    UTC,
    ZoneInfo("UTC"),
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Asia/Kolkata"),
    timezone(timedelta(hours=-3, minutes=-30)),
)


# -- strategies -------------------------------------------------------------------------------


@st.composite
def backup_lists(
    draw: st.DrawFn,
    *,
    statuses: Sequence[str] = STATUSES,
    min_size: int = 0,
    around: tuple[datetime, str] | None = None,
) -> list[BackupInfo]:
    """Unique ids; timestamps from a small pool of moments, so equal timestamps are common, all
    written in one zone (the preview command writes naive lines in the policy's zone)."""
    base, zone_name = around or draw(st.sampled_from(BASES))
    zone = draw(st.one_of(st.just(ZoneInfo(zone_name)), st.sampled_from(ZONES)))
    scale = draw(st.sampled_from(SCALES))
    pool = draw(st.lists(st.integers(-300, 30), min_size=1, max_size=14))
    rows = draw(
        st.lists(
            st.tuples(st.integers(1, 500), st.sampled_from(pool), st.sampled_from(statuses), st.booleans()),
            min_size=min_size,
            max_size=24,
            unique_by=lambda row: row[0],
        )
    )
    return [
        BackupInfo(id_, (base + step * scale).astimezone(zone), status, verified)
        for id_, step, status, verified in rows
    ]


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


@st.composite
def mappings(draw: st.DrawFn, *, caps: bool = True, keep_rules: bool = True) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    candidates: dict[str, st.SearchStrategy[Any]] = {}
    if keep_rules:
        counts = st.sampled_from((-1, 1, 2, 3, 5, 8))
        for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            candidates[name] = counts
        candidates["keep_within"] = st.sampled_from(DURATIONS)
        candidates["tiers"] = st.lists(st.sampled_from(TIERS), min_size=1, max_size=4)
        candidates["rules"] = st.lists(st.sampled_from(RULES), min_size=1, max_size=3)
    if caps:
        candidates["retention_days"] = st.integers(1, 400)
        candidates["max_backups"] = st.integers(1, 15)
    candidates["min_keep"] = st.integers(1, 4)
    for name, values in candidates.items():
        if draw(st.integers(0, 3)) == 0:
            mapping[name] = draw(values)
    return mapping


@st.composite
def policies(
    draw: st.DrawFn, *, caps: bool = True, keep_rules: bool = True, zone: str | None = None
) -> Policy:
    mapping = draw(mappings(caps=caps, keep_rules=keep_rules))
    zones = (
        st.sampled_from(TIMEZONES) if zone is None else st.one_of(st.just(zone), st.sampled_from(TIMEZONES))
    )
    return Policy.from_mapping(mapping, timezone=draw(zones))


def latest(backups: Sequence[BackupInfo]) -> datetime:
    return max((instant(b) for b in backups), default=BASES[0][0])


@st.composite
def nows(draw: st.DrawFn, backups: Sequence[BackupInfo]) -> datetime:
    """Mostly after every backup; sometimes before some of them."""
    later = (timedelta(0), timedelta(minutes=1), timedelta(days=3), timedelta(days=800))
    earlier = (timedelta(hours=1), timedelta(days=4), timedelta(days=40))
    shift = draw(st.sampled_from((*later, *(-delta for delta in earlier))))
    return latest(backups) + shift


@st.composite
def cases(draw: st.DrawFn, *, caps: bool = True) -> tuple[list[BackupInfo], Policy, datetime]:
    """A backup set, a policy whose timezone is often the one where the set is special, a now."""
    around = draw(st.sampled_from(BASES))
    backups = draw(backup_lists(around=around))
    return backups, draw(policies(caps=caps, zone=around[1])), draw(nows(backups))


# -- the model ----------------------------------------------------------------------------------


def instant(backup: BackupInfo) -> datetime:
    return backup.timestamp.astimezone(UTC)


def order(backup: BackupInfo) -> tuple[datetime, int]:
    return instant(backup), backup.id


def successes_of(backups: Sequence[BackupInfo]) -> list[BackupInfo]:
    return sorted((b for b in backups if b.status == "success"), key=order, reverse=True)


def newest_not_after(successes: Sequence[BackupInfo], now: datetime) -> BackupInfo:
    return next((b for b in successes if instant(b) <= now), successes[0])


def protected(backups: Sequence[BackupInfo], policy: Policy, now: datetime) -> set[int]:
    successes = successes_of(backups)
    if not successes:
        return set()
    ids = {successes[0].id, newest_not_after(successes, now).id}
    ids.update(b.id for b in successes[: policy.min_keep])
    ids.update([b.id for b in successes if b.verified][:1])
    return ids


def before(duration: Duration, anchor: datetime, zone: ZoneInfo) -> datetime:
    """``anchor`` minus ``duration``: years, months, weeks and days on the local wall clock (the
    day clamped to the month's end), then hours and minutes of elapsed time."""
    elapsed = timedelta(hours=duration.hours, minutes=duration.minutes)
    if not (duration.years or duration.months or duration.weeks or duration.days):
        return anchor.astimezone(UTC) - elapsed
    local = anchor.astimezone(zone)
    year, month = divmod(local.year * 12 + local.month - 1 - duration.years * 12 - duration.months, 12)
    day = date(year, month + 1, min(local.day, _days_in(year, month + 1)))
    day -= timedelta(days=duration.days + 7 * duration.weeks)
    wall = datetime.combine(day, local.time(), tzinfo=zone).replace(fold=local.fold)
    return wall.astimezone(UTC) - elapsed


BUCKETS: dict[str, Callable[[datetime], Hashable]] = {
    "keep_hourly": lambda local: (local.date(), local.hour, local.utcoffset()),
    "keep_daily": lambda local: local.date(),
    "keep_weekly": lambda local: local.isocalendar()[:2],
    "keep_monthly": lambda local: (local.year, local.month),
    "keep_yearly": lambda local: local.year,
}


def period_key(text: str, moment: datetime, local: datetime) -> Hashable:
    match = re.fullmatch(r"(\d+)(min|h|d|w|mo|y)", text)
    assert match is not None
    number, unit = int(match.group(1)), match.group(2)
    if unit in ("min", "h"):  # fixed slices counted from the epoch
        return (moment - EPOCH) // timedelta(**{"minutes" if unit == "min" else "hours": number})
    assert number == 1  # the generated day-or-longer periods are calendar units
    return {
        "d": local.date(),
        "w": local.isocalendar()[:2],
        "mo": (local.year, local.month),
        "y": local.year,
    }[unit]


def required_by_rules(successes: Sequence[BackupInfo], policy: Policy, now: datetime) -> set[int]:
    """What the keep rules alone keep (successes newest first)."""
    tz = ZoneInfo(policy.timezone)
    locals_ = [instant(b).astimezone(tz) for b in successes]
    anchor = instant(newest_not_after(successes, now))
    ids: set[int] = set()
    for name in ("keep_last", *BUCKETS):
        count = getattr(policy, name)
        if count is None:
            continue
        firsts: dict[Hashable, BackupInfo] = {}
        for index, (backup, local) in enumerate(zip(successes, locals_, strict=True)):
            firsts.setdefault(index if name == "keep_last" else BUCKETS[name](local), backup)
        newest_of_each = list(firsts.values())
        if count == -1 or len(newest_of_each) < count:  # count left: the oldest is kept too
            ids.update(b.id for b in newest_of_each)
            ids.add(successes[-1].id)
        else:
            ids.update(b.id for b in newest_of_each[:count])
    if policy.keep_within is not None:
        cutoff = before(policy.keep_within, anchor, tz)
        ids.update(b.id for b in successes if instant(b) > cutoff)
    for tier in policy.tiers:
        cutoff = before(tier.window, anchor, tz)
        seen: set[Hashable] = set()
        for backup, local in zip(successes, locals_, strict=True):
            key = period_key(str(tier.period), instant(backup), local)
            if instant(backup) > cutoff and key not in seen:
                seen.add(key)
                ids.add(backup.id)
    for rule in policy.rules:
        chosen: list[BackupInfo] = []
        for backup in successes:
            if len(chosen) < rule.count and (
                not chosen or instant(chosen[-1]) - instant(backup) >= timedelta(days=rule.min_age_days)
            ):
                chosen.append(backup)
        ids.update(b.id for b in chosen)
    return ids


def model_kept_successes(backups: Sequence[BackupInfo], policy: Policy, now: datetime) -> list[int]:
    successes = successes_of(backups)
    if not successes or not policy.has_rules:
        return [b.id for b in successes]
    safe = protected(backups, policy, now)
    wanted = required_by_rules(successes, policy, now) if policy.has_keep_rules else {b.id for b in successes}
    kept = [b for b in successes if b.id in wanted | safe]
    if policy.retention_days is not None:
        anchor = instant(newest_not_after(successes, now))
        kept = [
            b for b in kept if b.id in safe or anchor - instant(b) < timedelta(days=policy.retention_days)
        ]
    if policy.max_backups is not None:
        room = max(0, policy.max_backups - len(safe))
        unprotected = [b.id for b in kept if b.id not in safe][:room]
        kept = [b for b in kept if b.id in safe or b.id in unprotected]
    return [b.id for b in kept]


# -- helpers ------------------------------------------------------------------------------------


def kept_ids(result: Plan) -> set[int]:
    return {k.backup.id for k in result.keep}


def deleted_ids(result: Plan) -> set[int]:
    return {d.backup.id for d in result.delete}


def verdicts(result: Plan) -> tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[tuple[int, str], ...]]:
    """The plan without the BackupInfo objects: ids with their reasons, in order."""
    return (
        tuple((k.backup.id, k.reasons) for k in result.keep),
        tuple((d.backup.id, d.reason) for d in result.delete),
    )


# -- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(cases())
def test_it_keeps_or_deletes_each_backup_once_newest_first_with_a_reason(
    case: tuple[list[BackupInfo], Policy, datetime],
) -> None:
    backups, policy, now = case
    result = plan(backups, policy, now)
    assert sorted(b.id for b in backups) == sorted([*kept_ids(result), *deleted_ids(result)])
    assert len(result.keep) + len(result.delete) == len(backups)
    for listed in ([k.backup for k in result.keep], [d.backup for d in result.delete]):
        assert [order(b) for b in listed] == sorted((order(b) for b in listed), reverse=True)
    assert all(kept.reasons and all(kept.reasons) for kept in result.keep)
    assert all(gone.reason for gone in result.delete)
    successes = successes_of(backups)
    if successes and policy.has_rules:  # the point every window and expiry is measured from
        assert result.anchor == newest_not_after(successes, now).timestamp


@PROPERTY
@given(cases())
def test_it_never_deletes_a_protected_backup(case: tuple[list[BackupInfo], Policy, datetime]) -> None:
    """The newest success (the newest one and the newest not after now), the newest verified one,
    the min_keep newest ones, and every RUNNING or PENDING backup."""
    backups, policy, now = case
    result = plan(backups, policy, now)
    successes = successes_of(backups)
    if successes:
        assert successes[0].id in kept_ids(result)
        assert newest_not_after(successes, now).id in kept_ids(result)
    verified = [b for b in successes if b.verified]
    if verified:
        assert verified[0].id in kept_ids(result)
    assert {b.id for b in successes[: policy.min_keep]} <= kept_ids(result)
    assert not [d for d in result.delete if d.backup.status in ("running", "pending")]


@PROPERTY
@given(backup_lists(), policies(), st.sampled_from((timedelta(0), timedelta(days=2))))
def test_it_keeps_failed_runs_after_the_newest_success_and_deletes_older_ones(
    backups: list[BackupInfo], policy: Policy, after: timedelta
) -> None:
    result = plan(backups, policy, latest(backups) + after)
    successes = successes_of(backups)
    for backup in backups:
        if backup.status in ("failed", "skipped", "corrupt"):
            newer = not successes or order(backup) > order(successes[0])
            assert (backup.id in kept_ids(result)) == (newer or not policy.has_rules)


@PROPERTY
@given(backup_lists(statuses=NON_SUCCESS), policies(), st.data())
def test_it_deletes_nothing_without_a_successful_backup(
    backups: list[BackupInfo], policy: Policy, data: st.DataObject
) -> None:
    result = plan(backups, policy, data.draw(nows(backups)))
    assert result.delete == ()
    assert result.anchor is None
    assert len(result.keep) == len(backups)


@PROPERTY
@given(backup_lists(), policies(caps=False, keep_rules=False), st.data())
def test_it_deletes_nothing_without_a_rule(
    backups: list[BackupInfo], policy: Policy, data: st.DataObject
) -> None:
    assert not policy.has_rules
    result = plan(backups, policy, data.draw(nows(backups)))
    assert result.delete == ()
    assert len(result.keep) == len(backups)


@PROPERTY
@given(cases(), st.data())
def test_it_counts_only_successes_toward_the_rules(
    case: tuple[list[BackupInfo], Policy, datetime], data: st.DataObject
) -> None:
    backups, policy, now = case
    full = plan(backups, policy, now)
    only_successes = plan([b for b in backups if b.status == "success"], policy, now)
    assert tuple(k for k in full.keep if k.backup.status == "success") == only_successes.keep
    assert tuple(d for d in full.delete if d.backup.status == "success") == only_successes.delete
    # Any other non-success status in their place changes nothing for the successes either.
    swapped = [
        b if b.status == "success" else replace(b, status=data.draw(st.sampled_from(NON_SUCCESS)))
        for b in backups
    ]
    again = plan(swapped, policy, now)
    assert tuple(k for k in again.keep if k.backup.status == "success") == only_successes.keep


@PROPERTY
@given(backup_lists(), policies(), st.sampled_from((timedelta(0), timedelta(hours=1), timedelta(days=30))))
def test_it_measures_from_the_newest_success_so_a_later_now_changes_nothing(
    backups: list[BackupInfo], policy: Policy, first: timedelta
) -> None:
    now = latest(backups) + first
    expected = plan(backups, policy, now)
    for later in (timedelta(minutes=1), timedelta(days=365), timedelta(days=3650)):
        assert plan(backups, policy, now + later) == expected
    successes = successes_of(backups)
    if successes and policy.has_rules:
        assert expected.anchor == successes[0].timestamp


@PROPERTY
@given(cases())
def test_it_deletes_nothing_more_when_planning_the_kept_backups_again(
    case: tuple[list[BackupInfo], Policy, datetime],
) -> None:
    backups, policy, now = case
    first = plan(backups, policy, now)
    second = plan([k.backup for k in first.keep], policy, now)
    assert second.delete == ()
    assert kept_ids(second) == kept_ids(first)


@PROPERTY
@given(cases(), st.randoms(use_true_random=False))
def test_it_gives_the_same_plan_whatever_the_input_order(
    case: tuple[list[BackupInfo], Policy, datetime], rng: random.Random
) -> None:
    backups, policy, now = case
    expected = plan(backups, policy, now)
    shuffled = list(backups)
    rng.shuffle(shuffled)
    assert plan(shuffled, policy, now) == expected
    assert plan(iter(reversed(backups)), policy, now) == expected


@PROPERTY
@given(cases(), st.data())
def test_it_gives_the_same_plan_whatever_zone_the_timestamps_are_written_in(
    case: tuple[list[BackupInfo], Policy, datetime], data: st.DataObject
) -> None:
    backups, policy, now = case
    zoned = [replace(b, timestamp=b.timestamp.astimezone(data.draw(st.sampled_from(ZONES)))) for b in backups]
    zoned_now = now.astimezone(data.draw(st.sampled_from(ZONES)))
    assert verdicts(plan(zoned, policy, zoned_now)) == verdicts(plan(backups, policy, now))


@PROPERTY
@given(cases())
def test_it_keeps_what_the_rules_caps_and_protections_say(
    case: tuple[list[BackupInfo], Policy, datetime],
) -> None:
    backups, policy, now = case
    result = plan(backups, policy, now)
    kept_successes = [k.backup.id for k in result.keep if k.backup.status == "success"]
    assert kept_successes == model_kept_successes(backups, policy, now)


@PROPERTY
@given(cases(caps=False))
def test_it_keeps_the_union_of_what_each_rule_keeps_without_caps(
    case: tuple[list[BackupInfo], Policy, datetime],
) -> None:
    backups, policy, now = case
    successes = successes_of(backups)
    result = plan(backups, policy, now)
    if not successes or not policy.has_rules:
        return
    expected = required_by_rules(successes, policy, now) | protected(backups, policy, now)
    assert {k.backup.id for k in result.keep if k.backup.status == "success"} == expected


@PROPERTY
@given(backup_lists(), st.integers(1, 15), st.integers(1, 4), st.sampled_from(TIMEZONES), st.data())
def test_it_keeps_every_success_within_max_backups_without_a_keep_rule(
    backups: list[BackupInfo], max_backups: int, min_keep: int, tz: str, data: st.DataObject
) -> None:
    policy = Policy.from_mapping({"max_backups": max_backups, "min_keep": min_keep}, timezone=tz)
    now = data.draw(nows(backups))
    result = plan(backups, policy, now)
    successes = successes_of(backups)
    kept = [k.backup.id for k in result.keep if k.backup.status == "success"]
    assert len(kept) == min(len(successes), max(max_backups, len(protected(backups, policy, now))))


@PROPERTY
@given(cases(), maybe(st.integers(1, 400)), maybe(st.integers(1, 15)))
def test_it_applies_the_caps_from_the_newest_success_oldest_first(
    case: tuple[list[BackupInfo], Policy, datetime], retention_days: int | None, max_backups: int | None
) -> None:
    backups, policy, now = case
    if retention_days is None and max_backups is None:
        max_backups = 3
    policy = replace(policy, retention_days=retention_days, max_backups=max_backups)
    successes = successes_of(backups)
    if not successes:
        return
    result = plan(backups, policy, now)
    anchor = instant(newest_not_after(successes, now))
    safe = protected(backups, policy, now)
    kept = [k.backup for k in result.keep if k.backup.status == "success"]
    if retention_days is not None:
        limit = timedelta(days=retention_days)
        assert all(anchor - instant(b) < limit for b in kept if b.id not in safe)
        assert all(
            anchor - instant(d.backup) >= limit for d in result.delete if d.reason.startswith("expired")
        )
        if not policy.has_keep_rules and max_backups is None:  # caps only: all within are kept
            assert {b.id for b in successes if anchor - instant(b) < limit} <= kept_ids(result)
    if max_backups is not None:
        assert len(kept) <= max(max_backups, len(safe))
        trimmed = [d.backup for d in result.delete if d.reason.startswith("beyond max_backups")]
        if trimmed:  # the oldest go first
            assert all(order(b) > max(order(t) for t in trimmed) for b in kept if b.id not in safe)


@PROPERTY
@given(backup_lists(statuses=("success",), min_size=1), st.sampled_from(TIMEZONES), st.data())
def test_it_orders_equal_timestamps_by_id(backups: list[BackupInfo], tz: str, data: st.DataObject) -> None:
    moment = backups[0].timestamp
    tied = [replace(b, timestamp=moment, verified=False) for b in backups]
    count = data.draw(st.integers(1, len(tied)))
    result = plan(tied, Policy.from_mapping({"keep_last": count}, timezone=tz), moment)
    assert [k.backup.id for k in result.keep] == sorted((b.id for b in tied), reverse=True)[:count]


@PROPERTY
@given(
    st.sampled_from(DST_CHANGES),
    st.integers(-240, 240),
    st.sampled_from((7, 10, 13, 25)),
    st.sampled_from(("keep_within", "retention_days", "rules")),
    st.data(),
)
def test_it_measures_windows_caps_and_spacing_across_a_dst_change(
    change: tuple[datetime, str], anchor_minutes: int, step: int, kind: str, data: st.DataObject
) -> None:
    """A success every ``step`` minutes for 40 hours, written on the wall clock of the zone whose
    DST change is near the newest one: exactly what the window, cap or spacing says is kept."""
    moment, zone_name = change
    zone = ZoneInfo(zone_name)
    anchor = moment + timedelta(minutes=anchor_minutes)
    backups = [
        BackupInfo(1000 - n, (anchor - timedelta(minutes=step * n)).astimezone(zone), "success")
        for n in range(40 * 60 // step)
    ]
    if kind == "keep_within":
        text = data.draw(st.sampled_from(("30min", "90min", "2h", "5h", "23h", "24h", "25h", "36h", "1d")))
        mapping: dict[str, Any] = {"keep_within": text}
        cutoff = before(parse_duration(text), anchor, zone)
        expected = {b.id for b in backups if instant(b) > cutoff}
    elif kind == "retention_days":
        mapping = {"retention_days": 1}
        expected = {b.id for b in backups if anchor - instant(b) < timedelta(days=1)}
    else:
        mapping = {"rules": ["2.1"]}  # the newest, then the first one 24 elapsed hours older
        expected = {1000, 1000 - -(-24 * 60 // step)}
    result = plan(backups, Policy.from_mapping(mapping, timezone=zone_name), anchor)
    assert kept_ids(result) == expected


@PROPERTY
@given(st.sampled_from(DURATIONS), st.sampled_from(BASES), st.integers(-3000, 3000), st.data())
def test_it_subtracts_hours_and_minutes_as_elapsed_time_after_the_calendar_units(
    text: str, around: tuple[datetime, str], offset_minutes: int, data: st.DataObject
) -> None:
    zone = ZoneInfo(data.draw(st.one_of(st.just(around[1]), st.sampled_from(TIMEZONES))))
    moment = around[0] + timedelta(minutes=offset_minutes)
    duration = parse_duration(text)
    calendar_part = replace(duration, hours=0, minutes=0)
    elapsed = timedelta(hours=duration.hours, minutes=duration.minutes)
    start = calendar_part.before(moment, zone) if calendar_part != Duration() else moment
    assert duration.before(moment, zone) == start.astimezone(UTC) - elapsed
    assert duration.before(moment, zone) == before(duration, moment, zone)


@PROPERTY
@given(
    st.integers(1, 800),
    st.sampled_from(("y", "mo", "w", "d")),
    st.sampled_from(BASES),
    st.integers(-400, 400),
    st.data(),
)
def test_it_subtracts_calendar_units_on_the_local_wall_clock(
    number: int, unit: str, around: tuple[datetime, str], offset_hours: int, data: st.DataObject
) -> None:
    zone = ZoneInfo(data.draw(st.one_of(st.just(around[1]), st.sampled_from(TIMEZONES))))
    local = (around[0] + timedelta(hours=offset_hours, minutes=13)).astimezone(zone)
    result = parse_duration(f"{number}{unit}").before(local, zone).astimezone(zone)
    if unit in ("w", "d"):
        expected = local.date() - timedelta(days=number * (7 if unit == "w" else 1))
    else:
        year, month = divmod(local.year * 12 + local.month - 1 - number * (12 if unit == "y" else 1), 12)
        expected = date(year, month + 1, min(local.day, _days_in(year, month + 1)))
    assert result.date() == expected
    if not _in_gap(datetime.combine(expected, local.time()), zone):  # else pushed past the gap
        assert (result.hour, result.minute) == (local.hour, local.minute)


def _in_gap(wall: datetime, zone: ZoneInfo) -> bool:
    """Whether ``wall`` does not exist on ``zone``'s clock (skipped by a spring change)."""
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall


def _days_in(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


# -- incremental chains ---------------------------------------------------------------------------

PINNING = ("success", "running", "pending")


@st.composite
def chained_cases(draw: st.DrawFn) -> tuple[list[BackupInfo], Policy, datetime]:
    """``cases()`` with incrementals: many backups built on an earlier success (mostly the newest
    one before them, as a chain grows), some on a backup missing from the set."""
    backups, policy, now = draw(cases())
    linked: list[BackupInfo] = []
    earlier: list[BackupInfo] = []  # successes older than the backup at hand
    for backup in sorted(backups, key=order):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            linked.append(replace(backup, base_id=1000))  # not in the set: ignored
        elif choice >= 3 and earlier:
            base = earlier[-1] if choice < 5 else draw(st.sampled_from(earlier))
            linked.append(replace(backup, base_id=base.id))
        else:
            linked.append(backup)
        if backup.status == "success":
            earlier.append(linked[-1])
    return linked, policy, now


def closure(kept: set[int], backups: Sequence[BackupInfo]) -> set[int]:
    """``kept`` and every backup a kept SUCCESS/RUNNING/PENDING one is built on, transitively."""
    by_id = {b.id: b for b in backups}
    result = set(kept)
    pending = [by_id[i] for i in kept if by_id[i].status in PINNING]
    while pending:
        base = by_id.get(pending.pop().base_id)  # type: ignore[arg-type]
        if base is not None and base.id not in result:
            result.add(base.id)
            pending.append(base)
    return result


@PROPERTY
@given(chained_cases())
def test_it_never_deletes_the_base_of_a_kept_backup(case: tuple[list[BackupInfo], Policy, datetime]) -> None:
    backups, policy, now = case
    result = plan(backups, policy, now)
    ids = {b.id for b in backups}
    planned = policy.has_rules and any(b.status == "success" for b in backups)  # else all are kept
    for kept in result.keep:
        base = kept.backup.base_id
        if kept.backup.status in PINNING and base in ids:
            assert base in kept_ids(result), f"{kept.backup.id} kept, its base {base} deleted"
            if planned and base is not None:
                assert f"base of incremental {kept.backup.id}" in result.reasons()[base]
    # Exactly what the rules keep plus the bases they need: nothing else is spared.
    unlinked = plan([replace(b, base_id=None) for b in backups], policy, now)
    assert kept_ids(result) == closure(kept_ids(unlinked), backups)
    for kept in result.keep:
        if kept.backup.id not in kept_ids(unlinked):
            assert all(reason.startswith("base of incremental ") for reason in kept.reasons)


@PROPERTY
@given(chained_cases(), st.randoms(use_true_random=False))
def test_it_plans_chains_the_same_whatever_the_order_and_again_deletes_nothing(
    case: tuple[list[BackupInfo], Policy, datetime], rng: random.Random
) -> None:
    backups, policy, now = case
    expected = plan(backups, policy, now)
    shuffled = list(backups)
    rng.shuffle(shuffled)
    assert plan(shuffled, policy, now) == expected
    again = plan([k.backup for k in expected.keep], policy, now)
    assert again.delete == ()
    assert kept_ids(again) == kept_ids(expected)
