"""Fail fast on stuck Pending: the leader ends a job whose pod has sat pending with
ImagePullBackOff, Unschedulable and the like for longer than the job's pending timeout.

Kubernetes never does this itself (kubernetes/kubernetes#122300): such a pod waits forever, and
so do the job, its watchers and its caller's active-job slot. The timeout is stored on the Job
(annotation jobscheduler.io/pending-timeout-seconds) and counted from the stuck pod's creation,
the only start of "pending" the API shows (a waiting container carries no timestamp). The job is
ended the way CancelJob ends one: annotations that say why, and activeDeadlineSeconds=1, so the
Job controller deletes the pods and marks the Job Failed. Only the elected leader runs this; the
patch is conditional on the resourceVersion it judged, so a job that changed meanwhile is judged
again on the next tick, and a job once ended is never touched again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from jobscheduler.app.service import CONTROLLER_UID_LABEL, JobService
from jobscheduler.domain.errors import ConflictError, JobSchedulerError, NotFoundError
from jobscheduler.domain.models import (
    CANCELLED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILED_MESSAGE_ANNOTATION,
    FAILED_REASON_ANNOTATION,
    MANAGED_SELECTOR,
    PENDING_TIMEOUT_ANNOTATION,
    JobState,
    JobStatus,
)
from jobscheduler.domain.status import derive_status
from jobscheduler.kube.index import JobFilter
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

__all__ = ["PENDING_TIMEOUT_REASONS", "PendingTimeouts", "Stuck", "find_stuck", "pending_timeout"]

log = structlog.get_logger("jobscheduler.control.pending")
Obj = dict[str, Any]

# Why a pod can stay pending for good: its image cannot be pulled or named, its container cannot
# be created from its configuration (a missing Secret or ConfigMap key), or no node fits it. Not
# CrashLoopBackOff: that container did run, and retries are backoff_limit's business.
PENDING_TIMEOUT_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "Unschedulable",
    }
)
# Without a watch cache each check lists the namespace's Jobs (and, when one may be overdue, its
# pods) from the API server; at most this often, so a timeout may be overrun by this much.
API_SCAN_SECONDS = 10.0
SCAN_PAGE_SECONDS = 10.0  # budget of each page of such a scan


@dataclass(frozen=True, slots=True)
class Stuck:
    """A job to end: its pod `pod` has been pending with `reason` since `since`."""

    reason: str
    pod: str
    since: datetime
    timeout_seconds: int
    detail: str  # the job's status message: which pod and container, and what Kubernetes says

    def message(self) -> str:
        return (
            f"ended by the service: pending longer than its pending timeout of {self.timeout_seconds}s "
            f"with {self.reason}; {self.detail}"
        )


def pending_timeout(job: Mapping[str, Any]) -> int | None:
    """The job's pending timeout in seconds; None when it has none (or an unreadable one)."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(PENDING_TIMEOUT_ANNOTATION)
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    return int(raw) or None


def find_stuck(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], *, now: datetime) -> Stuck | None:
    """Whether the job is overdue: it has a pending timeout, is reported PENDING with one of
    PENDING_TIMEOUT_REASONS, and the pod showing that reason was created longer than the timeout
    ago. None for a job already ended, cancelled, or with any pod running."""
    timeout = pending_timeout(job)
    if timeout is None:
        return None
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    if CANCELLED_AT_ANNOTATION in annotations or FAILED_REASON_ANNOTATION in annotations:
        return None
    status = derive_status(job, pods)
    if not is_candidate(status):
        return None
    for pod in sorted(pods, key=_sort_created, reverse=True):  # the newest is the current attempt
        since = _created(pod)
        if _shows(pod, status.reason) and since is not None:
            if now - since < timedelta(seconds=timeout):
                return None
            name = str((pod.get("metadata") or {}).get("name") or "")
            return Stuck(status.reason, name, since, timeout, status.message)
    return None


def is_candidate(status: JobStatus) -> bool:
    """A status that a stuck pod may be behind (cheap: filters the cache before any pod is read)."""
    return status.state is JobState.PENDING and status.reason in PENDING_TIMEOUT_REASONS


# is_candidate as the cache's indexes answer it: each tick reads only these jobs, not them all.
CANDIDATES = JobFilter(states=frozenset({JobState.PENDING}), reasons=PENDING_TIMEOUT_REASONS)


def _shows(pod: Mapping[str, Any], reason: str) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Pending":
        return False
    if reason == "Unschedulable":
        return any(
            c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == reason
            for c in status.get("conditions") or []
        )
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return any(((c.get("state") or {}).get("waiting") or {}).get("reason") == reason for c in containers)


def _created(obj: Mapping[str, Any]) -> datetime | None:
    return parse_rfc3339((obj.get("metadata") or {}).get("creationTimestamp"))


def _sort_created(pod: Mapping[str, Any]) -> datetime:
    return _created(pod) or datetime.min.replace(tzinfo=UTC)


class PendingTimeouts:
    """The leader's pending check, a `leader.Reconciler`: called with a namespace ("" = every
    namespace) on each tick, it ends the overdue jobs there."""

    def __init__(
        self,
        service: JobService,
        *,
        api_scan_seconds: float = API_SCAN_SECONDS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.api_scan_seconds = api_scan_seconds
        self._now = now
        self._last_api_scan: dict[str, float] = {}

    def __call__(self, namespace: str) -> None:
        now = self._now()
        for job, pods in self._candidates(namespace, now):
            stuck = find_stuck(job, pods, now=now)
            if stuck is not None:
                self._fail(job, stuck, now)

    def _candidates(self, namespace: str, now: datetime) -> list[tuple[Obj, list[Obj]]]:
        service = self.service
        cache = service.cache
        if cache is not None and cache.covers(namespace) and service.api_reachable():
            return cache.jobs_with_pods(namespace, CANDIDATES)
        if cache is not None and cache.first_list_pending(namespace):
            return []  # the cache serves it in a moment; until then nothing can be overdue long
        started = time.monotonic()
        if started - self._last_api_scan.get(namespace, float("-inf")) < self.api_scan_seconds:
            return []
        self._last_api_scan[namespace] = started
        # Only the candidates are kept, page by page: at 100,000 Jobs a full list held whole
        # took gigabytes.
        jobs, _ = service.gateway.list_all(
            "jobs",
            namespace,
            label_selector=MANAGED_SELECTOR,
            page_seconds=SCAN_PAGE_SECONDS,
            each=lambda job: job if _may_be_overdue(job, now) else None,
        )
        if not jobs:
            return []  # the pods are read only when some job may be overdue
        by_uid: dict[str, list[Obj]] = {}
        for pod in service.gateway.list_pods(namespace, label_selector=MANAGED_SELECTOR):
            uid = ((pod.get("metadata") or {}).get("labels") or {}).get(CONTROLLER_UID_LABEL, "")
            by_uid.setdefault(uid, []).append(pod)
        return [(job, by_uid.get(job["metadata"].get("uid", ""), [])) for job in jobs]

    def _fail(self, job: Obj, stuck: Stuck, now: datetime) -> None:
        meta = job["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        patch = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {
                    FAILED_REASON_ANNOTATION: stuck.reason,
                    FAILED_MESSAGE_ANNOTATION: stuck.message(),
                    FAILED_AT_ANNOTATION: format_rfc3339(now),
                },
            },
            # Kubernetes has no "fail this Job" verb; as for a cancel, a deadline already passed
            # makes the Job controller delete the pods and mark the Job Failed.
            "spec": {"activeDeadlineSeconds": 1},
        }
        try:
            patched = self.service.gateway.patch_job(namespace, name, patch)
        except (ConflictError, NotFoundError):
            # Changed (or gone) since it was judged: the next tick judges it again, if still there.
            log.debug("job changed before its pending timeout was applied", namespace=namespace, job_id=name)
            return
        except JobSchedulerError as e:
            log.warning("could not end a job stuck pending", namespace=namespace, job_id=name, error=str(e))
            return
        if self.service.cache is not None:
            self.service.cache.observe_job(patched)
        log.info(
            "job ended: pending longer than its timeout",
            namespace=namespace,
            job_id=name,
            reason=stuck.reason,
            pod=stuck.pod,
            pending_seconds=round((now - stuck.since).total_seconds()),
            timeout_seconds=stuck.timeout_seconds,
        )


def _may_be_overdue(job: Mapping[str, Any], now: datetime) -> bool:
    """Worth reading the pods of: a pending timeout, not finished, and older than the timeout
    (its pods are younger than the Job)."""
    timeout = pending_timeout(job)
    created = _created(job)
    return (
        timeout is not None
        and created is not None
        and now - created >= timedelta(seconds=timeout)
        and not derive_status(job, []).state.terminal
    )
