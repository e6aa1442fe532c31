"""Fixed intervals as schedules: "30m", "6h", "1h30m", anchored at a start time or at whole
multiples since the Unix epoch; which of them a cron expression expresses exactly (those run as
ordinary CronJobs), and the instants the others fire at (run by the service's leader)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from jobscheduler.domain.cron import aware_utc, step_field, whole_number
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import shown

# The anchor of an interval schedule given without a start: runs fall on whole multiples of the
# interval since the Unix epoch, so "30m" runs at :00 and :30 of every hour in UTC.
MINUTE: Final = timedelta(minutes=1)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

MIN_INTERVAL: Final = timedelta(minutes=1)

MAX_INTERVAL: Final = timedelta(days=366)

_INTERVAL = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")


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
            f"{shown(text)} is not a period; write whole numbers with units d, h, m, s, largest first, "
            "such as 30m, 6h, 1h30m or 7d",
        )
    days, hours, minutes, seconds = (whole_number(group or "0") for group in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < minimum.total_seconds() or total > MAX_INTERVAL.total_seconds():
        low = _describe_period(minimum)
        raise InvalidArgumentError(
            "interval", f"{shown(text)} is out of range; an interval must be from {low} to 366d"
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
    anchor = EPOCH if start is None else aware_utc(start, "start")
    if anchor.second or anchor.microsecond or interval % MINUTE:
        return None
    minutes = interval // MINUTE
    if 60 % minutes == 0:
        return f"{step_field(anchor.minute, minutes, 0, 59)} * * * *"
    if minutes % 60:
        return None
    hours = minutes // 60
    if 24 % hours == 0:
        return f"{anchor.minute} {step_field(anchor.hour, hours, 0, 23)} * * *"
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
    anchor = EPOCH if start is None else aware_utc(start, "start")
    # Whole microseconds, floor division: exact for instants before the anchor as well.
    k = (aware_utc(after, "after") - anchor) // interval + 1
    if start is not None:
        k = max(k, 0)
    return [anchor + (k + i) * interval for i in range(count)]
