"""summarize: counts, success rate, durations and the latest run of a schedule's runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobscheduler.domain.models import JobState
from jobscheduler.domain.runstats import RunRecord, RunStats, summarize

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def run(
    job_id: str,
    state: JobState,
    created: int,
    *,
    started: float | None = None,
    finished: float | None = None,
) -> RunRecord:
    """A run created `created` minutes after T0, started and finished that many seconds after T0."""
    return RunRecord(
        job_id=job_id,
        state=state,
        created_at=T0 + timedelta(minutes=created),
        started_at=None if started is None else T0 + timedelta(seconds=started),
        finished_at=None if finished is None else T0 + timedelta(seconds=finished),
    )


def test_no_runs_has_nothing_to_report() -> None:
    assert summarize([]) == RunStats(
        total=0,
        active=0,
        succeeded=0,
        failed=0,
        cancelled=0,
        success_rate=None,
        mean_duration_seconds=None,
        p95_duration_seconds=None,
        last_run=None,
    )
    assert summarize([]).last_state is None


def test_a_mix_of_runs() -> None:
    newest = run("job-e", JobState.PENDING, 30)
    stats = summarize(
        [
            run("job-a", JobState.SUCCEEDED, 0, started=60, finished=180),  # 120 s
            run("job-b", JobState.FAILED, 5, started=300, finished=360),  # 60 s
            newest,
            run("job-c", JobState.CANCELLED, 10, started=600, finished=630),  # 30 s
            run("job-d", JobState.RUNNING, 20, started=1260),
            run("job-f", JobState.SUCCEEDED, -60, finished=-3300),  # finished, start never seen
        ]
    )

    assert stats == RunStats(
        total=6,
        active=2,
        succeeded=2,
        failed=1,
        cancelled=1,
        success_rate=0.5,  # 2 of 4 finished
        mean_duration_seconds=70.0,  # (120 + 60 + 30) / 3
        p95_duration_seconds=120.0,  # rank ceil(0.95 * 3) = 3
        last_run=newest,
    )
    assert stats.last_state is JobState.PENDING


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param([JobState.PENDING, JobState.RUNNING], None, id="none-finished"),
        pytest.param([JobState.SUCCEEDED, JobState.RUNNING], 1.0, id="running-runs-do-not-count"),
        pytest.param([JobState.CANCELLED], 0.0, id="cancelled-is-not-a-success"),
        pytest.param(
            [JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED, JobState.FAILED], 0.5, id="half"
        ),
    ],
)
def test_success_rate_is_over_finished_runs(states: list[JobState], expected: float | None) -> None:
    runs = [run(f"job-{i}", state, i) for i, state in enumerate(states)]

    assert summarize(runs).success_rate == expected


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        pytest.param([42], 42.0, id="one-run"),
        pytest.param(list(range(1, 21)), 19.0, id="twenty-runs-rank-19"),
        pytest.param(list(range(1, 22)), 20.0, id="twenty-one-runs-rank-20"),
        pytest.param(list(range(100, 0, -1)), 95.0, id="hundred-runs-in-any-order"),
        pytest.param([5, 5, 5, 1000], 1000.0, id="one-outlier-in-four"),
    ],
)
def test_p95_is_the_nearest_rank(durations: list[int], expected: float) -> None:
    runs = [run(f"job-{i}", JobState.SUCCEEDED, i, started=0, finished=d) for i, d in enumerate(durations)]

    assert summarize(runs).p95_duration_seconds == expected


def test_durations_leave_out_unfinished_runs_and_runs_without_a_start() -> None:
    stats = summarize(
        [
            run("job-a", JobState.FAILED, 0, started=0, finished=10),
            run("job-b", JobState.RUNNING, 1, started=0, finished=500),  # not terminal yet
            run("job-c", JobState.CANCELLED, 2, finished=900),  # cancelled before it started
        ]
    )

    assert (stats.mean_duration_seconds, stats.p95_duration_seconds) == (10.0, 10.0)


def test_a_finish_before_the_start_counts_as_zero_seconds() -> None:
    stats = summarize([run("job-a", JobState.SUCCEEDED, 0, started=10, finished=9)])

    assert stats.mean_duration_seconds == 0.0


def test_last_run_is_newest_by_creation_not_by_position() -> None:
    older = run("job-z", JobState.SUCCEEDED, 0)
    newer = run("job-a", JobState.FAILED, 1)

    assert summarize([newer, older]).last_run == newer
    assert summarize([older, newer]).last_state is JobState.FAILED


def test_last_run_ties_on_creation_go_to_the_greater_job_id() -> None:
    first = run("job-a", JobState.SUCCEEDED, 0)
    second = run("job-b", JobState.FAILED, 0)

    assert summarize([second, first]).last_run == second
    assert summarize([first, second]).last_run == second


def test_summarize_accepts_any_iterable() -> None:
    assert summarize(run(f"job-{i}", JobState.SUCCEEDED, i) for i in range(3)).total == 3
