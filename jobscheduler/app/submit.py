"""ScheduleJob's path, one step after the other, each step once:

  resolve   the job type (ScheduleJob's oneof field, or generic_job.type)
  validate  the type's parameters, then the fields every job shares (defaults applied)
  render    the Job manifest; with `after`, checked against the dependencies and held
  admit     the operator's policy: namespace (kube-* too), images; the queue (Kueue); the
            caller's rate
  submit    create (a dry run: server-side), the Secret of secret_env, the caller's cap on
            unfinished jobs, and the same request_id again returning its job
  report    the JobStatus derived from what the API server stored

Admission follows rendering because it judges what would run: every container the type
rendered, init containers included. Schedules and templates run resolve to admit on the job
they store (`prepare`), so a stored job is checked exactly as a ScheduleJob would be, without
spending a caller's rate.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from jobscheduler.domain.admission import caller_label
from jobscheduler.domain.audit import Origin, stamp_origin
from jobscheduler.domain.dependencies import hold_manifest, is_held, plan
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TokenScopeError,
    fields_under,
)
from jobscheduler.domain.models import (
    CALLER_LABEL,
    MANAGED_SELECTOR,
    REQUEST_ID_ANNOTATION,
    SECRET_ENV_PENDING_ANNOTATION,
    DependencyCondition,
    JobState,
    JobStatus,
)
from jobscheduler.domain.queueing import render_queueing, with_release
from jobscheduler.domain.registry import GENERIC_FIELD, JobType, check_generic_params
from jobscheduler.domain.render import (
    REQUEST_HASH_ANNOTATION,
    JobRequest,
    check_request,
    job_id_for_request,
    new_job_id,
    render_job,
    render_secret_env,
)
from jobscheduler.domain.selector import Requirement
from jobscheduler.domain.status import derive_status
from jobscheduler.kube.index import JobFilter

if TYPE_CHECKING:
    from jobscheduler.app.service import JobService

Obj = dict[str, Any]
log = structlog.get_logger("jobscheduler.app.submit")
# When a caller is at MAX_ACTIVE_JOBS_PER_CALLER: how long to suggest waiting before trying again.
ACTIVE_JOBS_RETRY_SECONDS = 5.0
UNFINISHED_STATES = frozenset(state for state in JobState if not state.terminal)


def check_queue_scope(queue: str, allowed: frozenset[str] | None, *, caller: str) -> None:
    """A token pinned to queues may only submit jobs to them (fair share between tokens is
    then Kueue's admission fair sharing between their queues)."""
    if allowed is None or queue in allowed:
        return
    raise TokenScopeError(
        f"queue: token {caller!r} may only submit to the queues {', '.join(sorted(allowed))}"
        + (f", not {queue!r}" if queue else "; give one of them as queue")
    )


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    status: JobStatus
    created: bool
    manifest: Obj | None = None  # dry runs only


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request through resolve, validate, render and admit: ready to submit."""

    request: JobRequest  # validated, defaults applied
    manifest: Obj


class Submission:
    """ScheduleJob and the checks schedules and templates share with it (module docstring)."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.gateway = jobs.gateway
        self.registry = jobs.registry
        self.settings = jobs.settings
        self.admission = jobs.admission
        # Held while a caller's unfinished jobs are counted and its next one created, so that
        # concurrent calls on this replica cannot both take the last slot.
        self._caller_locks: dict[str, threading.Lock] = {}
        self._caller_locks_guard = threading.Lock()

    def schedule(
        self,
        request: JobRequest,
        *,
        caller: str = "",
        dry_run: bool = False,
        deadline: float | None = None,
        queues: frozenset[str] | None = None,
        origin: Origin | None = None,
    ) -> ScheduleResult:
        """queues: the LocalQueues the caller may submit to (its token's scope); None: any.
        origin: who asks and in which trace, written on the Job it creates (a retry that finds
        the Job already there leaves what the first call wrote)."""
        job_type, params_field = self._resolve(request)
        request, params = self._validate(request, job_type, params_field, deadline=deadline)
        check_queue_scope(request.queueing.queue, queues, caller=caller)
        manifest = self._render(request, job_type, params, job_id=None, caller=caller, deadline=deadline)
        if origin is not None:
            stamp_origin(manifest, origin)
        self._admit(
            manifest,
            request,
            params_field=params_field,
            caller=None if dry_run else caller,
            deadline=deadline,
        )
        return self._submit(request, manifest, caller=caller, dry_run=dry_run, deadline=deadline)

    def prepare(self, request: JobRequest, *, job_id: str | None) -> Prepared:
        """resolve, validate, render and admit, for a job a schedule or template stores (named
        job_id, or by its request_id, or at random); no caller's rate is spent."""
        job_type, params_field = self._resolve(request)
        request, params = self._validate(request, job_type, params_field, deadline=None)
        manifest = self._render(request, job_type, params, job_id=job_id, caller="", deadline=None)
        self._admit(manifest, request, params_field=params_field, caller=None, deadline=None)
        return Prepared(request, manifest)

    # -- the steps ---------------------------------------------------------------------------

    def _resolve(self, request: JobRequest) -> tuple[JobType, str]:
        """The job type, and the request field its parameters came in (errors name it)."""
        if request.params_field:
            # Sent as generic_job: the type is named by generic_job.type.
            job_type = self.registry.get(request.job_type, field=f"{GENERIC_FIELD}.type")
        else:
            job_type = self.registry.get(request.job_type)
        return job_type, request.params_field or job_type.request_field

    def _validate(
        self, request: JobRequest, job_type: JobType, params_field: str, *, deadline: float | None
    ) -> tuple[JobRequest, Mapping[str, Any]]:
        try:
            params = request.params
            if request.params_field:
                # generic_job params are a Struct, where every number is a double: checked against
                # the type's declared parameters first.
                params = check_generic_params(job_type, params)
            params = job_type.validate(params, self.settings)
        except InvalidArgumentError as e:
            raise e.prefixed(params_field) from None
        request = check_request(request, self.settings)
        if request.notify:
            self._check_notify_secrets(request, deadline=deadline)
        if request.placement.priority_class_name:
            self._check_priority_class(request.placement.priority_class_name, deadline=deadline)
        return request, params

    def _check_notify_secrets(self, request: JobRequest, *, deadline: float | None) -> None:
        """Each sink's Secret must exist, with its key, in the job's namespace: otherwise every
        notification would fail at delivery, long after the caller could have fixed it. The key's
        value is not kept (the leader reads it again at each delivery)."""
        for i, sink in enumerate(request.notify):
            try:
                secret = self.gateway.get("secrets", request.namespace, sink.secret, deadline=deadline)
            except NotFoundError:
                raise FailedPreconditionError(
                    f"notify[{i}].secret: no Secret named {sink.secret!r} in namespace "
                    f"{request.namespace!r}; "
                    f"create it with the HMAC key under {sink.secret_key!r} "
                    f"(kubectl create secret generic {sink.secret} --from-literal={sink.secret_key}=...)"
                ) from None
            if sink.secret_key not in (secret.get("data") or {}):
                raise FailedPreconditionError(
                    f"notify[{i}].secret_key: Secret {sink.secret!r} has no key {sink.secret_key!r}; "
                    "add it or name the key that holds the HMAC key"
                )

    def _check_priority_class(self, name: str, *, deadline: float | None) -> None:
        """The PriorityClass must exist: the API server admits a Job naming an unknown one and
        then refuses every pod the Job controller creates, so the job would wait forever."""
        try:
            self.gateway.get("priorityclasses", "", name, deadline=deadline)
        except NotFoundError:
            raise InvalidArgumentError(
                "priority_class_name",
                f"no PriorityClass named {name!r} in the cluster; `kubectl get priorityclasses` lists them",
            ) from None
        except PermissionDeniedError:
            # Without the ClusterRole of k8s/rbac.yaml the name cannot be checked here; the
            # job's status then reports the Job controller's refusal instead.
            log.warning("cannot read PriorityClasses (RBAC); priority_class_name not checked", name=name)

    def _render(
        self,
        request: JobRequest,
        job_type: JobType,
        params: Mapping[str, Any],
        *,
        job_id: str | None,
        caller: str,
        deadline: float | None,
    ) -> Obj:
        if job_id is None:
            job_id = (
                job_id_for_request(request.namespace, request.request_id)
                if request.request_id
                else new_job_id()
            )
        manifest = render_job(
            request, job_type=job_type, params=params, job_id=job_id, settings=self.settings
        )
        if request.after or request.after_condition is not None:
            self._hold_for_dependencies(request, manifest, deadline=deadline)
        if caller:
            label = caller_label(caller)
            manifest["metadata"]["labels"][CALLER_LABEL] = label
            manifest["spec"]["template"]["metadata"]["labels"][CALLER_LABEL] = label
        render_queueing(manifest, request.queueing)  # last: it asks whether anything holds the Job
        return manifest

    def _admit(
        self,
        manifest: Obj,
        request: JobRequest,
        *,
        params_field: str,
        caller: str | None,
        deadline: float | None,
    ) -> None:
        """The operator's policy on what would run, then the job's queue (Kueue's objects in a
        namespace are looked at only once it is allowed); with a caller, that caller's rate is
        spent last, by a request that passed everything else."""
        self.admission.check_namespace(manifest["metadata"]["namespace"])
        self.admission.check_images(manifest, field=f"{params_field}.image")
        self.jobs.queues.check(request.namespace, request.queueing, deadline=deadline)
        if caller is not None:
            self.admission.take(caller)

    def _submit(
        self, request: JobRequest, manifest: Obj, *, caller: str, dry_run: bool, deadline: float | None
    ) -> ScheduleResult:
        if dry_run or not self.admission.policy.max_active_jobs:
            return self._create(request, manifest, dry_run=dry_run, deadline=deadline)
        with self._caller_lock(caller):
            self._check_active_jobs(request, caller, manifest["metadata"]["name"], deadline=deadline)
            return self._create(request, manifest, dry_run=False, deadline=deadline)

    # -- what the steps need ------------------------------------------------------------------

    def _hold_for_dependencies(self, request: JobRequest, manifest: Obj, *, deadline: float | None) -> None:
        """Checks the request's `after` and records it on the manifest, which is held until the
        dependencies are met (jobscheduler.domain.dependencies; the leader's DependencyReleaser lets it
        go). A retry of a request_id whose job exists is left to _existing: its dependencies
        may be gone by now."""
        if not request.after:
            raise InvalidArgumentError("after_condition", "applies only with after")
        job_id = manifest["metadata"]["name"]
        lookup = self.jobs.job_lookup(request.namespace, deadline=deadline)
        if request.request_id and lookup(job_id) is not None:
            return
        condition = request.after_condition or DependencyCondition.SUCCEEDED
        decision = plan(request.after, condition, job_id=job_id, namespace=request.namespace, lookup=lookup)
        hold_manifest(
            manifest, after=request.after, condition=condition, decision=decision, suspend=request.suspend
        )

    def _create(
        self, request: JobRequest, manifest: Obj, *, dry_run: bool, deadline: float | None
    ) -> ScheduleResult:
        try:
            created = self.gateway.create_job(request.namespace, manifest, dry_run=dry_run, deadline=deadline)
        except NotFoundError:
            raise InvalidArgumentError(
                "namespace", f"namespace {request.namespace!r} does not exist; create it or pick another"
            ) from None
        except AlreadyExistsError:
            return self._existing(request, manifest, deadline=deadline)
        if dry_run:
            return ScheduleResult(status=derive_status(created, []), created=False, manifest=manifest)
        if self.jobs.cache is not None:
            self.jobs.cache.observe_job(created)
        if request.secret_env:
            created = self._store_secret_env(request, created, deadline=deadline, undo=True)
        return ScheduleResult(status=derive_status(created, []), created=True)

    def _store_secret_env(self, request: JobRequest, job: Obj, *, deadline: float | None, undo: bool) -> Obj:
        """Stores the Secret with the request's secret_env (owned by the Job), then releases the
        Job, which waited suspended for it. When that fails on the first attempt, the Job is
        deleted again so that nothing half-made is left; a retry with the same request_id
        finishes the job instead."""
        meta = job["metadata"]
        try:
            with contextlib.suppress(AlreadyExistsError):  # stored by an earlier attempt
                self.gateway.create(
                    "secrets", meta["namespace"], render_secret_env(request, job), deadline=deadline
                )
            patch: Obj = {"metadata": {"annotations": {SECRET_ENV_PENDING_ANNOTATION: None}}}
            if not request.suspend and not is_held(job):  # a held job waits for its dependencies
                with_release(patch, job)  # to run, or into its queue
            released = self.gateway.patch_job(meta["namespace"], meta["name"], patch, deadline=deadline)
        except JobSchedulerError:
            if undo:
                # When even this fails the Job stays suspended: the same request_id completes
                # it, ResumeJob refuses it.
                with contextlib.suppress(JobSchedulerError):
                    self.gateway.delete("jobs", meta["namespace"], meta["name"], uid=meta["uid"])
            raise
        if self.jobs.cache is not None:
            self.jobs.cache.observe_job(released)
        return released

    def _caller_lock(self, caller: str) -> threading.Lock:
        with self._caller_locks_guard:
            if len(self._caller_locks) > 10_000:
                self._caller_locks = {k: v for k, v in self._caller_locks.items() if v.locked()}
            return self._caller_locks.setdefault(caller, threading.Lock())

    def _check_active_jobs(
        self, request: JobRequest, caller: str, job_id: str, *, deadline: float | None
    ) -> None:
        """MAX_ACTIVE_JOBS_PER_CALLER: the caller's unfinished jobs in the namespace, counted on
        the cluster (through the cache when it serves the namespace)."""
        limit = self.admission.policy.max_active_jobs
        label = caller_label(caller)
        cache = self.jobs.cached(request.namespace)
        if cache is not None:
            active, _ = cache.query(
                request.namespace,
                JobFilter(
                    states=UNFINISHED_STATES,
                    requirements=(Requirement(CALLER_LABEL, "in", frozenset({label})),),
                ),
                after=None,
                limit=limit,
            )
            count = len(active)
            exists = cache.get(request.namespace, job_id) is not None
        else:
            jobs = self.gateway.list_jobs(
                request.namespace,
                label_selector=f"{MANAGED_SELECTOR},{CALLER_LABEL}={label}",
                deadline=deadline,
            )
            count = sum(1 for job in jobs if not derive_status(job, []).state.terminal)
            exists = any(job["metadata"]["name"] == job_id for job in jobs)
        if count < limit or (request.request_id and exists):
            return  # under the cap, or a retry of a request already admitted (it returns that job)
        raise ResourceExhaustedError(
            f"caller {caller!r} has {count} unfinished jobs in namespace {request.namespace!r}, the most "
            f"allowed (MAX_ACTIVE_JOBS_PER_CALLER={limit}); retry when one finishes, or cancel one",
            retry_after=ACTIVE_JOBS_RETRY_SECONDS,
        )

    def _existing(self, request: JobRequest, manifest: Obj, *, deadline: float | None) -> ScheduleResult:
        """A Job with our deterministic name exists: the same request again, or a misused key."""
        name = manifest["metadata"]["name"]
        job = self.gateway.get_job(request.namespace, name, deadline=deadline)
        annotations = job["metadata"].get("annotations") or {}
        ours = manifest["metadata"]["annotations"]
        if annotations.get(REQUEST_ID_ANNOTATION) != ours.get(REQUEST_ID_ANNOTATION):
            raise AlreadyExistsError(
                f"a job named {name!r} already exists in namespace {request.namespace!r}"
            )
        if annotations.get(REQUEST_HASH_ANNOTATION) != ours[REQUEST_HASH_ANNOTATION]:
            raise AlreadyExistsError(
                f"request_id {request.request_id!r} was already used for a different request "
                f"(job {name}); use a new request_id for a new job"
            )
        if annotations.get(SECRET_ENV_PENDING_ANNOTATION):
            # An earlier attempt created the Job but not its Secret: finish what it started.
            job = self._store_secret_env(request, job, deadline=deadline, undo=False)
        return ScheduleResult(status=self.jobs.status_of(job, deadline=deadline), created=False)

    # -- jobs that schedules and templates store ------------------------------------------------

    def check_embedded_job(
        self,
        job: JobRequest,
        *,
        namespace: str,
        owner: str,
        job_id: str,
        default_name: str,
        forbidden: Mapping[str, object],
        why: str,
    ) -> tuple[JobRequest, JobRequest, Obj]:
        """The job a schedule or template holds: a job type is set, none of `forbidden` (field
        name: value) is, its namespace is the owner's; then checked and rendered as ScheduleJob
        would. Errors name fields under `job.`. Returns the job with namespace and name filled
        in, the checked request, and the manifest."""
        if not job.job_type:
            raise InvalidArgumentError("job", f"is required: the job the {owner} runs (e.g. job.timer_job)")
        for field_name, given in forbidden.items():
            if given:
                raise InvalidArgumentError(f"job.{field_name}", f"is not allowed in a {owner}'s job ({why})")
        if job.namespace and job.namespace != namespace:
            raise InvalidArgumentError(
                "job.namespace",
                f"must be empty or the {owner}'s namespace {namespace!r} (got {job.namespace!r})",
            )
        job = replace(job, namespace=namespace, name=job.name or default_name)
        with fields_under("job"):
            prepared = self.prepare(job, job_id=job_id)
        return job, prepared.request, prepared.manifest
