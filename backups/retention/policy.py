"""A retention policy: the rules of a target or schedule, parsed and checked, each problem
reported with the rule that has it (``keep_daily: must be a whole number``).

Every number is bounded by what the planner and the calendar can compute: a span (a duration,
``retention_days``, a spacing rule's days) is at most :data:`MAX_DAYS`, a count at most
:data:`MAX_COUNT`; a larger one is refused here, not met as an OverflowError in a run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backups.retention.durations import Duration, DurationError, Period, parse_duration, parse_period

COUNT_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
POLICY_KEYS = (
    *COUNT_RULES, "keep_within", "tiers", "rules", "retention_days", "max_backups", "min_keep",
    "max_delete_fraction",
)  # fmt: skip
DEFAULT_MAX_DELETE_FRACTION = 0.5
MAX_DAYS = 100_000  # about 273 years, as a schedule's retention_days: the longest span a rule names
MAX_COUNT = 1_000_000  # the most backups a count rule, cap or floor may name


class PolicyError(ValueError):
    """A policy that cannot be applied. ``field`` names the key, the message says the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Tier:
    """``15min:24h``: the newest backup of each 15-minute period, for 24 hours."""

    period: Period
    window: Duration

    def __str__(self) -> str:
        return f"{self.period}:{self.window}"


@dataclass(frozen=True)
class SpacingRule:
    """``3.1``: at least 3 backups, each at least 1 day older than the one kept before it."""

    count: int
    min_age_days: int

    def __str__(self) -> str:
        return f"{self.count}.{self.min_age_days}"


@dataclass(frozen=True)
class Policy:
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: Duration | None = None
    tiers: tuple[Tier, ...] = ()
    rules: tuple[SpacingRule, ...] = ()
    retention_days: int | None = None
    max_backups: int | None = None
    min_keep: int = 1
    max_delete_fraction: float = DEFAULT_MAX_DELETE_FRACTION
    timezone: str = "UTC"

    @property
    def has_keep_rules(self) -> bool:
        counts = any(getattr(self, name) is not None for name in COUNT_RULES)
        return counts or self.keep_within is not None or bool(self.tiers) or bool(self.rules)

    @property
    def has_rules(self) -> bool:
        """Whether the policy can delete anything at all."""
        return self.has_keep_rules or self.retention_days is not None or self.max_backups is not None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], timezone: str = "UTC") -> Policy:
        """Validate a policy as written in TOML, JSON or a ``--policy`` spec; raise PolicyError
        naming the first bad key (:meth:`problems` lists every one)."""
        policy, problems = cls._read(mapping, timezone)
        if problems:
            raise problems[0]
        assert policy is not None
        return policy

    @classmethod
    def problems(cls, mapping: Mapping[str, Any], timezone: str = "UTC") -> list[PolicyError]:
        """Every problem of a policy, each naming its key, in the order :meth:`from_mapping`
        meets them; empty when the policy is valid."""
        return cls._read(mapping, timezone)[1]

    @classmethod
    def _read(cls, mapping: Mapping[str, Any], timezone: str) -> tuple[Policy | None, list[PolicyError]]:
        if not isinstance(mapping, Mapping):
            return None, [PolicyError("retention", 'must be a table/object, e.g. {"keep_daily": 7}')]
        problems = [
            PolicyError(name, f"unknown rule; known: {', '.join(POLICY_KEYS)}")
            for name in sorted(set(mapping) - set(POLICY_KEYS))
        ]
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            problems.append(
                PolicyError("timezone", f"unknown timezone {timezone!r}; use an IANA name like Europe/Berlin")
            )
        values: dict[str, Any] = {"timezone": timezone}
        readers: dict[str, Callable[[str, Any], Any]] = {
            **{name: _unlimited_count for name in COUNT_RULES},
            "retention_days": _days,
            "max_backups": _count,
            "min_keep": _count,
            "keep_within": _duration,
            "tiers": lambda name, value: _items(name, value, "15min:24h", _tier),
            "rules": lambda name, value: _items(name, value, "3.1", _spacing_rule),
            "max_delete_fraction": _fraction,
        }
        for name, read in readers.items():
            if name not in mapping:
                continue
            try:
                values[name] = read(name, mapping[name])
            except PolicyError as exc:
                problems.append(exc)
        return (None, problems) if problems else (cls(**values), [])


def _count(name: str, value: Any, *, unlimited: bool = False, most: int = MAX_COUNT) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value >= 1 or (unlimited and value == -1))
    ):
        hint = (
            "a whole number of at least 1, or -1 for unlimited"
            if unlimited
            else "a whole number of at least 1"
        )
        raise PolicyError(name, f"must be {hint} (got {_shown(value)})")
    if value > most:
        raise PolicyError(name, f"must be at most {most}")
    return value


def _unlimited_count(name: str, value: Any) -> int:
    return _count(name, value, unlimited=True)


def _days(name: str, value: Any) -> int:
    return _count(name, value, most=MAX_DAYS)


def _shown(value: Any) -> str:
    """``value`` as a message shows it: a number too long to read (or to convert) is summarised."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return "a number of more than 18 digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise PolicyError(name, "must be a number above 0 and at most 1, e.g. 0.5")
    return float(value)


def _duration(name: str, value: Any) -> Duration:
    return _bounded(name, value, parse_duration)


def _bounded(name: str, text: Any, parse: Callable[[str], Any]) -> Any:
    """``parse(text)`` (a duration or a period), refused when it spans more than MAX_DAYS."""
    try:
        parsed = parse(text)
    except DurationError as exc:
        raise PolicyError(name, str(exc)) from None
    except ValueError:  # a number of thousands of digits, more than Python converts
        parsed = None
    length = parsed.length if isinstance(parsed, Period) else parsed
    if length is None or _minutes(length) > MAX_DAYS * 24 * 60:
        raise PolicyError(name, f"{_shown(text)}: a duration is at most {MAX_DAYS} days")
    return parsed


def _minutes(length: Duration) -> int:
    """About how many minutes ``length`` spans (a year 365 days, a month 30), in whole numbers:
    a float would overflow on the numbers this bounds."""
    days = length.years * 365 + length.months * 30 + length.weeks * 7 + length.days
    return (days * 24 + length.hours) * 60 + length.minutes


def _items(name: str, value: Any, example: str, read: Callable[[str], Any]) -> tuple[Any, ...]:
    """A list of tiers or spacing rules (one string is a list of one); every bad item reported."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise PolicyError(
            name, f'must be a list of strings, e.g. ["{example}"] (quoted: 3.10 and 3.1 are one number)'
        )
    items, problems = [], []
    for text in value:
        try:
            items.append(read(text))
        except PolicyError as exc:
            problems.append(exc.message)
    if problems:
        raise PolicyError(name, "; ".join(problems))
    return tuple(items)


def _tier(text: str) -> Tier:
    period_text, colon, window_text = text.partition(":")
    if not colon:
        raise PolicyError(
            "tiers",
            f"{_shown(text)}: write PERIOD:WINDOW, e.g. '15min:24h' (one per 15 minutes for 24 hours)",
        )
    return Tier(_bounded("tiers", period_text, parse_period), _bounded("tiers", window_text, parse_duration))


def _spacing_rule(text: str) -> SpacingRule:
    count_text, dot, days_text = text.strip().partition(".")
    count, days = _decimal(count_text), _decimal(days_text)
    if not dot or count is None or days is None or count < 1:
        raise PolicyError(
            "rules", f"{_shown(text)}: write COUNT.MIN_AGE_DAYS, e.g. '3.1' (3 backups at least 1 day apart)"
        )
    if count > MAX_COUNT:
        raise PolicyError("rules", f"{_shown(text)}: COUNT is at most {MAX_COUNT}")
    if days > MAX_DAYS:
        raise PolicyError("rules", f"{_shown(text)}: MIN_AGE_DAYS is at most {MAX_DAYS}")
    return SpacingRule(count, days)


def _decimal(text: str) -> int | None:
    """The whole number written in decimal digits in ``text`` (None when it is not one); past 20
    digits, 10**20: int() refuses numbers of thousands of digits, and any bound is far below."""
    if not text.isdecimal():
        return None
    return int(text) if len(text) <= 20 else 10**20
