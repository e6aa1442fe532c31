"""The instants a cron expression fires at in a time zone, exactly as the CronJob controller's
robfig/cron v3 `SpecSchedule.Next` finds them, daylight saving time included (what that means
is described in jobscheduler.domain.cron's docstring)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import Final

from jobscheduler.domain.cron import CronSpec

_SECOND: Final = timedelta(seconds=1)

_MINUTE: Final = timedelta(minutes=1)

_HOUR: Final = timedelta(hours=1)


def next_runs(spec: CronSpec, tz: zoneinfo.ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next `count` instants strictly after `after` at which `spec` fires on the wall clock of
    `tz`, as aware UTC datetimes, exactly as robfig/cron's `Next` chains them.

    Fewer are returned when the schedule does not fire within five years of the last one found.
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be an aware datetime")
    if count < 0:
        raise ValueError("count must not be negative")
    runs: list[datetime] = []
    instant = after.astimezone(UTC)
    while len(runs) < count:
        found = _Search(spec, tz, instant).run()
        if found is None:
            break
        runs.append(found)
        instant = found
    return runs


class _Search:
    """One robfig `Next`: a walk over instants, checking each field on the wall clock of `tz`.

    Each `_seek_*` advances its field until it matches and answers whether the field wrapped
    around, in which case every field is checked again from the month down. The first field
    that moves also resets the fields below it (robfig's `added` flag).
    """

    __slots__ = ("_fresh", "_spec", "_t", "_tz")

    def __init__(self, spec: CronSpec, tz: zoneinfo.ZoneInfo, after: datetime) -> None:
        self._spec = spec
        self._tz = tz
        self._t = after.replace(microsecond=0) + _SECOND  # UTC
        self._fresh = True

    def run(self) -> datetime | None:
        year_limit = self._local().year + 5
        while self._local().year <= year_limit:
            if self._seek_month() or self._seek_day() or self._seek_hour() or self._seek_minute():
                continue
            if self._seek_second():
                continue
            return self._t
        return None

    def _local(self) -> datetime:
        return self._t.astimezone(self._tz)

    def _seek_month(self) -> bool:
        while (local := self._local()).month not in self._spec.months:
            if self._fresh:
                self._fresh = False
                local = self._set_wall_clock(local.year, local.month, 1)
            local = self._set_wall_clock(local.year, local.month + 1, local.day, local.hour, local.minute)
            if local.month == 1:
                return True
        return False

    def _seek_day(self) -> bool:
        while not _day_matches(self._spec, (local := self._local()).date()):
            if self._fresh:
                self._fresh = False
                local = self._set_wall_clock(local.year, local.month, local.day)
            local = self._set_wall_clock(local.year, local.month, local.day + 1, local.hour, local.minute)
            if local.hour:
                # That day's midnight fell into a DST gap and Go moved it off the day; robfig
                # steps back onto the day (spec.go:125-131).
                self._t += _HOUR * (24 - local.hour) if local.hour > 12 else -_HOUR * local.hour
                local = self._local()
            if local.day == 1:
                return True
        return False

    def _seek_hour(self) -> bool:
        local = self._local()
        if local.hour in self._spec.hours:
            return False
        if self._fresh:
            self._fresh = False
            local = self._set_wall_clock(local.year, local.month, local.day, local.hour)
        return self._step(_HOUR, local.hour, self._spec.hours, 24)

    def _seek_minute(self) -> bool:
        local = self._local()
        if local.minute in self._spec.minutes:
            return False
        if self._fresh:
            self._fresh = False
            self._t = self._t.replace(second=0)
        return self._step(_MINUTE, local.minute, self._spec.minutes, 60)

    def _step(self, unit: timedelta, current: int, allowed: frozenset[int], size: int) -> bool:
        """Add `unit` until the field (hour or minute, now `current`) is allowed or wraps to 0;
        answer whether it wrapped."""
        target = min((value for value in allowed if value > current), default=size)
        jumped = self._t + unit * (target - current)
        # Without a clock change on the way the wall clock moves with real time, and one jump
        # lands where robfig's steps of one unit stop.
        if _offset(jumped, self._tz) == _offset(self._t, self._tz):
            self._t = jumped
            return target == size
        while True:
            self._t += unit
            local = self._local()
            value = local.hour if unit == _HOUR else local.minute
            if value == 0:
                return True
            if value in allowed:
                return False

    def _seek_second(self) -> bool:
        # A five-field schedule fires at second 0 only. Every zone's offset has been whole
        # minutes since 1972, so one jump lands where robfig's second-by-second steps do.
        second = self._local().second
        if second == 0:
            return False
        self._fresh = False
        self._t += _SECOND * (60 - second)
        return True

    def _set_wall_clock(self, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
        self._t = _wall_clock(self._tz, year, month, day, hour, minute)
        return self._local()


def _wall_clock(tz: zoneinfo.ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """The instant Go's `time.Date` gives for a wall-clock time in `tz`, as UTC.

    Out-of-range values roll over (month 13, day 32) as in Go. For a wall time in a gap or an
    overlap Go reads the offset at the wall time taken as UTC, then once more at the instant that
    gives; Python's `fold` picks differently, which is why this does not use it.
    """
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    as_utc = datetime(year, month, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour, minutes=minute)
    guess = _offset(as_utc, tz)
    return as_utc - _offset(as_utc - guess, tz)


def _offset(instant: datetime, tz: zoneinfo.ZoneInfo) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _day_matches(spec: CronSpec, day: date) -> bool:
    in_month = day.day in spec.days_of_month
    in_week = day.isoweekday() % 7 in spec.days_of_week
    if spec.any_day_of_month or spec.any_day_of_week:
        return in_month and in_week
    return in_month or in_week
