"""Dates as the content writes them: partial dates, deadlines with a default time zone, periods."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import total_ordering
from zoneinfo import ZoneInfo

BRUSSELS = ZoneInfo("Europe/Brussels")
MIN_YEAR, MAX_YEAR = 1900, 9000
"""The range a clock or period given on the command line may take (month arithmetic stays safe)."""
DEFAULT_DEADLINE_TIME = time(17, 0)

_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


@total_ordering
@dataclass(frozen=True)
class PartialDate:
    """A date known to the year, month or day, as milestones often are (`2011`, `2020-05`)."""

    year: int
    month: int | None = None
    day: int | None = None

    @classmethod
    def parse(cls, value: object) -> PartialDate:
        if isinstance(value, datetime):
            return cls(value.year, value.month, value.day)
        if isinstance(value, date):
            return cls(value.year, value.month, value.day)
        text = str(value).strip()
        match = _PARTIAL.match(text)
        if not match:
            raise ValueError(f"expected YYYY, YYYY-MM or YYYY-MM-DD, got {text!r}")
        year, month, day = (int(g) if g else None for g in match.groups())
        if month is not None and not 1 <= month <= 12:
            raise ValueError(f"month out of range in {text!r}")
        if day is not None:
            date(year, month, day)  # raises ValueError on 2021-02-30
        return cls(year, month, day)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month or 1, self.day or 1)

    def __lt__(self, other: object) -> bool:
        """A less precise date sorts before the more precise dates it contains."""
        if not isinstance(other, PartialDate):
            return NotImplemented
        return (self.year, self.month or 0, self.day or 0) < (
            other.year,
            other.month or 0,
            other.day or 0,
        )

    def __str__(self) -> str:
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


@dataclass(frozen=True, order=True)
class Period:
    """One issue's month."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        match = _PERIOD.match(text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise ValueError(f"expected a period as YYYY-MM, got {text!r}")
        if not MIN_YEAR <= int(match.group(1)) <= MAX_YEAR:
            raise ValueError(f"year out of range ({MIN_YEAR}–{MAX_YEAR}) in {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, moment: date) -> Period:
        return cls(moment.year, moment.month)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    def contains(self, day: date) -> bool:
        return self.first_day <= day <= self.last_day

    def next(self) -> Period:
        return Period.of(self.last_day + timedelta(days=1))

    def previous(self) -> Period:
        return Period.of(self.first_day - timedelta(days=1))

    def start(self, tz: ZoneInfo) -> datetime:
        return datetime.combine(self.first_day, time(0), tz)

    def end(self, tz: ZoneInfo) -> datetime:
        """The first instant after the period, in `tz`."""
        return self.next().start(tz)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def parse_date(value: object) -> date:
    """A full calendar date from YAML (already a date) or text."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}") from None


def parse_moment(value: object, default_tz: ZoneInfo, default_time: time = time(0)) -> datetime:
    """An aware datetime from a bare date (at `default_time` in `default_tz`) or an ISO date-time.

    A date-time without an offset is read in `default_tz`, so content never yields naive datetimes.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime.combine(value, default_time, default_tz)
    else:
        text = str(value).strip()
        if len(text) == 10:
            return datetime.combine(parse_date(text), default_time, default_tz)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"expected YYYY-MM-DD or an ISO date-time such as 2027-01-15T17:00:00+09:00, "
                f"got {text!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=default_tz)
    return moment


def parse_now(text: str | None, tz: ZoneInfo) -> datetime:
    """The build clock: `--now` as an ISO date or date-time (project time zone if naive)."""
    if text is None:
        return datetime.now(tz)
    moment = parse_moment(text, tz)
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ValueError(f"year out of range ({MIN_YEAR}–{MAX_YEAR}) in {text!r}")
    return moment
