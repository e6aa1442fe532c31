"""GetJobLogs: a job's container logs, read through the Kubernetes pods/log subresource.

Which pods are read and in which order, whether a pod's container can have a log yet, and when
a followed log ends are decided here from the pods' status; the bytes come from the gateway.
A followed log ends once the container is seen terminated, whether or not the node closes the
stream itself (a kubelet does; kwok, which has no containers, never does).
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobscheduler.app.service import JobService
from jobscheduler.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from jobscheduler.domain.models import MANAGED_SELECTOR
from jobscheduler.domain.validation import check_dns_label, shown
from jobscheduler.kube.gateway import KubeGateway

Obj = dict[str, Any]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_TAIL_LINES = 100_000
# A chunk stays far below gRPC's 4 MiB message limit; a longer line is cut into pieces.
MAX_CHUNK_BYTES = 1024 * 1024
MAX_CHUNK_LINES = 1000
MAX_LINE_BYTES = 512 * 1024
# Waiting reasons a container leaves by itself; any other (ImagePullBackOff, ErrImagePull,
# CreateContainerConfigError, ...) needs someone to act, so even a follow answers at once.
STARTING_REASONS = frozenset({"", "ContainerCreating", "PodInitializing"})
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What GetJobLogs asks for; each option applies to each pod, as `kubectl logs` applies it."""

    namespace: str
    job_id: str
    pod: str = ""
    """One pod of the job; empty: every pod whose container has started, oldest first."""
    container: str = ""
    """Empty: the pod's first container."""
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    timestamps: bool = False


@dataclass(frozen=True, slots=True)
class LogLines:
    """Consecutive lines of one container's log, without their newlines."""

    pod: str
    container: str
    lines: tuple[str, ...]


class Progress(enum.Enum):
    """How far a pod's container has come, as far as its log is concerned."""

    UNSCHEDULED = "unscheduled"  # no node yet: no log, may come
    STARTING = "starting"  # on a node, not started: no log yet
    RUNNING = "running"  # a log that grows
    ENDED = "ended"  # a complete log (terminated, or waiting to restart after a run)
    NEVER_RAN = "never-ran"  # the pod ended or went before the container started: no log ever

    @property
    def has_log(self) -> bool:
        return self in (Progress.RUNNING, Progress.ENDED)


@dataclass(frozen=True, slots=True)
class ContainerView:
    progress: Progress
    reason: str = ""
    message: str = ""

    @property
    def has_log(self) -> bool:
        return self.progress.has_log

    def describe(self, pod: str, container: str) -> str:
        """Why the pod has no log (yet), for the caller."""
        why = f"{self.reason}: {self.message}" if self.message else self.reason
        if self.progress is Progress.UNSCHEDULED:
            return f"pod {pod} is not scheduled to a node yet" + (f" ({why})" if why else "")
        if self.progress is Progress.NEVER_RAN:
            return f"pod {pod} ended ({why or 'no reason given'}) before container {container!r} started"
        return f"container {container!r} of pod {pod} is waiting to start ({why or 'ContainerCreating'})"


def view_container(pod: Mapping[str, Any], container: str) -> ContainerView:
    """Where the container stands, from the pod's status (a pure function)."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase", "")
    finished = phase in ("Succeeded", "Failed")
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    for cs in statuses:
        if cs.get("name") != container:
            continue
        state = cs.get("state") or {}
        if "running" in state:
            return ContainerView(Progress.RUNNING)
        if "terminated" in state:
            terminated = state["terminated"] or {}
            return ContainerView(Progress.ENDED, terminated.get("reason", ""), terminated.get("message", ""))
        waiting = state.get("waiting") or {}
        if (cs.get("lastState") or {}).get("terminated"):
            # Waiting to restart (CrashLoopBackOff): the node serves the last run's log.
            return ContainerView(Progress.ENDED, waiting.get("reason", ""), waiting.get("message", ""))
        if finished:
            return ContainerView(Progress.NEVER_RAN, status.get("reason") or phase, status.get("message", ""))
        return ContainerView(Progress.STARTING, waiting.get("reason", ""), waiting.get("message", ""))
    if finished:
        return ContainerView(Progress.NEVER_RAN, status.get("reason") or phase, status.get("message", ""))
    if not spec.get("nodeName"):
        conditions: list[Obj] = status.get("conditions") or []
        scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), {})
        return ContainerView(Progress.UNSCHEDULED, scheduled.get("reason", ""), scheduled.get("message", ""))
    return ContainerView(Progress.STARTING)


def oldest_first(pods: Sequence[Obj]) -> list[Obj]:
    """Pods in the order they were created (retries after the attempts they replace)."""
    return sorted(
        pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"].get("name", ""))
    )


def container_names(pod: Mapping[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    return [c["name"] for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])]


def pick_container(pod: Mapping[str, Any], wanted: str) -> str:
    """The container asked for, or the pod's first one."""
    names = container_names(pod)
    if not wanted:
        if not names:
            raise FailedPreconditionError(f"pod {pod['metadata']['name']} has no containers")
        return names[0]
    if wanted not in names:
        raise InvalidArgumentError(
            "container",
            f"pod {pod['metadata']['name']} has no container {shown(wanted)}; its containers: "
            + ", ".join(names),
        )
    return wanted


class LineSplitter:
    """Bytes in, complete lines out (invalid UTF-8 replaced, overlong lines cut into pieces)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        while len(self._buffer) >= MAX_LINE_BYTES:
            complete.append(self._buffer[:MAX_LINE_BYTES])
            self._buffer = self._buffer[MAX_LINE_BYTES:]
        return [_text(line) for piece in complete for line in _pieces(piece)]

    def flush(self) -> list[str]:
        """The last line, when the log did not end with a newline."""
        rest, self._buffer = self._buffer, b""
        return [_text(rest)] if rest else []


def _pieces(line: bytes) -> list[bytes]:
    return [line[i : i + MAX_LINE_BYTES] for i in range(0, len(line), MAX_LINE_BYTES)] or [b""]


def _text(line: bytes) -> str:
    return line.removesuffix(b"\r").decode("utf-8", errors="replace")


def chunked(pod: str, container: str, lines: Sequence[str]) -> Iterator[LogLines]:
    """Lines grouped into messages of at most MAX_CHUNK_LINES lines and about MAX_CHUNK_BYTES."""
    batch: list[str] = []
    size = 0
    for line in lines:
        if batch and (len(batch) >= MAX_CHUNK_LINES or size + len(line) > MAX_CHUNK_BYTES):
            yield LogLines(pod, container, tuple(batch))
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 4
    if batch:
        yield LogLines(pod, container, tuple(batch))


def check_query(query: LogQuery) -> None:
    if query.pod and not _POD_NAME.match(query.pod):
        raise InvalidArgumentError("pod", f"{shown(query.pod)} is not a pod name")
    if query.container:
        check_dns_label("container", query.container, what="container name")
    if query.tail_lines is not None and not 0 <= query.tail_lines <= MAX_TAIL_LINES:
        raise InvalidArgumentError(
            "tail_lines", f"must be between 0 and {MAX_TAIL_LINES} (got {query.tail_lines})"
        )
    if query.since_seconds is not None and query.since_seconds < 1:
        raise InvalidArgumentError("since_seconds", f"must be at least 1 (got {query.since_seconds})")


class JobLogs:
    """Streams a job's logs. Holds nothing between calls."""

    def __init__(
        self,
        gateway: KubeGateway,
        service: JobService,
        *,
        poll_interval: float = 1.0,
        drain_seconds: float = 1.0,
    ) -> None:
        self.gateway = gateway
        self.service = service
        self.poll_interval = poll_interval
        """How often a follow looks at the pod's status (and, for a whole job, for new pods)."""
        self.drain_seconds = drain_seconds
        """After a followed container is seen terminated: how long its last lines may take."""

    def stream(
        self, query: LogQuery, *, alive: Callable[[], bool], deadline: float | None = None
    ) -> Iterator[LogLines]:
        """The logs, pod after pod. Errors come before the first line where they can: NOT_FOUND
        for an unknown job or pod, FAILED_PRECONDITION when nothing has a log yet (not following)."""
        check_query(query)
        # NOT_FOUND for a job this service does not manage, and the namespace checks.
        status = self.service.get_status(query.namespace, query.job_id, deadline=deadline)
        namespace = status.namespace
        pods = self._pods(namespace, query.job_id, deadline=deadline)
        if query.pod:
            pod = next((p for p in pods if p["metadata"]["name"] == query.pod), None)
            if pod is None:
                known = ", ".join(p["metadata"]["name"] for p in pods) or "none"
                raise NotFoundError(
                    f"pod {query.pod!r} is not a pod of job {query.job_id!r} (its pods: {known})"
                )
            pods = [pod]
        if query.follow:
            yield from self._follow_job(query, namespace, pods, alive=alive, deadline=deadline)
            return
        if not pods:
            raise FailedPreconditionError(_no_pods(query.job_id, status.state.value, status.reason))
        read_any, why_not = False, ""
        for pod in pods:
            container = pick_container(pod, query.container)
            view = view_container(pod, container)
            if not view.has_log:
                why_not = view.describe(pod["metadata"]["name"], container)
                continue
            yield from self._read(
                query, namespace, pod["metadata"]["name"], container, alive=alive, deadline=deadline
            )
            read_any = True
        if not read_any:
            # Only when no pod has a log: a retry still starting after a failed attempt is left out.
            raise FailedPreconditionError(f"job {query.job_id!r} has no logs yet: {why_not}")

    # -- one pod -------------------------------------------------------------------------------

    def _read(
        self,
        query: LogQuery,
        namespace: str,
        pod: str,
        container: str,
        *,
        alive: Callable[[], bool],
        deadline: float | None,
        follow: bool = False,
    ) -> Iterator[LogLines]:
        """One container's log; followed until the container has terminated."""
        if deadline is not None and time.monotonic() >= deadline:
            return  # the caller has given up (and hears DEADLINE_EXCEEDED from gRPC itself)
        stream = self.gateway.open_pod_log(
            namespace,
            pod,
            container=container,
            follow=follow,
            tail_lines=query.tail_lines,
            since_seconds=query.since_seconds,
            timestamps=query.timestamps,
            deadline=deadline,
        )
        splitter = LineSplitter()
        ended_at: float | None = None
        next_look = time.monotonic() + self.poll_interval
        try:
            while alive():
                data = stream.read(0.2)
                if data is None:
                    break
                if data:
                    yield from chunked(pod, container, splitter.feed(data))
                if not follow:
                    continue
                now = time.monotonic()
                if ended_at is None and now >= next_look:
                    next_look = now + self.poll_interval
                    if not self._still_running(namespace, query.job_id, pod, container):
                        ended_at = now
                elif ended_at is not None and not data and now - ended_at >= self.drain_seconds:
                    break  # terminated, and quiet since: nothing more will come
        finally:
            stream.close()
        yield from chunked(pod, container, splitter.flush())

    def _still_running(self, namespace: str, job_id: str, pod: str, container: str) -> bool:
        current = next((p for p in self._pods(namespace, job_id) if p["metadata"]["name"] == pod), None)
        return current is not None and view_container(current, container).progress is Progress.RUNNING

    # -- follow --------------------------------------------------------------------------------

    def _follow_job(
        self,
        query: LogQuery,
        namespace: str,
        pods: list[Obj],
        *,
        alive: Callable[[], bool],
        deadline: float | None,
    ) -> Iterator[LogLines]:
        """Each pod in turn, waiting for it to start and following it to its end; for a whole
        job, then the pods that came later, until the job has ended."""
        done: set[str] = set()
        while alive():
            pending = [p for p in pods if p["metadata"]["name"] not in done]
            for pod in pending:
                name = pod["metadata"]["name"]
                container = pick_container(pod, query.container)
                view = self._wait_for_log(namespace, query.job_id, name, container, alive=alive)
                if not alive():
                    return
                done.add(name)
                if view is None or not view.has_log:
                    if query.pod and view is not None:
                        raise FailedPreconditionError(view.describe(name, container))
                    continue  # gone, or ended without running: nothing to read
                following = view.progress is Progress.RUNNING
                yield from self._read(
                    query, namespace, name, container, alive=alive, deadline=deadline, follow=following
                )
            if query.pod:
                return
            if not pending:
                try:
                    finished = self.service.get_status(namespace, query.job_id).state.terminal
                except NotFoundError:
                    return  # deleted meanwhile: nothing more will come
                if finished:
                    latest = self._pods(namespace, query.job_id)
                    if all(p["metadata"]["name"] in done for p in latest):
                        return
                else:
                    time.sleep(self.poll_interval)
            pods = self._pods(namespace, query.job_id)

    def _wait_for_log(
        self, namespace: str, job_id: str, pod: str, container: str, *, alive: Callable[[], bool]
    ) -> ContainerView | None:
        """The container's view once it has a log, or can never have one; None when the pod is
        gone. A container stuck for a reason that needs someone to act fails at once."""
        while True:
            current = next((p for p in self._pods(namespace, job_id) if p["metadata"]["name"] == pod), None)
            if current is None:
                return None
            view = view_container(current, container)
            if view.has_log or view.progress is Progress.NEVER_RAN:
                return view
            if view.progress is Progress.STARTING and view.reason not in STARTING_REASONS:
                raise FailedPreconditionError(f"job {job_id!r}: {view.describe(pod, container)}")
            if not alive():
                return view
            time.sleep(self.poll_interval)

    def _pods(self, namespace: str, job_id: str, *, deadline: float | None = None) -> list[Obj]:
        selector = f"{MANAGED_SELECTOR},{JOB_NAME_LABEL}={job_id}"
        return oldest_first(self.gateway.list_pods(namespace, label_selector=selector, deadline=deadline))


def _no_pods(job_id: str, state: str, reason: str) -> str:
    where = f"{state}, {reason}" if reason else state
    return (
        f"job {job_id!r} has no pods ({where}): it is suspended or has not started a pod yet, "
        "or its pods were deleted"
    )
