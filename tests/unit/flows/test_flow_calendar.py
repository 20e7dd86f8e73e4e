"""Business-hours calendars on real dates: Bulgarian holidays, DST weekends in Sofia, overrides, overnight hours."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from ivr.flows.calendar import Calendar, calendar_status, is_open, next_opening, parse_days, parse_hours

SOFIA = ZoneInfo("Europe/Sofia")
UTC = dt.UTC


def office(**extra: object) -> Calendar:
    data: dict[str, object] = {
        "timezone": "Europe/Sofia",
        "holidays": "BG",
        "hours": {"mon-fri": "09:00-18:00", "sat": "10:00-14:00"},
    }
    data.update(extra)
    return Calendar.model_validate(data)


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=SOFIA)


def test_ordinary_weekday_hours() -> None:
    cal = office()
    assert is_open(cal, at(2027, 3, 4, 9, 0))  # Thursday 09:00: opening minute counts
    assert is_open(cal, at(2027, 3, 4, 17, 59))
    assert not is_open(cal, at(2027, 3, 4, 18, 0))  # closing minute does not
    assert not is_open(cal, at(2027, 3, 4, 8, 59))
    assert not is_open(cal, at(2027, 3, 7, 12))  # Sunday: not listed


def test_liberation_day_3_march_is_closed() -> None:
    cal = office()
    status = calendar_status(cal, at(2027, 3, 3, 11))  # a Wednesday
    assert not status.open
    assert status.reason == "holiday"
    assert status.holiday == "Liberation Day"


def test_orthodox_easter_monday_2027_is_closed_and_western_easter_monday_is_not() -> None:
    cal = office()
    assert not is_open(cal, at(2027, 5, 3, 11))  # Orthodox Easter is 2 May 2027
    assert calendar_status(cal, at(2027, 5, 3, 11)).reason == "holiday"
    assert is_open(cal, at(2027, 3, 29, 11))  # Western Easter Monday: a working day in Bulgaria


def test_without_holidays_the_same_day_is_open() -> None:
    assert is_open(office(holidays=None), at(2027, 3, 3, 11))


def test_override_beats_holiday_and_weekly_hours() -> None:
    cal = office(overrides={"2027-03-03": "10:00-12:00", "2027-03-04": "closed", "2027-03-07": "24h"})
    assert is_open(cal, at(2027, 3, 3, 11))  # open on the holiday, by override
    assert not is_open(cal, at(2027, 3, 3, 13))
    assert calendar_status(cal, at(2027, 3, 3, 13)).reason == "override"
    assert not is_open(cal, at(2027, 3, 4, 11))  # a normal Thursday closed by override
    assert is_open(cal, at(2027, 3, 7, 3))  # a Sunday opened all day


def test_spring_forward_weekend_keeps_wall_clock_hours() -> None:
    # In Sofia clocks go from 03:00 EET to 04:00 EEST on Sunday 28 March 2027.
    cal = office()
    saturday_evening = at(2027, 3, 27, 19)
    opening = next_opening(cal, saturday_evening)
    assert opening == at(2027, 3, 29, 9)
    assert opening is not None and opening.utcoffset() == dt.timedelta(hours=3)
    assert opening.astimezone(UTC) == dt.datetime(2027, 3, 29, 6, tzinfo=UTC)
    # the same wall-clock hour a week before was an hour later in UTC
    assert next_opening(cal, at(2027, 3, 20, 19)) == dt.datetime(2027, 3, 22, 7, tzinfo=UTC)


def test_fall_back_weekend_keeps_wall_clock_hours() -> None:
    # 31 October 2027: 04:00 EEST -> 03:00 EET.
    cal = office()
    opening = next_opening(cal, at(2027, 10, 30, 15))
    assert opening is not None and opening.astimezone(UTC) == dt.datetime(2027, 11, 1, 7, tzinfo=UTC)
    # judged in UTC instants, 08:30 UTC on Monday is 10:30 in Sofia: open
    assert is_open(cal, dt.datetime(2027, 11, 1, 8, 30, tzinfo=UTC))
    assert not is_open(cal, dt.datetime(2027, 11, 1, 6, 30, tzinfo=UTC))  # 08:30 local


def test_opening_inside_the_spring_forward_gap_is_the_moment_of_the_change() -> None:
    cal = Calendar.model_validate({"timezone": "Europe/Sofia", "hours": {"sun": "03:30-05:00"}})
    opening = next_opening(cal, at(2027, 3, 27, 12))
    assert opening is not None
    assert opening.astimezone(UTC) == dt.datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 04:00 EEST, when 03:30 is skipped
    assert is_open(cal, opening)


def test_next_opening_skips_a_holiday_and_is_now_when_open() -> None:
    cal = office()
    assert next_opening(cal, at(2027, 3, 2, 19)) == at(2027, 3, 4, 9)  # Tue evening -> Thu (Wed 3 March closed)
    now = at(2027, 3, 4, 10, 30)
    assert next_opening(cal, now) == now


def test_next_opening_is_none_for_a_calendar_that_never_opens() -> None:
    assert next_opening(Calendar.model_validate({"hours": {}}), at(2027, 1, 1, 0), horizon_days=30) is None


def test_overnight_range_runs_past_midnight_into_the_next_day() -> None:
    cal = Calendar.model_validate({"hours": {"fri": "22:00-02:00"}})
    assert is_open(cal, at(2027, 3, 5, 23))  # Friday 23:00
    assert is_open(cal, at(2027, 3, 6, 1, 30))  # Saturday 01:30, from Friday's range
    assert not is_open(cal, at(2027, 3, 6, 2))
    assert not is_open(cal, at(2027, 3, 5, 1))  # Friday 01:00: Thursday had no late range


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        is_open(office(), dt.datetime(2027, 3, 4, 10))


def test_day_and_hour_specs() -> None:
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days("sat, sun") == parse_days("weekend")
    assert parse_hours("09:00-12:00, 13:00-18:00") == ((540, 720), (780, 1080))
    assert parse_hours(["13:00-18:00", "09:00-12:00"]) == ((540, 720), (780, 1080))
    assert parse_hours("closed") == ()
    assert parse_hours("24h") == ((0, 1440),)
    assert parse_hours("00:00-24:00") == ((0, 1440),)
    with pytest.raises(ValueError, match="overlap"):
        parse_hours("09:00-13:00, 12:00-18:00")
    with pytest.raises(ValueError, match="not a time range"):
        parse_hours("9am-6pm")
    with pytest.raises(ValueError, match="is not a day"):
        parse_days("mon-fry")


def test_a_day_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="fri is in both 'mon-fri' and 'fri'"):
        Calendar.model_validate({"hours": {"mon-fri": "09:00-18:00", "fri": "09:00-14:00"}})


def test_unknown_zone_and_country_are_refused_with_suggestions() -> None:
    with pytest.raises(ValidationError, match="did you mean Europe/Sofia"):
        Calendar.model_validate({"timezone": "Europe/Sofa"})
    with pytest.raises(ValidationError, match="is not a country with a holiday calendar"):
        Calendar.model_validate({"holidays": "XX"})
