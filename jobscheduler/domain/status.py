"""Derives a job's reported status from its Kubernetes Job and that Job's pods, as JSON dicts.

Every rule about what a Job condition, pod phase or container state means to a caller lives here;
the module does no I/O, so the watch cache and the one-off API read share one interpretation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

__all__ = ["derive_status", "exit_detail"]

# Container waiting reasons after which the kubelet will not get the container running without a
# change from outside (image, config, code); anything else (ContainerCreating, PodInitializing) is
# ordinary start-up.
_STUCK_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)

# Labels the Job controller adds to Jobs and their pods (both the batch.kubernetes.io/ names and the
# legacy unprefixed ones it still writes); the caller never set them.
_KUBERNETES_LABEL_PREFIXES = ("batch.kubernetes.io/",)
_KUBERNETES_LABELS = frozenset({"controller-uid", "job-name"})
_SERVICE_LABEL_PREFIX = NAME_LABEL.split("/", 1)[0] + "/"

# Sorts missing timestamps first, so a malformed object never makes an ordering raise.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
# How much of a container's termination message a status carries. The message is the
# workload's own account of the failure (the health check names each unhealthy target), or,
# with FallbackToLogsOnError, the tail of its log; the end is what says why.
MAX_TERMINATION_MESSAGE_CHARS = 2048


def derive_status(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobStatus:
    """The status to report for `job` (a batch/v1 Job as API JSON) given the pods it owns.

    Tolerates any missing field: a Job the controller has not seen yet has no status at all.
    """
    metadata = _mapping(job, "metadata")
    job_status = _mapping(job, "status")
    labels = _mapping(metadata, "labels")
    annotations = _mapping(metadata, "annotations")
    job_id = _string(metadata, "name")
    verdict = _judge(job_status, annotations, pods)
    dependencies = read_dependencies(annotations)
    return JobStatus(
        job_id=job_id,
        namespace=_string(metadata, "namespace"),
        name=_string(labels, NAME_LABEL) or job_id,
        job_type=_string(labels, JOB_TYPE_LABEL),
        state=verdict.state,
        reason=verdict.reason,
        message=verdict.message,
        # With restartPolicy Never each attempt is a pod, and status.failed counts the failed ones.
        attempts=_finished_pods(job_status, pods, "failed", "Failed"),
        active=_count(job_status, "active"),
        succeeded=_finished_pods(job_status, pods, "succeeded", "Succeeded"),
        failed=_count(job_status, "failed"),
        created_at=parse_rfc3339(metadata.get("creationTimestamp")),
        started_at=_first_container_start(pods),
        finished_at=verdict.finished_at,
        pods=tuple(name for name in map(_name, _by_creation(pods)) if name),
        labels=_caller_labels(labels),
        exit_code=verdict.exit_code,
        request_id=_string(annotations, REQUEST_ID_ANNOTATION),
        schedule=_string(labels, SCHEDULE_LABEL),
        completed_indexes=_string(job_status, "completedIndexes"),
        failed_indexes=_string(job_status, "failedIndexes"),
        template=_string(labels, TEMPLATE_LABEL),
        template_version=_label_int(labels, TEMPLATE_VERSION_LABEL),
        after=dependencies.after,
        after_condition=dependencies.condition,
        waiting_for=(dependencies.waiting or ()) if verdict.reason == WAITING_REASON else (),
    )


def exit_detail(pod: Mapping[str, Any]) -> tuple[int | None, str]:
    """Why a finished pod failed: the failing container's exit code and a sentence for people,
    e.g. `(3, "container main exited with code 3 (Error)")`; `(None, "")` when nothing is known."""
    termination = _termination(pod)
    if termination is None:
        return None, ""
    return termination.exit_code, termination.describe()


@dataclass(frozen=True, slots=True)
class _Verdict:
    state: JobState
    reason: str
    message: str = ""
    finished_at: datetime | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class _Termination:
    """How one attempt ended: a container's terminated state, or the pod's own reason when no
    container reported one (evicted, node lost)."""

    container: str
    exit_code: int | None
    reason: str
    message: str = ""

    def describe(self) -> str:
        detail = f": {_one_line(self.message)}" if self.message.strip() else ""
        if not self.container:
            return f"pod failed ({self.reason or 'unknown reason'}){detail}"
        if self.exit_code is None:
            return f"container {self.container} terminated ({self.reason or 'unknown reason'}){detail}"
        reason = f" ({self.reason})" if self.reason else ""
        return f"container {self.container} exited with code {self.exit_code}{reason}{detail}"


def _one_line(message: str) -> str:
    """A termination message on one line, its end kept when it is long."""
    text = " / ".join(line.strip() for line in message.splitlines() if line.strip())
    if len(text) > MAX_TERMINATION_MESSAGE_CHARS:
        return "…" + text[-(MAX_TERMINATION_MESSAGE_CHARS - 1) :]
    return text


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
            _string(done, "message") or "completed",
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
    reason = _string(condition, "reason") or "Failed"
    parts = [_string(condition, "message")]
    last = _last_failure(pods)
    if reason == "PodFailurePolicy":
        # A retry rule failed the job at once. The condition names the pod whose failure matched
        # (in a parallel Job not necessarily the last to finish); its exit code is the one to report.
        culprit = _policy_pod(parts[0], pods)
        if culprit is not None:
            last = _termination(culprit) or last
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
            JobState.PENDING, "Suspended", _string(conditions["Suspended"], "message") or "suspended"
        )

    live = [pod for pod in _by_creation(pods) if _phase(pod) not in ("Succeeded", "Failed")]
    # Precedence: one pod doing work (say, in a parallel Job) means the job is making progress, so
    # RUNNING beats another pod's stuck container. Within a single pod, though, a stuck container
    # wins: a pod whose sidecar runs while its main container crash-loops is not doing the work.
    running = [pod for pod in live if _is_running(pod)]
    if running:
        count = len(running)
        return _Verdict(JobState.RUNNING, "Running", f"{count} pod{'s' if count != 1 else ''} running")

    # Newest pod first: it is the current attempt, older live pods are its siblings or on their way out.
    for pod in reversed(live):
        stuck = _stuck_container(pod)
        if stuck is not None:
            container, waiting = stuck
            detail = _string(waiting, "message")
            message = f"pod {_name(pod)}: container {container}" + (f": {detail}" if detail else "")
            return _Verdict(JobState.PENDING, _string(waiting, "reason"), message)
    for pod in reversed(live):
        unschedulable = _unschedulable(pod)
        if unschedulable is not None:
            detail = _string(unschedulable, "message") or "no node can run it"
            return _Verdict(JobState.PENDING, "Unschedulable", f"pod {_name(pod)}: {detail}")

    if not live and any(_phase(pod) == "Succeeded" for pod in pods):
        # The pod has finished; the Job controller has yet to record the Job as Complete (it
        # takes a sync, sometimes seconds). Going back to PENDING here would make a job appear
        # to run twice, so it stays RUNNING until the Complete condition lands.
        return _Verdict(JobState.RUNNING, "Completing", "the pod succeeded; waiting for the Job to complete")

    failures = _count(job_status, "failed")
    if failures and not live and not _count(job_status, "active"):
        # Between attempts the Job controller waits an exponential back-off (10s, 20s, 40s, ...)
        # before it creates the next pod; nothing is wrong yet.
        message = f"waiting to retry after {failures} failed attempt{'s' if failures != 1 else ''}"
        last = _last_failure(pods)
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
    return next((pod for pod in pods if _name(pod) == match.group(2)), None)


def _finished_pods(
    job_status: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], key: str, phase: str
) -> int:
    """Pods that failed (attempts) or succeeded. The Job's own counts lag: the Job controller
    first lists finished pods under uncountedTerminatedPods (and may already set FailureTarget
    or SuccessCriteriaMet) before it counts them, so a watcher that sees the job end early
    would otherwise read 0."""
    uncounted = _mapping(job_status, "uncountedTerminatedPods")
    counted = _count(job_status, key) + len(_list_of_str(uncounted, key))
    return max(counted, sum(1 for pod in pods if _phase(pod) == phase))


def _list_of_str(obj: Mapping[str, Any], key: str) -> list[str]:
    value = obj.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _is_running(pod: Mapping[str, Any]) -> bool:
    # Only app containers count: a native sidecar (an init container with restartPolicy Always) runs
    # before the main containers have even been pulled.
    return (
        _phase(pod) == "Running"
        and any(
            "running" in _mapping(status, "state")
            for status in _list(_mapping(pod, "status"), "containerStatuses")
        )
        and _stuck_container(pod) is None
    )


def _stuck_container(pod: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    # Init containers included: a pod whose init container cannot pull its image never gets further.
    for status in _container_statuses(pod):
        waiting = _mapping(_mapping(status, "state"), "waiting")
        if _string(waiting, "reason") in _STUCK_WAITING_REASONS:
            return _string(status, "name"), waiting
    return None


def _unschedulable(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if _phase(pod) != "Pending":
        return None
    for condition in _list(_mapping(pod, "status"), "conditions"):
        if (
            _string(condition, "type") == "PodScheduled"
            and _string(condition, "status") == "False"
            and _string(condition, "reason") == "Unschedulable"
        ):
            return condition
    return None


def _last_failure(pods: Sequence[Mapping[str, Any]]) -> _Termination | None:
    """How the most recently finished failed pod ended."""
    failed = [pod for pod in pods if _phase(pod) == "Failed"]
    if not failed:
        return None
    latest = max(
        failed, key=lambda pod: (_finished_at(pod) or _EARLIEST, _created_at(pod) or _EARLIEST, _name(pod))
    )
    return _termination(latest)


def _termination(pod: Mapping[str, Any]) -> _Termination | None:
    terminated = [
        (status, _mapping(_mapping(status, "state"), "terminated")) for status in _container_statuses(pod)
    ]
    nonzero = [(status, term) for status, term in terminated if term and term.get("exitCode") != 0]
    if nonzero:
        # The container that failed first caused the rest (the kubelet stops sidecars after the main
        # container ends); ties keep list order, which puts init containers first.
        status, term = min(nonzero, key=lambda pair: parse_rfc3339(pair[1].get("finishedAt")) or _EARLIEST)
        code = term.get("exitCode")
        return _Termination(
            _string(status, "name"),
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            _string(term, "reason"),
            _string(term, "message"),
        )
    pod_status = _mapping(pod, "status")
    reason = _string(pod_status, "reason")
    if reason:
        # Evicted, DeadlineExceeded (the pod's own deadline), NodeLost...: the kubelet failed the pod
        # without any container exiting with an error.
        return _Termination("", None, reason, _string(pod_status, "message"))
    return None


def _first_container_start(pods: Sequence[Mapping[str, Any]]) -> datetime | None:
    # lastState counts too: with restartPolicy OnFailure a restarted container's current startedAt is
    # the restart, not the first start.
    starts = [
        parse_rfc3339(_mapping(_mapping(status, state_key), kind).get("startedAt"))
        for pod in pods
        for status in _container_statuses(pod)
        for state_key in ("state", "lastState")
        for kind in ("running", "terminated")
    ]
    return min((start for start in starts if start is not None), default=None)


def _finished_at(pod: Mapping[str, Any]) -> datetime | None:
    ends = [
        parse_rfc3339(_mapping(_mapping(status, "state"), "terminated").get("finishedAt"))
        for status in _container_statuses(pod)
    ]
    return max((end for end in ends if end is not None), default=None)


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
    for condition in _list(job_status, "conditions"):
        if _string(condition, "status") == "True":
            found.setdefault(_string(condition, "type"), condition)
    return found


def _by_creation(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda pod: (_created_at(pod) or _EARLIEST, _name(pod)))


def _container_statuses(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    status = _mapping(pod, "status")
    yield from _list(status, "initContainerStatuses")
    yield from _list(status, "containerStatuses")


def _phase(pod: Mapping[str, Any]) -> str:
    return _string(_mapping(pod, "status"), "phase")


def _name(pod: Mapping[str, Any]) -> str:
    return _string(_mapping(pod, "metadata"), "name")


def _created_at(obj: Mapping[str, Any]) -> datetime | None:
    return parse_rfc3339(_mapping(obj, "metadata").get("creationTimestamp"))


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def _list(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = obj.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _string(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _label_int(labels: Mapping[str, Any], key: str) -> int:
    value = _string(labels, key)
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0


def _count(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
