"""When a schedule's runs start: the pure decisions behind the service's own schedule loop.

Interval schedules that no cron expression can express are run by the elected leader among the
service's replicas, which calls `plan_interval` on every tick with what the cluster says (the
next run time kept on the schedule's CronJob, the runs still active). Cron schedules are run by
the CronJob controller; with catch-up ALL the leader also calls `plan_cron_backfill` to start
the runs the controller missed while it was down, named as the controller names them, so
that no run ever starts twice.

Missed runs and the CronJob controller (docs/schedules.md):

- SKIP (default): a run that could not start within its starting deadline (default
  `DEFAULT_GRACE`) is dropped. For cron schedules `cron_starting_deadline` gives the CronJob
  that deadline, so the controller drops them too.
- LATEST: the most recent missed run starts once, however late. That is the CronJob
  controller's own behaviour when startingDeadlineSeconds is unset, so a cron schedule with
  LATEST leaves it unset whatever starting_deadline_seconds says (the controller also refuses
  to start anything after more than 100 missed runs, a rule of its own).
- ALL: every missed run starts, oldest first, at most `catch_up_max_runs` (the most recent
  ones); the controller starts the latest, the leader the ones before it.

BUFFER_ONE (no CronJob has it, so such schedules, cron ones too, are run by the leader): a run
due while one is active waits, at most one at a time, and starts when the active ones have
ended; a run due while one already waits is skipped (`plan_buffer_one`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# How late a run may start and still count as on time, when the schedule sets no deadline.
DEFAULT_GRACE = timedelta(seconds=60)
# How long after a cron run time the controller has to start it before the leader backfills.
CONTROLLER_GRACE = timedelta(seconds=20)
MAX_CATCH_UP_RUNS = 100


class CatchUp(enum.Enum):
    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


class Concurrency(enum.Enum):
    ALLOW = "Allow"  # the CronJob concurrencyPolicy values
    FORBID = "Forbid"
    REPLACE = "Replace"
    BUFFER_ONE = "BufferOne"  # no CronJob policy: run by the leader (see plan_buffer_one)

    @property
    def cronjob_policy(self) -> str:
        """The CronJob's concurrencyPolicy (a BUFFER_ONE CronJob is suspended, run by the leader)."""
        return "Forbid" if self is Concurrency.BUFFER_ONE else self.value


@dataclass(frozen=True, slots=True)
class IntervalPlan:
    start: tuple[datetime, ...]  # run times to start now, oldest first
    next_run: datetime  # the first run time after now
    missed: int  # run times that passed without a run
    replace_active: bool = False  # stop the active runs first (Replace)


def plan_interval(
    *,
    due_from: datetime,
    now: datetime,
    interval: timedelta,
    active: int,
    concurrency: Concurrency,
    catch_up: CatchUp,
    max_catch_up: int,
    starting_deadline: timedelta | None,
) -> IntervalPlan:
    """What to start at `now` for an interval schedule whose next run was due at `due_from`.

    The due run times are due_from, due_from + interval, ... up to now. Only the newest can be
    on time (within the starting deadline, or `DEFAULT_GRACE`, and never an interval late); the
    others are missed and the catch-up policy decides about them. Forbid starts nothing while a
    run is active and at most one run; Replace starts only the newest, after stopping the active
    ones.
    """
    if now < due_from:
        return IntervalPlan(start=(), next_run=due_from, missed=0)
    grace = min(starting_deadline if starting_deadline is not None else DEFAULT_GRACE, interval)
    count = (now - due_from) // interval + 1
    newest = due_from + (count - 1) * interval
    return _choose(
        count=count,
        at=lambda k: due_from + k * interval,
        on_time=now - newest <= grace,
        next_run=newest + interval,
        active=active,
        concurrency=concurrency,
        catch_up=catch_up,
        max_catch_up=max_catch_up,
    )


# A service-run cron schedule walks its due run times one by one; after an outage longer than
# this many of them, one tick counts that many as missed and the next tick walks on from there.
MAX_WALK = 10_000


def plan_walk(
    *,
    due_from: datetime,
    now: datetime,
    runs_after: Callable[[datetime, int], list[datetime]],
    active: int,
    concurrency: Concurrency,
    catch_up: CatchUp,
    max_catch_up: int,
    starting_deadline: timedelta | None,
) -> IntervalPlan:
    """plan_interval for a cron expression the leader runs (BUFFER_ONE): the due run times are
    due_from and the expression's times after it up to now; the newest is on time within the
    starting deadline (or `DEFAULT_GRACE`), never later than the next run time."""
    if now < due_from:
        return IntervalPlan(start=(), next_run=due_from, missed=0)
    times = [due_from]
    count = 1
    while True:
        (following,) = runs_after(times[-1], 1)
        if following > now:
            break
        if count >= MAX_WALK:
            return IntervalPlan(start=(), next_run=following, missed=count)
        times.append(following)
        count += 1
        if len(times) > MAX_CATCH_UP_RUNS + 1:
            del times[0]
    newest = times[-1]
    grace = min(starting_deadline if starting_deadline is not None else DEFAULT_GRACE, following - newest)
    first_kept = count - len(times)
    return _choose(
        count=count,
        at=lambda k: times[k - first_kept],
        on_time=now - newest <= grace,
        next_run=following,
        active=active,
        concurrency=concurrency,
        catch_up=catch_up,
        max_catch_up=min(max_catch_up, MAX_CATCH_UP_RUNS),
    )


def _choose(
    *,
    count: int,
    at: Callable[[int], datetime],
    on_time: bool,
    next_run: datetime,
    active: int,
    concurrency: Concurrency,
    catch_up: CatchUp,
    max_catch_up: int,
) -> IntervalPlan:
    """Which of `count` due run times (the k-th is at(k), the newest last) start now."""
    newest = at(count - 1)
    missed = count - 1 if on_time else count  # at(k) for k < missed
    if catch_up is CatchUp.ALL:
        take = min(missed, max(0, max_catch_up))
        chosen = [at(k) for k in range(missed - take, missed)]
    elif catch_up is CatchUp.LATEST and missed and not on_time:
        chosen = [at(missed - 1)]
    else:
        chosen = []  # SKIP; and LATEST when the on-time run supersedes the missed ones
    if on_time:
        chosen.append(newest)
    if concurrency is Concurrency.FORBID:
        chosen = [] if active else chosen[-1:]
    elif concurrency is Concurrency.REPLACE:
        chosen = chosen[-1:]
    return IntervalPlan(
        start=tuple(chosen),
        next_run=next_run,
        missed=count - len(chosen),
        replace_active=concurrency is Concurrency.REPLACE and active > 0 and bool(chosen),
    )


@dataclass(frozen=True, slots=True)
class BufferPlan:
    start: datetime | None  # the run time to start now
    buffered: datetime | None  # the run time that waits for the active runs to end
    skipped: tuple[datetime, ...]  # due while one already waited: never run


def plan_buffer_one(*, due: Sequence[datetime], active: int, buffered: datetime | None) -> BufferPlan:
    """BUFFER_ONE (as Temporal's and Argo's): the waiting run (`buffered`) and the run times due
    now (oldest first) queue up; with no run active the first of them starts; one more waits;
    the rest are skipped. While a run is active nothing starts and only the first waits."""
    queue = ([buffered] if buffered is not None else []) + sorted(t for t in due if t != buffered)
    start = None
    if not active and queue:
        start = queue.pop(0)
    return BufferPlan(
        start=start,
        buffered=queue[0] if queue else None,
        skipped=tuple(queue[1:]),
    )


def plan_cron_backfill(
    *,
    since: datetime,
    now: datetime,
    runs_after: Callable[[datetime, int], list[datetime]],
    max_catch_up: int,
) -> list[datetime]:
    """Catch-up ALL for a cron schedule: the run times after `since` (its last scheduled run, or
    what the leader already backfilled) that the controller should have started by now, the most
    recent `max_catch_up` of them, oldest first."""
    if max_catch_up <= 0:
        return []
    cutoff = now - CONTROLLER_GRACE
    # Only the most recent runs are wanted, and a long outage of a frequent schedule has far too
    # many run times to walk from `since`: walk a window ending at the cutoff, doubled until it
    # holds enough runs or reaches back to `since`. Cron fires at most once a minute, so no walk
    # is much longer than the window that was needed.
    window = timedelta(minutes=max_catch_up)
    while True:
        start = since if window >= cutoff - since else cutoff - window
        found: list[datetime] = []
        cursor = start
        while True:
            (cursor,) = runs_after(cursor, 1) or [now]
            if cursor > cutoff:
                break
            found.append(cursor)
        if len(found) >= max_catch_up or start == since:
            return found[-max_catch_up:]
        window *= 2


def cron_starting_deadline(catch_up: CatchUp, deadline_seconds: int | None) -> int | None:
    """The CronJob's startingDeadlineSeconds for a catch-up policy: SKIP bounds lateness (so the
    controller drops what it missed), LATEST leaves it unset (the controller then starts the
    latest missed run however late), ALL keeps the caller's (the leader backfills the rest)."""
    if catch_up is CatchUp.SKIP:
        return int(DEFAULT_GRACE.total_seconds()) if deadline_seconds is None else deadline_seconds
    if catch_up is CatchUp.LATEST:
        return None
    return deadline_seconds
