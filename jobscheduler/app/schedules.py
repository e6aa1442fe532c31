"""Recurring schedules, built on Kubernetes: each schedule is a batch/v1 CronJob named after it.

- A cron schedule, and an interval some cron expression expresses exactly (30m, 6h, 1d, 7d on
  whole minutes), is an ordinary CronJob: the CronJob controller starts its runs.
- Any other interval (45m, 5h, a start at :17 seconds) is kept as a suspended CronJob, storage
  only, and its runs are started by the service's leader-elected loop (`reconcile`), which keeps
  the next run time on the CronJob, so it survives restarts and leader changes. Runs are named
  after their run time, so two leaders (or a retried tick) can never start one twice.

Everything a schedule is lives on its CronJob (spec as the caller gave it in an annotation, the
rendered job template, the loop's state); its runs are Jobs labelled with its name and owned by
it, so `kubectl get jobs -l jobscheduler.io/schedule=NAME` lists them and deleting the CronJob
deletes them. Statistics are computed from the runs still kept (history limits).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import string
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from jobscheduler.app.service import MAX_PAGE_SIZE, JobQuery, JobService
from jobscheduler.domain.catchup import (
    MAX_CATCH_UP_RUNS,
    CatchUp,
    Concurrency,
    cron_starting_deadline,
    plan_cron_backfill,
    plan_interval,
)
from jobscheduler.domain.cron import (
    CronSpec,
    interval_as_cron,
    next_interval_runs,
    next_runs,
    parse_cron,
    parse_interval,
    parse_time_zone,
)
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from jobscheduler.domain.models import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_SELECTOR,
    SCHEDULE_LABEL,
    JobStatus,
)
from jobscheduler.domain.render import REQUEST_HASH_ANNOTATION, JobRequest, Resources
from jobscheduler.domain.retry import RetryPolicy
from jobscheduler.domain.runstats import RunRecord, RunStats, summarize
from jobscheduler.domain.validation import check_dns_label, shown
from jobscheduler.kube.gateway import ConflictError, KubeGateway
from jobscheduler.obs.metrics import SCHEDULE_RUNS
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

log = structlog.get_logger("jobscheduler.app.schedules")

Obj = dict[str, Any]
SPEC_ANNOTATION = "jobscheduler.io/schedule-spec"
NEXT_RUN_ANNOTATION = "jobscheduler.io/next-run"
LAST_RUN_ANNOTATION = "jobscheduler.io/last-run"
PAUSED_ANNOTATION = "jobscheduler.io/paused"
BACKFILLED_ANNOTATION = "jobscheduler.io/backfilled-through"
EXECUTOR_LABEL = "jobscheduler.io/executor"
# Set on every run by the CronJob controller; the service sets them on the runs it starts too.
SCHEDULED_AT_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"  # as `kubectl create job --from=cronjob/…`
# A service-run schedule's CronJob is storage only: suspended, with a schedule that never matters.
PLACEHOLDER_CRON = "0 0 1 1 *"
MAX_SCHEDULE_NAME = 52  # CronJob names: the controller appends "-<minutes>" to make Job names
DEFAULT_NEXT_RUNS = 5
MAX_NEXT_RUNS = 100
DEFAULT_CATCH_UP_MAX_RUNS = 10
_BASE36 = string.digits + string.ascii_lowercase


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule as the caller describes it (ScheduleSpec in the proto)."""

    name: str
    namespace: str = ""
    cron: str = ""
    time_zone: str = ""
    interval: str = ""
    start_time: datetime | None = None
    concurrency: Concurrency = Concurrency.ALLOW
    starting_deadline_seconds: int | None = None
    successful_runs_history_limit: int | None = None
    failed_runs_history_limit: int | None = None
    paused: bool = False
    catch_up: CatchUp = CatchUp.SKIP
    catch_up_max_runs: int = 0
    job: JobRequest = field(default_factory=lambda: JobRequest(job_type="", params={}))


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule runs, parsed: a cron expression in a zone, or an interval from a start."""

    cron: CronSpec | None
    zone: zoneinfo.ZoneInfo
    interval: timedelta | None
    start: datetime | None
    executor: str  # "cronjob" or "service"
    cronjob_schedule: str  # the CronJob's spec.schedule

    def runs_after(self, after: datetime, count: int) -> list[datetime]:
        if self.cron is not None:
            return next_runs(self.cron, self.zone, after, count)
        assert self.interval is not None
        return next_interval_runs(self.interval, self.start, after, count)


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule with what the cluster says about it (Schedule in the proto)."""

    spec: ScheduleSpec
    executor: str
    cronjob_schedule: str
    next_runs: Sequence[datetime]
    last_run: JobStatus | None
    active_runs: Sequence[str]
    stats: RunStats
    created_at: datetime | None
    last_schedule_time: datetime | None


def parse_timing(spec: ScheduleSpec, *, min_interval: timedelta, now: datetime) -> Timing:
    """The schedule's timing, or InvalidArgumentError naming the field."""
    if bool(spec.cron) == bool(spec.interval):
        raise InvalidArgumentError("cron", "set exactly one of cron and interval")
    if spec.cron:
        if spec.start_time is not None:
            raise InvalidArgumentError("start_time", "applies to interval schedules only")
        cron = parse_cron(spec.cron)
        zone = parse_time_zone(spec.time_zone)
        return Timing(cron, zone, None, None, "cronjob", cron.expression)
    if spec.time_zone:
        raise InvalidArgumentError("time_zone", "applies to cron schedules only (an interval is zone-free)")
    interval = parse_interval(spec.interval, minimum=min_interval)
    start = spec.start_time
    # A cron expression also fires before a start still to come, so only a past start maps.
    as_cron = interval_as_cron(interval, start) if start is None or start <= now else None
    utc = zoneinfo.ZoneInfo("UTC")
    if as_cron is not None:
        return Timing(parse_cron(as_cron), utc, interval, start, "cronjob", as_cron)
    return Timing(None, utc, interval, start, "service", PLACEHOLDER_CRON)


def timing_of(cronjob: Obj, spec: ScheduleSpec) -> Timing:
    """A stored schedule's timing; who runs it is what was decided at creation (its label)."""
    created = parse_rfc3339(cronjob["metadata"].get("creationTimestamp")) or datetime.now(UTC)
    timing = parse_timing(spec, min_interval=timedelta(seconds=1), now=created)
    if _executor(cronjob) == "service" and timing.executor != "service":
        return replace(timing, cron=None, executor="service", cronjob_schedule=PLACEHOLDER_CRON)
    return timing


def run_name_at(schedule: str, at: datetime) -> str:
    """A service-started run's Job name: the schedule's and its run time in base-36 seconds."""
    seconds = int(at.timestamp())
    digits = ""
    while True:
        seconds, digit = divmod(seconds, 36)
        digits = _BASE36[digit] + digits
        if not seconds:
            return f"{schedule}-{digits}"


def controller_run_name(schedule: str, at: datetime) -> str:
    """The Job name the CronJob controller gives the run at `at` (name-<Unix minutes>)."""
    return f"{schedule}-{int(at.timestamp()) // 60}"


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
        ):
            if value is not None and not low <= value <= high:
                raise InvalidArgumentError(field_name, f"must be between {low} and {high} (got {value})")
        job, checked, manifest = self.jobs.check_embedded_job(
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
        cron_spec: Obj = {
            "schedule": timing.cronjob_schedule,
            "timeZone": timing.zone.key,
            "concurrencyPolicy": spec.concurrency.value,
            "suspend": paused or timing.executor == "service",
            "successfulJobsHistoryLimit": _successful_history(spec),
            "failedJobsHistoryLimit": _failed_history(spec),
            "jobTemplate": {
                "metadata": {"labels": template_labels, "annotations": template_annotations},
                "spec": manifest["spec"],
            },
        }
        deadline = cron_starting_deadline(spec.catch_up, spec.starting_deadline_seconds)
        if deadline is not None:
            cron_spec["startingDeadlineSeconds"] = deadline
        annotations = {SPEC_ANNOTATION: _spec_json(spec)}
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
        runs = self._runs(namespace, "", deadline=deadline)
        by_schedule: dict[str, list[JobStatus]] = {}
        for status in runs:
            by_schedule.setdefault(status.schedule, []).append(status)
        return [
            self._view(cj, runs=by_schedule.get(cj["metadata"]["name"], []), deadline=deadline)
            for cj in sorted(cronjobs, key=lambda cj: str(cj["metadata"]["name"]))
        ]

    def update(self, spec: ScheduleSpec, *, deadline: float | None = None) -> ScheduleView:
        now = datetime.now(UTC)
        for _ in range(5):
            current = self._get(spec.namespace, spec.name, deadline=deadline)
            checked, timing, manifest = self._check(spec, now)
            cronjob = self._cronjob(checked, timing, manifest, paused=checked.paused)
            old = _annotations(current)
            old_spec = _spec_from(current)
            if timing.executor == "service":
                keep = old.get(NEXT_RUN_ANNOTATION) if _same_timing(old_spec, checked) else None
                (first,) = timing.runs_after(now, 1)
                cronjob["metadata"]["annotations"][NEXT_RUN_ANNOTATION] = keep or format_rfc3339(first)
                if old.get(LAST_RUN_ANNOTATION):
                    cronjob["metadata"]["annotations"][LAST_RUN_ANNOTATION] = old[LAST_RUN_ANNOTATION]
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
        spec = replace(_spec_from(current), paused=paused)
        patch: Obj = {"metadata": {"annotations": {SPEC_ANNOTATION: _spec_json(spec)}}}
        if _executor(current) == "service":
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
        self, namespace: str, name: str, *, idempotency_key: str, deadline: float | None = None
    ) -> tuple[JobStatus, bool]:
        """Runs the schedule's job now, as `kubectl create job --from=cronjob/NAME` does: a Job from
        its template, owned by it. One key, one run: the key decides the Job's name."""
        if len(idempotency_key) > 256:
            raise InvalidArgumentError("idempotency_key", "must be at most 256 characters")
        current = self._get(namespace, name, deadline=deadline)
        if idempotency_key:
            digest = hashlib.sha256(f"{name}\n{idempotency_key}".encode()).hexdigest()[:9]
            job_name = f"{name}-m{digest}"
        else:
            job_name = f"{name}-m" + "".join(secrets.choice(_BASE36) for _ in range(9))
        job = _run_job(current, job_name, annotations={MANUAL_ANNOTATION: "manual"})
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
        ) != MANAGED_BY_VALUE or SPEC_ANNOTATION not in _annotations(cronjob):
            raise NotFoundError(f"CronJob {name!r} in namespace {namespace!r} is not a jobscheduler schedule")
        if cronjob["metadata"].get("deletionTimestamp"):
            raise NotFoundError(f"schedule {name!r} in namespace {namespace!r} is being deleted")
        return cronjob

    def _runs(self, namespace: str, schedule: str, *, deadline: float | None) -> list[JobStatus]:
        runs: list[JobStatus] = []
        token = ""
        while True:
            query = JobQuery(
                namespace=namespace,
                schedule=schedule,
                label_selector="" if schedule else SCHEDULE_LABEL,
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
        next_count: int = DEFAULT_NEXT_RUNS,
        deadline: float | None = None,
    ) -> ScheduleView:
        meta = cronjob["metadata"]
        spec = _spec_from(cronjob)
        if runs is None:
            runs = self._runs(meta["namespace"], meta["name"], deadline=deadline)
        now = datetime.now(UTC)
        timing = timing_of(cronjob, spec)
        upcoming: list[datetime] = []
        if not spec.paused:
            after = now
            if timing.executor == "service":
                due = parse_rfc3339(_annotations(cronjob).get(NEXT_RUN_ANNOTATION))
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
            last_scheduled = parse_rfc3339(_annotations(cronjob).get(LAST_RUN_ANNOTATION))
        else:
            last_scheduled = parse_rfc3339((cronjob.get("status") or {}).get("lastScheduleTime"))
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
        )

    # -- the leader's loop ---------------------------------------------------------------------

    def managed_cronjobs(self, namespace: str) -> list[Obj]:
        cronjobs = self.gateway.list_of("cronjobs", namespace, label_selector=MANAGED_SELECTOR)
        return [cj for cj in cronjobs if not cj["metadata"].get("deletionTimestamp")]

    def reconcile(self, cronjob: Obj, now: datetime) -> None:
        """One tick of the leader for one schedule: start the interval runs that are due (service
        executor), or the missed cron runs when catch-up is ALL."""
        if SPEC_ANNOTATION not in _annotations(cronjob):
            return
        spec = _spec_from(cronjob)
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
        return [s for s in self._runs(meta["namespace"], meta["name"], deadline=None) if not s.state.terminal]

    def _reconcile_interval(
        self, cronjob: Obj, spec: ScheduleSpec, timing: Timing, now: datetime, created_at: datetime
    ) -> None:
        assert timing.interval is not None
        annotations = _annotations(cronjob)
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
        annotations = _annotations(cronjob)
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
        job = _run_job(cronjob, job_name, annotations={SCHEDULED_AT_ANNOTATION: format_rfc3339(at)})
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


def _successful_history(spec: ScheduleSpec) -> int:
    """Finished runs kept; 3 unless set, the CronJob's own default."""
    return 3 if spec.successful_runs_history_limit is None else spec.successful_runs_history_limit


def _failed_history(spec: ScheduleSpec) -> int:
    """Failed runs kept; 1 unless set, the CronJob's own default."""
    return 1 if spec.failed_runs_history_limit is None else spec.failed_runs_history_limit


def _annotations(obj: Obj) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def _executor(cronjob: Obj) -> str:
    return str((cronjob["metadata"].get("labels") or {}).get(EXECUTOR_LABEL, "cronjob"))


def _same_timing(a: ScheduleSpec, b: ScheduleSpec) -> bool:
    return (a.interval, a.start_time, a.cron, a.time_zone) == (b.interval, b.start_time, b.cron, b.time_zone)


def _run_job(cronjob: Obj, job_name: str, *, annotations: Mapping[str, str]) -> Obj:
    """A Job from the CronJob's template, owned by it as its controller (so the controller counts
    it among the schedule's active runs and history, and deleting the schedule deletes it)."""
    template = cronjob["spec"]["jobTemplate"]
    meta = cronjob["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": meta["namespace"],
            "labels": dict(template["metadata"].get("labels") or {}),
            "annotations": {**(template["metadata"].get("annotations") or {}), **annotations},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }


# -- the spec annotation: what the caller asked for, as given -------------------------------------


def _spec_json(spec: ScheduleSpec) -> str:
    job = asdict(spec.job)
    job.pop("secret_env", None)
    body = {
        "name": spec.name,
        "namespace": spec.namespace,
        "cron": spec.cron,
        "time_zone": spec.time_zone,
        "interval": spec.interval,
        "start_time": spec.start_time.astimezone(UTC).isoformat() if spec.start_time else None,
        "concurrency": spec.concurrency.value,
        "starting_deadline_seconds": spec.starting_deadline_seconds,
        "successful_runs_history_limit": spec.successful_runs_history_limit,
        "failed_runs_history_limit": spec.failed_runs_history_limit,
        "paused": spec.paused,
        "catch_up": spec.catch_up.value,
        "catch_up_max_runs": spec.catch_up_max_runs,
        "job": job,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _spec_from(cronjob: Obj) -> ScheduleSpec:
    raw = json.loads(_annotations(cronjob)[SPEC_ANNOTATION])
    job = dict(raw["job"])
    job["resources"] = Resources(**job.get("resources") or {})
    if job.get("retry") is not None:
        job["retry"] = RetryPolicy.from_dict(job["retry"])
    spec = ScheduleSpec(
        name=raw["name"],
        namespace=raw["namespace"],
        cron=raw["cron"],
        time_zone=raw["time_zone"],
        interval=raw["interval"],
        start_time=parse_rfc3339(raw["start_time"]),
        concurrency=Concurrency(raw["concurrency"]),
        starting_deadline_seconds=raw["starting_deadline_seconds"],
        successful_runs_history_limit=raw["successful_runs_history_limit"],
        failed_runs_history_limit=raw["failed_runs_history_limit"],
        paused=bool(raw["paused"]),
        catch_up=CatchUp(raw["catch_up"]),
        catch_up_max_runs=raw["catch_up_max_runs"],
        job=JobRequest(**job),
    )
    # The CronJob itself is the truth about pausing: kubectl patch … suspend works too.
    if _executor(cronjob) == "service":
        paused = _annotations(cronjob).get(PAUSED_ANNOTATION) == "true"
    else:
        paused = bool(cronjob["spec"].get("suspend"))
    return replace(spec, paused=paused)
