"""The pure decisions behind schedules that stop themselves and catch up on demand: the backfill
plan (run times in a range, caps, DST, refusals), the failure streak behind
pause_after_failures, BUFFER_ONE's queue, the leader's walk of a cron schedule it runs, and
which executor a BUFFER_ONE schedule gets. Every expected value is written out."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from jobscheduler.domain.backfill import plan_backfill
from jobscheduler.domain.catchup import CatchUp, Concurrency, plan_buffer_one, plan_walk
from jobscheduler.domain.cron import parse_cron
from jobscheduler.domain.cron_walk import next_runs
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.failures import RunOutcome, failure_streak, history_floor, pause_message
from jobscheduler.domain.interval import next_interval_runs
from jobscheduler.domain.models import JobState
from jobscheduler.domain.render import JobRequest
from jobscheduler.domain.schedule import (
    FAILURES_SINCE_ANNOTATION,
    PAUSED_REASON_ANNOTATION,
    PauseReason,
    ScheduleSpec,
    controller_run_name,
    failures_since,
    parse_timing,
    run_name_at,
    scheduled_run_name,
    spec_from,
    spec_json,
)

UTC = zoneinfo.ZoneInfo("UTC")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


RunsAfter = Callable[[datetime, int], list[datetime]]


def cron(expression: str, zone: zoneinfo.ZoneInfo = UTC) -> RunsAfter:
    spec = parse_cron(expression)
    return lambda after, count: next_runs(spec, zone, after, count)


def every(interval: timedelta, start: datetime | None = None) -> RunsAfter:
    return lambda after, count: next_interval_runs(interval, start, after, count)


# -- backfill ------------------------------------------------------------------------------------


def test_backfill_takes_the_run_times_in_the_half_open_range() -> None:
    times = plan_backfill(
        start=at("2026-06-01T10:00:00"),
        end=at("2026-06-01T11:00:00"),
        now=NOW,
        runs_after=cron("*/15 * * * *"),
        max_runs=100,
    )
    assert times == [
        at("2026-06-01T10:00"),
        at("2026-06-01T10:15"),
        at("2026-06-01T10:30"),
        at("2026-06-01T10:45"),
    ]


def test_backfill_of_an_interval_follows_its_start_time() -> None:
    start = at("2026-06-01T00:00:07")
    times = plan_backfill(
        start=at("2026-06-01T11:00:00"),
        end=at("2026-06-01T11:02:00"),
        now=NOW,
        runs_after=every(timedelta(seconds=45), start),
        max_runs=100,
    )
    assert times == [at("2026-06-01T11:00:07"), at("2026-06-01T11:00:52"), at("2026-06-01T11:01:37")]


def test_backfill_across_the_spring_forward_gap_skips_the_missing_wall_time() -> None:
    # 2026-03-29: Berlin jumps from 02:00 to 03:00 CEST; 02:30 does not exist that night.
    times = plan_backfill(
        start=at("2026-03-27T00:00:00"),
        end=at("2026-03-31T00:00:00"),
        now=NOW,
        runs_after=cron("30 2 * * *", BERLIN),
        max_runs=100,
    )
    assert times == [at("2026-03-27T01:30"), at("2026-03-28T01:30"), at("2026-03-30T00:30")]


def test_backfill_in_the_fall_back_hour_runs_both_wall_times() -> None:
    # 2026-10-25: Berlin's 02:00-03:00 happens twice (CEST, then CET).
    times = plan_backfill(
        start=at("2026-10-24T22:00:00"),
        end=at("2026-10-25T03:00:00"),
        now=datetime(2026, 11, 1, tzinfo=UTC),
        runs_after=cron("30 2 * * *", BERLIN),
        max_runs=100,
    )
    assert times == [at("2026-10-25T00:30"), at("2026-10-25T01:30")]


def test_backfill_at_exactly_the_cap_is_allowed() -> None:
    times = plan_backfill(
        start=at("2026-06-01T10:00:00"),
        end=at("2026-06-01T10:10:00"),
        now=NOW,
        runs_after=cron("* * * * *"),
        max_runs=10,
    )
    assert len(times) == 10


@pytest.mark.parametrize(
    ("start", "end", "field", "words"),
    [
        pytest.param(None, "2026-06-01T11:00", "start", "is required", id="no-start"),
        pytest.param("2026-06-01T10:00", None, "end", "is required", id="no-end"),
        pytest.param("2026-06-01T11:00", "2026-06-01T10:00", "end", "must be after start", id="inverted"),
        pytest.param("2026-06-01T10:00", "2026-06-01T10:00", "end", "must be after start", id="empty"),
        pytest.param("2026-06-01T11:00", "2026-06-01T12:00:01", "end", "is in the future", id="future"),
        pytest.param("2026-06-01T10:01", "2026-06-01T10:14", "start", "no run time", id="no-run-time"),
        pytest.param(
            "2026-06-01T00:00",
            "2026-06-01T11:00",
            "end",
            "holds 44 run times, more than the 10",
            id="too-many",
        ),
    ],
)
def test_bad_backfill_ranges_are_refused_naming_the_field(
    start: str | None, end: str | None, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        plan_backfill(
            start=at(start) if start else None,
            end=at(end) if end else None,
            now=NOW,
            runs_after=cron("*/15 * * * *"),
            max_runs=10,
        )
    assert caught.value.field == field
    assert words in str(caught.value)


def test_too_large_a_range_says_where_to_split() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        plan_backfill(
            start=at("2026-06-01T00:00"),
            end=at("2026-06-01T11:00"),
            now=NOW,
            runs_after=cron("*/15 * * * *"),
            max_runs=10,
        )
    assert "end the first call at 2026-06-01T02:30:00Z" in str(caught.value)


def test_backfill_names_runs_as_their_executor_does() -> None:
    moment = at("2026-06-01T10:15:00")
    as_cronjob = parse_timing(ScheduleSpec(name="s", cron="*/15 * * * *"), min_interval=timedelta(1), now=NOW)
    as_service = parse_timing(
        ScheduleSpec(name="s", cron="*/15 * * * *", concurrency=Concurrency.BUFFER_ONE),
        min_interval=timedelta(1),
        now=NOW,
    )
    assert scheduled_run_name(as_cronjob, "s", moment) == controller_run_name("s", moment) == "s-29671815"
    assert scheduled_run_name(as_service, "s", moment) == run_name_at("s", moment)


# -- pause after failures ------------------------------------------------------------------------


def run(job_id: str, state: JobState, minute: int) -> RunOutcome:
    return RunOutcome(job_id, state, at("2026-06-01T10:00") + timedelta(minutes=minute))


F, S, C, R = JobState.FAILED, JobState.SUCCEEDED, JobState.CANCELLED, JobState.RUNNING


@pytest.mark.parametrize(
    ("history", "streak"),
    [
        pytest.param([], [], id="no-runs"),
        pytest.param([("a", F)], ["a"], id="one-failure"),
        pytest.param([("a", F), ("b", S), ("c", F), ("d", F)], ["c", "d"], id="success-ends-it"),
        pytest.param([("a", F), ("b", C), ("c", F)], ["a", "c"], id="cancelled-counts-neither-way"),
        pytest.param([("a", F), ("b", F), ("c", R)], ["a", "b"], id="running-passed-over"),
        pytest.param([("a", F), ("b", F), ("c", S)], [], id="last-succeeded"),
    ],
)
def test_failure_streak_from_a_run_history(history: list[tuple[str, JobState]], streak: list[str]) -> None:
    runs = [run(job_id, state, minute) for minute, (job_id, state) in enumerate(history)]
    assert failure_streak(reversed(runs), since=None) == streak


def test_failure_streak_counts_only_runs_after_a_resume() -> None:
    runs = [run("a", F, 0), run("b", F, 1), run("c", F, 2)]
    assert failure_streak(runs, since=at("2026-06-01T10:01:30")) == ["c"]


def test_pause_decision_at_the_limit() -> None:
    assert pause_message(["a", "b"], 3) is None
    assert pause_message(["a", "b", "c"], 3) == "3 consecutive runs failed: a, b, c"
    assert pause_message(["a", "b", "c"], 0) is None


def test_history_is_kept_long_enough_to_see_the_streak() -> None:
    assert history_floor(3, 1, None) == (3, 1)
    assert history_floor(0, 1, 5) == (1, 5)
    assert history_floor(3, 10, 5) == (3, 10)


def test_pause_reason_round_trips_through_its_annotation() -> None:
    reason = PauseReason("PausedAfterFailures", "3 consecutive runs failed: a, b, c", NOW, 3)
    assert PauseReason.from_annotations({PAUSED_REASON_ANNOTATION: reason.to_json()}) == reason
    assert PauseReason.from_annotations({PAUSED_REASON_ANNOTATION: "{not json"}) is None


def test_spec_keeps_pause_after_failures_and_buffer_one() -> None:
    spec = ScheduleSpec(
        name="s",
        namespace="ns",
        cron="@hourly",
        concurrency=Concurrency.BUFFER_ONE,
        pause_after_failures=3,
        job=JobRequest(job_type="timer", params={}),
    )
    cronjob = {
        "metadata": {"annotations": {"jobscheduler.io/schedule-spec": spec_json(spec)}, "labels": {}},
        "spec": {"suspend": False},
    }
    back = spec_from(cronjob)
    assert (back.pause_after_failures, back.concurrency) == (3, Concurrency.BUFFER_ONE)


# -- BUFFER_ONE ----------------------------------------------------------------------------------


T0, T1, T2, T3 = (at("2026-06-01T10:00") + timedelta(minutes=k) for k in range(4))


@pytest.mark.parametrize(
    ("due", "active", "buffered", "start", "waits", "skipped"),
    [
        pytest.param([T0], 0, None, T0, None, (), id="idle-starts-it"),
        pytest.param([T1], 1, None, None, T1, (), id="busy-buffers-it"),
        pytest.param([T2], 1, T1, None, T1, (T2,), id="busy-and-buffered-skips-it"),
        pytest.param([], 0, T1, T1, None, (), id="run-ended-starts-the-buffered"),
        pytest.param([T2], 0, T1, T1, T2, (), id="ended-as-another-falls-due"),
        pytest.param([T1, T2, T3], 0, None, T1, T2, (T3,), id="several-due-one-starts-one-waits"),
        pytest.param([], 1, T1, None, T1, (), id="still-busy-keeps-waiting"),
    ],
)
def test_buffer_one_decisions(
    due: list[datetime],
    active: int,
    buffered: datetime | None,
    start: datetime | None,
    waits: datetime | None,
    skipped: tuple[datetime, ...],
) -> None:
    plan = plan_buffer_one(due=due, active=active, buffered=buffered)
    assert (plan.start, plan.buffered, plan.skipped) == (start, waits, skipped)


def test_buffer_one_is_run_by_the_service_for_cron_and_intervals() -> None:
    for spec in (
        ScheduleSpec(name="s", cron="*/5 * * * *", concurrency=Concurrency.BUFFER_ONE),
        ScheduleSpec(name="s", interval="30m", concurrency=Concurrency.BUFFER_ONE),
    ):
        assert parse_timing(spec, min_interval=timedelta(seconds=1), now=NOW).executor == "service"
    assert Concurrency.BUFFER_ONE.cronjob_policy == "Forbid"
    timing = parse_timing(
        ScheduleSpec(name="s", cron="*/5 * * * *", concurrency=Concurrency.BUFFER_ONE),
        min_interval=timedelta(seconds=1),
        now=NOW,
    )
    assert timing.runs_after(NOW, 2) == [at("2026-06-01T12:05"), at("2026-06-01T12:10")]


@pytest.mark.parametrize(
    ("now", "catch_up", "start", "next_run", "missed"),
    [
        pytest.param("2026-06-01T09:59:00", CatchUp.SKIP, [], "2026-06-01T10:00", 0, id="not-yet"),
        pytest.param(
            "2026-06-01T10:00:10", CatchUp.SKIP, ["2026-06-01T10:00"], "2026-06-01T10:05", 0, id="on-time"
        ),
        pytest.param("2026-06-01T10:12:00", CatchUp.SKIP, [], "2026-06-01T10:15", 3, id="outage-skip"),
        pytest.param(
            "2026-06-01T10:12:00",
            CatchUp.LATEST,
            ["2026-06-01T10:10"],
            "2026-06-01T10:15",
            2,
            id="outage-latest",
        ),
        pytest.param(
            "2026-06-01T10:10:20",
            CatchUp.ALL,
            ["2026-06-01T10:00", "2026-06-01T10:05", "2026-06-01T10:10"],
            "2026-06-01T10:15",
            0,
            id="outage-all",
        ),
    ],
)
def test_leader_walks_a_cron_schedule_it_runs(
    now: str, catch_up: CatchUp, start: list[str], next_run: str, missed: int
) -> None:
    plan = plan_walk(
        due_from=at("2026-06-01T10:00"),
        now=at(now),
        runs_after=cron("*/5 * * * *"),
        active=0,
        concurrency=Concurrency.ALLOW,
        catch_up=catch_up,
        max_catch_up=10,
        starting_deadline=None,
    )
    assert list(plan.start) == [at(s) for s in start]
    assert (plan.next_run, plan.missed) == (at(next_run), missed)


def test_failures_count_from_the_later_of_creation_and_the_last_resume() -> None:
    created = {"metadata": {"creationTimestamp": "2026-06-01T10:00:00Z", "annotations": {}}}
    assert failures_since(created) == at("2026-06-01T10:00:00")
    resumed = {
        "metadata": {
            "creationTimestamp": "2026-06-01T10:00:00Z",
            "annotations": {FAILURES_SINCE_ANNOTATION: "2026-06-01T11:00:00Z"},
        }
    }
    assert failures_since(resumed) == at("2026-06-01T11:00:00")
