"""Business hours: named calendars with weekly hours in a time zone, public holidays and dated overrides.

A calendar is written in YAML (in a flow's ``calendars:`` section or in the daemon's calendar file)::

    office:
      timezone: Europe/Sofia          # any IANA zone; wall-clock hours are kept across DST changes
      holidays: BG                    # public holidays of a country, from the `holidays` package; closed on them
      hours:
        mon-fri: 09:00-18:00
        sat: 10:00-14:00              # days not listed are closed
      overrides:                      # a dated override beats holidays and weekly hours
        2027-12-24: 09:00-13:00
        2027-12-31: closed

Hours are wall-clock ranges in the calendar's zone: ``09:00-18:00``; several with commas (``09:00-12:00, 13:00-18:00``)
or as a list; ``closed``; ``24h`` (the whole day). A range whose end is not after its start runs past midnight
(``22:00-02:00``). ``24:00`` is the end of the day.

The functions here are pure: they take the moment to judge as an argument and never read a clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import holidays as holidays_lib
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "DAY_NAMES",
    "Calendar",
    "CalendarStatus",
    "DaySet",
    "Interval",
    "calendar_status",
    "is_open",
    "next_opening",
    "parse_days",
    "parse_hours",
    "time_zone",
]

DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES: Final = {
    "daily": DAY_NAMES,
    "everyday": DAY_NAMES,
    "weekdays": DAY_NAMES[:5],
    "weekend": DAY_NAMES[5:],
}
_RANGE_RE: Final = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
MINUTES_PER_DAY: Final = 24 * 60

DaySet = frozenset[int]
"""Weekdays as numbers, Monday = 0 (``datetime.weekday()``)."""

Interval = tuple[int, int]
"""Minutes from local midnight: ``(540, 1080)`` is 09:00-18:00; an end above 1440 runs into the next day."""


def parse_days(text: str) -> DaySet:
    """``"mon-fri"``, ``"sat,sun"``, ``"daily"``, ``"weekend"``, ``"fri-mon"`` (wraps) -> weekday numbers.

    Raises ``ValueError`` whose message names what is wrong and what to write."""
    days: set[int] = set()
    for raw in text.split(","):
        part = raw.strip().lower()
        if not part:
            raise ValueError(f"empty day in {text!r}; write e.g. mon-fri or sat,sun")
        if part in _DAY_ALIASES:
            days.update(DAY_NAMES.index(d) for d in _DAY_ALIASES[part])
            continue
        first, sep, last = part.partition("-")
        first, last = first.strip()[:3], last.strip()[:3]
        for name in (first, last) if sep else (first,):
            if name not in DAY_NAMES:
                raise ValueError(
                    f"{raw.strip()!r} is not a day; write mon, tue, wed, thu, fri, sat, sun, a range like mon-fri, "
                    "or daily/weekdays/weekend"
                )
        start = DAY_NAMES.index(first)
        end = DAY_NAMES.index(last) if sep else start
        day = start
        while True:
            days.add(day)
            if day == end:
                break
            day = (day + 1) % 7
    return frozenset(days)


def _parse_clock(hours: str, minutes: str, text: str) -> int:
    h, m = int(hours), int(minutes)
    if m >= 60 or h > 24 or (h == 24 and m != 0):
        raise ValueError(f"{text!r}: {hours}:{minutes} is not a time of day; write 00:00 to 24:00")
    return h * 60 + m


def parse_range(text: str) -> Interval:
    """``"09:00-18:00"`` -> ``(540, 1080)``; ``"22:00-02:00"`` -> ``(1320, 1560)`` (past midnight)."""
    match = _RANGE_RE.match(text)
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a time range; write HH:MM-HH:MM, e.g. 09:00-18:00")
    start = _parse_clock(match[1], match[2], text)
    end = _parse_clock(match[3], match[4], text)
    if start == MINUTES_PER_DAY:
        raise ValueError(f"{text.strip()!r}: a range cannot start at 24:00; write 00:00")
    if end <= start:
        end += MINUTES_PER_DAY
    return start, end


def parse_hours(value: str | Iterable[str]) -> tuple[Interval, ...]:
    """Opening hours of one day: ``"closed"``, ``"24h"``, ``"09:00-18:00"``, ``"09:00-12:00, 13:00-18:00"`` or a list
    of ranges. Returns sorted, non-overlapping intervals; raises ``ValueError`` on overlaps or bad ranges."""
    parts: list[str]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("closed", "off", ""):
            return ()
        if text in ("24h", "open", "all day"):
            return ((0, MINUTES_PER_DAY),)
        parts = text.split(",")
    else:
        parts = list(value)
    intervals = sorted(parse_range(p) for p in parts)
    for (s1, e1), (s2, _e2) in itertools.pairwise(intervals):
        if s2 < e1:
            raise ValueError(f"ranges {_fmt(s1)}-{_fmt(e1)} and {_fmt(s2)}-... overlap; merge them into one range")
    return tuple(intervals)


def _fmt(minutes: int) -> str:
    return f"{minutes // 60 % 24 if minutes != MINUTES_PER_DAY else 24:02d}:{minutes % 60:02d}"


@functools.lru_cache(maxsize=256)
def time_zone(name: str) -> ZoneInfo:
    """The zone called ``name``; raises ``ValueError`` with a suggestion when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        import difflib

        close = difflib.get_close_matches(name, sorted(available_timezones()), n=1)
        hint = f"did you mean {close[0]}?" if close else "write an IANA zone such as Europe/Sofia"
        raise ValueError(f"unknown time zone {name!r}; {hint}") from None


def _check_zone(value: str) -> str:
    try:
        time_zone(value)
    except ValueError as exc:
        raise PydanticCustomError("time_zone", str(exc)) from None
    return value


TimeZoneName = Annotated[
    str,
    BeforeValidator(lambda v: _check_zone(v) if isinstance(v, str) else v),
    WithJsonSchema(
        {"type": "string", "description": "IANA time zone, e.g. Europe/Sofia", "examples": ["Europe/Sofia"]}
    ),
]

_HOURS_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [
        {
            "type": "string",
            "description": "closed, 24h, HH:MM-HH:MM or several ranges separated by commas",
            "examples": ["09:00-18:00", "closed", "24h", "09:00-12:00, 13:00-18:00"],
        },
        {"type": "array", "items": {"type": "string", "pattern": r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$"}},
    ]
}


def _hours_validator(value: Any) -> Any:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        try:
            parse_hours(value)
        except ValueError as exc:
            raise PydanticCustomError("hours", str(exc)) from None
        return value
    if isinstance(value, int):  # 0900-1800 written unquoted can never arrive here as int, but 9 can
        raise PydanticCustomError("hours", "hours must be text; write e.g. 09:00-18:00, closed or 24h")
    return value


HoursText = Annotated[str | list[str], BeforeValidator(_hours_validator), WithJsonSchema(_HOURS_SCHEMA)]


class Calendar(BaseModel):
    """A named business-hours calendar."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    timezone: TimeZoneName = "Europe/Sofia"
    """IANA time zone the hours are written in."""
    holidays: str | None = None
    """Country code whose public holidays close the line, e.g. BG (the `holidays` package)."""
    hours: dict[str, HoursText] = Field(default_factory=dict)
    """Weekly hours: day or days (mon-fri, sat, daily) -> 09:00-18:00, closed or 24h. Unlisted days: closed."""
    overrides: dict[dt.date, HoursText] = Field(default_factory=dict)
    """Dated exceptions (YYYY-MM-DD -> hours or closed); they win over holidays and weekly hours."""

    _weekly: tuple[tuple[Interval, ...], ...] = PrivateAttr(default=((),) * 7)
    _overrides: dict[dt.date, tuple[Interval, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("holidays")
    @classmethod
    def _check_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        supported = holidays_lib.list_supported_countries()
        if code not in supported:
            import difflib

            close = difflib.get_close_matches(code, sorted(supported), n=1)
            hint = f"did you mean {close[0]}?" if close else "write a country code such as BG"
            raise PydanticCustomError(
                "holidays", "{value} is not a country with a holiday calendar", {"value": repr(value), "hint": hint}
            )
        return code

    @field_validator("hours")
    @classmethod
    def _check_days(cls, value: dict[str, Any]) -> dict[str, Any]:
        seen: dict[int, str] = {}
        for spec in value:
            try:
                days = parse_days(spec)
            except ValueError as exc:
                raise PydanticCustomError("days", str(exc)) from None
            for day in sorted(days):
                if day in seen:
                    raise PydanticCustomError(
                        "days",
                        "{day} is in both {a} and {b}; list each day once",
                        {"day": DAY_NAMES[day], "a": repr(seen[day]), "b": repr(spec)},
                    )
                seen[day] = spec
        return value

    @model_validator(mode="after")
    def _cache(self) -> Calendar:
        weekly: list[tuple[Interval, ...]] = [()] * 7
        for spec, hours in self.hours.items():
            for day in parse_days(spec):
                weekly[day] = parse_hours(hours)
        self._weekly = tuple(weekly)
        self._overrides = {d: parse_hours(h) for d, h in self.overrides.items()}
        return self

    # ---- queries ------------------------------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return time_zone(self.timezone)

    def holiday_name(self, day: dt.date) -> str | None:
        """The public holiday on ``day`` (None when it is none or the calendar has no holidays)."""
        if self.holidays is None:
            return None
        name = _holidays_for(self.holidays, day.year).get(day)
        return str(name) if name is not None else None

    def day_hours(self, day: dt.date) -> tuple[tuple[Interval, ...], str]:
        """The opening intervals of local date ``day`` and why: ``"override"``, ``"holiday"`` or ``"hours"``."""
        if day in self._overrides:
            return self._overrides[day], "override"
        if self.holiday_name(day) is not None:
            return (), "holiday"
        return self._weekly[day.weekday()], "hours"


@functools.lru_cache(maxsize=64)
def _holidays_for(country: str, year: int) -> holidays_lib.HolidayBase:
    return holidays_lib.country_holidays(country, years=year)


@dataclass(frozen=True, slots=True)
class CalendarStatus:
    """The answer to "is the line open at this moment, and if not, why?"."""

    open: bool
    reason: Literal["hours", "holiday", "override"]
    """What decided: the weekly hours, a public holiday, or a dated override."""
    holiday: str | None = None
    """The holiday's name when ``reason == "holiday"``."""


def _local(calendar: Calendar, when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("pass an aware datetime (with tzinfo); a naive time is ambiguous")
    return when.astimezone(calendar.zone)


def calendar_status(calendar: Calendar, when: dt.datetime) -> CalendarStatus:
    """Whether ``calendar`` is open at ``when`` (an aware datetime), judged on the wall clock of its zone.

    An interval of the previous day that runs past midnight counts, unless that day (today) is closed by a holiday
    or an override — then today's rule wins from 00:00."""
    local = _local(calendar, when)
    today = local.date()
    minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    intervals, reason = calendar.day_hours(today)
    if any(start <= minute < end for start, end in intervals):
        return CalendarStatus(True, reason)  # type: ignore[arg-type]
    if reason == "hours":  # spill-over from yesterday's overnight range
        prev, _prev_reason = calendar.day_hours(today - dt.timedelta(days=1))
        if any(end > MINUTES_PER_DAY and minute < end - MINUTES_PER_DAY for _start, end in prev):
            return CalendarStatus(True, "hours")
    holiday = calendar.holiday_name(today) if reason == "holiday" else None
    return CalendarStatus(False, reason, holiday)  # type: ignore[arg-type]


def is_open(calendar: Calendar, when: dt.datetime) -> bool:
    """True when the line is open at ``when`` (an aware datetime)."""
    return calendar_status(calendar, when).open


def _wall_to_instant(zone: ZoneInfo, day: dt.date, minute: int) -> dt.datetime:
    """The first instant whose wall clock in ``zone`` reads ``day`` + ``minute`` or later.

    A wall time skipped by a spring-forward change (03:30 on the last Sunday of March in Sofia) does not exist;
    the answer then is the moment of the change (04:00 summer time). A repeated time takes its first occurrence."""
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    candidate = wall.replace(tzinfo=zone, fold=0)
    if candidate.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return candidate
    # In a gap: walk forward from the earlier reading, a minute at a time (gaps are at most a few hours).
    probe = wall.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
    for _ in range(24 * 60):
        if probe.astimezone(zone).replace(tzinfo=None) >= wall:
            return probe.astimezone(zone)
        probe += dt.timedelta(minutes=1)
    return candidate  # unreachable for real zones


def next_opening(calendar: Calendar, when: dt.datetime, *, horizon_days: int = 400) -> dt.datetime | None:
    """The first moment at or after ``when`` at which ``calendar`` is open, in the calendar's zone; ``when`` itself
    if open now; None if it never opens within ``horizon_days``."""
    if is_open(calendar, when):
        return _local(calendar, when)
    local = _local(calendar, when)
    zone = calendar.zone
    for offset in range(horizon_days + 1):
        day = local.date() + dt.timedelta(days=offset)
        intervals, _reason = calendar.day_hours(day)
        for start, _end in intervals:
            instant = _wall_to_instant(zone, day, start)
            if instant >= when and is_open(calendar, instant):
                return instant
    return None
