"""Recurring schedules as pure values: cron expressions as Kubernetes CronJobs read them, IANA
time zones, fixed intervals, and the instants each of them fires at.

Cron schedules become batch/v1 CronJobs (spec.schedule, spec.timeZone); the CronJob controller
parses them with github.com/robfig/cron/v3 `ParseStandard` and walks them with
`SpecSchedule.Next` in spec.timeZone. `parse_cron` accepts a subset of what that parser accepts
and `next_runs` returns the instants `Next` returns, so what the service shows is what the
cluster runs. Intervals that are not cron schedules run in the service itself.

What robfig/cron v3.0.1 does around daylight saving time (spec.go, read at tag v3.0.1):

- `Next` converts the time into the schedule's zone (spec.go:77-79), starts at the next whole
  second (82), and gives up after five years, returning the zero time (87-93); `next_runs`
  then returns fewer instants than asked for.
- Hours, minutes and seconds are advanced by adding real durations (143, 155, 167) and checked
  on the zone's wall clock; a wrap of any field re-checks every field (the `goto WRAP` at 108,
  134, 146, 158, 170). So a schedule fires at each instant whose wall clock matches:
  - a wall time inside the spring-forward gap never happens and is skipped, not moved: "30 2 * * *"
    in Europe/Berlin runs at 01:30Z on 2026-03-28, not at all on 2026-03-29 (02:00 jumps to
    03:00), then at 00:30Z on 2026-03-30;
  - a wall time inside the fall-back hour happens twice and fires twice: "30 2 * * *" in
    Europe/Berlin runs at 00:30Z (02:30 CEST) and 01:30Z (02:30 CET) on 2026-10-25. The CronJob
    controller names each Job after its scheduled minute, so both runs happen;
  - hourly and "*/15" schedules keep a steady rhythm in UTC across both changes: no run is
    lost, none is doubled; the local day simply has 23 or 25 hours.
- Only when a field is first reset does `Next` build a wall time with Go's `time.Date` (102,
  120, 141); for a wall time that does not exist, or exists twice, Go takes the offset in force
  at that wall time read as UTC, re-checked once. `_wall_clock` reproduces this: it decides
  where robfig lands in zones whose clocks skip midnight (the day-loop adjustment at 125-131).
- Days match as robfig's `dayMatches` (179-188): when day-of-month or day-of-week was written
  with `*` or `?` (and no step above 1, parser.go:298), both must match; otherwise either.

Deliberately stricter than robfig, so every expression accepted here is accepted by Kubernetes
and means the same: `?` only in the day fields, no empty list items or `*` inside a range, steps
no larger than the field's maximum, lower-case descriptors only, and no expression that can
never fire (such as "0 0 30 2 *", which Kubernetes accepts and then reports as an error).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Final

from jobscheduler.domain.errors import InvalidArgumentError

# The anchor of an interval schedule given without a start: runs fall on whole multiples of the
# interval since the Unix epoch, so "30m" runs at :00 and :30 of every hour in UTC.
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MIN_INTERVAL: Final = timedelta(minutes=1)
MAX_INTERVAL: Final = timedelta(days=366)

DESCRIPTORS: Final[Mapping[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_WEEKDAY_NAMES: Final = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
# Longest day each month can have; February counts its leap day.
_MONTH_DAYS: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_SHOWN_CHARS: Final = 64  # how much of a caller's text an error message quotes
_DIGITS = re.compile(r"[0-9]+")
_INTERVAL = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
# Kubernetes' own check on spec.timeZone (pkg/apis/batch/validation): each path component.
_TIME_ZONE_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")
# Names in the tz database that are not places: the host's own zone and a placeholder.
_NOT_TIME_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})
_SECOND: Final = timedelta(seconds=1)
_MINUTE: Final = timedelta(minutes=1)
_HOUR: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int]
    allowed: str  # for error messages


_FIELDS: Final = (
    _Field("minute", 0, 59, {}, "0-59"),
    _Field("hour", 0, 23, {}, "0-23"),
    _Field("day-of-month", 1, 31, {}, "1-31"),
    _Field("month", 1, 12, _MONTH_NAMES, "1-12 or JAN-DEC"),
    _Field("day-of-week", 0, 6, _WEEKDAY_NAMES, "0-6 or SUN-SAT (Sunday is 0)"),
)


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed cron expression: the values each field allows.

    `expression` is the caller's text without surrounding white space; it is what goes into the
    CronJob's spec.schedule (the API server's robfig parse rejects " @daily").
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 is Sunday
    # robfig's "star bit": the day field was written as `*` or `?`, so days match when both
    # day fields match; when neither was, either one matching is enough.
    any_day_of_month: bool
    any_day_of_week: bool


def parse_cron(expr: str) -> CronSpec:
    """Parse a five-field cron expression or a descriptor (@daily, ...) as Kubernetes does.

    Raises InvalidArgumentError("cron", ...) naming the bad part and what is allowed, including
    for expressions that can never fire.
    """
    text = expr.strip()
    if not text:
        raise _cron_error(
            "must not be empty; give five fields such as '0 3 * * *' or a descriptor such as @daily"
        )
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise _cron_error(
            "a time zone prefix (TZ= or CRON_TZ=) is not allowed in the schedule; "
            "set the time_zone field instead"
        )
    if text.startswith("@"):
        if text.lower().startswith("@every"):
            raise _cron_error(
                f"{_shown(text)} is not a cron schedule; use an interval schedule for a fixed period"
            )
        if text not in DESCRIPTORS:
            raise _cron_error(f"unknown descriptor {_shown(text)}; allowed: {', '.join(DESCRIPTORS)}")
        spec = _parse_fields(text, DESCRIPTORS[text].split())
    else:
        fields = text.split()
        if len(fields) != len(_FIELDS):
            raise _cron_error(
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)} "
                f"in {_shown(text)}; seconds and years are not supported"
            )
        spec = _parse_fields(text, fields)
    check_satisfiable(spec)
    return spec


def check_satisfiable(spec: CronSpec) -> None:
    """Reject a schedule that never fires, such as "0 0 30 2 *" (February never has a 30th).

    Only a day-of-month restricted together with `*` as day-of-week can be impossible: a
    restricted day-of-week matches some day of every month.
    """
    if spec.any_day_of_month or not spec.any_day_of_week:
        return
    if any(day <= _MONTH_DAYS[month - 1] for month in spec.months for day in spec.days_of_month):
        return
    days = ",".join(str(day) for day in sorted(spec.days_of_month))
    months = ",".join(_month_name(month) for month in sorted(spec.months))
    raise _cron_error(
        f"{_shown(spec.expression)} never runs: day-of-month {days} does not exist in {months}; "
        "choose days that exist in those months"
    )


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


def parse_time_zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone such as "Europe/Berlin"; "" means UTC.

    The name goes into the CronJob's spec.timeZone unchanged (`ZoneInfo.key`), so it must also
    pass Kubernetes' check: the same characters, no "Local".
    """
    if name == "":
        return zoneinfo.ZoneInfo("UTC")
    hint = "use an IANA name such as Europe/Berlin, America/New_York or UTC"
    if name.lower() in ("local", "localtime"):
        raise InvalidArgumentError(
            "time_zone", f"{_shown(name)} means the cluster's own zone, which nobody can see; {hint}"
        )
    if (
        any(_TIME_ZONE_PART.fullmatch(part) is None or part in (".", "..") for part in name.split("/"))
        or name.startswith("-")
        or "/-" in name
        or name in _NOT_TIME_ZONES
        or name not in _known_time_zones()
    ):
        raise InvalidArgumentError(
            "time_zone", f"unknown time zone {_shown(name)} (names are case-sensitive); {hint}"
        )
    return zoneinfo.ZoneInfo(name)


def parse_interval(text: str, *, minimum: timedelta = MIN_INTERVAL) -> timedelta:
    """A period such as "30m", "6h", "1h30m", "90s" or "2d": whole numbers with the units d, h, m
    and s, largest first, each at most once, from 1 minute to 366 days.

    Fractions ("1.5h") are refused in favour of "1h30m"; a day is 24 hours, whatever the clocks do.
    """
    stripped = text.strip()
    match = _INTERVAL.fullmatch(stripped)
    if not stripped or match is None:
        raise InvalidArgumentError(
            "interval",
            f"{_shown(text)} is not a period; write whole numbers with units d, h, m, s, largest first, "
            "such as 30m, 6h, 1h30m or 7d",
        )
    days, hours, minutes, seconds = (_whole_number(group or "0") for group in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < minimum.total_seconds() or total > MAX_INTERVAL.total_seconds():
        low = _describe_period(minimum)
        raise InvalidArgumentError(
            "interval", f"{_shown(text)} is out of range; an interval must be from {low} to 366d"
        )
    return timedelta(seconds=total)


def _describe_period(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def interval_as_cron(interval: timedelta, start: datetime | None = None) -> str | None:
    """A cron expression, read in UTC, that fires at exactly the instants start + k * interval, or
    None when no single expression can.

    Without a start the anchor is the Unix epoch (`EPOCH`). A cron expression has no start: it
    also fires before `start`, so it stands for the interval only from start - interval on.
    Expressible are: whole minutes dividing an hour, whole hours dividing a day, one day and one
    week, each with a start on a whole minute. Anything else (45m, 5h, 2d, a start at :17
    seconds) needs the service to run it.
    """
    if interval <= timedelta(0):
        raise ValueError("interval must be positive")
    anchor = EPOCH if start is None else _aware_utc(start, "start")
    if anchor.second or anchor.microsecond or interval % _MINUTE:
        return None
    minutes = interval // _MINUTE
    if 60 % minutes == 0:
        return f"{_step_field(anchor.minute, minutes, 0, 59)} * * * *"
    if minutes % 60:
        return None
    hours = minutes // 60
    if 24 % hours == 0:
        return f"{anchor.minute} {_step_field(anchor.hour, hours, 0, 23)} * * *"
    if hours == 7 * 24:
        return f"{anchor.minute} {anchor.hour} * * {anchor.isoweekday() % 7}"
    return None


def next_interval_runs(
    interval: timedelta, start: datetime | None, after: datetime, count: int
) -> list[datetime]:
    """The first `count` instants start + k * interval strictly after `after`, as aware UTC
    datetimes; k >= 0 when a start is given, any integer on the epoch grid when not."""
    if interval <= timedelta(0):
        raise ValueError("interval must be positive")
    if count < 0:
        raise ValueError("count must not be negative")
    anchor = EPOCH if start is None else _aware_utc(start, "start")
    # Whole microseconds, floor division: exact for instants before the anchor as well.
    k = (_aware_utc(after, "after") - anchor) // interval + 1
    if start is not None:
        k = max(k, 0)
    return [anchor + (k + i) * interval for i in range(count)]


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


def _parse_fields(expression: str, fields: list[str]) -> CronSpec:
    parsed = [_parse_field(text, field) for text, field in zip(fields, _FIELDS, strict=True)]
    return CronSpec(
        expression=expression,
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days_of_month=parsed[2][0],
        months=parsed[3][0],
        days_of_week=parsed[4][0],
        any_day_of_month=parsed[2][1],
        any_day_of_week=parsed[4][1],
    )


def _parse_field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The values a field allows and whether it was written as a whole-range `*` or `?`."""
    values: set[int] = set()
    star = False
    for item in text.split(","):
        if not item:
            raise _cron_error(f"{field.name} field {_shown(text)} has an empty list item")
        range_text, slash, step_text = item.partition("/")
        if "/" in step_text:
            raise _cron_error(f"{field.name} field item {_shown(item)} has more than one '/'")
        if range_text in ("*", "?"):
            if range_text == "?" and field.name not in ("day-of-month", "day-of-week"):
                raise _cron_error(
                    f"'?' is only allowed in the day-of-month and day-of-week fields, not in {field.name}"
                )
            low, high = field.low, field.high
        else:
            low_text, hyphen, high_text = range_text.partition("-")
            low = _parse_value(low_text, field, item)
            high = _parse_value(high_text, field, item) if hyphen else (field.high if slash else low)
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text) or not 1 <= _whole_number(step_text) <= field.high:
                raise _cron_error(
                    f"step {_shown(step_text)} in {field.name} field item {_shown(item)} must be a whole "
                    f"number from 1 to {field.high}; for longer periods use an interval schedule"
                )
            step = _whole_number(step_text)
        if low > high:
            raise _cron_error(
                f"range {_shown(item)} in the {field.name} field runs backwards; write the smaller value "
                "first (ranges do not wrap around), or list both parts"
            )
        # robfig: `*` with a step above 1 counts as a restriction (parser.go:298).
        star = star or (range_text in ("*", "?") and step == 1)
        values.update(range(low, high + 1, step))
    return frozenset(values), star


def _parse_value(text: str, field: _Field, item: str) -> int:
    if _DIGITS.fullmatch(text):
        value = _whole_number(text)
    elif text.lower() in field.names:
        return field.names[text.lower()]
    else:
        what = "a number or a name" if field.names else "a number"
        raise _cron_error(
            f"{_shown(text)} in {field.name} field item {_shown(item)} is not {what}; "
            f"allowed: {field.allowed}"
        )
    if not field.low <= value <= field.high:
        sunday = field.name == "day-of-week" and value == 7
        hint = "; Kubernetes does not accept 7 for Sunday" if sunday else ""
        raise _cron_error(f"{field.name} {value} is out of range; allowed: {field.allowed}{hint}")
    return value


@cache
def _known_time_zones() -> frozenset[str]:
    # Scans the zone database once; the `tzdata` package provides it where the image has none.
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def _step_field(first: int, step: int, low: int, high: int) -> str:
    """A cron field for first, first + step, ... up to `high`, where first is taken mod step."""
    start = low + (first - low) % step
    values = list(range(start, high + 1, step))
    if len(values) == 1:
        return str(values[0])
    if start == low:
        return "*" if step == 1 else f"*/{step}"
    if len(values) <= 4:
        return ",".join(str(value) for value in values)
    return f"{start}-{high}/{step}"


def _whole_number(digits: str) -> int:
    """The value of a run of digits, capped: int() refuses strings of over 4300 digits."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 12 else 10**12


def _aware_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return moment.astimezone(UTC)


def _month_name(month: int) -> str:
    return next(name for name, number in _MONTH_NAMES.items() if number == month).upper()


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def _cron_error(message: str) -> InvalidArgumentError:
    return InvalidArgumentError("cron", message)
