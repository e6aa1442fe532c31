"""BackfillSchedule's plan: which run times of a schedule fall in a past range [start, end), or
why the request is refused (InvalidArgumentError naming the field). No I/O: the use case
(jobscheduler.app.schedules) creates one Job per time, named deterministically, so a repeat or
a concurrent call creates each run once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.timestamps import format_rfc3339

# How far a refusal counts the run times of a range too large before saying "more than".
COUNT_LIMIT = 100_000


def plan_backfill(
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    runs_after: Callable[[datetime, int], list[datetime]],
    max_runs: int,
) -> list[datetime]:
    """The schedule's run times t with start <= t < end, oldest first (cron times in the
    schedule's zone, DST-correct; interval times start + k * interval), at most `max_runs`.

    Refused: a missing, inverted or empty range; an end after now (runs of the future are the
    schedule's to start); a range holding no run time; more than `max_runs` run times (the
    message says how many and where to split)."""
    if start is None:
        raise InvalidArgumentError("start", "is required (the first run time to backfill, inclusive)")
    if end is None:
        raise InvalidArgumentError("end", "is required (the end of the range, exclusive)")
    if end <= start:
        raise InvalidArgumentError(
            "end", f"must be after start ({format_rfc3339(end)} is not after {format_rfc3339(start)})"
        )
    if end > now:
        raise InvalidArgumentError(
            "end",
            f"{format_rfc3339(end)} is in the future (now {format_rfc3339(now)}); backfill covers past run "
            "times only: end the range at now or before",
        )
    times: list[datetime] = []
    cursor = start - timedelta(microseconds=1)  # runs_after is strictly after: start is included
    while True:
        (cursor,) = runs_after(cursor, 1) or [end]
        if cursor >= end:
            break
        times.append(cursor)
        if len(times) > max_runs:
            break
    if not times:
        raise InvalidArgumentError(
            "start", f"no run time of the schedule falls in [{format_rfc3339(start)}, {format_rfc3339(end)})"
        )
    if len(times) > max_runs:
        total = _count(times[-1], end, runs_after, len(times))
        split = times[max_runs]
        raise InvalidArgumentError(
            "end",
            f"[{format_rfc3339(start)}, {format_rfc3339(end)}) holds {total} run times, more than the "
            f"{max_runs} one call may create (BACKFILL_MAX_RUNS); split it, e.g. end the first call at "
            f"{format_rfc3339(split)} and start the next there",
        )
    return times


def _count(
    after: datetime, end: datetime, runs_after: Callable[[datetime, int], list[datetime]], n: int
) -> str:
    cursor = after
    while n < COUNT_LIMIT:
        (cursor,) = runs_after(cursor, 1) or [end]
        if cursor >= end:
            return str(n)
        n += 1
    return f"more than {COUNT_LIMIT}"
