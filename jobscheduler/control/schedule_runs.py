"""The leader's part of schedules: each tick, start the runs of interval schedules that are due
(the service is their executor) and, for cron schedules with catch-up ALL, the runs the CronJob
controller missed, named as the controller names them, so no run ever starts twice.

Runs only on the elected leader (jobscheduler.control.leader's ScheduleLoop); the next run time is
kept on the CronJob with writes conditional on its resourceVersion, so a restart or a change of
leader neither skips nor repeats a run.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

import structlog

from jobscheduler.app.schedules import ScheduleService
from jobscheduler.domain.catchup import (
    CatchUp,
    Concurrency,
    plan_cron_backfill,
    plan_interval,
)
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
)
from jobscheduler.domain.models import (
    MANAGED_SELECTOR,
    JobStatus,
)
from jobscheduler.domain.schedule import (
    BACKFILLED_ANNOTATION,
    DEFAULT_CATCH_UP_MAX_RUNS,
    LAST_RUN_ANNOTATION,
    NEXT_RUN_ANNOTATION,
    SCHEDULED_AT_ANNOTATION,
    SPEC_ANNOTATION,
    Obj,
    ScheduleSpec,
    Timing,
    annotations_of,
    controller_run_name,
    run_job,
    run_name_at,
    spec_from,
    timing_of,
)
from jobscheduler.obs.metrics import SCHEDULE_RUNS
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

log = structlog.get_logger("jobscheduler.control.schedule_runs")


class ScheduleRunner:
    """Starts the runs the leader owns, through the schedule service's gateway and job cache."""

    def __init__(self, schedules: ScheduleService) -> None:
        self.schedules = schedules
        self.gateway = schedules.gateway
        self.jobs = schedules.jobs

    def managed_cronjobs(self, namespace: str) -> list[Obj]:
        cronjobs = self.gateway.list_of("cronjobs", namespace, label_selector=MANAGED_SELECTOR)
        return [cj for cj in cronjobs if not cj["metadata"].get("deletionTimestamp")]

    def reconcile(self, cronjob: Obj, now: datetime) -> None:
        """One tick of the leader for one schedule: start the interval runs that are due (service
        executor), or the missed cron runs when catch-up is ALL."""
        if SPEC_ANNOTATION not in annotations_of(cronjob):
            return
        spec = spec_from(cronjob)
        if spec.paused:
            return
        created_at = parse_rfc3339(cronjob["metadata"].get("creationTimestamp")) or now
        timing = timing_of(cronjob, spec)
        if timing.executor == "service":
            self._reconcile_interval(cronjob, spec, timing, now, created_at)
        elif spec.catch_up is CatchUp.ALL:
            self._backfill_cron(cronjob, spec, timing, now, created_at)

    def _active_runs(self, cronjob: Obj) -> list[JobStatus]:
        meta = cronjob["metadata"]
        return [
            s
            for s in self.schedules.runs(meta["namespace"], meta["name"], deadline=None)
            if not s.state.terminal
        ]

    def _reconcile_interval(
        self, cronjob: Obj, spec: ScheduleSpec, timing: Timing, now: datetime, created_at: datetime
    ) -> None:
        assert timing.interval is not None
        annotations = annotations_of(cronjob)
        due = parse_rfc3339(annotations.get(NEXT_RUN_ANNOTATION))
        if due is None:
            (due,) = timing.runs_after(created_at, 1)
        if now < due:
            return
        active = self._active_runs(cronjob)
        plan = plan_interval(
            due_from=due,
            now=now,
            interval=timing.interval,
            active=len(active),
            concurrency=spec.concurrency,
            catch_up=spec.catch_up,
            max_catch_up=spec.catch_up_max_runs or DEFAULT_CATCH_UP_MAX_RUNS,
            starting_deadline=(
                timedelta(seconds=spec.starting_deadline_seconds)
                if spec.starting_deadline_seconds is not None
                else None
            ),
        )
        meta = cronjob["metadata"]
        if plan.replace_active:
            for run in active:
                self.gateway.delete("jobs", meta["namespace"], run.job_id)
        for at in plan.start:
            self._start_run(cronjob, run_name_at(spec.name, at), at)
        if plan.missed:
            SCHEDULE_RUNS.labels("missed").inc(plan.missed)
            log.info(
                "schedule runs missed", schedule=spec.name, missed=plan.missed, policy=spec.catch_up.value
            )
        patch: Obj = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {NEXT_RUN_ANNOTATION: format_rfc3339(plan.next_run)},
            }
        }
        if plan.start:
            patch["metadata"]["annotations"][LAST_RUN_ANNOTATION] = format_rfc3339(plan.start[-1])
        with contextlib.suppress(ConflictError):  # changed meanwhile: the next tick looks again
            self.gateway.patch("cronjobs", meta["namespace"], meta["name"], patch)
        # History limits need nothing here: the runs are owned by the CronJob as their
        # controller, and the CronJob controller trims them even while the CronJob is suspended.

    def _backfill_cron(
        self, cronjob: Obj, spec: ScheduleSpec, timing: Timing, now: datetime, created_at: datetime
    ) -> None:
        annotations = annotations_of(cronjob)
        marks = [
            created_at,
            parse_rfc3339((cronjob.get("status") or {}).get("lastScheduleTime")),
            parse_rfc3339(annotations.get(BACKFILLED_ANNOTATION)),
        ]
        since = max(m for m in marks if m is not None)
        times = plan_cron_backfill(
            since=since,
            now=now,
            runs_after=timing.runs_after,
            max_catch_up=spec.catch_up_max_runs or DEFAULT_CATCH_UP_MAX_RUNS,
        )
        if not times:
            return
        if spec.concurrency is not Concurrency.ALLOW:
            if spec.concurrency is Concurrency.FORBID and self._active_runs(cronjob):
                times = []
            times = times[-1:]
        meta = cronjob["metadata"]
        for at in times:
            self._start_run(cronjob, controller_run_name(spec.name, at), at)
        patch = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {BACKFILLED_ANNOTATION: format_rfc3339(max(times) if times else now)},
            }
        }
        with contextlib.suppress(ConflictError):
            self.gateway.patch("cronjobs", meta["namespace"], meta["name"], patch)

    def _start_run(self, cronjob: Obj, job_name: str, at: datetime) -> None:
        job = run_job(cronjob, job_name, annotations={SCHEDULED_AT_ANNOTATION: format_rfc3339(at)})
        try:
            made = self.gateway.create("jobs", cronjob["metadata"]["namespace"], job)
        except AlreadyExistsError:
            return  # started by an earlier tick, another leader, or the CronJob controller
        if self.jobs.cache is not None:
            self.jobs.cache.observe_job(made)
        SCHEDULE_RUNS.labels("scheduled").inc()
        log.info(
            "schedule run started",
            schedule=cronjob["metadata"]["name"],
            job_id=job_name,
            run_at=format_rfc3339(at),
        )
