"""The catch-up and concurrency decisions of jobscheduler.domain.catchup, table-driven: which run times
start, which are missed, and when the next run is due. Every expected value is written out."""

from __future__ import annotations

import itertools
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from jobscheduler.domain.catchup import (
    CatchUp,
    Concurrency,
    IntervalPlan,
    cron_starting_deadline,
    plan_cron_backfill,
    plan_interval,
)
from jobscheduler.domain.cron import parse_cron
from jobscheduler.domain.cron_walk import next_runs

UTC = zoneinfo.ZoneInfo("UTC")


def at(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    assert moment.utcoffset() == timedelta(0), iso
    return moment


def plan(*starts: str, next_run: str, missed: int, replace_active: bool = False) -> IntervalPlan:
    return IntervalPlan(
        start=tuple(at(s) for s in starts),
        next_run=at(next_run),
        missed=missed,
        replace_active=replace_active,
    )


@dataclass(frozen=True)
class Case:
    """An interval schedule every 10 minutes, next due at 10:00Z, unless the case says otherwise."""

    now: str
    expected: IntervalPlan
    catch_up: CatchUp = CatchUp.SKIP
    concurrency: Concurrency = Concurrency.ALLOW
    active: int = 0
    max_catch_up: int = 10
    starting_deadline: timedelta | None = None
    interval: timedelta = timedelta(minutes=10)
    due_from: str = "2026-03-01T10:00:00Z"


CASES = {
    # -- on time and late (default grace: 60 s) ------------------------------------------------
    "on time exactly when due": Case(
        now="2026-03-01T10:00:00Z",
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "on time at the last second of the default grace": Case(
        now="2026-03-01T10:01:00Z",
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "skip drops a run later than the default grace": Case(
        now="2026-03-01T10:01:01Z",
        expected=plan(next_run="2026-03-01T10:10:00Z", missed=1),
    ),
    "latest starts a single late run": Case(
        now="2026-03-01T10:01:01Z",
        catch_up=CatchUp.LATEST,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "all starts a single late run": Case(
        now="2026-03-01T10:01:01Z",
        catch_up=CatchUp.ALL,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "latest without a deadline starts a run even minutes late": Case(
        now="2026-03-01T10:07:00Z",
        catch_up=CatchUp.LATEST,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    # -- several missed, the newest (10:40) still on time ----------------------------------------
    "skip starts only the on-time newest of five": Case(
        now="2026-03-01T10:40:30Z",
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    "latest lets the on-time newest supersede the missed ones": Case(
        now="2026-03-01T10:40:30Z",
        catch_up=CatchUp.LATEST,
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    "all starts every missed run oldest first, then the on-time one": Case(
        now="2026-03-01T10:40:30Z",
        catch_up=CatchUp.ALL,
        expected=plan(
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:10:00Z",
            "2026-03-01T10:20:00Z",
            "2026-03-01T10:30:00Z",
            "2026-03-01T10:40:00Z",
            next_run="2026-03-01T10:50:00Z",
            missed=0,
        ),
    ),
    "all capped at two keeps the two most recent missed runs": Case(
        now="2026-03-01T10:40:30Z",
        catch_up=CatchUp.ALL,
        max_catch_up=2,
        expected=plan(
            "2026-03-01T10:20:00Z",
            "2026-03-01T10:30:00Z",
            "2026-03-01T10:40:00Z",
            next_run="2026-03-01T10:50:00Z",
            missed=2,
        ),
    ),
    "all capped at zero starts only the on-time run": Case(
        now="2026-03-01T10:40:30Z",
        catch_up=CatchUp.ALL,
        max_catch_up=0,
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    # -- several missed, the newest (10:40) late too ---------------------------------------------
    "skip starts nothing when every run is late": Case(
        now="2026-03-01T10:45:00Z",
        expected=plan(next_run="2026-03-01T10:50:00Z", missed=5),
    ),
    "latest starts the most recent missed run once": Case(
        now="2026-03-01T10:45:00Z",
        catch_up=CatchUp.LATEST,
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    "all starts all five missed runs oldest first": Case(
        now="2026-03-01T10:45:00Z",
        catch_up=CatchUp.ALL,
        expected=plan(
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:10:00Z",
            "2026-03-01T10:20:00Z",
            "2026-03-01T10:30:00Z",
            "2026-03-01T10:40:00Z",
            next_run="2026-03-01T10:50:00Z",
            missed=0,
        ),
    ),
    "all with a cap smaller than the missed count keeps the most recent": Case(
        now="2026-03-01T10:45:00Z",
        catch_up=CatchUp.ALL,
        max_catch_up=3,
        expected=plan(
            "2026-03-01T10:20:00Z",
            "2026-03-01T10:30:00Z",
            "2026-03-01T10:40:00Z",
            next_run="2026-03-01T10:50:00Z",
            missed=2,
        ),
    ),
    # -- a starting deadline ---------------------------------------------------------------------
    "a 30 s deadline: on time at 30 s": Case(
        now="2026-03-01T10:00:30Z",
        starting_deadline=timedelta(seconds=30),
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "a 30 s deadline, shorter than the default grace: missed at 31 s": Case(
        now="2026-03-01T10:00:31Z",
        starting_deadline=timedelta(seconds=30),
        expected=plan(next_run="2026-03-01T10:10:00Z", missed=1),
    ),
    "a 5 min deadline, longer than the default grace: on time at 4 min": Case(
        now="2026-03-01T10:04:00Z",
        starting_deadline=timedelta(minutes=5),
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "latest starts the newest missed run however late, past a given deadline too": Case(
        now="2026-03-01T10:00:31Z",
        catch_up=CatchUp.LATEST,
        starting_deadline=timedelta(seconds=30),
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "latest with a given deadline after several missed runs: the newest once": Case(
        now="2026-03-01T10:45:00Z",
        catch_up=CatchUp.LATEST,
        starting_deadline=timedelta(seconds=30),
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    "a deadline does not bound all: every missed run still starts": Case(
        now="2026-03-01T10:25:00Z",
        catch_up=CatchUp.ALL,
        starting_deadline=timedelta(seconds=30),
        expected=plan(
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:10:00Z",
            "2026-03-01T10:20:00Z",
            next_run="2026-03-01T10:30:00Z",
            missed=0,
        ),
    ),
    # -- the grace is never more than an interval: only the newest run can be on time -----------
    "a 10 min deadline on a 1 min interval: runs 2 and 1 min late are missed": Case(
        interval=timedelta(minutes=1),
        now="2026-03-01T10:02:59Z",
        starting_deadline=timedelta(minutes=10),
        expected=plan("2026-03-01T10:02:00Z", next_run="2026-03-01T10:03:00Z", missed=2),
    ),
    "the default grace on a 30 s interval: a run 59 s late is missed": Case(
        interval=timedelta(seconds=30),
        now="2026-03-01T10:00:59Z",
        expected=plan("2026-03-01T10:00:30Z", next_run="2026-03-01T10:01:00Z", missed=1),
    ),
    # -- concurrency: Allow ignores active runs --------------------------------------------------
    "allow starts the on-time run beside active ones": Case(
        now="2026-03-01T10:00:10Z",
        active=3,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    # -- concurrency: Forbid ---------------------------------------------------------------------
    "forbid without active runs starts the on-time run": Case(
        now="2026-03-01T10:00:10Z",
        concurrency=Concurrency.FORBID,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "forbid with an active run starts nothing and counts the run missed": Case(
        now="2026-03-01T10:00:10Z",
        concurrency=Concurrency.FORBID,
        active=1,
        expected=plan(next_run="2026-03-01T10:10:00Z", missed=1),
    ),
    "forbid with all starts at most one run, the newest": Case(
        now="2026-03-01T10:45:00Z",
        concurrency=Concurrency.FORBID,
        catch_up=CatchUp.ALL,
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    "forbid with all and an on-time newest starts only that one": Case(
        now="2026-03-01T10:40:30Z",
        concurrency=Concurrency.FORBID,
        catch_up=CatchUp.ALL,
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4),
    ),
    "forbid with all and an active run starts none of the missed runs": Case(
        now="2026-03-01T10:45:00Z",
        concurrency=Concurrency.FORBID,
        catch_up=CatchUp.ALL,
        active=2,
        expected=plan(next_run="2026-03-01T10:50:00Z", missed=5),
    ),
    # -- concurrency: Replace --------------------------------------------------------------------
    "replace without active runs starts the run and stops nothing": Case(
        now="2026-03-01T10:00:10Z",
        concurrency=Concurrency.REPLACE,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0),
    ),
    "replace with active runs stops them and starts the run": Case(
        now="2026-03-01T10:00:10Z",
        concurrency=Concurrency.REPLACE,
        active=2,
        expected=plan("2026-03-01T10:00:00Z", next_run="2026-03-01T10:10:00Z", missed=0, replace_active=True),
    ),
    "replace with active runs but nothing to start stops nothing": Case(
        now="2026-03-01T10:01:01Z",
        concurrency=Concurrency.REPLACE,
        active=2,
        expected=plan(next_run="2026-03-01T10:10:00Z", missed=1),
    ),
    "replace with all starts only the newest missed run": Case(
        now="2026-03-01T10:45:00Z",
        concurrency=Concurrency.REPLACE,
        catch_up=CatchUp.ALL,
        active=1,
        expected=plan("2026-03-01T10:40:00Z", next_run="2026-03-01T10:50:00Z", missed=4, replace_active=True),
    ),
    # -- not due yet -----------------------------------------------------------------------------
    "now before due_from: nothing starts, nothing is missed": Case(
        now="2026-03-01T09:59:59Z",
        expected=plan(next_run="2026-03-01T10:00:00Z", missed=0),
    ),
    "now an interval before due_from with replace and active runs: nothing is stopped": Case(
        now="2026-03-01T09:50:30Z",
        concurrency=Concurrency.REPLACE,
        catch_up=CatchUp.ALL,
        active=3,
        expected=plan(next_run="2026-03-01T10:00:00Z", missed=0),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan_interval(case: Case) -> None:
    result = plan_interval(
        due_from=at(case.due_from),
        now=at(case.now),
        interval=case.interval,
        active=case.active,
        concurrency=case.concurrency,
        catch_up=case.catch_up,
        max_catch_up=case.max_catch_up,
        starting_deadline=case.starting_deadline,
    )
    assert result == case.expected


# 2016-01-01 to 2026-01-01: 3,653 days (leap days in 2016, 2020, 2024) = 5,260,320 minutes.
TEN_YEARS = {
    "skip": (
        CatchUp.SKIP,
        Concurrency.ALLOW,
        plan("2026-01-01T00:00:00Z", next_run="2026-01-01T00:01:00Z", missed=5_260_320),
    ),
    "all capped at three": (
        CatchUp.ALL,
        Concurrency.ALLOW,
        plan(
            "2025-12-31T23:57:00Z",
            "2025-12-31T23:58:00Z",
            "2025-12-31T23:59:00Z",
            "2026-01-01T00:00:00Z",
            next_run="2026-01-01T00:01:00Z",
            missed=5_260_317,
        ),
    ),
    "all with forbid": (
        CatchUp.ALL,
        Concurrency.FORBID,
        plan("2026-01-01T00:00:00Z", next_run="2026-01-01T00:01:00Z", missed=5_260_320),
    ),
}


@pytest.mark.parametrize(("catch_up", "concurrency", "expected"), TEN_YEARS.values(), ids=TEN_YEARS.keys())
def test_plan_interval_after_ten_years_of_one_minute_runs_is_fast_and_exact(
    catch_up: CatchUp, concurrency: Concurrency, expected: IntervalPlan
) -> None:
    started = time.perf_counter()
    result = plan_interval(
        due_from=at("2016-01-01T00:00:00Z"),
        now=at("2026-01-01T00:00:30Z"),
        interval=timedelta(minutes=1),
        active=0,
        concurrency=concurrency,
        catch_up=catch_up,
        max_catch_up=3,
        starting_deadline=None,
    )
    elapsed = time.perf_counter() - started
    assert result == expected
    assert elapsed < 0.5, f"planning took {elapsed:.2f}s: it must not walk every missed run"


# -- cron backfill --------------------------------------------------------------------------------


def cron_runs_after(expression: str) -> Callable[[datetime, int], list[datetime]]:
    spec = parse_cron(expression)
    return lambda after, count: next_runs(spec, UTC, after, count)


def listed_runs_after(*times: str) -> Callable[[datetime, int], list[datetime]]:
    """A schedule that fires exactly at `times` and then never again."""
    moments = [at(t) for t in times]
    return lambda after, count: [m for m in moments if m > after][:count]


BACKFILL = {
    "every minute, 5 minutes down: all five": (
        "* * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:05:30Z",
        10,
        [
            "2026-03-01T10:01:00Z",
            "2026-03-01T10:02:00Z",
            "2026-03-01T10:03:00Z",
            "2026-03-01T10:04:00Z",
            "2026-03-01T10:05:00Z",
        ],
    ),
    "the controller has 20 s: 10:05 is still its own at 10:05:19": (
        "* * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:05:19Z",
        10,
        ["2026-03-01T10:01:00Z", "2026-03-01T10:02:00Z", "2026-03-01T10:03:00Z", "2026-03-01T10:04:00Z"],
    ),
    "at 10:05:20 the controller's grace for 10:05 is over": (
        "* * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:05:20Z",
        10,
        [
            "2026-03-01T10:01:00Z",
            "2026-03-01T10:02:00Z",
            "2026-03-01T10:03:00Z",
            "2026-03-01T10:04:00Z",
            "2026-03-01T10:05:00Z",
        ],
    ),
    "nothing before the first run's grace is over": (
        "* * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:01:19Z",
        10,
        [],
    ),
    "capped at two: the two most recent": (
        "* * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:05:30Z",
        2,
        ["2026-03-01T10:04:00Z", "2026-03-01T10:05:00Z"],
    ),
    "capped at zero: none": (
        "* * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:05:30Z",
        0,
        [],
    ),
    "since between run times (what was backfilled)": (
        "* * * * *",
        "2026-03-01T10:00:30Z",
        "2026-03-01T10:03:30Z",
        10,
        ["2026-03-01T10:01:00Z", "2026-03-01T10:02:00Z", "2026-03-01T10:03:00Z"],
    ),
    "hourly, 3.5 hours down": (
        "0 * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T13:30:00Z",
        10,
        ["2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z", "2026-03-01T13:00:00Z"],
    ),
    "hourly, 3.5 hours down, capped at two": (
        "0 * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T13:30:00Z",
        2,
        ["2026-03-01T12:00:00Z", "2026-03-01T13:00:00Z"],
    ),
    "twice an hour, capped at three: the three most recent of a wider walk": (
        "0,1 * * * *",
        "2026-03-01T10:00:00Z",
        "2026-03-01T13:30:00Z",
        3,
        ["2026-03-01T12:01:00Z", "2026-03-01T13:00:00Z", "2026-03-01T13:01:00Z"],
    ),
    "every minute, 30 days down, capped at three: the last three, not the first": (
        "* * * * *",
        "2026-01-01T00:00:00Z",
        "2026-01-31T00:00:30Z",
        3,
        ["2026-01-30T23:58:00Z", "2026-01-30T23:59:00Z", "2026-01-31T00:00:00Z"],
    ),
    "yearly, ten years down, capped at three": (
        "0 0 1 1 *",
        "2016-01-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
        3,
        ["2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"],
    ),
    "yearly, ten years down, cap above the count: all ten": (
        "0 0 1 1 *",
        "2016-01-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
        20,
        [f"{year}-01-01T00:00:00Z" for year in range(2017, 2027)],
    ),
}


@pytest.mark.parametrize(
    ("expression", "since", "now", "cap", "expected"), BACKFILL.values(), ids=BACKFILL.keys()
)
def test_plan_cron_backfill(expression: str, since: str, now: str, cap: int, expected: list[str]) -> None:
    times = plan_cron_backfill(
        since=at(since), now=at(now), runs_after=cron_runs_after(expression), max_catch_up=cap
    )
    assert times == [at(t) for t in expected]


def test_plan_cron_backfill_after_ten_years_of_every_minute_is_fast_and_returns_the_latest() -> None:
    started = time.perf_counter()
    times = plan_cron_backfill(
        since=at("2016-01-01T00:00:00Z"),
        now=at("2026-01-01T00:00:30Z"),
        runs_after=cron_runs_after("* * * * *"),
        max_catch_up=100,
    )
    elapsed = time.perf_counter() - started
    # The cutoff is 00:00:10: the 100 minutes up to 00:00 are 22:21 .. 23:59 and 00:00.
    assert len(times) == 100
    assert times[0] == at("2025-12-31T22:21:00Z")
    assert times[-2:] == [at("2025-12-31T23:59:00Z"), at("2026-01-01T00:00:00Z")]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(times))
    assert elapsed < 2, f"backfill planning took {elapsed:.2f}s"


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-03-01T10:30:10Z", ["2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z", "2026-03-01T10:07:00Z"]),
        (
            "2026-03-01T11:00:00Z",
            ["2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z", "2026-03-01T10:07:00Z", "2026-03-01T10:30:00Z"],
        ),
    ],
    ids=["the last run still within the controller's grace", "a schedule that stops firing"],
)
def test_plan_cron_backfill_walks_the_given_runs_after(now: str, expected: list[str]) -> None:
    runs_after = listed_runs_after(
        "2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z", "2026-03-01T10:07:00Z", "2026-03-01T10:30:00Z"
    )
    times = plan_cron_backfill(
        since=at("2026-03-01T09:00:00Z"), now=at(now), runs_after=runs_after, max_catch_up=10
    )
    assert times == [at(t) for t in expected]


@pytest.mark.parametrize(
    ("catch_up", "deadline_seconds", "expected"),
    [
        (CatchUp.SKIP, None, 60),
        (CatchUp.SKIP, 30, 30),
        (CatchUp.SKIP, 600, 600),
        (CatchUp.LATEST, None, None),
        (CatchUp.LATEST, 30, None),
        (CatchUp.ALL, None, None),
        (CatchUp.ALL, 120, 120),
    ],
    ids=[
        "skip bounds lateness by the default grace",
        "skip keeps a shorter deadline",
        "skip keeps a longer deadline",
        "latest leaves it unset, as the controller's own latest",
        "latest leaves it unset even when a deadline is given",
        "all leaves it unset",
        "all keeps a given deadline",
    ],
)
def test_cron_starting_deadline(
    catch_up: CatchUp, deadline_seconds: int | None, expected: int | None
) -> None:
    assert cron_starting_deadline(catch_up, deadline_seconds) == expected
