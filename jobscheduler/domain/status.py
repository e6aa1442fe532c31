"""Derives a job's reported status from its Kubernetes Job and that Job's pods, as JSON dicts.

Every rule about what a Job condition, pod phase or container state means to a caller lives here;
the module does no I/O, so the watch cache and the one-off API read share one interpretation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobscheduler.domain.audit import audit_of, traceparent_of
from jobscheduler.domain.dependencies import (
    WAITING_FOR_ANNOTATION,
    WAITING_REASON,
    read_dependencies,
    waiting_message,
)
from jobscheduler.domain.models import (
    CANCELLED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILED_MESSAGE_ANNOTATION,
    FAILED_REASON_ANNOTATION,
    JOB_TYPE_LABEL,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    REQUEST_ID_ANNOTATION,
    SCHEDULE_LABEL,
    TEMPLATE_LABEL,
    TEMPLATE_VERSION_LABEL,
    JobState,
    JobStatus,
)
from jobscheduler.domain.notify import notification_statuses
from jobscheduler.domain.placement import placement_of
from jobscheduler.domain.pods import (
    by_creation,
    count_at,
    first_container_start,
    label_int,
    last_failure,
    list_at,
    mapping_at,
    pod_is_running,
    pod_name,
    pod_phase,
    pod_termination,
    string_at,
    stuck_container,
    unschedulable_condition,
)
from jobscheduler.domain.queueing import WAITING_REASON as QUEUED_REASON
from jobscheduler.domain.queueing import Queueing, priority_of, queue_of, waiting_for_admission
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

__all__ = ["derive_status"]


# Labels the Job controller adds to Jobs and their pods (both the batch.kubernetes.io/ names and the
# legacy unprefixed ones it still writes), and Kueue's; the caller never set them.
_KUBERNETES_LABEL_PREFIXES = ("batch.kubernetes.io/", "kueue.x-k8s.io/")
_KUBERNETES_LABELS = frozenset({"controller-uid", "job-name"})
_SERVICE_LABEL_PREFIX = NAME_LABEL.split("/", 1)[0] + "/"


def derive_status(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobStatus:
    """The status to report for `job` (a batch/v1 Job as API JSON) given the pods it owns.

    Tolerates any missing field: a Job the controller has not seen yet has no status at all.
    """
    metadata = mapping_at(job, "metadata")
    job_status = mapping_at(job, "status")
    labels = mapping_at(metadata, "labels")
    annotations = mapping_at(metadata, "annotations")
    job_id = string_at(metadata, "name")
    verdict = _judge(job_status, annotations, pods)
    queue = queue_of(job)
    if verdict.state is JobState.PENDING and waiting_for_admission(job):
        # In its queue, suspended until Kueue admits it (or again, after an eviction).
        verdict = _Verdict(JobState.QUEUED, QUEUED_REASON, f"waiting in queue {queue} for Kueue to admit it")
    dependencies = read_dependencies(annotations)
    started_at = first_container_start(pods)
    return JobStatus(
        job_id=job_id,
        namespace=string_at(metadata, "namespace"),
        name=string_at(labels, NAME_LABEL) or job_id,
        job_type=string_at(labels, JOB_TYPE_LABEL),
        state=verdict.state,
        reason=verdict.reason,
        message=verdict.message,
        # With restartPolicy Never each attempt is a pod, and status.failed counts the failed ones.
        attempts=_finished_pods(job_status, pods, "failed", "Failed"),
        active=count_at(job_status, "active"),
        succeeded=_finished_pods(job_status, pods, "succeeded", "Succeeded"),
        failed=count_at(job_status, "failed"),
        created_at=parse_rfc3339(metadata.get("creationTimestamp")),
        started_at=started_at,
        finished_at=verdict.finished_at,
        pods=tuple(name for name in map(pod_name, by_creation(pods)) if name),
        labels=_caller_labels(labels),
        exit_code=verdict.exit_code,
        request_id=string_at(annotations, REQUEST_ID_ANNOTATION),
        schedule=string_at(labels, SCHEDULE_LABEL),
        completed_indexes=string_at(job_status, "completedIndexes"),
        failed_indexes=string_at(job_status, "failedIndexes"),
        template=string_at(labels, TEMPLATE_LABEL),
        template_version=label_int(labels, TEMPLATE_VERSION_LABEL),
        placement=placement_of(mapping_at(mapping_at(mapping_at(job, "spec"), "template"), "spec")),
        after=dependencies.after,
        after_condition=dependencies.condition,
        waiting_for=(dependencies.waiting or ()) if verdict.reason == WAITING_REASON else (),
        queueing=Queueing(queue, priority_of(job)),
        notifications=notification_statuses(
            annotations, job_state=verdict.state, started=started_at is not None
        ),
        audit=audit_of(annotations),
        traceparent=traceparent_of(annotations),
    )


@dataclass(frozen=True, slots=True)
class _Verdict:
    state: JobState
    reason: str
    message: str = ""
    finished_at: datetime | None = None
    exit_code: int | None = None


def _judge(
    job_status: Mapping[str, Any], annotations: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> _Verdict:
    conditions = _true_conditions(job_status)
    # A Job's outcome is in its conditions, never in a phase. Since 1.31 the controller sets
    # SuccessCriteriaMet / FailureTarget as soon as the outcome is decided and Complete / Failed only
    # once the remaining pods are gone, so the first of each pair already means "finished".
    done = conditions.get("Complete") or conditions.get("SuccessCriteriaMet")
    if done is not None:
        # Checked before the cancel annotation: a cancel that arrived after the Job completed
        # changed nothing, the work succeeded.
        return _Verdict(
            JobState.SUCCEEDED,
            "Completed",
            string_at(done, "message") or "completed",
            finished_at=parse_rfc3339(job_status.get("completionTime"))
            or parse_rfc3339(done.get("lastTransitionTime")),
            exit_code=0,
        )
    cancelled_at = annotations.get(CANCELLED_AT_ANNOTATION)
    if isinstance(cancelled_at, str):
        # The service cancels by writing this annotation and shortening activeDeadlineSeconds, so the
        # Job controller later records Failed/DeadlineExceeded; that failure is the cancel itself.
        when = parse_rfc3339(cancelled_at)
        shown = format_rfc3339(when) if when is not None else cancelled_at
        return _Verdict(
            JobState.CANCELLED,
            "Cancelled",
            f"cancelled at {shown}" if shown else "cancelled",
            finished_at=when,
        )
    failed_reason = annotations.get(FAILED_REASON_ANNOTATION)
    if isinstance(failed_reason, str) and failed_reason:
        # The service ended the job itself (a pending timeout, a failed dependency) the way it
        # cancels one; the Job controller's DeadlineExceeded that follows is that decision, and the
        # annotations say why.
        message = annotations.get(FAILED_MESSAGE_ANNOTATION)
        failed_condition = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        return _Verdict(
            JobState.FAILED,
            failed_reason,
            message if isinstance(message, str) and message else "ended by the service",
            finished_at=parse_rfc3339(annotations.get(FAILED_AT_ANNOTATION))
            or parse_rfc3339(failed_condition.get("lastTransitionTime")),
        )
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is not None:
        return _failed(failed, pods)
    if WAITING_FOR_ANNOTATION in annotations:
        # Held (suspended) by its dependencies until the leader releases or fails it; not a
        # caller's suspend, which ResumeJob lifts.
        return _Verdict(JobState.PENDING, WAITING_REASON, waiting_message(read_dependencies(annotations)))
    return _unfinished(job_status, conditions, pods)


def _failed(condition: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> _Verdict:
    reason = string_at(condition, "reason") or "Failed"
    parts = [string_at(condition, "message")]
    last = last_failure(pods)
    if reason == "PodFailurePolicy":
        # A retry rule failed the job at once. The condition names the pod whose failure matched
        # (in a parallel Job not necessarily the last to finish); its exit code is the one to report.
        culprit = _policy_pod(parts[0], pods)
        if culprit is not None:
            last = pod_termination(culprit) or last
        parts[0] = "failed at once by a retry rule" + (f": {parts[0]}" if parts[0] else "")
    if last is not None:
        # The Job condition only says which limit was hit (BackoffLimitExceeded, ...); an OOM kill is
        # what the caller has to act on, and it is only visible on the pod.
        if last.reason == "OOMKilled":
            reason = "OOMKilled"
        parts.append(f"last attempt: {last.describe()}")
    return _Verdict(
        JobState.FAILED,
        reason,
        "; ".join(part for part in parts if part) or "failed",
        finished_at=parse_rfc3339(condition.get("lastTransitionTime")),
        exit_code=last.exit_code if last is not None else None,
    )


def _unfinished(
    job_status: Mapping[str, Any],
    conditions: Mapping[str, Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> _Verdict:
    if "Suspended" in conditions:
        # A suspended Job's pods are being deleted and no new ones start until it is resumed.
        return _Verdict(
            JobState.PENDING, "Suspended", string_at(conditions["Suspended"], "message") or "suspended"
        )

    live = [pod for pod in by_creation(pods) if pod_phase(pod) not in ("Succeeded", "Failed")]
    # Precedence: one pod doing work (say, in a parallel Job) means the job is making progress, so
    # RUNNING beats another pod's stuck container. Within a single pod, though, a stuck container
    # wins: a pod whose sidecar runs while its main container crash-loops is not doing the work.
    running = [pod for pod in live if pod_is_running(pod)]
    if running:
        count = len(running)
        return _Verdict(JobState.RUNNING, "Running", f"{count} pod{'s' if count != 1 else ''} running")

    # Newest pod first: it is the current attempt, older live pods are its siblings or on their way out.
    for pod in reversed(live):
        stuck = stuck_container(pod)
        if stuck is not None:
            container, waiting = stuck
            detail = string_at(waiting, "message")
            message = f"pod {pod_name(pod)}: container {container}" + (f": {detail}" if detail else "")
            return _Verdict(JobState.PENDING, string_at(waiting, "reason"), message)
    for pod in reversed(live):
        unschedulable = unschedulable_condition(pod)
        if unschedulable is not None:
            detail = string_at(unschedulable, "message") or "no node can run it"
            return _Verdict(JobState.PENDING, "Unschedulable", f"pod {pod_name(pod)}: {detail}")

    if not live and any(pod_phase(pod) == "Succeeded" for pod in pods):
        # The pod has finished; the Job controller has yet to record the Job as Complete (it
        # takes a sync, sometimes seconds). Going back to PENDING here would make a job appear
        # to run twice, so it stays RUNNING until the Complete condition lands.
        return _Verdict(JobState.RUNNING, "Completing", "the pod succeeded; waiting for the Job to complete")

    failures = count_at(job_status, "failed")
    if failures and not live and not count_at(job_status, "active"):
        # Between attempts the Job controller waits an exponential back-off (10s, 20s, 40s, ...)
        # before it creates the next pod; nothing is wrong yet.
        message = f"waiting to retry after {failures} failed attempt{'s' if failures != 1 else ''}"
        last = last_failure(pods)
        if last is not None:
            message += f"; last attempt: {last.describe()}"
        return _Verdict(JobState.PENDING, "BackOff", message)
    message = "waiting for a pod to start"
    if failures:
        message += f" after {failures} failed attempt{'s' if failures != 1 else ''}"
    return _Verdict(JobState.PENDING, "Created", message)


# How the Job controller names the pod in a PodFailurePolicy condition: "Container main for pod
# ns/name failed with exit code 3 matching FailJob rule at index 0", or "Pod ns/name has
# condition DisruptionTarget matching FailJob rule at index 1".
_POLICY_POD = re.compile(r"\bpod ([a-z0-9.-]+)/([a-z0-9.-]+)", re.IGNORECASE)


def _policy_pod(message: str, pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    match = _POLICY_POD.search(message)
    if match is None:
        return None
    return next((pod for pod in pods if pod_name(pod) == match.group(2)), None)


def _finished_pods(
    job_status: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], key: str, phase: str
) -> int:
    """Pods that failed (attempts) or succeeded. The Job's own counts lag: the Job controller
    first lists finished pods under uncountedTerminatedPods (and may already set FailureTarget
    or SuccessCriteriaMet) before it counts them, so a watcher that sees the job end early
    would otherwise read 0."""
    uncounted = mapping_at(job_status, "uncountedTerminatedPods")
    counted = count_at(job_status, key) + len(_list_of_str(uncounted, key))
    return max(counted, sum(1 for pod in pods if pod_phase(pod) == phase))


def _list_of_str(obj: Mapping[str, Any], key: str) -> list[str]:
    value = obj.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _caller_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: str(value)
        for key, value in labels.items()
        if not key.startswith(_SERVICE_LABEL_PREFIX)
        and key != MANAGED_BY_LABEL
        and key not in _KUBERNETES_LABELS
        and not key.startswith(_KUBERNETES_LABEL_PREFIXES)
    }


def _true_conditions(job_status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    # Conditions stay in the list with status "False" once they stop holding (a resumed Job keeps
    # Suspended=False), so only the true ones say anything.
    found: dict[str, Mapping[str, Any]] = {}
    for condition in list_at(job_status, "conditions"):
        if string_at(condition, "status") == "True":
            found.setdefault(string_at(condition, "type"), condition)
    return found
