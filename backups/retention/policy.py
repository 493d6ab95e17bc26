"""A retention policy: the rules of a target or schedule, parsed and checked, each problem
reported with the rule that has it (``keep_daily: must be a whole number``)."""

from __future__ import annotations

from collections.abc import Mapping
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
        naming the first bad key."""
        if not isinstance(mapping, Mapping):
            raise PolicyError("retention", 'must be a table/object, e.g. {"keep_daily": 7}')
        unknown = sorted(set(mapping) - set(POLICY_KEYS))
        if unknown:
            raise PolicyError(unknown[0], f"unknown rule; known: {', '.join(POLICY_KEYS)}")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            raise PolicyError(
                "timezone", f"unknown timezone {timezone!r}; use an IANA name like Europe/Berlin"
            ) from None
        values: dict[str, Any] = {"timezone": timezone}
        for name in COUNT_RULES:
            if name in mapping:
                values[name] = _count(mapping, name, unlimited=True)
        for name in ("retention_days", "max_backups", "min_keep"):
            if name in mapping:
                values[name] = _count(mapping, name, unlimited=False)
        if "keep_within" in mapping:
            values["keep_within"] = _duration(mapping, "keep_within")
        if "tiers" in mapping:
            values["tiers"] = tuple(_tier(text) for text in _string_list(mapping, "tiers", "15min:24h"))
        if "rules" in mapping:
            values["rules"] = tuple(_spacing_rule(text) for text in _string_list(mapping, "rules", "3.1"))
        if "max_delete_fraction" in mapping:
            fraction = mapping["max_delete_fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
                raise PolicyError("max_delete_fraction", "must be a number above 0 and at most 1, e.g. 0.5")
            values["max_delete_fraction"] = float(fraction)
        return cls(**values)


def _count(mapping: Mapping[str, Any], name: str, *, unlimited: bool) -> int:
    value = mapping[name]
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
        raise PolicyError(name, f"must be {hint} (got {value!r})")
    return value


def _duration(mapping: Mapping[str, Any], name: str) -> Duration:
    try:
        return parse_duration(mapping[name])
    except DurationError as exc:
        raise PolicyError(name, str(exc)) from None


def _string_list(mapping: Mapping[str, Any], name: str, example: str) -> list[str]:
    value = mapping[name]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise PolicyError(
            name, f'must be a list of strings, e.g. ["{example}"] (quoted: 3.10 and 3.1 are one number)'
        )
    return list(value)


def _tier(text: str) -> Tier:
    period_text, colon, window_text = text.partition(":")
    if not colon:
        raise PolicyError(
            "tiers", f"{text!r}: write PERIOD:WINDOW, e.g. '15min:24h' (one per 15 minutes for 24 hours)"
        )
    try:
        period, window = parse_period(period_text), parse_duration(window_text)
    except DurationError as exc:
        raise PolicyError("tiers", str(exc)) from None
    return Tier(period, window)


def _spacing_rule(text: str) -> SpacingRule:
    count, dot, days = text.strip().partition(".")
    if not (dot and count.isdecimal() and days.isdecimal() and int(count) >= 1):
        raise PolicyError(
            "rules", f"{text!r}: write COUNT.MIN_AGE_DAYS, e.g. '3.1' (3 backups at least 1 day apart)"
        )
    return SpacingRule(int(count), int(days))
