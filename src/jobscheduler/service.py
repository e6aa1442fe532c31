"""The use cases: schedule, read, list and cancel jobs, in domain terms.

It validates, renders and hands manifests to the Kubernetes gateway, and derives every status
it returns from the Job and its pods. It holds no state of its own: any number of replicas
serve the same jobs, and idempotency rests on deterministic Job names.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobscheduler.config import Settings
from jobscheduler.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from jobscheduler.gateway import ConflictError, KubeGateway
from jobscheduler.models import (
    CANCELLED_AT_ANNOTATION,
    JOB_TYPE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_SELECTOR,
    NAME_LABEL,
    REQUEST_ID_ANNOTATION,
    JobState,
    JobStatus,
)
from jobscheduler.registry import Registry
from jobscheduler.render import (
    REQUEST_HASH_ANNOTATION,
    JobRequest,
    check_request,
    job_id_for_request,
    new_job_id,
    render_job,
)
from jobscheduler.status import derive_status
from jobscheduler.validation import check_dns_label

Obj = dict[str, Any]
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


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


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: Sequence[JobStatus]
    next_page_token: str = ""
    extra: Obj = field(default_factory=dict)


class JobService:
    def __init__(self, gateway: KubeGateway, registry: Registry, settings: Settings) -> None:
        self.gateway = gateway
        self.registry = registry
        self.settings = settings

    # -- ScheduleJob ---------------------------------------------------------------------------

    def schedule(
        self, request: JobRequest, *, dry_run: bool = False, deadline: float | None = None
    ) -> ScheduleResult:
        job_type = self.registry.get(request.job_type)
        try:
            params = job_type.validate(request.params, self.settings)
        except InvalidArgumentError as e:
            raise e.prefixed(job_type.request_field) from None
        request = check_request(request, self.settings)
        job_id = (
            job_id_for_request(request.namespace, request.request_id) if request.request_id else new_job_id()
        )
        manifest = render_job(
            request, job_type=job_type, params=params, job_id=job_id, settings=self.settings
        )
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
        return ScheduleResult(status=derive_status(created, []), created=True)

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
        return ScheduleResult(status=self._status_of(job, deadline=deadline), created=False)

    # -- GetJobStatus --------------------------------------------------------------------------

    def get_status(self, namespace: str, job_id: str, *, deadline: float | None = None) -> JobStatus:
        job = self._get_managed(namespace, job_id, deadline=deadline)
        return self._status_of(job, deadline=deadline)

    def _get_managed(self, namespace: str, job_id: str, *, deadline: float | None) -> Obj:
        namespace = namespace or self.settings.namespace
        check_dns_label("namespace", namespace, what="namespace name")
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
        namespace = query.namespace or self.settings.namespace
        check_dns_label("namespace", namespace, what="namespace name")
        page_size = query.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(
                "page_size", f"must be between 1 and {MAX_PAGE_SIZE} (got {query.page_size})"
            )
        after = _decode_token(query.page_token) if query.page_token else None
        selector = [MANAGED_SELECTOR]
        if query.job_type:
            check_dns_label("job_type", query.job_type, what="job type")
            selector.append(f"{JOB_TYPE_LABEL}={query.job_type}")
        if query.name:
            check_dns_label("name", query.name.lower(), what="job name")
            selector.append(f"{NAME_LABEL}={query.name.lower()}")
        if query.label_selector.strip():
            selector.append(query.label_selector.strip())
        try:
            jobs = self.gateway.list_jobs(namespace, label_selector=",".join(selector), deadline=deadline)
        except InvalidArgumentError as e:
            raise InvalidArgumentError(
                "label_selector", f"{query.label_selector!r} is not a valid selector: " f"{e.detail}"
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
            try:
                patched = self.gateway.patch_job(status.namespace, job_id, patch, deadline=deadline)
            except ConflictError:
                continue  # changed under us (e.g. it just finished): look again
            return self._status_of(patched, deadline=deadline)
        raise FailedPreconditionError(f"job {job_id!r} kept changing while being cancelled; try again")


def _newest_first(status: JobStatus) -> tuple[float, str]:
    created = status.created_at.timestamp() if status.created_at else 0.0
    return (-created, _reverse(status.job_id))


def _reverse(name: str) -> str:
    # Names descend within one creation second, so ties sort newest-looking first consistently.
    return "".join(chr(0x10FFFF - ord(c)) for c in name)


def _encode_token(key: tuple[float, str]) -> str:
    raw = json.dumps({"c": key[0], "n": key[1]}, ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[float, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return (float(raw["c"]), str(raw["n"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgumentError("page_token", "is not a token returned by ListJobs") from None


def monotonic_deadline(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds
