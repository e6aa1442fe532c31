"""Queueing through Kueue: which LocalQueue a job waits in and with which WorkloadPriorityClass,
how that is written on the Job, and what Kueue's objects say about a queued job.

Kueue is the engine (quotas per ClusterQueue, cohorts and borrowing, priorities, preemption,
fair sharing); this module only speaks its conventions. A Job joins a queue by its
`kueue.x-k8s.io/queue-name` label and must be created suspended: Kueue admits it by
unsuspending it. A job the service itself holds (the caller's suspend, dependencies, a
secret_env being stored) carries its queue in a label of the service's only, so that Kueue does not admit
it before the service lets it go; releasing it then adds the label and leaves it suspended for
Kueue, where a job without a queue would simply be unsuspended (`release_patch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import is_dns1123_subdomain, shown
from jobscheduler.timestamps import parse_rfc3339

Obj = dict[str, Any]

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# Kueue labels each Workload with the uid of the Job it stands for.
WORKLOAD_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
# The job's queue, also while the service holds it (Kueue's label comes with the release);
# ListJobs and WatchJobs filter on it.
SERVICE_QUEUE_LABEL = "jobscheduler.io/queue"
KUEUE_API = "/apis/kueue.x-k8s.io/v1beta2"
VISIBILITY_API = "/apis/visibility.kueue.x-k8s.io/v1beta2"
WAITING_REASON = "WaitingForAdmission"
# A label value: Kueue keeps queue and priority class names in labels.
MAX_NAME = 63


@dataclass(frozen=True, slots=True)
class Queueing:
    """Where a job waits for admission (a LocalQueue of its namespace) and its priority (a
    WorkloadPriorityClass); both empty: not queued."""

    queue: str = ""
    priority: str = ""

    def is_empty(self) -> bool:
        return not (self.queue or self.priority)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Queueing:
        """The inverse of dataclasses.asdict (a schedule keeps its job as JSON)."""
        return cls(queue=str(raw.get("queue") or ""), priority=str(raw.get("priority") or ""))


def check_queueing(queueing: Queueing, *, default_queue: str) -> Queueing:
    """The names checked as Kueue checks them (DNS subdomains that fit in a label value), the
    default queue applied; a priority needs a queue."""
    queue = queueing.queue or default_queue
    for field_name, value, kind in (
        ("queue", queue, "LocalQueue (`kubectl get localqueues`)"),
        ("priority", queueing.priority, "WorkloadPriorityClass (`kubectl get workloadpriorityclasses`)"),
    ):
        if value and (len(value) > MAX_NAME or not is_dns1123_subdomain(value)):
            raise InvalidArgumentError(
                field_name,
                f"{shown(value)} is not the name of a {kind}: lower-case letters, digits, '-' and '.', "
                f"at most {MAX_NAME} characters",
            )
    if queueing.priority and not queue:
        raise InvalidArgumentError(
            "priority", "applies only to a queued job: give a queue too (or set DEFAULT_QUEUE)"
        )
    return Queueing(queue, queueing.priority)


def render_queueing(manifest: Obj, queueing: Queueing) -> None:
    """Writes the queue and priority on a rendered Job. Called last, once every hold is on the
    manifest: a Job not held otherwise joins its queue now (label, created suspended for Kueue
    to admit); a held one keeps the queue in the service's label until `release_patch`."""
    if not queueing.queue:
        return
    meta = manifest["metadata"]
    meta["labels"][SERVICE_QUEUE_LABEL] = queueing.queue
    if queueing.priority:
        meta["labels"][PRIORITY_LABEL] = queueing.priority
    spec = manifest["spec"]
    if not spec.get("suspend"):
        meta["labels"][QUEUE_LABEL] = queueing.queue
        spec["suspend"] = True


def release_patch(job: Mapping[str, Any]) -> Obj:
    """The patch that lets a job the service held go: into its queue (the label; Kueue
    unsuspends it when it admits it) or, without a queue, straight to running."""
    queue = queue_of(job)
    if queue:
        return {"metadata": {"labels": {QUEUE_LABEL: queue}}}
    return {"spec": {"suspend": False}}


def with_release(patch: Obj, job: Mapping[str, Any]) -> Obj:
    """`patch` (a merge patch that ends the service's hold) with release_patch merged in."""
    release = release_patch(job)
    labels = release.get("metadata", {}).get("labels")
    if labels:
        patch.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    if "spec" in release:
        patch.setdefault("spec", {}).update(release["spec"])
    return patch


def queue_of(job: Mapping[str, Any]) -> str:
    labels = (job.get("metadata") or {}).get("labels") or {}
    queue = labels.get(QUEUE_LABEL) or labels.get(SERVICE_QUEUE_LABEL)
    return queue if isinstance(queue, str) else ""


def priority_of(job: Mapping[str, Any]) -> str:
    priority = ((job.get("metadata") or {}).get("labels") or {}).get(PRIORITY_LABEL)
    return priority if isinstance(priority, str) else ""


def in_queue(job: Mapping[str, Any]) -> bool:
    """The Job is in Kueue's hands: labelled with its queue (whether admitted yet or not)."""
    return bool(((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL))


def waiting_for_admission(job: Mapping[str, Any]) -> bool:
    """In its queue and suspended: Kueue has not admitted it (or evicted it again)."""
    return in_queue(job) and bool((job.get("spec") or {}).get("suspend"))


# -- what Kueue says about a queued job ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A queued job as Kueue sees it (its Workload, and the visibility API's pending list)."""

    cluster_queue: str = ""
    workload: str = ""
    admitted: bool = False
    admitted_at: datetime | None = None
    position_in_queue: int | None = None
    position_in_cluster_queue: int | None = None
    pending_reason: str = ""
    eviction_reason: str = ""
    eviction_message: str = ""
    evicted_at: datetime | None = None
    priority_value: int = 0


def queue_status_of(workload: Mapping[str, Any], pending: Mapping[str, Any] | None = None) -> QueueStatus:
    """What a Workload (kueue.x-k8s.io/v1beta2, as API JSON) says; `pending` is its entry in
    the visibility API's pending workloads (positions), when it is pending and that API answers."""
    status = workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, Mapping)}
    admitted = _true(conditions.get("Admitted"))
    reserved = conditions.get("QuotaReserved") or {}
    # Evicted is True while an eviction stands; Kueue then sets it False with reason
    # QuotaReserved on (re-)admission, even a first one, so only a True one tells. Preempted
    # (why: InClusterQueue, InCohortReclamation, ...) stays after re-admission: the last one.
    evicted = conditions.get("Evicted") or {}
    preempted = conditions.get("Preempted") or {}
    if _true(evicted):
        eviction = preempted if _true(preempted) else evicted
    elif preempted.get("reason") and preempted.get("reason") != "QuotaReserved":
        eviction = preempted
    else:
        eviction = _last_eviction(status)
    cluster_queue = ((status.get("admission") or {}).get("clusterQueue")) or ""
    spec = workload.get("spec") or {}
    position_queue = position_cluster = None
    if pending is not None:
        position_queue = _position(pending.get("positionInLocalQueue"))
        position_cluster = _position(pending.get("positionInClusterQueue"))
        cluster_queue = cluster_queue or str(pending.get("clusterQueueName") or "")
    return QueueStatus(
        cluster_queue=str(cluster_queue),
        workload=str((workload.get("metadata") or {}).get("name") or ""),
        admitted=admitted,
        admitted_at=parse_rfc3339((conditions.get("Admitted") or {}).get("lastTransitionTime"))
        if admitted
        else None,
        position_in_queue=position_queue,
        position_in_cluster_queue=position_cluster,
        pending_reason=""
        if admitted or _true(reserved)
        else str(reserved.get("message") or reserved.get("reason") or ""),
        eviction_reason=str(eviction.get("reason") or ""),
        eviction_message=str(eviction.get("message") or ""),
        evicted_at=parse_rfc3339(eviction.get("lastTransitionTime")),
        priority_value=int(spec.get("priority") or 0),
    )


def _last_eviction(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """From Kueue's eviction counts (status.schedulingStats.evictions), once re-admission has
    reset the conditions: the finer cause (InCohortReclamation) where it gives one."""
    stats = [
        e for e in (status.get("schedulingStats") or {}).get("evictions") or () if isinstance(e, Mapping)
    ]
    if not stats:
        return {}
    last = stats[-1]
    reason = str(last.get("underlyingCause") or last.get("reason") or "")
    count = sum(int(e.get("count") or 0) for e in stats)
    return {
        "reason": reason,
        "message": f"evicted {count} time{'s' if count != 1 else ''} ({last.get('reason')})",
    }


def _true(condition: Mapping[str, Any] | None) -> bool:
    return bool(condition) and condition is not None and condition.get("status") == "True"


def _position(value: Any) -> int | None:
    # The visibility API counts from 0; callers read 1 as "next".
    return value + 1 if isinstance(value, int) and not isinstance(value, bool) else None


def find_pending(items: Sequence[Mapping[str, Any]], workload: str) -> Mapping[str, Any] | None:
    return next((item for item in items if (item.get("metadata") or {}).get("name") == workload), None)


# -- ListQueues ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceQuota:
    flavor: str
    resource: str
    nominal: str = ""
    borrowing_limit: str = ""
    reserved: str = ""
    in_use: str = ""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    namespace: str
    cluster_queue: str = ""
    cohort: str = ""
    pending: int = 0
    admitted: int = 0
    resources: tuple[ResourceQuota, ...] = ()
    active: bool = False
    message: str = ""
    weighted_share: int = 0


def queue_info_of(local_queue: Mapping[str, Any], cluster_queue: Mapping[str, Any] | None) -> QueueInfo:
    """A LocalQueue (kueue.x-k8s.io/v1beta2, as API JSON) with its ClusterQueue's quotas (None:
    not readable): one ResourceQuota per flavor and resource, the ClusterQueue's first, then any
    only the LocalQueue's usage names."""
    meta = local_queue.get("metadata") or {}
    status = local_queue.get("status") or {}
    active = next(
        (c for c in status.get("conditions") or () if isinstance(c, Mapping) and c.get("type") == "Active"),
        {},
    )
    reserved = _flavor_amounts(status.get("flavorsReservation"))
    in_use = _flavor_amounts(status.get("flavorsUsage"))
    quotas: dict[tuple[str, str], ResourceQuota] = {}
    cq_spec = (cluster_queue or {}).get("spec") or {}
    for group in cq_spec.get("resourceGroups") or ():
        for flavor in group.get("flavors") or ():
            for res in flavor.get("resources") or ():
                key = (str(flavor.get("name") or ""), str(res.get("name") or ""))
                quotas[key] = ResourceQuota(
                    *key,
                    nominal=_quantity(res.get("nominalQuota")),
                    borrowing_limit=_quantity(res.get("borrowingLimit")),
                )
    for key in [*reserved, *in_use]:
        quotas.setdefault(key, ResourceQuota(*key))
    resources = tuple(
        ResourceQuota(
            q.flavor,
            q.resource,
            nominal=q.nominal,
            borrowing_limit=q.borrowing_limit,
            reserved=reserved.get((q.flavor, q.resource), ""),
            in_use=in_use.get((q.flavor, q.resource), ""),
        )
        for q in quotas.values()
    )
    fair = status.get("fairSharing") or {}
    return QueueInfo(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        cluster_queue=str((local_queue.get("spec") or {}).get("clusterQueue") or ""),
        # v1beta2 names it cohortName (v1beta1: cohort).
        cohort=str(cq_spec.get("cohortName") or cq_spec.get("cohort") or ""),
        pending=int(status.get("pendingWorkloads") or 0),
        admitted=int(status.get("admittedWorkloads") or 0),
        resources=resources,
        active=active.get("status") == "True",
        message="" if active.get("status") == "True" else str(active.get("message") or ""),
        weighted_share=int(fair.get("weightedShare") or 0),
    )


def _flavor_amounts(usage: Any) -> dict[tuple[str, str], str]:
    amounts: dict[tuple[str, str], str] = {}
    for flavor in usage or ():
        for res in (flavor or {}).get("resources") or ():
            amounts[(str(flavor.get("name") or ""), str(res.get("name") or ""))] = _quantity(res.get("total"))
    return amounts


def _quantity(value: Any) -> str:
    return "" if value is None else str(value)
