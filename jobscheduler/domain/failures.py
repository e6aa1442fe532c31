"""pause_after_failures as a pure decision: the streak of consecutive failed runs a schedule has
now, from its runs on the cluster. The leader (jobscheduler.control.schedule_runs) pauses the
schedule when the streak reaches the limit.

- A run counts by its outcome: FAILED extends the streak, SUCCEEDED ends it; CANCELLED counts
  neither way (someone chose to stop it: it says nothing about whether the job works), and
  runs still pending or running are passed over.
- Runs are taken newest first by creation time (ties: the greater job id), and only those
  created after `since` (the last ResumeSchedule): a resumed schedule starts a new streak.
- The runs kept on the cluster are enough: the CronJob keeps at least `limit` failed runs and
  at least one succeeded run (`history_floor`), and the newest success is the one a history
  limit keeps, so a success between failures is never trimmed away unseen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from jobscheduler.domain.models import JobState

PAUSED_AFTER_FAILURES = "PausedAfterFailures"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    job_id: str
    state: JobState
    created_at: datetime


def failure_streak(runs: Iterable[RunOutcome], *, since: datetime | None) -> list[str]:
    """The job ids of the consecutive failed runs up to now, oldest first."""
    streak: list[str] = []
    for run in sorted(runs, key=lambda r: (r.created_at, r.job_id), reverse=True):
        if since is not None and run.created_at < since:
            break
        if run.state is JobState.SUCCEEDED:
            break
        if run.state is JobState.FAILED:
            streak.append(run.job_id)
    return streak[::-1]


def pause_message(streak: list[str], limit: int) -> str | None:
    """Why the schedule pauses now, or None when it does not (limit 0/None: never)."""
    if not limit or len(streak) < limit:
        return None
    shown = ", ".join(streak[-limit:])
    return f"{len(streak)} consecutive runs failed: {shown}"


def history_floor(successful: int, failed: int, limit: int | None) -> tuple[int, int]:
    """The CronJob's history limits for a schedule that pauses after `limit` failures: enough
    failed runs kept to see the streak, and the newest success kept to see where it began."""
    if not limit:
        return successful, failed
    return max(successful, 1), max(failed, limit)
