"""Recurring schedules, built on Kubernetes: each schedule is a batch/v1 CronJob named after it.
The use cases: create, read, list, update, delete, pause, resume and trigger schedules.

- A cron schedule, and an interval some cron expression expresses exactly (30m, 6h, 1d, 7d on
  whole minutes), is an ordinary CronJob: the CronJob controller starts its runs.
- Any other interval (45m, 5h, a start at :17 seconds) is kept as a suspended CronJob, storage
  only, and its runs are started by the leader (jobscheduler.control.schedule_runs), which keeps
  the next run time on the CronJob, so it survives restarts and leader changes.

Everything a schedule is lives on its CronJob (spec as the caller gave it in an annotation, the
rendered job template, the loop's state: jobscheduler.domain.schedule); its runs are Jobs
labelled with its name and owned by it, so `kubectl get jobs -l jobscheduler.io/schedule=NAME`
lists them and deleting the CronJob deletes them. Statistics are computed from the runs still
kept (history limits).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from jobscheduler.app.service import MAX_PAGE_SIZE, JobQuery, JobService
from jobscheduler.domain.audit import Origin, stamp_origin
from jobscheduler.domain.catchup import (
    MAX_CATCH_UP_RUNS,
    Concurrency,
    cron_starting_deadline,
)
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from jobscheduler.domain.failures import RunOutcome, failure_streak, history_floor
from jobscheduler.domain.models import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_SELECTOR,
    SCHEDULE_LABEL,
    JobStatus,
)
from jobscheduler.domain.render import REQUEST_HASH_ANNOTATION
from jobscheduler.domain.runstats import RunRecord, summarize
from jobscheduler.domain.schedule import (
    BACKFILL_LABEL,
    BASE36,
    BUFFERED_ANNOTATION,
    DEFAULT_NEXT_RUNS,
    EXECUTOR_LABEL,
    FAILURES_SINCE_ANNOTATION,
    LAST_RUN_ANNOTATION,
    MANUAL_ANNOTATION,
    MAX_NEXT_RUNS,
    MAX_SCHEDULE_NAME,
    NEXT_RUN_ANNOTATION,
    PAUSED_ANNOTATION,
    PAUSED_REASON_ANNOTATION,
    SPEC_ANNOTATION,
    PauseReason,
    ScheduleSpec,
    ScheduleView,
    Timing,
    annotations_of,
    executor_of,
    failed_history,
    failures_since,
    parse_timing,
    run_job,
    same_timing,
    spec_from,
    spec_json,
    successful_history,
    timing_of,
)
from jobscheduler.domain.validation import check_dns_label, shown
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.obs.metrics import SCHEDULE_RUNS
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

log = structlog.get_logger("jobscheduler.app.schedules")

Obj = dict[str, Any]


class ScheduleService:
    def __init__(self, gateway: KubeGateway, jobs: JobService) -> None:
        self.gateway = gateway
        self.jobs = jobs
        self.settings = jobs.settings

    # -- spec ⇄ CronJob -----------------------------------------------------------------------

    def _check(self, spec: ScheduleSpec, now: datetime) -> tuple[ScheduleSpec, Timing, Obj]:
        """Validates a spec; returns it normalised, its timing and the rendered job template."""
        namespace = self.jobs.resolve_namespace(spec.namespace)
        if not spec.name:
            raise InvalidArgumentError("name", "is required")
        if len(spec.name) > MAX_SCHEDULE_NAME:
            raise InvalidArgumentError(
                "name",
                f"{shown(spec.name)} is longer than {MAX_SCHEDULE_NAME} characters (a CronJob's limit)",
            )
        check_dns_label("name", spec.name, what="schedule name")
        timing = parse_timing(
            spec, min_interval=timedelta(seconds=self.settings.min_schedule_interval_seconds), now=now
        )
        for field_name, value, low, high in (
            ("starting_deadline_seconds", spec.starting_deadline_seconds, 1, 2**31 - 1),
            ("successful_runs_history_limit", spec.successful_runs_history_limit, 0, 1000),
            ("failed_runs_history_limit", spec.failed_runs_history_limit, 0, 1000),
            ("catch_up_max_runs", spec.catch_up_max_runs, 0, MAX_CATCH_UP_RUNS),
            ("pause_after_failures", spec.pause_after_failures, 0, 1000),
        ):
            if value is not None and not low <= value <= high:
                raise InvalidArgumentError(field_name, f"must be between {low} and {high} (got {value})")
        job, checked, manifest = self.jobs.submission.check_embedded_job(
            spec.job,
            namespace=namespace,
            owner="schedule",
            job_id=spec.name,
            default_name=spec.name,
            forbidden={
                "request_id": spec.job.request_id,
                "suspend": spec.job.suspend,
                "secret_env": spec.job.secret_env,
                "after": spec.job.after,
                "after_condition": spec.job.after_condition,
            },
            why="each run is a job of its own; TriggerSchedule takes an idempotency_key; keep secrets in a "
            "Secret the image reads",
        )
        spec = replace(spec, namespace=namespace, job=job)
        if checked.ttl_seconds_after_finished is not None and job.ttl_seconds_after_finished is None:
            # Runs are kept by the history limits, not the service's default retention.
            manifest["spec"].pop("ttlSecondsAfterFinished", None)
        return spec, timing, manifest

    def _cronjob(self, spec: ScheduleSpec, timing: Timing, manifest: Obj, *, paused: bool) -> Obj:
        labels = {
            MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            SCHEDULE_LABEL: spec.name,
            EXECUTOR_LABEL: timing.executor,
        }
        template_labels = {**manifest["metadata"]["labels"], SCHEDULE_LABEL: spec.name}
        pod_template = manifest["spec"]["template"]
        pod_template["metadata"]["labels"] = {**pod_template["metadata"]["labels"], SCHEDULE_LABEL: spec.name}
        template_annotations = {
            k: v for k, v in manifest["metadata"]["annotations"].items() if k != REQUEST_HASH_ANNOTATION
        }
        successful, failed = history_floor(
            successful_history(spec), failed_history(spec), spec.pause_after_failures
        )
        cron_spec: Obj = {
            "schedule": timing.cronjob_schedule,
            "timeZone": timing.zone.key,
            "concurrencyPolicy": spec.concurrency.cronjob_policy,
            "suspend": paused or timing.executor == "service",
            "successfulJobsHistoryLimit": successful,
            "failedJobsHistoryLimit": failed,
            "jobTemplate": {
                "metadata": {"labels": template_labels, "annotations": template_annotations},
                "spec": manifest["spec"],
            },
        }
        deadline = cron_starting_deadline(spec.catch_up, spec.starting_deadline_seconds)
        if deadline is not None:
            cron_spec["startingDeadlineSeconds"] = deadline
        annotations = {SPEC_ANNOTATION: spec_json(spec)}
        if timing.executor == "service" and paused:
            annotations[PAUSED_ANNOTATION] = "true"
        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": spec.name,
                "namespace": spec.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": cron_spec,
        }

    # -- the RPCs ------------------------------------------------------------------------------

    def create(self, spec: ScheduleSpec, *, deadline: float | None = None) -> ScheduleView:
        now = datetime.now(UTC)
        spec, timing, manifest = self._check(spec, now)
        cronjob = self._cronjob(spec, timing, manifest, paused=spec.paused)
        if timing.executor == "service":
            (first,) = timing.runs_after(now, 1)
            cronjob["metadata"]["annotations"][NEXT_RUN_ANNOTATION] = format_rfc3339(first)
        try:
            created = self.gateway.create("cronjobs", spec.namespace, cronjob, deadline=deadline)
        except AlreadyExistsError:
            raise AlreadyExistsError(
                f"schedule {spec.name!r} already exists in namespace {spec.namespace!r}; "
                "UpdateSchedule changes it"
            ) from None
        except NotFoundError:
            raise InvalidArgumentError(
                "namespace", f"namespace {spec.namespace!r} does not exist; create it or pick another"
            ) from None
        log.info("schedule created", schedule=spec.name, namespace=spec.namespace, executor=timing.executor)
        return self._view(created, deadline=deadline)

    def get(
        self, namespace: str, name: str, *, next_count: int = DEFAULT_NEXT_RUNS, deadline: float | None = None
    ) -> ScheduleView:
        if not 0 <= next_count <= MAX_NEXT_RUNS:
            raise InvalidArgumentError(
                "next_runs", f"must be between 0 and {MAX_NEXT_RUNS} (got {next_count})"
            )
        return self._view(
            self._get(namespace, name, deadline=deadline),
            next_count=next_count or DEFAULT_NEXT_RUNS,
            deadline=deadline,
        )

    def list_schedules(self, namespace: str, *, deadline: float | None = None) -> list[ScheduleView]:
        namespace = self.jobs.resolve_namespace(namespace)
        cronjobs = [
            cj
            for cj in self.gateway.list_of(
                "cronjobs", namespace, label_selector=MANAGED_SELECTOR, deadline=deadline
            )
            if not cj["metadata"].get("deletionTimestamp")
        ]
        runs = self.runs(namespace, "", deadline=deadline)
        by_schedule: dict[str, list[JobStatus]] = {}
        for status in runs:
            by_schedule.setdefault(status.schedule, []).append(status)
        backfilled: dict[str, set[str]] = {}
        for status in self.runs(namespace, "", selector=BACKFILL_LABEL, deadline=deadline):
            backfilled.setdefault(status.schedule, set()).add(status.job_id)
        return [
            self._view(
                cj,
                runs=by_schedule.get(cj["metadata"]["name"], []),
                backfilled=backfilled.get(cj["metadata"]["name"], set()),
                deadline=deadline,
            )
            for cj in sorted(cronjobs, key=lambda cj: str(cj["metadata"]["name"]))
        ]

    def update(self, spec: ScheduleSpec, *, deadline: float | None = None) -> ScheduleView:
        now = datetime.now(UTC)
        for _ in range(5):
            current = self._get(spec.namespace, spec.name, deadline=deadline)
            checked, timing, manifest = self._check(spec, now)
            cronjob = self._cronjob(checked, timing, manifest, paused=checked.paused)
            old = annotations_of(current)
            old_spec = spec_from(current)
            if timing.executor == "service":
                keep = old.get(NEXT_RUN_ANNOTATION) if same_timing(old_spec, checked) else None
                (first,) = timing.runs_after(now, 1)
                cronjob["metadata"]["annotations"][NEXT_RUN_ANNOTATION] = keep or format_rfc3339(first)
                if old.get(LAST_RUN_ANNOTATION):
                    cronjob["metadata"]["annotations"][LAST_RUN_ANNOTATION] = old[LAST_RUN_ANNOTATION]
                if checked.concurrency is Concurrency.BUFFER_ONE and old.get(BUFFERED_ANNOTATION):
                    cronjob["metadata"]["annotations"][BUFFERED_ANNOTATION] = old[BUFFERED_ANNOTATION]
            # The failure streak goes on across an update; the reason stays while it stays paused.
            kept = [FAILURES_SINCE_ANNOTATION] + ([PAUSED_REASON_ANNOTATION] if checked.paused else [])
            for key in kept:
                if old.get(key):
                    cronjob["metadata"]["annotations"][key] = old[key]
            cronjob["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                updated = self.gateway.replace(
                    "cronjobs", checked.namespace, checked.name, cronjob, deadline=deadline
                )
            except ConflictError:
                continue
            log.info("schedule updated", schedule=checked.name, namespace=checked.namespace)
            return self._view(updated, deadline=deadline)
        raise FailedPreconditionError(f"schedule {spec.name!r} kept changing while being updated; try again")

    def delete(self, namespace: str, name: str, *, keep_runs: bool, deadline: float | None = None) -> None:
        current = self._get(namespace, name, deadline=deadline)
        self.gateway.delete(
            "cronjobs",
            current["metadata"]["namespace"],
            name,
            uid=current["metadata"]["uid"],
            propagation="Orphan" if keep_runs else "Background",
            deadline=deadline,
        )
        log.info(
            "schedule deleted", schedule=name, namespace=current["metadata"]["namespace"], keep_runs=keep_runs
        )

    def set_paused(
        self, namespace: str, name: str, paused: bool, *, deadline: float | None = None
    ) -> ScheduleView:
        current = self._get(namespace, name, deadline=deadline)
        spec = replace(spec_from(current), paused=paused)
        # A caller's pause or resume replaces the service's reason; a resume starts a new failure
        # streak (pause_after_failures counts only the runs created after it), and a run waiting
        # under BUFFER_ONE is dropped with the pause, as the paused run times are.
        patch: Obj = {
            "metadata": {
                "annotations": {
                    SPEC_ANNOTATION: spec_json(spec),
                    PAUSED_REASON_ANNOTATION: None,
                    BUFFERED_ANNOTATION: None,
                }
            }
        }
        if not paused:
            # Whole seconds, as a Job's creationTimestamp: a run created in the second of the resume
            # counts (creation times cannot tell which came first within it).
            patch["metadata"]["annotations"][FAILURES_SINCE_ANNOTATION] = format_rfc3339(datetime.now(UTC))
        if executor_of(current) == "service":
            patch["metadata"]["annotations"][PAUSED_ANNOTATION] = "true" if paused else None
            if not paused:
                # Resumed: runs start again from the next run time, the paused ones are not missed.
                (first,) = timing_of(current, spec).runs_after(datetime.now(UTC), 1)
                patch["metadata"]["annotations"][NEXT_RUN_ANNOTATION] = format_rfc3339(first)
        else:
            patch["spec"] = {"suspend": paused}
        updated = self.gateway.patch(
            "cronjobs", current["metadata"]["namespace"], name, patch, deadline=deadline
        )
        log.info("schedule paused" if paused else "schedule resumed", schedule=name)
        return self._view(updated, deadline=deadline)

    def trigger(
        self,
        namespace: str,
        name: str,
        *,
        idempotency_key: str,
        deadline: float | None = None,
        origin: Origin | None = None,
    ) -> tuple[JobStatus, bool]:
        """Runs the schedule's job now, as `kubectl create job --from=cronjob/NAME` does: a Job from
        its template, owned by it. One key, one run: the key decides the Job's name. origin: who
        triggers it and in which trace (the run's triggered-by and traceparent)."""
        if len(idempotency_key) > 256:
            raise InvalidArgumentError("idempotency_key", "must be at most 256 characters")
        current = self._get(namespace, name, deadline=deadline)
        if idempotency_key:
            digest = hashlib.sha256(f"{name}\n{idempotency_key}".encode()).hexdigest()[:9]
            job_name = f"{name}-m{digest}"
        else:
            job_name = f"{name}-m" + "".join(secrets.choice(BASE36) for _ in range(9))
        job = run_job(current, job_name, annotations={MANUAL_ANNOTATION: "manual"})
        if origin is not None:
            stamp_origin(job, origin, triggered=True)
        created = True
        try:
            made = self.gateway.create("jobs", current["metadata"]["namespace"], job, deadline=deadline)
        except AlreadyExistsError:
            created = False
            made = self.gateway.get_job(current["metadata"]["namespace"], job_name, deadline=deadline)
            owners = [o.get("uid") for o in made["metadata"].get("ownerReferences") or []]
            if current["metadata"]["uid"] not in owners:
                raise AlreadyExistsError(
                    f"job {job_name!r} exists and is not a run of schedule {name!r}; "
                    "use another idempotency_key"
                ) from None
        if self.jobs.cache is not None:
            self.jobs.cache.observe_job(made)
        if created:
            SCHEDULE_RUNS.labels("manual").inc()
            log.info("schedule triggered", schedule=name, job_id=job_name)
        return self.jobs.get_status(current["metadata"]["namespace"], job_name, deadline=deadline), created

    # -- reading -------------------------------------------------------------------------------

    def read_cronjob(self, namespace: str, name: str, *, deadline: float | None = None) -> Obj:
        """The schedule's CronJob (NotFoundError when it is none of ours)."""
        return self._get(namespace, name, deadline=deadline)

    def _get(self, namespace: str, name: str, *, deadline: float | None) -> Obj:
        namespace = self.jobs.resolve_namespace(namespace)
        if not name:
            raise InvalidArgumentError("name", "is required")
        if len(name) > MAX_SCHEDULE_NAME:
            raise NotFoundError(f"schedule {name[:80]!r} not found in namespace {namespace!r}")
        try:
            cronjob = self.gateway.get("cronjobs", namespace, name, deadline=deadline)
        except NotFoundError:
            raise NotFoundError(f"schedule {name!r} not found in namespace {namespace!r}") from None
        if (cronjob["metadata"].get("labels") or {}).get(
            MANAGED_BY_LABEL
        ) != MANAGED_BY_VALUE or SPEC_ANNOTATION not in annotations_of(cronjob):
            raise NotFoundError(f"CronJob {name!r} in namespace {namespace!r} is not a jobscheduler schedule")
        if cronjob["metadata"].get("deletionTimestamp"):
            raise NotFoundError(f"schedule {name!r} in namespace {namespace!r} is being deleted")
        return cronjob

    def runs(
        self, namespace: str, schedule: str, *, deadline: float | None, selector: str = ""
    ) -> list[JobStatus]:
        runs: list[JobStatus] = []
        token = ""
        while True:
            query = JobQuery(
                namespace=namespace,
                schedule=schedule,
                label_selector=",".join(s for s in (selector, "" if schedule else SCHEDULE_LABEL) if s),
                page_size=MAX_PAGE_SIZE,
                page_token=token,
            )
            page = self.jobs.list_jobs(query, deadline=deadline)
            runs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return runs

    def _view(
        self,
        cronjob: Obj,
        *,
        runs: list[JobStatus] | None = None,
        backfilled: set[str] | None = None,
        next_count: int = DEFAULT_NEXT_RUNS,
        deadline: float | None = None,
    ) -> ScheduleView:
        meta = cronjob["metadata"]
        spec = spec_from(cronjob)
        annotations = annotations_of(cronjob)
        if runs is None:
            runs = self.runs(meta["namespace"], meta["name"], deadline=deadline)
        if backfilled is None:
            backfilled = {
                s.job_id
                for s in self.runs(
                    meta["namespace"], meta["name"], selector=BACKFILL_LABEL, deadline=deadline
                )
            }
        now = datetime.now(UTC)
        timing = timing_of(cronjob, spec)
        upcoming: list[datetime] = []
        if not spec.paused:
            after = now
            if timing.executor == "service":
                due = parse_rfc3339(annotations_of(cronjob).get(NEXT_RUN_ANNOTATION))
                if due is not None and due > now:
                    upcoming.append(due)
                    after = due
            upcoming += timing.runs_after(after, next_count - len(upcoming))
        stats = summarize(
            RunRecord(
                job_id=s.job_id,
                state=s.state,
                created_at=s.created_at or now,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in runs
        )
        last = max(runs, key=lambda s: (s.created_at or now, s.job_id), default=None)
        if timing.executor == "service":
            last_scheduled = parse_rfc3339(annotations_of(cronjob).get(LAST_RUN_ANNOTATION))
        else:
            last_scheduled = parse_rfc3339((cronjob.get("status") or {}).get("lastScheduleTime"))
        reason = PauseReason.from_annotations(annotations) if spec.paused else None
        streak = failure_streak(
            (RunOutcome(s.job_id, s.state, s.created_at or now) for s in runs),
            since=failures_since(cronjob),
        )
        return ScheduleView(
            spec=spec,
            executor=timing.executor,
            cronjob_schedule=timing.cronjob_schedule,
            next_runs=upcoming,
            last_run=last,
            active_runs=[s.job_id for s in runs if not s.state.terminal],
            stats=stats,
            created_at=parse_rfc3339(meta.get("creationTimestamp")),
            last_schedule_time=last_scheduled,
            paused_reason=reason.reason if reason else "",
            paused_message=reason.message if reason else "",
            paused_at=reason.at if reason else None,
            consecutive_failures=len(streak),
            buffered_run=None if spec.paused else parse_rfc3339(annotations.get(BUFFERED_ANNOTATION)),
            backfilled_runs=sum(1 for s in runs if s.job_id in backfilled),
        )
