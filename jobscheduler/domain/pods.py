"""What a pod's (and a Job's) JSON says, read without trusting its shape: how an attempt ended
(exit code, reason, termination message), whether a container is stuck waiting or the pod is
unschedulable, when it started and finished. Pure; jobscheduler.domain.status builds the
job's status from these."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobscheduler.timestamps import parse_rfc3339

# Container waiting reasons after which the kubelet will not get the container running without a
# change from outside (image, config, code); anything else (ContainerCreating, PodInitializing) is
# ordinary start-up.
STUCK_WAITING_REASONS = frozenset(
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

# Sorts missing timestamps first, so a malformed object never makes an ordering raise.
EARLIEST = datetime.min.replace(tzinfo=UTC)

# How much of a container's termination message a status carries. The message is the
# workload's own account of the failure (the health check names each unhealthy target), or,
# with FallbackToLogsOnError, the tail of its log; the end is what says why.
MAX_TERMINATION_MESSAGE_CHARS = 2048


def exit_detail(pod: Mapping[str, Any]) -> tuple[int | None, str]:
    """Why a finished pod failed: the failing container's exit code and a sentence for people,
    e.g. `(3, "container main exited with code 3 (Error)")`; `(None, "")` when nothing is known."""
    termination = pod_termination(pod)
    if termination is None:
        return None, ""
    return termination.exit_code, termination.describe()


@dataclass(frozen=True, slots=True)
class Termination:
    """How one attempt ended: a container's terminated state, or the pod's own reason when no
    container reported one (evicted, node lost)."""

    container: str
    exit_code: int | None
    reason: str
    message: str = ""

    def describe(self) -> str:
        detail = f": {one_line(self.message)}" if self.message.strip() else ""
        if not self.container:
            return f"pod failed ({self.reason or 'unknown reason'}){detail}"
        if self.exit_code is None:
            return f"container {self.container} terminated ({self.reason or 'unknown reason'}){detail}"
        reason = f" ({self.reason})" if self.reason else ""
        return f"container {self.container} exited with code {self.exit_code}{reason}{detail}"


def one_line(message: str) -> str:
    """A termination message on one line, its end kept when it is long."""
    text = " / ".join(line.strip() for line in message.splitlines() if line.strip())
    if len(text) > MAX_TERMINATION_MESSAGE_CHARS:
        return "…" + text[-(MAX_TERMINATION_MESSAGE_CHARS - 1) :]
    return text


def pod_is_running(pod: Mapping[str, Any]) -> bool:
    # Only app containers count: a native sidecar (an init container with restartPolicy Always) runs
    # before the main containers have even been pulled.
    return (
        pod_phase(pod) == "Running"
        and any(
            "running" in mapping_at(status, "state")
            for status in list_at(mapping_at(pod, "status"), "containerStatuses")
        )
        and stuck_container(pod) is None
    )


def stuck_container(pod: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    # Init containers included: a pod whose init container cannot pull its image never gets further.
    for status in container_statuses(pod):
        waiting = mapping_at(mapping_at(status, "state"), "waiting")
        if string_at(waiting, "reason") in STUCK_WAITING_REASONS:
            return string_at(status, "name"), waiting
    return None


def unschedulable_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if pod_phase(pod) != "Pending":
        return None
    for condition in list_at(mapping_at(pod, "status"), "conditions"):
        if (
            string_at(condition, "type") == "PodScheduled"
            and string_at(condition, "status") == "False"
            and string_at(condition, "reason") == "Unschedulable"
        ):
            return condition
    return None


def last_failure(pods: Sequence[Mapping[str, Any]]) -> Termination | None:
    """How the most recently finished failed pod ended."""
    failed = [pod for pod in pods if pod_phase(pod) == "Failed"]
    if not failed:
        return None
    latest = max(
        failed,
        key=lambda pod: (pod_finished_at(pod) or EARLIEST, created_at_of(pod) or EARLIEST, pod_name(pod)),
    )
    return pod_termination(latest)


def pod_termination(pod: Mapping[str, Any]) -> Termination | None:
    terminated = [
        (status, mapping_at(mapping_at(status, "state"), "terminated")) for status in container_statuses(pod)
    ]
    nonzero = [(status, term) for status, term in terminated if term and term.get("exitCode") != 0]
    if nonzero:
        # The container that failed first caused the rest (the kubelet stops sidecars after the main
        # container ends); ties keep list order, which puts init containers first.
        status, term = min(nonzero, key=lambda pair: parse_rfc3339(pair[1].get("finishedAt")) or EARLIEST)
        code = term.get("exitCode")
        return Termination(
            string_at(status, "name"),
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            string_at(term, "reason"),
            string_at(term, "message"),
        )
    pod_status = mapping_at(pod, "status")
    reason = string_at(pod_status, "reason")
    if reason:
        # Evicted, DeadlineExceeded (the pod's own deadline), NodeLost...: the kubelet failed the pod
        # without any container exiting with an error.
        return Termination("", None, reason, string_at(pod_status, "message"))
    return None


def first_container_start(pods: Sequence[Mapping[str, Any]]) -> datetime | None:
    # lastState counts too: with restartPolicy OnFailure a restarted container's current startedAt is
    # the restart, not the first start.
    starts = [
        parse_rfc3339(mapping_at(mapping_at(status, state_key), kind).get("startedAt"))
        for pod in pods
        for status in container_statuses(pod)
        for state_key in ("state", "lastState")
        for kind in ("running", "terminated")
    ]
    return min((start for start in starts if start is not None), default=None)


def pod_finished_at(pod: Mapping[str, Any]) -> datetime | None:
    ends = [
        parse_rfc3339(mapping_at(mapping_at(status, "state"), "terminated").get("finishedAt"))
        for status in container_statuses(pod)
    ]
    return max((end for end in ends if end is not None), default=None)


def by_creation(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda pod: (created_at_of(pod) or EARLIEST, pod_name(pod)))


def container_statuses(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    status = mapping_at(pod, "status")
    yield from list_at(status, "initContainerStatuses")
    yield from list_at(status, "containerStatuses")


def pod_phase(pod: Mapping[str, Any]) -> str:
    return string_at(mapping_at(pod, "status"), "phase")


def pod_name(pod: Mapping[str, Any]) -> str:
    return string_at(mapping_at(pod, "metadata"), "name")


def created_at_of(obj: Mapping[str, Any]) -> datetime | None:
    return parse_rfc3339(mapping_at(obj, "metadata").get("creationTimestamp"))


def mapping_at(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def list_at(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = obj.get(key)
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def string_at(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def label_int(labels: Mapping[str, Any], key: str) -> int:
    value = string_at(labels, key)
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0


def count_at(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
