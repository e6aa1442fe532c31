"""Jobs and Pods kept slim: only what status derivation and reporting read, so the watch cache
holds thousands of jobs in little memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")

# The annotations status derivation and reporting read; the rest of a Job's metadata is dropped.
KEPT_ANNOTATION_PREFIX = "jobscheduler.io/"


def slim_job(job: Mapping[str, Any]) -> Obj:
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    slim: Obj = {
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
            "creationTimestamp": meta.get("creationTimestamp"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {k: v for k, v in annotations.items() if k.startswith(KEPT_ANNOTATION_PREFIX)},
        },
        "status": job.get("status") or {},
    }
    if placement := _placement_fields(job):
        slim["spec"] = {"template": {"spec": placement}}
    return slim


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
