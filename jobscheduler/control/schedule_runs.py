"""The leader's part of schedules: each tick, start the runs of the schedules the service
executes (intervals no cron expression fits, BUFFER_ONE schedules) that are due; for cron
schedules with catch-up ALL, the runs the CronJob controller missed, named as the controller
names them, so no run ever starts twice; and pause a schedule whose last `pause_after_failures`
runs failed (calling the `on_schedule_paused` hook once per pause).

Runs only on the elected leader (jobscheduler.control.leader's ScheduleLoop); the next run time is
kept on the CronJob with writes conditional on its resourceVersion, so a restart or a change of
leader neither skips nor repeats a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from jobscheduler.app.schedules import ScheduleService
from jobscheduler.domain.catchup import (
    CatchUp,
    Concurrency,
    IntervalPlan,
    plan_buffer_one,
    plan_cron_backfill,
    plan_interval,
    plan_walk,
)
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
)
from jobscheduler.domain.failures import PAUSED_AFTER_FAILURES, RunOutcome, failure_streak, pause_message
from jobscheduler.domain.models import (
    MANAGED_SELECTOR,
    JobStatus,
)
from jobscheduler.domain.schedule import (
    BACKFILLED_ANNOTATION,
    BUFFERED_ANNOTATION,
    DEFAULT_CATCH_UP_MAX_RUNS,
    LAST_RUN_ANNOTATION,
    NEXT_RUN_ANNOTATION,
    PAUSED_ANNOTATION,
    PAUSED_REASON_ANNOTATION,
    SCHEDULED_AT_ANNOTATION,
    SPEC_ANNOTATION,
    Obj,
    PauseReason,
    ScheduleSpec,
    Timing,
    annotations_of,
    controller_run_name,
    executor_of,
    failures_since,
    run_job,
    run_name_at,
    spec_from,
    spec_json,
    timing_of,
)
from jobscheduler.obs.metrics import SCHEDULE_RUNS
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

log = structlog.get_logger("jobscheduler.control.schedule_runs")

# Called by the leader once each time it pauses a schedule by itself (pause_after_failures),
# after the pause is written: the schedule (as paused) and why. A notification goes here.
SchedulePausedHook = Callable[[ScheduleSpec, PauseReason], None]


class ScheduleRunner:
    """Starts the runs the leader owns, through the schedule service's gateway and job cache."""

    def __init__(
        self, schedules: ScheduleService, *, on_schedule_paused: SchedulePausedHook | None = None
    ) -> None:
        self.schedules = schedules
        self.gateway = schedules.gateway
        self.jobs = schedules.jobs
        self.on_schedule_paused = on_schedule_paused

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
        if spec.pause_after_failures and self._pause_after_failures(cronjob, spec, now):
            return
        created_at = parse_rfc3339(cronjob["metadata"].get("creationTimestamp")) or now
        timing = timing_of(cronjob, spec)
        if timing.executor == "service":
            self._reconcile_service(cronjob, spec, timing, now, created_at)
        elif spec.catch_up is CatchUp.ALL:
            self._backfill_cron(cronjob, spec, timing, now, created_at)

    def _runs(self, cronjob: Obj) -> list[JobStatus]:
        meta = cronjob["metadata"]
        return self.schedules.runs(meta["namespace"], meta["name"], deadline=None)

    def _active_runs(self, cronjob: Obj) -> list[JobStatus]:
        return [s for s in self._runs(cronjob) if not s.state.terminal]

    def _pause_after_failures(self, cronjob: Obj, spec: ScheduleSpec, now: datetime) -> bool:
        """Pauses the schedule when its last runs failed `pause_after_failures` times in a row;
        returns whether it did. The write is conditional on the CronJob's resourceVersion, so of
        two leaders (or a leader and a caller's resume) one wins and the hook runs once."""
        assert spec.pause_after_failures
        streak = failure_streak(
            (RunOutcome(s.job_id, s.state, s.created_at or now) for s in self._runs(cronjob)),
            since=failures_since(cronjob),
        )
        message = pause_message(streak, spec.pause_after_failures)
        if message is None:
            return False
        paused = replace(spec, paused=True)
        reason = PauseReason(PAUSED_AFTER_FAILURES, message, now, len(streak))
        meta = cronjob["metadata"]
        patch: Obj = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {
                    SPEC_ANNOTATION: spec_json(paused),
                    PAUSED_REASON_ANNOTATION: reason.to_json(),
                    BUFFERED_ANNOTATION: None,
                },
            }
        }
        if executor_of(cronjob) == "service":
            patch["metadata"]["annotations"][PAUSED_ANNOTATION] = "true"
        else:
            patch["spec"] = {"suspend": True}
        try:
            self.gateway.patch("cronjobs", meta["namespace"], meta["name"], patch)
        except ConflictError:
            return True  # changed meanwhile (another leader, a caller): the next tick looks again
        log.warning(
            "schedule paused after failures", schedule=spec.name, namespace=spec.namespace, message=message
        )
        if self.on_schedule_paused is not None:
            try:
                self.on_schedule_paused(paused, reason)
            except Exception:
                log.exception("the schedule-paused hook failed", schedule=spec.name)
        return True

    def _reconcile_service(
        self, cronjob: Obj, spec: ScheduleSpec, timing: Timing, now: datetime, created_at: datetime
    ) -> None:
        annotations = annotations_of(cronjob)
        due = parse_rfc3339(annotations.get(NEXT_RUN_ANNOTATION))
        if due is None:
            (due,) = timing.runs_after(created_at, 1)
        buffer_one = spec.concurrency is Concurrency.BUFFER_ONE
        buffered = parse_rfc3339(annotations.get(BUFFERED_ANNOTATION)) if buffer_one else None
        if now < due and buffered is None:
            return
        runs = self._runs(cronjob)
        active = [s for s in runs if not s.state.terminal]
        plan = self._plan(spec, timing, due, now, active=len(active))
        meta = cronjob["metadata"]
        start = list(plan.start)
        missed = plan.missed
        buffered_next: datetime | None = None
        if buffer_one:
            # A time already run (a tick whose write was lost) is not due again.
            started = {s.job_id for s in runs}
            due_times = [t for t in plan.start if run_name_at(spec.name, t) not in started]
            waiting = (
                buffered if buffered is None or run_name_at(spec.name, buffered) not in started else None
            )
            decision = plan_buffer_one(due=due_times, active=len(active), buffered=waiting)
            start = [decision.start] if decision.start is not None else []
            missed += len(decision.skipped)
            buffered_next = decision.buffered
        if plan.replace_active:
            for run in active:
                self.gateway.delete("jobs", meta["namespace"], run.job_id)
        for at in start:
            self._start_run(cronjob, run_name_at(spec.name, at), at)
        if missed:
            SCHEDULE_RUNS.labels("missed").inc(missed)
            log.info("schedule runs missed", schedule=spec.name, missed=missed, policy=spec.catch_up.value)
        if not start and not missed and plan.next_run == due and buffered_next == buffered:
            return  # a run still waits for the active one: nothing to write
        patch: Obj = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {NEXT_RUN_ANNOTATION: format_rfc3339(plan.next_run)},
            }
        }
        if start:
            patch["metadata"]["annotations"][LAST_RUN_ANNOTATION] = format_rfc3339(start[-1])
        if buffer_one:
            patch["metadata"]["annotations"][BUFFERED_ANNOTATION] = (
                format_rfc3339(buffered_next, precision="microseconds") if buffered_next else None
            )
        with contextlib.suppress(ConflictError):  # changed meanwhile: the next tick looks again
            self.gateway.patch("cronjobs", meta["namespace"], meta["name"], patch)
        # History limits need nothing here: the runs are owned by the CronJob as their
        # controller, and the CronJob controller trims them even while the CronJob is suspended.

    def _plan(
        self, spec: ScheduleSpec, timing: Timing, due: datetime, now: datetime, *, active: int
    ) -> IntervalPlan:
        """The run times due now; BUFFER_ONE takes them all (as ALLOW) and decides afterwards."""
        concurrency = Concurrency.ALLOW if spec.concurrency is Concurrency.BUFFER_ONE else spec.concurrency
        deadline = (
            timedelta(seconds=spec.starting_deadline_seconds)
            if spec.starting_deadline_seconds is not None
            else None
        )
        max_catch_up = spec.catch_up_max_runs or DEFAULT_CATCH_UP_MAX_RUNS
        if timing.interval is not None:
            return plan_interval(
                due_from=due,
                now=now,
                interval=timing.interval,
                active=active,
                concurrency=concurrency,
                catch_up=spec.catch_up,
                max_catch_up=max_catch_up,
                starting_deadline=deadline,
            )
        return plan_walk(
            due_from=due,
            now=now,
            runs_after=timing.runs_after,
            active=active,
            concurrency=concurrency,
            catch_up=spec.catch_up,
            max_catch_up=max_catch_up,
            starting_deadline=deadline,
        )

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
