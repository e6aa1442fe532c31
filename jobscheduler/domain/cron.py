"""Cron expressions as Kubernetes CronJobs read them, and IANA time zones, as pure values; the
instants they fire at are found by jobscheduler.domain.cron_walk, fixed intervals are
jobscheduler.domain.interval.

Cron schedules become batch/v1 CronJobs (spec.schedule, spec.timeZone); the CronJob controller
parses them with github.com/robfig/cron/v3 `ParseStandard` and walks them with
`SpecSchedule.Next` in spec.timeZone. `parse_cron` accepts a subset of what that parser accepts
and `next_runs` returns the instants `Next` returns, so what the service shows is what the
cluster runs.

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
from datetime import UTC, datetime
from functools import cache
from typing import Final

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import shown

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
_DIGITS = re.compile(r"[0-9]+")
# Kubernetes' own check on spec.timeZone (pkg/apis/batch/validation): each path component.
_TIME_ZONE_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")
# Names in the tz database that are not places: the host's own zone and a placeholder.
_NOT_TIME_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})


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
                f"{shown(text)} is not a cron schedule; use an interval schedule for a fixed period"
            )
        if text not in DESCRIPTORS:
            raise _cron_error(f"unknown descriptor {shown(text)}; allowed: {', '.join(DESCRIPTORS)}")
        spec = _parse_fields(text, DESCRIPTORS[text].split())
    else:
        fields = text.split()
        if len(fields) != len(_FIELDS):
            raise _cron_error(
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)} "
                f"in {shown(text)}; seconds and years are not supported"
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
        f"{shown(spec.expression)} never runs: day-of-month {days} does not exist in {months}; "
        "choose days that exist in those months"
    )


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
            "time_zone", f"{shown(name)} means the cluster's own zone, which nobody can see; {hint}"
        )
    if (
        any(_TIME_ZONE_PART.fullmatch(part) is None or part in (".", "..") for part in name.split("/"))
        or name.startswith("-")
        or "/-" in name
        or name in _NOT_TIME_ZONES
        or name not in _known_time_zones()
    ):
        raise InvalidArgumentError(
            "time_zone", f"unknown time zone {shown(name)} (names are case-sensitive); {hint}"
        )
    return zoneinfo.ZoneInfo(name)


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
            raise _cron_error(f"{field.name} field {shown(text)} has an empty list item")
        range_text, slash, step_text = item.partition("/")
        if "/" in step_text:
            raise _cron_error(f"{field.name} field item {shown(item)} has more than one '/'")
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
            if not _DIGITS.fullmatch(step_text) or not 1 <= whole_number(step_text) <= field.high:
                raise _cron_error(
                    f"step {shown(step_text)} in {field.name} field item {shown(item)} must be a whole "
                    f"number from 1 to {field.high}; for longer periods use an interval schedule"
                )
            step = whole_number(step_text)
        if low > high:
            raise _cron_error(
                f"range {shown(item)} in the {field.name} field runs backwards; write the smaller value "
                "first (ranges do not wrap around), or list both parts"
            )
        # robfig: `*` with a step above 1 counts as a restriction (parser.go:298).
        star = star or (range_text in ("*", "?") and step == 1)
        values.update(range(low, high + 1, step))
    return frozenset(values), star


def _parse_value(text: str, field: _Field, item: str) -> int:
    if _DIGITS.fullmatch(text):
        value = whole_number(text)
    elif text.lower() in field.names:
        return field.names[text.lower()]
    else:
        what = "a number or a name" if field.names else "a number"
        raise _cron_error(
            f"{shown(text)} in {field.name} field item {shown(item)} is not {what}; "
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


def step_field(first: int, step: int, low: int, high: int) -> str:
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


def whole_number(digits: str) -> int:
    """The value of a run of digits, capped: int() refuses strings of over 4300 digits."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 12 else 10**12


def aware_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return moment.astimezone(UTC)


def _month_name(month: int) -> str:
    return next(name for name, number in _MONTH_NAMES.items() if number == month).upper()


def _cron_error(message: str) -> InvalidArgumentError:
    return InvalidArgumentError("cron", message)
