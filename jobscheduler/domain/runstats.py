"""What a schedule's runs add up to: counts by outcome, success rate, durations and the latest
run, computed from plain run records (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from jobscheduler.domain.models import JobState


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a schedule: a Job the service or a CronJob created. Datetimes are aware."""

    job_id: str
    state: JobState
    created_at: datetime
    started_at: datetime | None = None  # first container start; None while pending
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunStats:
    total: int
    active: int  # pending or running
    succeeded: int
    failed: int
    cancelled: int  # counted apart from failed: someone chose to stop the run
    # succeeded / finished, where finished counts succeeded, failed and cancelled runs; None
    # until a run has finished.
    success_rate: float | None
    # Over finished runs that have both a start and a finish, in seconds; None when there are none.
    mean_duration_seconds: float | None
    p95_duration_seconds: float | None  # nearest rank: the smallest duration >= 95% of them
    last_run: RunRecord | None  # newest by created_at (ties: the greater job_id)

    @property
    def last_state(self) -> JobState | None:
        return None if self.last_run is None else self.last_run.state


def summarize(runs: Iterable[RunRecord]) -> RunStats:
    records = list(runs)
    counts = dict.fromkeys(JobState, 0)
    for run in records:
        counts[run.state] += 1
    succeeded = counts[JobState.SUCCEEDED]
    finished = succeeded + counts[JobState.FAILED] + counts[JobState.CANCELLED]
    durations = sorted(
        # started_at comes from the node's clock and finished_at from the control plane's: a
        # run shorter than their skew can come out negative and counts as zero.
        max(0.0, (run.finished_at - run.started_at).total_seconds())
        for run in records
        if run.state.terminal and run.started_at is not None and run.finished_at is not None
    )
    return RunStats(
        total=len(records),
        active=counts[JobState.PENDING] + counts[JobState.RUNNING],
        succeeded=succeeded,
        failed=counts[JobState.FAILED],
        cancelled=counts[JobState.CANCELLED],
        success_rate=succeeded / finished if finished else None,
        mean_duration_seconds=math.fsum(durations) / len(durations) if durations else None,
        p95_duration_seconds=_nearest_rank(durations, 95),
        last_run=max(records, key=_creation_order) if records else None,
    )


def _creation_order(run: RunRecord) -> tuple[datetime, str]:
    return run.created_at, run.job_id


def _nearest_rank(ordered: list[float], percent: int) -> float | None:
    if not ordered:
        return None
    rank = -(-percent * len(ordered) // 100)  # ceil without floating point
    return ordered[rank - 1]
