"""Jobs and Pods kept slim: only what status derivation and reporting read, so the watch cache
holds thousands of jobs in little memory.

Strings that many jobs repeat (namespaces, label keys and values, annotation keys, condition
types and reasons) are interned, so the cache holds one copy of each rather than one per job as
JSON parsing makes them. Strings unique to a job (its name, uid, times) are kept as they come.
"""

from __future__ import annotations

from collections.abc import Mapping
from sys import intern
from typing import Any

from jobscheduler.domain.models import PARAMETERS_ANNOTATION

Obj = dict[str, Any]


CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")

# The annotations status derivation and reporting read; the rest of a Job's metadata is dropped.
KEPT_ANNOTATION_PREFIX = "jobscheduler.io/"


# What status derivation reads of a Job's status (jobscheduler.domain.status), and of each of
# its conditions; the rest (ready, terminating, lastProbeTime, ...) is dropped.
KEPT_STATUS_FIELDS = (
    "active",
    "succeeded",
    "failed",
    "startTime",
    "completionTime",
    "completedIndexes",
    "failedIndexes",
)
KEPT_CONDITION_FIELDS = ("type", "status", "reason", "message", "lastTransitionTime")
_SHARED_CONDITION_FIELDS = frozenset({"type", "status", "reason", "message"})


def slim_job(job: Mapping[str, Any]) -> Obj:
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    slim: Obj = {
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": _shared(meta.get("namespace", "")),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
            "creationTimestamp": meta.get("creationTimestamp"),
            "labels": {_shared(k): _shared(v) for k, v in (meta.get("labels") or {}).items()},
            "annotations": {
                # A schedule's runs, a template's jobs and most bench jobs carry the same parameters.
                _shared(k): _shared(v) if k == PARAMETERS_ANNOTATION else v
                for k, v in annotations.items()
                if k.startswith(KEPT_ANNOTATION_PREFIX)
            },
        },
        "status": _slim_job_status(job.get("status") or {}),
    }
    # Rare, and read by the leader's notifier (jobscheduler.control.notify): whether the Job is
    # being deleted and which finalizers hold it.
    if meta.get("deletionTimestamp"):
        slim["metadata"]["deletionTimestamp"] = meta["deletionTimestamp"]
    if meta.get("finalizers"):
        slim["metadata"]["finalizers"] = [_shared(f) for f in meta["finalizers"]]
    if placement := _placement_fields(job):
        slim["spec"] = {"template": {"spec": placement}}
    if (job.get("spec") or {}).get("suspend"):
        # A suspended Job in a Kueue queue is QUEUED (jobscheduler.domain.queueing).
        slim.setdefault("spec", {})["suspend"] = True
    return slim


def _slim_job_status(status: Mapping[str, Any]) -> Obj:
    slim = {k: status[k] for k in KEPT_STATUS_FIELDS if k in status}
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        slim["conditions"] = [
            {
                k: _shared(c[k]) if k in _SHARED_CONDITION_FIELDS else c[k]
                for k in KEPT_CONDITION_FIELDS
                if k in c
            }
            if isinstance(c, Mapping)
            else c
            for c in conditions
        ]
    elif conditions is not None:
        slim["conditions"] = conditions
    if uncounted := status.get("uncountedTerminatedPods"):
        slim["uncountedTerminatedPods"] = uncounted
    return slim


def _shared(value: Any) -> Any:
    return intern(value) if type(value) is str else value


def _placement_fields(job: Mapping[str, Any]) -> Obj:
    """The pod template's placement (node selector, tolerations, priority class): reported."""
    pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {k: pod_spec[k] for k in ("nodeSelector", "tolerations", "priorityClassName") if k in pod_spec}


def slim_pod(pod: Mapping[str, Any]) -> Obj:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {"name": meta.get("name", ""), "creationTimestamp": meta.get("creationTimestamp")},
        "status": {
            k: status[k]
            for k in (
                "phase",
                "reason",
                "message",
                "conditions",
                "containerStatuses",
                "initContainerStatuses",
                "startTime",
            )
            if k in status
        },
    }


def owner_uid(pod: Mapping[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for key in CONTROLLER_UID_LABELS:
        if key in labels:
            return str(labels[key])
    return ""


def resource_version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion", "0"))
    except ValueError:  # opaque by contract; numeric on every real API server
        return 0
