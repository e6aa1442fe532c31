"""Queues through Kueue, as the service uses them: whether the cluster has Kueue, the checks a
queued ScheduleJob passes (the LocalQueue and the WorkloadPriorityClass exist), a queued job's
place and Kueue's reasons (GetJobStatus), and ListQueues.

Kueue is optional: discovery says whether its API is served, and is asked again now and then,
so a Kueue installed (or removed) while the service runs is noticed without a restart. Without
it, a job that asks for no queue is scheduled as always and one that asks for a queue is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    PermissionDeniedError,
)
from jobscheduler.domain.queueing import (
    KUEUE_API,
    VISIBILITY_API,
    WORKLOAD_JOB_UID_LABEL,
    QueueInfo,
    Queueing,
    QueueStatus,
    find_pending,
    queue_info_of,
    queue_of,
    queue_status_of,
)
from jobscheduler.kube.gateway import KubeGateway

Obj = dict[str, Any]
log = structlog.get_logger("jobscheduler.app.queues")
# How long an answer of discovery about Kueue is trusted.
DISCOVERY_TTL_SECONDS = 30.0
# The visibility API returns at most this many pending workloads per call.
PENDING_PAGE = 1000


class Queues:
    def __init__(
        self, gateway: KubeGateway, settings: Settings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._available: bool | None = None
        self._checked = 0.0

    def available(self, *, deadline: float | None = None) -> bool:
        """Whether the cluster serves Kueue's API (kueue.x-k8s.io/v1beta2 with localqueues)."""
        now = self._clock()
        with self._lock:
            if self._available is not None and now - self._checked < DISCOVERY_TTL_SECONDS:
                return self._available
        try:
            resources = self.gateway.read_path(KUEUE_API, deadline=deadline).get("resources") or []
            available = any(r.get("name") == "localqueues" for r in resources)
        except NotFoundError:
            available = False
        with self._lock:
            self._available, self._checked = available, now
        return available

    def describe(self) -> str:
        """For the start-up line: whether queueing is available, and the default queue."""
        try:
            available = self.available()
        except JobSchedulerError as e:
            return f"unknown ({e})"
        if not available:
            return "unavailable (no Kueue in the cluster: jobs that ask for a queue are refused)"
        return "kueue" + (
            f", default queue {self.settings.default_queue}" if self.settings.default_queue else ""
        )

    # -- ScheduleJob's checks ------------------------------------------------------------------

    def check(self, namespace: str, queueing: Queueing, *, deadline: float | None) -> None:
        """The queue must be a LocalQueue of the job's namespace and the priority a
        WorkloadPriorityClass: Kueue's webhook admits a Job naming neither, which then waits
        for ever (an unknown queue) or is refused later."""
        if not queueing.queue:
            return
        if not self.available(deadline=deadline):
            raise FailedPreconditionError(
                f"queue: {queueing.queue!r} was asked for, but the cluster has no Kueue (the API "
                "kueue.x-k8s.io/v1beta2 is not served); install Kueue (docs/queueing.md) or schedule "
                "without a queue"
                + (" (DEFAULT_QUEUE is set on this service)" if self.settings.default_queue else "")
            )
        self._must_exist(
            "localqueues",
            namespace,
            queueing.queue,
            field="queue",
            missing=f"no LocalQueue named {queueing.queue!r} in namespace {namespace!r}; "
            f"`kubectl get localqueues -n {namespace}` lists them",
            deadline=deadline,
        )
        if queueing.priority:
            self._must_exist(
                "workloadpriorityclasses",
                "",
                queueing.priority,
                field="priority",
                missing=f"no WorkloadPriorityClass named {queueing.priority!r}; "
                "`kubectl get workloadpriorityclasses` lists them",
                deadline=deadline,
            )

    def _must_exist(
        self, resource: str, namespace: str, name: str, *, field: str, missing: str, deadline: float | None
    ) -> None:
        try:
            self.gateway.get(resource, namespace, name, deadline=deadline)
        except NotFoundError:
            raise InvalidArgumentError(field, missing) from None
        except PermissionDeniedError:
            # Without the grants of k8s/rbac.yaml the name cannot be checked; Kueue reports it.
            log.warning(f"cannot read {resource} (RBAC); {field} not checked", name=name)

    # -- GetJobStatus --------------------------------------------------------------------------

    def status(self, job: Mapping[str, Any], *, deadline: float | None) -> QueueStatus | None:
        """Kueue's view of a queued Job: its Workload's conditions and, while pending, its
        positions from the visibility API. None when it has no Workload (yet) or Kueue cannot
        be read; a failing visibility API only leaves the positions out."""
        meta = job.get("metadata") or {}
        uid, namespace, queue = meta.get("uid", ""), meta.get("namespace", ""), queue_of(job)
        if not uid or not queue:
            return None
        try:
            workloads = self.gateway.list_of(
                "workloads", namespace, label_selector=f"{WORKLOAD_JOB_UID_LABEL}={uid}", deadline=deadline
            )
        except (NotFoundError, PermissionDeniedError) as e:
            log.warning(
                "cannot read Kueue's Workloads; queue_status left out", job=meta.get("name"), error=str(e)
            )
            return None
        if not workloads:
            log.debug("no Workload for the job yet", job=meta.get("name"), uid=uid)
            return None
        workload = workloads[0]
        found = queue_status_of(workload)
        if found.admitted or not found.workload:
            return found
        pending = None
        try:
            listing = self.gateway.read_path(
                f"{VISIBILITY_API}/namespaces/{namespace}/localqueues/{queue}/pendingworkloads",
                query=[("limit", str(PENDING_PAGE))],
                deadline=deadline,
            )
            pending = find_pending(listing.get("items") or [], found.workload)
        except JobSchedulerError as e:
            log.warning("Kueue's visibility API did not answer; positions left out", error=str(e))
        return queue_status_of(workload, pending) if pending is not None else found

    # -- ListQueues ----------------------------------------------------------------------------

    def list(self, namespace: str, *, deadline: float | None) -> tuple[list[QueueInfo], bool]:
        """The LocalQueues of a namespace with their ClusterQueues' quotas (when readable), and
        whether Kueue is there at all."""
        if not self.available(deadline=deadline):
            return [], False
        local = self.gateway.list_of("localqueues", namespace, label_selector="", deadline=deadline)
        cluster: dict[str, Obj | None] = {}
        for lq in local:
            name = str((lq.get("spec") or {}).get("clusterQueue") or "")
            if name and name not in cluster:
                try:
                    cluster[name] = self.gateway.get("clusterqueues", "", name, deadline=deadline)
                except (NotFoundError, PermissionDeniedError):
                    cluster[name] = None
        infos = [
            queue_info_of(lq, cluster.get(str((lq.get("spec") or {}).get("clusterQueue") or "")))
            for lq in local
        ]
        return sorted(infos, key=lambda q: q.name), True
