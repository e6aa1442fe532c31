"""BackfillSchedule: create the runs of a schedule's past run times in [start, end), each once.

Every run is named as its executor names the run of that time (the CronJob controller's
`NAME-<Unix minutes>`, the leader's `NAME-<base-36 seconds>`), so the API server's AlreadyExists
makes a repeated call, two replicas calling at once, or a run the controller or catch-up already
started come out as one Job. Backfill is an explicit request: its runs start at once, whatever
the concurrency policy and also while the schedule is paused (as `kubectl create job
--from=cronjob/NAME` does); they are labelled `jobscheduler.io/backfilled=true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from jobscheduler.app.schedules import ScheduleService
from jobscheduler.domain.audit import Origin, stamp_origin
from jobscheduler.domain.backfill import plan_backfill
from jobscheduler.domain.errors import AlreadyExistsError
from jobscheduler.domain.schedule import (
    BACKFILL_LABEL,
    SCHEDULED_AT_ANNOTATION,
    run_job,
    scheduled_run_name,
    spec_from,
    timing_of,
)
from jobscheduler.obs.metrics import SCHEDULE_RUNS
from jobscheduler.timestamps import format_rfc3339

log = structlog.get_logger("jobscheduler.app.backfill")


@dataclass(frozen=True, slots=True)
class Backfill:
    run_times: list[datetime]
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def backfill_schedule(
    schedules: ScheduleService,
    namespace: str,
    name: str,
    *,
    start: datetime | None,
    end: datetime | None,
    dry_run: bool = False,
    deadline: float | None = None,
    origin: Origin | None = None,
) -> Backfill:
    """origin: who asked (recorded on each run as its trigger, as TriggerSchedule does)."""
    cronjob = schedules.read_cronjob(namespace, name, deadline=deadline)
    spec = spec_from(cronjob)
    timing = timing_of(cronjob, spec)
    times = plan_backfill(
        start=start,
        end=end,
        now=datetime.now(UTC),
        runs_after=timing.runs_after,
        max_runs=schedules.settings.backfill_max_runs,
    )
    result = Backfill(run_times=times)
    if dry_run:
        return result
    namespace = cronjob["metadata"]["namespace"]
    for at in times:
        job_name = scheduled_run_name(timing, name, at)
        job = run_job(
            cronjob,
            job_name,
            annotations={SCHEDULED_AT_ANNOTATION: format_rfc3339(at)},
            labels={BACKFILL_LABEL: "true"},
        )
        if origin is not None:
            stamp_origin(job, origin, triggered=True)
        try:
            made = schedules.gateway.create("jobs", namespace, job, deadline=deadline)
        except AlreadyExistsError:
            result.existing.append(job_name)
            continue
        result.created.append(job_name)
        if schedules.jobs.cache is not None:
            schedules.jobs.cache.observe_job(made)
    if result.created:
        SCHEDULE_RUNS.labels("backfill").inc(len(result.created))
    log.info(
        "schedule backfilled",
        schedule=name,
        namespace=namespace,
        start=format_rfc3339(times[0]),
        end=format_rfc3339(times[-1]),
        created=len(result.created),
        existing=len(result.existing),
    )
    return result
