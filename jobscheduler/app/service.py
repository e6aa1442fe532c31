"""The job use cases: read, list, watch, cancel and resume jobs, in domain terms; ScheduleJob's
path is jobscheduler.app.submit (`JobService.submission`).

Every status it returns is derived from the Job and its pods, read from the watch cache where it
serves the namespace and from the API otherwise. It holds no state of its own: any number of
replicas serve the same jobs, and idempotency rests on deterministic Job names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from jobscheduler.app.queues import Queues
from jobscheduler.app.submit import Submission
from jobscheduler.app.watch import JobWatch
from jobscheduler.domain.admission import Admission, AdmissionPolicy
from jobscheduler.domain.audit import (
    CANCELLED_BY_ANNOTATION,
    RESUMED_AT_ANNOTATION,
    RESUMED_BY_ANNOTATION,
    Identity,
)
from jobscheduler.domain.config import Settings
from jobscheduler.domain.dependencies import Lookup, is_held
from jobscheduler.domain.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from jobscheduler.domain.models import (
    CANCELLED_AT_ANNOTATION,
    JOB_TYPE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_SELECTOR,
    NAME_LABEL,
    SCHEDULE_LABEL,
    SECRET_ENV_PENDING_ANNOTATION,
    JobState,
    JobStatus,
)
from jobscheduler.domain.queueing import (
    SERVICE_QUEUE_LABEL,
    Queueing,
    check_queueing,
    in_queue,
    release_patch,
)
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.selector import Requirement, parse_selector
from jobscheduler.domain.status import derive_status
from jobscheduler.domain.validation import check_dns_label, shown
from jobscheduler.kube.cache import JobCache, sort_key
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.kube.index import JobFilter

Obj = dict[str, Any]
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 1024  # ours are ~60; a longer one is not ours


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
    queue: str = ""  # only jobs scheduled to this LocalQueue


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
        self.queues = Queues(gateway, settings)
        self.submission = Submission(self)
        self.watch = JobWatch(self)

    def resolve_namespace(self, namespace: str) -> str:
        """The request's namespace (K8S_NAMESPACE when empty), valid and allowed."""
        namespace = namespace or self.settings.namespace
        check_dns_label("namespace", namespace, what="namespace name")
        self.admission.check_namespace(namespace)
        return namespace

    def cached(self, namespace: str) -> JobCache | None:
        """The cache, when it may answer for this namespace. Not while the API server is
        unreachable: a watch can look healthy for a while after its server died, and a stale
        answer must not pass for a current one."""
        if self.cache is None or not self.cache.covers(namespace) or not self.api_reachable():
            return None
        return self.cache

    def job_lookup(self, namespace: str, *, deadline: float | None = None) -> Lookup:
        """The managed jobs of one namespace by id, each read once: from the cache when it serves
        the namespace, else (and on a miss: a job another replica created a moment ago) from the
        API. Statuses read from the API are derived without pods, which is exact once a job has
        ended (what dependencies ask) but may say PENDING for a running one."""
        cache = self.cached(namespace)
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

    # -- GetJobStatus --------------------------------------------------------------------------

    def get_status(self, namespace: str, job_id: str, *, deadline: float | None = None) -> JobStatus:
        namespace = self.resolve_namespace(namespace)
        cache = self.cached(namespace)
        if cache is not None and job_id and (status := cache.get(namespace, job_id)) is not None:
            if status.queueing.queue:  # Kueue's view is not cached: read with the Job
                return self._with_queue_status(
                    status, self._get_managed(namespace, job_id, deadline=deadline), deadline=deadline
                )
            return status
        # A miss may be a job another replica created a moment ago: one API read settles it.
        job = self._get_managed(namespace, job_id, deadline=deadline)
        status = self.status_of(job, deadline=deadline)
        return self._with_queue_status(status, job, deadline=deadline) if status.queueing.queue else status

    def _with_queue_status(self, status: JobStatus, job: Obj, *, deadline: float | None) -> JobStatus:
        """The status with Kueue's view of the job: its Workload, positions while QUEUED, and
        Kueue's reason for waiting (more precise than the Job alone tells)."""
        queue_status = self.queues.status(job, deadline=deadline)
        if queue_status is None:
            return status
        if status.state is JobState.QUEUED and queue_status.pending_reason:
            return replace(status, queue_status=queue_status, message=queue_status.pending_reason)
        return replace(status, queue_status=queue_status)

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

    def status_of(self, job: Obj, *, deadline: float | None) -> JobStatus:
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
        cache = self.cached(namespace)
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
        if query.queue:
            check_queueing(Queueing(query.queue), default_queue="")
            selector.append(f"{SERVICE_QUEUE_LABEL}={query.queue}")
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
        match = self.matcher(
            query.job_type, query.name, query.label_selector, query.states, query.schedule, query.queue
        )
        jobs, more = cache.query(namespace, match, after=after, limit=page_size)
        return JobPage(jobs=jobs, next_page_token=_encode_token(sort_key(jobs[-1])) if more else "")

    def matcher(
        self,
        job_type: str,
        name: str,
        label_selector: str,
        states: frozenset[JobState],
        schedule: str = "",
        queue: str = "",
    ) -> JobFilter:
        """The filter ListJobs and WatchJobs apply, on a Job's labels and its status; the cache
        answers it from its indexes."""
        if job_type:
            check_dns_label("job_type", job_type, what="job type")
        if name:
            check_dns_label("name", name.lower(), what="job name")
        if schedule:
            check_dns_label("schedule", schedule, what="schedule name")
        selector = parse_selector(label_selector)
        if queue:
            check_queueing(Queueing(queue), default_queue="")
        wanted = {
            JOB_TYPE_LABEL: job_type,
            NAME_LABEL: name.lower(),
            SCHEDULE_LABEL: schedule,
            SERVICE_QUEUE_LABEL: queue,
        }
        return JobFilter(
            states=frozenset(states),
            requirements=(*(Requirement(k, "in", frozenset({v})) for k, v in wanted.items() if v), *selector),
        )

    # -- ResumeJob -----------------------------------------------------------------------------

    def resume(
        self, namespace: str, job_id: str, *, deadline: float | None = None, by: Identity | None = None
    ) -> JobStatus:
        """Releases a job scheduled with suspend; `by`, who asks, is recorded on the Job."""
        job = self._get_managed(namespace, job_id, deadline=deadline)
        status = self.status_of(job, deadline=deadline)
        if status.state.terminal:
            raise FailedPreconditionError(f"job {job_id!r} already finished ({status.state.value})")
        if not (job.get("spec") or {}).get("suspend") or in_queue(job):
            return status  # not held (or in its queue, Kueue's to admit): resuming again is a no-op
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
        patch = release_patch(job)
        if by is not None:
            patch.setdefault("metadata", {}).setdefault("annotations", {}).update(
                {RESUMED_BY_ANNOTATION: str(by), RESUMED_AT_ANNOTATION: _now()}
            )
        patched = self.gateway.patch_job(status.namespace, job_id, patch, deadline=deadline)
        if self.cache is not None:
            self.cache.observe_job(patched)
        return self.status_of(patched, deadline=deadline)

    # -- CancelJob -----------------------------------------------------------------------------

    def cancel(
        self, namespace: str, job_id: str, *, deadline: float | None = None, by: Identity | None = None
    ) -> JobStatus:
        """Cancels a pending or running job; `by`, who asks, is recorded on the Job."""
        for _ in range(5):
            job = self._get_managed(namespace, job_id, deadline=deadline)
            status = self.status_of(job, deadline=deadline)
            if status.state is JobState.CANCELLED:
                return status
            if status.state.terminal:
                raise FailedPreconditionError(
                    f"job {job_id!r} already finished ({status.state.value}); only pending or running jobs "
                    "can be cancelled"
                )
            now = _now()
            # Kubernetes has no "stop this Job" verb. Shortening activeDeadlineSeconds makes the Job
            # controller delete the pods and mark the Job Failed (so TTL retention applies);
            # the annotation is what tells a cancel from a real deadline.
            patch = {
                "metadata": {
                    "annotations": {
                        CANCELLED_AT_ANNOTATION: now,
                        **({CANCELLED_BY_ANNOTATION: str(by)} if by is not None else {}),
                    },
                    "resourceVersion": job["metadata"]["resourceVersion"],
                },
                "spec": {"activeDeadlineSeconds": 1, "suspend": False},
            }
            if (job.get("spec") or {}).get("suspend"):
                # Resumed only to fail by the deadline, a suspended Job would start a pod within
                # that second (a job held by dependencies must never run).
                patch["spec"]["parallelism"] = 0
                if in_queue(job):
                    # Kueue suspends again a Job it has not admitted; with no pods to run it
                    # admits it at once, and the deadline then ends it.
                    del patch["spec"]["suspend"]
            try:
                patched = self.gateway.patch_job(status.namespace, job_id, patch, deadline=deadline)
            except ConflictError:
                continue  # changed under us (e.g. it just finished): look again
            if self.cache is not None:
                self.cache.observe_job(patched)
            return self.status_of(patched, deadline=deadline)
        raise FailedPreconditionError(f"job {job_id!r} kept changing while being cancelled; try again")


_newest_first = sort_key


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
