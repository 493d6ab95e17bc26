"""Durations and periods for retention rules: ``2d``, ``1y5mo7d2h``, ``15min``.

Pure Python, no Django. Units: ``min``, ``h``, ``d``, ``w``, ``mo``, ``y``. Years, months, weeks
and days are calendar arithmetic on the wall clock of a timezone (a month before March 31 is the
last day of February; a day across a DST change is 23 or 25 hours); hours and minutes are
elapsed time. A bare ``m`` is refused: minutes or months is exactly the mistake that destroys
backups.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

UNITS = ("y", "mo", "w", "d", "h", "min")  # the order a duration is written back in
_TOKEN = re.compile(r"(\d+)([a-z]+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)  # what a window reaching past the calendar starts at
_MONDAY_ORDINAL = datetime(1970, 1, 5).toordinal()  # ISO weeks counted from a Monday


class DurationError(ValueError):
    """A duration or period that cannot be parsed; the message says how to write it."""


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0

    def __str__(self) -> str:
        values = (self.years, self.months, self.weeks, self.days, self.hours, self.minutes)
        return "".join(f"{value}{unit}" for value, unit in zip(values, UNITS, strict=True) if value)

    @property
    def units(self) -> list[str]:
        values = (self.years, self.months, self.weeks, self.days, self.hours, self.minutes)
        return [unit for value, unit in zip(values, UNITS, strict=True) if value]

    def before(self, moment: datetime, tz: tzinfo) -> datetime:
        """``moment`` minus this duration: calendar units on ``tz``'s wall clock, then elapsed
        hours and minutes (in UTC: arithmetic on an aware datetime is wall-clock arithmetic).
        A duration reaching before the first representable moment gives ``EARLIEST``."""
        local = moment.astimezone(tz)
        try:
            if self.years or self.months or self.weeks or self.days:
                month_index = local.year * 12 + local.month - 1 - self.years * 12 - self.months
                year, month = divmod(month_index, 12)
                month += 1
                day = min(local.day, calendar.monthrange(year, month)[1])
                date = local.date().replace(year=year, month=month, day=day)
                date -= timedelta(weeks=self.weeks, days=self.days)
                local = datetime.combine(date, local.timetz().replace(tzinfo=None), tzinfo=tz)
            return local.astimezone(UTC) - timedelta(hours=self.hours, minutes=self.minutes)
        except (OverflowError, ValueError):  # a year before 1, a date before 0001-01-01
            return EARLIEST


def parse_duration(text: str) -> Duration:
    """Parse ``2d``, ``1y5mo7d2h``, ``90min``. Each unit at most once; the total must be > 0."""
    if not isinstance(text, str) or not text.strip():
        raise DurationError(
            "a duration is a string such as '2d', '12h', '1y6mo' (units: min, h, d, w, mo, y)"
        )
    compact = text.strip().lower().replace(" ", "")
    values: dict[str, int] = {}
    position = 0
    for match in _TOKEN.finditer(compact):
        if match.start() != position:
            break
        number, unit = int(match.group(1)), match.group(2)
        if unit == "m":
            raise DurationError(f"{text!r}: 'm' is ambiguous; write 'min' for minutes or 'mo' for months")
        if unit not in UNITS:
            raise DurationError(f"{text!r}: unknown unit {unit!r}; use min, h, d, w, mo or y")
        if unit in values:
            raise DurationError(f"{text!r}: the unit {unit!r} appears twice")
        values[unit] = number
        position = match.end()
    if position != len(compact) or not values:
        raise DurationError(
            f"{text!r} is not a duration; write a number and a unit, e.g. '2d', '12h', '1y6mo' "
            "(units: min, h, d, w, mo, y)"
        )
    if not any(values.values()):
        raise DurationError(f"{text!r}: a duration must be longer than zero")
    return Duration(
        years=values.get("y", 0),
        months=values.get("mo", 0),
        weeks=values.get("w", 0),
        days=values.get("d", 0),
        hours=values.get("h", 0),
        minutes=values.get("min", 0),
    )


@dataclass(frozen=True)
class Period:
    """A bucket length for tiers: under a day, fixed slices aligned to the UTC epoch; a day or
    longer, calendar days, ISO weeks, months or years in the target's timezone."""

    length: Duration

    def __str__(self) -> str:
        return str(self.length)

    @property
    def seconds(self) -> int:
        return self.length.hours * 3600 + self.length.minutes * 60

    def key(self, moment: datetime, local: datetime) -> int:
        """The period holding ``moment`` (``local`` is the same instant in the target's zone)."""
        length = self.length
        if length.hours or length.minutes:
            return int((moment - _EPOCH).total_seconds()) // self.seconds
        if length.days:
            return local.toordinal() // length.days
        if length.weeks:
            return (local.toordinal() - _MONDAY_ORDINAL) // 7 // length.weeks
        if length.months:
            return (local.year * 12 + local.month - 1) // length.months
        return local.year // length.years


def parse_period(text: str) -> Period:
    """A single-unit duration usable as a bucket: ``15min``, ``1h``, ``1d``, ``1w``, ``1mo``, ``1y``."""
    length = parse_duration(text)
    if len(length.units) != 1:
        raise DurationError(f"{text!r}: a period is one unit, e.g. '15min', '1h', '1d', '1w', '1mo'")
    if length.hours >= 24 or length.minutes >= 24 * 60:
        raise DurationError(f"{text!r}: a period of a day or longer is written in d, w, mo or y")
    return Period(length)
