"""The use cases: schedule, read, list and cancel jobs, in domain terms.

It validates, renders and hands manifests to the Kubernetes gateway, and derives every status
it returns from the Job and its pods. It holds no state of its own: any number of replicas
serve the same jobs, and idempotency rests on deterministic Job names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from jobscheduler.domain.admission import Admission, AdmissionPolicy, caller_label
from jobscheduler.domain.config import Settings
from jobscheduler.domain.dependencies import Lookup, hold_manifest, is_held, plan
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    ResourceExhaustedError,
    fields_under,
)
from jobscheduler.domain.models import (
    CALLER_LABEL,
    CANCELLED_AT_ANNOTATION,
    JOB_TYPE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_SELECTOR,
    NAME_LABEL,
    REQUEST_ID_ANNOTATION,
    SCHEDULE_LABEL,
    SECRET_ENV_PENDING_ANNOTATION,
    DependencyCondition,
    JobState,
    JobStatus,
)
from jobscheduler.domain.registry import GENERIC_FIELD, Registry, check_generic_params
from jobscheduler.domain.render import (
    REQUEST_HASH_ANNOTATION,
    JobRequest,
    check_request,
    job_id_for_request,
    new_job_id,
    render_job,
    render_secret_env,
)
from jobscheduler.domain.selector import compile_selector
from jobscheduler.domain.status import derive_status
from jobscheduler.domain.validation import check_dns_label, shown
from jobscheduler.kube.cache import JobCache, sort_key
from jobscheduler.kube.feed import Event, iter_events, terminal
from jobscheduler.kube.gateway import KubeGateway

Obj = dict[str, Any]
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 1024  # ours are ~60; a longer one is not ours
# When a caller is at MAX_ACTIVE_JOBS_PER_CALLER: how long to suggest waiting before trying again.
ACTIVE_JOBS_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    status: JobStatus
    created: bool
    manifest: Obj | None = None  # dry runs only


@dataclass(frozen=True, slots=True)
class JobQuery:
    namespace: str = ""
    states: frozenset[JobState] = frozenset()
    job_type: str = ""
    label_selector: str = ""
    name: str = ""
    page_size: int = 0
    page_token: str = ""
    schedule: str = ""  # only the runs of this schedule


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: Sequence[JobStatus]
    next_page_token: str = ""
    extra: Obj = field(default_factory=dict)


class JobService:
    def __init__(
        self,
        gateway: KubeGateway,
        registry: Registry,
        settings: Settings,
        *,
        cache: JobCache | None = None,
        api_reachable: Callable[[], bool] = lambda: True,
    ) -> None:
        self.gateway = gateway
        self.registry = registry
        self.settings = settings
        self.cache = cache
        self.api_reachable = api_reachable
        self.admission = Admission(
            AdmissionPolicy(
                allowed_images=settings.allowed_images,
                allowed_namespaces=settings.allowed_namespaces,
                schedule_rate=settings.schedule_rate_per_caller,
                schedule_burst=settings.schedule_burst_per_caller,
                max_active_jobs=settings.max_active_jobs_per_caller,
            ),
            trusted_images=[settings.timer_image, settings.worker_image],
        )
        # Held while a caller's unfinished jobs are counted and its next one created, so that
        # concurrent calls on this replica cannot both take the last slot.
        self._caller_locks: dict[str, threading.Lock] = {}
        self._caller_locks_guard = threading.Lock()

    def resolve_namespace(self, namespace: str) -> str:
        """The request's namespace (K8S_NAMESPACE when empty), valid and allowed."""
        namespace = namespace or self.settings.namespace
        check_dns_label("namespace", namespace, what="namespace name")
        self.admission.check_namespace(namespace)
        return namespace

    def _cached(self, namespace: str) -> JobCache | None:
        """The cache, when it may answer for this namespace. Not while the API server is
        unreachable: a watch can look healthy for a while after its server died, and a stale
        answer must not pass for a current one."""
        if self.cache is None or not self.cache.covers(namespace) or not self.api_reachable():
            return None
        return self.cache

    # -- ScheduleJob ---------------------------------------------------------------------------

    def schedule(
        self,
        request: JobRequest,
        *,
        caller: str = "",
        dry_run: bool = False,
        deadline: float | None = None,
    ) -> ScheduleResult:
        request, manifest = self.prepare(request, job_id=None)
        job_id = manifest["metadata"]["name"]
        if request.after or request.after_condition is not None:
            self._hold_for_dependencies(request, manifest, deadline=deadline)
        if caller:
            label = caller_label(caller)
            manifest["metadata"]["labels"][CALLER_LABEL] = label
            manifest["spec"]["template"]["metadata"]["labels"][CALLER_LABEL] = label
        if not dry_run:
            self.admission.take(caller)
        if dry_run or not self.admission.policy.max_active_jobs:
            return self._create(request, manifest, dry_run=dry_run, deadline=deadline)
        with self._caller_lock(caller):
            self._check_active_jobs(request, caller, job_id, deadline=deadline)
            return self._create(request, manifest, dry_run=False, deadline=deadline)

    def prepare(self, request: JobRequest, *, job_id: str | None) -> tuple[JobRequest, Obj]:
        """A request validated, with defaults applied, admitted, and rendered as a Job manifest
        (named job_id, or by its request_id, or at random)."""
        if request.params_field:
            # Sent as generic_job: the type is named by generic_job.type, and the params (a Struct,
            # where every number is a double) are first checked against its declared parameters.
            job_type = self.registry.get(request.job_type, field=f"{GENERIC_FIELD}.type")
        else:
            job_type = self.registry.get(request.job_type)
        params_field = request.params_field or job_type.request_field
        try:
            params = request.params
            if request.params_field:
                params = check_generic_params(job_type, params)
            params = job_type.validate(params, self.settings)
        except InvalidArgumentError as e:
            raise e.prefixed(params_field) from None
        request = check_request(request, self.settings)
        self.admission.check_namespace(request.namespace)
        if job_id is None:
            job_id = (
                job_id_for_request(request.namespace, request.request_id)
                if request.request_id
                else new_job_id()
            )
        manifest = render_job(
            request, job_type=job_type, params=params, job_id=job_id, settings=self.settings
        )
        self.admission.check_images(manifest, field=f"{params_field}.image")
        return request, manifest

    def _hold_for_dependencies(self, request: JobRequest, manifest: Obj, *, deadline: float | None) -> None:
        """Checks the request's `after` and records it on the manifest, which is held until the
        dependencies are met (jobscheduler.domain.dependencies; the leader's DependencyReleaser lets it
        go). A retry of a request_id whose job exists is left to _existing: its dependencies
        may be gone by now."""
        if not request.after:
            raise InvalidArgumentError("after_condition", "applies only with after")
        job_id = manifest["metadata"]["name"]
        lookup = self.job_lookup(request.namespace, deadline=deadline)
        if request.request_id and lookup(job_id) is not None:
            return
        condition = request.after_condition or DependencyCondition.SUCCEEDED
        decision = plan(request.after, condition, job_id=job_id, namespace=request.namespace, lookup=lookup)
        hold_manifest(
            manifest, after=request.after, condition=condition, decision=decision, suspend=request.suspend
        )

    def job_lookup(self, namespace: str, *, deadline: float | None = None) -> Lookup:
        """The managed jobs of one namespace by id, each read once: from the cache when it serves
        the namespace, else (and on a miss: a job another replica created a moment ago) from the
        API. Statuses read from the API are derived without pods, which is exact once a job has
        ended (what dependencies ask) but may say PENDING for a running one."""
        cache = self._cached(namespace)
        seen: dict[str, JobStatus | None] = {}

        def lookup(job_id: str) -> JobStatus | None:
            if job_id not in seen:
                status = cache.get(namespace, job_id) if cache is not None else None
                if status is None:
                    with contextlib.suppress(NotFoundError):
                        job = self.gateway.get_job(namespace, job_id, deadline=deadline)
                        if (job["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
                            status = derive_status(job, [])
                seen[job_id] = status
            return seen[job_id]

        return lookup

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
            checked, manifest = self.prepare(job, job_id=job_id)
        return job, checked, manifest

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
        if self.cache is not None:
            self.cache.observe_job(created)
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
                patch["spec"] = {"suspend": False}
            released = self.gateway.patch_job(meta["namespace"], meta["name"], patch, deadline=deadline)
        except JobSchedulerError:
            if undo:
                # When even this fails the Job stays suspended: the same request_id completes
                # it, ResumeJob refuses it.
                with contextlib.suppress(JobSchedulerError):
                    self.gateway.delete("jobs", meta["namespace"], meta["name"], uid=meta["uid"])
            raise
        if self.cache is not None:
            self.cache.observe_job(released)
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
        cache = self._cached(request.namespace)
        if cache is not None:
            active, _ = cache.query(
                request.namespace,
                lambda labels, status: labels.get(CALLER_LABEL) == label and not status.state.terminal,
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
        return ScheduleResult(status=self._status_of(job, deadline=deadline), created=False)

    # -- GetJobStatus --------------------------------------------------------------------------

    def get_status(self, namespace: str, job_id: str, *, deadline: float | None = None) -> JobStatus:
        namespace = self.resolve_namespace(namespace)
        cache = self._cached(namespace)
        if cache is not None and job_id and (status := cache.get(namespace, job_id)) is not None:
            return status
        # A miss may be a job another replica created a moment ago: one API read settles it.
        job = self._get_managed(namespace, job_id, deadline=deadline)
        return self._status_of(job, deadline=deadline)

    def _get_managed(self, namespace: str, job_id: str, *, deadline: float | None) -> Obj:
        namespace = self.resolve_namespace(namespace)
        if not job_id:
            raise InvalidArgumentError("job_id", "is required")
        check_dns_label("job_id", job_id, what="job id")
        try:
            job = self.gateway.get_job(namespace, job_id, deadline=deadline)
        except NotFoundError:
            raise NotFoundError(f"job {job_id!r} not found in namespace {namespace!r}") from None
        # Jobs this service did not create are none of its business.
        if (job["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            raise NotFoundError(f"job {job_id!r} in namespace {namespace!r} is not managed by jobscheduler")
        return job

    def _status_of(self, job: Obj, *, deadline: float | None) -> JobStatus:
        uid = job["metadata"].get("uid", "")
        pods = (
            self.gateway.list_pods(
                job["metadata"]["namespace"],
                label_selector=f"{CONTROLLER_UID_LABEL}={uid}",
                deadline=deadline,
            )
            if uid
            else []
        )
        return derive_status(job, pods)

    # -- ListJobs ------------------------------------------------------------------------------

    def list_jobs(self, query: JobQuery, *, deadline: float | None = None) -> JobPage:
        namespace = self.resolve_namespace(query.namespace)
        page_size = query.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(
                "page_size", f"must be between 1 and {MAX_PAGE_SIZE} (got {query.page_size})"
            )
        after = _decode_token(query.page_token) if query.page_token else None
        cache = self._cached(namespace)
        if cache is not None:
            return self._list_cached(cache, namespace, query, page_size=page_size, after=after)
        selector = [MANAGED_SELECTOR]
        if query.job_type:
            check_dns_label("job_type", query.job_type, what="job type")
            selector.append(f"{JOB_TYPE_LABEL}={query.job_type}")
        if query.name:
            check_dns_label("name", query.name.lower(), what="job name")
            selector.append(f"{NAME_LABEL}={query.name.lower()}")
        if query.schedule:
            check_dns_label("schedule", query.schedule, what="schedule name")
            selector.append(f"{SCHEDULE_LABEL}={query.schedule}")
        if query.label_selector.strip():
            selector.append(query.label_selector.strip())
        try:
            jobs = self.gateway.list_jobs(namespace, label_selector=",".join(selector), deadline=deadline)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(
                "label_selector", f"{shown(query.label_selector)} is not a valid selector: {e.detail[:300]}"
            ) from None
        pods = (
            self.gateway.list_pods(namespace, label_selector=MANAGED_SELECTOR, deadline=deadline)
            if jobs
            else []
        )
        by_uid: dict[str, list[Obj]] = {}
        for pod in pods:
            uid = (pod["metadata"].get("labels") or {}).get(CONTROLLER_UID_LABEL, "")
            by_uid.setdefault(uid, []).append(pod)
        statuses = [derive_status(job, by_uid.get(job["metadata"].get("uid", ""), [])) for job in jobs]
        if query.states:
            statuses = [s for s in statuses if s.state in query.states]
        statuses.sort(key=_newest_first)
        if after is not None:
            statuses = [s for s in statuses if _newest_first(s) > after]
        page = statuses[:page_size]
        token = _encode_token(_newest_first(page[-1])) if len(statuses) > page_size else ""
        return JobPage(jobs=page, next_page_token=token)

    def _list_cached(
        self,
        cache: JobCache,
        namespace: str,
        query: JobQuery,
        *,
        page_size: int,
        after: tuple[float, str] | None,
    ) -> JobPage:
        match = self.matcher(query.job_type, query.name, query.label_selector, query.states, query.schedule)
        jobs, more = cache.query(namespace, match, after=after, limit=page_size)
        return JobPage(jobs=jobs, next_page_token=_encode_token(sort_key(jobs[-1])) if more else "")

    def matcher(
        self,
        job_type: str,
        name: str,
        label_selector: str,
        states: frozenset[JobState],
        schedule: str = "",
    ) -> Callable[[Mapping[str, str], JobStatus], bool]:
        """The filter ListJobs and WatchJobs apply, on a Job's labels and its status."""
        if job_type:
            check_dns_label("job_type", job_type, what="job type")
        if name:
            check_dns_label("name", name.lower(), what="job name")
        if schedule:
            check_dns_label("schedule", schedule, what="schedule name")
        selects = compile_selector(label_selector)
        wanted = {JOB_TYPE_LABEL: job_type, NAME_LABEL: name.lower(), SCHEDULE_LABEL: schedule}
        wanted = {k: v for k, v in wanted.items() if v}

        def match(labels: Mapping[str, str], status: JobStatus) -> bool:
            return (
                all(labels.get(k) == v for k, v in wanted.items())
                and (not states or status.state in states)
                and selects(labels)
            )

        return match

    # -- WatchJob / WatchJobs ------------------------------------------------------------------

    def watch_job(
        self, namespace: str, job_id: str, *, alive: Callable[[], bool], poll_interval: float = 1.0
    ) -> Iterator[Event]:
        """The current status, then every change, until the job ends or disappears."""
        namespace = self.resolve_namespace(namespace)
        current = self.get_status(namespace, job_id)  # NOT_FOUND before the stream starts
        cache = self._cached(namespace)
        if cache is None:
            yield from self._poll_job(namespace, job_id, current, alive=alive, interval=poll_interval)
            return
        sub = cache.subscribe(
            lambda _labels, s: s.job_id == job_id and s.namespace == namespace,
            initial=False,
            namespace=namespace,
        )
        try:
            # Subscribed first, then read: a change between the two is not lost, only repeated.
            current = cache.get(namespace, job_id) or current
            yield Event("INITIAL", current, datetime.now(UTC))
            if terminal(current):
                return
            last = current
            for event in iter_events(sub, alive=alive):
                if event.status == last and event.kind != "DELETED":
                    continue
                yield Event(
                    "UPDATED" if event.kind == "INITIAL" else event.kind, event.status, event.observed_at
                )
                last = event.status
                if event.kind == "DELETED" or terminal(event.status):
                    return
        finally:
            cache.unsubscribe(sub)

    def _poll_job(
        self, namespace: str, job_id: str, current: JobStatus, *, alive: Callable[[], bool], interval: float
    ) -> Iterator[Event]:
        """WatchJob for a namespace the cache does not serve: one API read per interval."""
        yield Event("INITIAL", current, datetime.now(UTC))
        last = current
        while not terminal(last) and alive():
            time.sleep(interval)
            try:
                status = self.get_status(namespace, job_id)
            except NotFoundError:
                yield Event("DELETED", last, datetime.now(UTC))
                return
            if status != last:
                yield Event("UPDATED", status, datetime.now(UTC))
                last = status

    def watch_jobs(
        self,
        namespace: str,
        *,
        job_type: str,
        label_selector: str,
        states: frozenset[JobState],
        initial: bool,
        alive: Callable[[], bool],
    ) -> Iterator[Event]:
        namespace = self.resolve_namespace(namespace)
        match = self.matcher(job_type, "", label_selector, states)
        cache = self._cached(namespace)
        if cache is None:
            watched = "none" if self.cache is None else ", ".join(n or "*" for n in self.cache.namespaces)
            raise FailedPreconditionError(
                f"namespace {namespace!r} is not watched by this service (WATCH_NAMESPACES: {watched}), "
                "or its watch is down; add it to WATCH_NAMESPACES, or poll ListJobs"
            )
        sub = cache.subscribe(match, initial=initial, namespace=namespace)
        try:
            for event in iter_events(sub, alive=alive):
                if event.status.namespace == namespace:
                    yield event
        finally:
            cache.unsubscribe(sub)

    # -- ResumeJob -----------------------------------------------------------------------------

    def resume(self, namespace: str, job_id: str, *, deadline: float | None = None) -> JobStatus:
        job = self._get_managed(namespace, job_id, deadline=deadline)
        status = self._status_of(job, deadline=deadline)
        if status.state.terminal:
            raise FailedPreconditionError(f"job {job_id!r} already finished ({status.state.value})")
        if not (job.get("spec") or {}).get("suspend"):
            return status  # not held: resuming again is a no-op
        if (job["metadata"].get("annotations") or {}).get(SECRET_ENV_PENDING_ANNOTATION):
            raise FailedPreconditionError(
                f"job {job_id!r} is waiting for its secret_env to be stored; repeat its ScheduleJob call "
                "with the same request_id to finish it, or cancel it"
            )
        if is_held(job):
            raise FailedPreconditionError(
                f"job {job_id!r} is held by its dependencies (waiting for "
                f"{', '.join(status.waiting_for) or 'the leader to release it'}): the service releases it "
                "when they end, or fails it when one fails; ResumeJob is only for jobs scheduled with suspend"
            )
        patched = self.gateway.patch_job(
            status.namespace, job_id, {"spec": {"suspend": False}}, deadline=deadline
        )
        if self.cache is not None:
            self.cache.observe_job(patched)
        return self._status_of(patched, deadline=deadline)

    # -- CancelJob -----------------------------------------------------------------------------

    def cancel(self, namespace: str, job_id: str, *, deadline: float | None = None) -> JobStatus:
        for _ in range(5):
            job = self._get_managed(namespace, job_id, deadline=deadline)
            status = self._status_of(job, deadline=deadline)
            if status.state is JobState.CANCELLED:
                return status
            if status.state.terminal:
                raise FailedPreconditionError(
                    f"job {job_id!r} already finished ({status.state.value}); only pending or running jobs "
                    "can be cancelled"
                )
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            # Kubernetes has no "stop this Job" verb. Shortening activeDeadlineSeconds makes the Job
            # controller delete the pods and mark the Job Failed (so TTL retention applies);
            # the annotation is what tells a cancel from a real deadline.
            patch = {
                "metadata": {
                    "annotations": {CANCELLED_AT_ANNOTATION: now},
                    "resourceVersion": job["metadata"]["resourceVersion"],
                },
                "spec": {"activeDeadlineSeconds": 1, "suspend": False},
            }
            if (job.get("spec") or {}).get("suspend"):
                # Resumed only to fail by the deadline, a suspended Job would start a pod within
                # that second (a job held by dependencies must never run).
                patch["spec"]["parallelism"] = 0
            try:
                patched = self.gateway.patch_job(status.namespace, job_id, patch, deadline=deadline)
            except ConflictError:
                continue  # changed under us (e.g. it just finished): look again
            if self.cache is not None:
                self.cache.observe_job(patched)
            return self._status_of(patched, deadline=deadline)
        raise FailedPreconditionError(f"job {job_id!r} kept changing while being cancelled; try again")


_newest_first = sort_key


def _encode_token(key: tuple[float, str]) -> str:
    raw = json.dumps({"c": key[0], "n": key[1]}, ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[float, str]:
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("too long")
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return (float(raw["c"]), str(raw["n"]))
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise InvalidArgumentError("page_token", "is not a token returned by ListJobs") from None


def encode_page_token(status: JobStatus) -> str:
    """The token of the page that starts right after `status`."""
    return _encode_token(sort_key(status))
