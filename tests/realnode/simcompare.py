"""Running one job twice through the service, once on the real node and once on a kwok node, and
reducing each JobStatus to what must agree: state, reason, exit code, counts, and the message's
shape once the names and times that differ between two runs are taken out of it.

The service runs in this process (the real gRPC server on a free port, as in
tests/integration/conftest.py) and watches only the one namespace the comparison uses; its leader
loop runs too (lease in that namespace), so pending timeouts end jobs as they would in a
deployment."""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.config import Settings
from jobscheduler.domain.registry import Registry
from jobscheduler.kube.connection import BackoffPolicy, load_api_client
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.transport.server import build_server
from tests.integration.conftest import free_port
from tests.realnode.support import REAL_NODE_LABEL, ROOT, wait_until

S = pb.JobState
TERMINAL = frozenset({S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED})
STAGES = ROOT / "hack" / "kwok" / "stages.yaml"

_KEY, _VALUE = REAL_NODE_LABEL
REAL_PLACEMENT: dict[str, Any] = {
    "node_selector": {_KEY: _VALUE},
    "tolerations": [pb.Toleration(key=_KEY, operator="Equal", value=_VALUE, effect="NoSchedule")],
}
KWOK_PLACEMENT: dict[str, Any] = {"node_selector": {"type": "kwok"}}


@contextmanager
def serve(kubeconfig: Path, namespace: str) -> Iterator[pb_grpc.JobSchedulerStub]:
    """The service, in process, watching `namespace` and leading there (pending timeouts)."""
    settings = Settings(
        grpc_port=free_port(),
        grpc_host="127.0.0.1",
        in_cluster=False,
        kubeconfig=str(kubeconfig),
        namespace=namespace,
        pod_name=f"simcompare-{namespace}",
        health_interval_seconds=0.5,
        watch_namespaces=(namespace,),
        schedule_loop=True,
        schedule_tick_seconds=0.5,
        leader_lease_seconds=5,
    )
    api = load_api_client(in_cluster=False, kubeconfig=str(kubeconfig))
    app = build_server(
        settings, KubeGateway(api, backoff=BackoffPolicy(default_timeout=5)), Registry.from_entry_points()
    )
    app.start()
    channel = None
    try:
        if app.cache is not None:
            assert app.cache.wait_synced(30), "the watch cache did not sync"
        channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
        yield pb_grpc.JobSchedulerStub(channel)
    finally:
        if channel is not None:
            channel.close()
        app.stop(0).wait()
        api.close()


def running_kwok_stages(state: Path) -> Path:
    """The stages file the kwok of the cluster in `state` was started with (its --config)."""
    pid = (state / "pids" / "kwok.pid").read_text().strip()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    for arg in argv:
        if arg.startswith("--config=") and arg.endswith("stages.yaml"):
            return Path(arg.removeprefix("--config="))
    raise AssertionError(f"kwok (pid {pid}) runs without a stages.yaml --config: {argv}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def restart_kwok_hint(state: Path) -> str:
    script = str(ROOT / "hack" / "devcluster.py")
    return shlex.join(["env", f"JOBSCHEDULER_DEVCLUSTER_DIR={state}", "python3", script, "restart", "kwok"])


@dataclass(frozen=True)
class Outcome:
    """One pod outcome: the job (request fields without placement), what the real container
    does to produce it, the sim annotations that make kwok produce it, and when to compare."""

    id: str
    job: Callable[[str], dict[str, Any]]  # the node's image -> ScheduleJobRequest fields
    sim: Mapping[str, str]
    until: Callable[[pb.JobStatus], bool] = lambda s: s.state in TERMINAL
    # Environment-specific detail inside a message (a kubelet's pull error, the scheduler's node
    # counts), replaced by a placeholder before the comparison.
    detail: tuple[tuple[str, str], ...] = ()
    cancel_when_running: bool = False
    image: str = ""  # default: the project's image, as loaded into the real node
    timeout: float = 90
    real_does: str = ""
    kwok_does: str = ""


@dataclass(frozen=True)
class Seen:
    """The parts of a JobStatus that the real node and kwok must agree on."""

    state: str
    reason: str
    exit_code: int | None
    message: str
    attempts: int
    succeeded: int
    failed: int
    active: int
    pods: int
    completed_indexes: str
    failed_indexes: str
    started: bool
    finished: bool


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


def shape(status: pb.JobStatus, *, image: str, detail: tuple[tuple[str, str], ...] = ()) -> str:
    """The message with this run's pod names, job id, namespace, image and times replaced."""
    message = status.message
    for pattern, placeholder in detail:
        message = re.sub(pattern, placeholder, message)
    for pod in sorted(status.pods, key=len, reverse=True):
        message = message.replace(pod, "<pod>")
    message = re.sub(rf"\b{re.escape(status.job_id)}-[a-z0-9]{{5}}\b", "<pod>", message)
    message = message.replace(status.job_id, "<job>").replace(status.namespace, "<ns>")
    message = message.replace(image, "<image>")
    return _TIME.sub("<time>", message)


def seen(status: pb.JobStatus, *, image: str, detail: tuple[tuple[str, str], ...] = ()) -> Seen:
    return Seen(
        state=S.Name(status.state),
        reason=status.reason,
        exit_code=status.exit_code if status.HasField("exit_code") else None,
        message=shape(status, image=image, detail=detail),
        attempts=status.attempts,
        succeeded=status.succeeded,
        failed=status.failed,
        active=status.active,
        pods=len(status.pods),
        completed_indexes=status.completed_indexes,
        failed_indexes=status.failed_indexes,
        started=status.HasField("started_at"),
        finished=status.HasField("finished_at"),
    )


def status_of(stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str) -> pb.JobStatus:
    return stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10).status


def wait_status(
    stub: pb_grpc.JobSchedulerStub,
    namespace: str,
    job_id: str,
    what: str,
    until: Callable[[pb.JobStatus], bool],
    *,
    timeout: float,
) -> pb.JobStatus:
    def probe() -> pb.JobStatus | None:
        status = status_of(stub, namespace, job_id)
        return status if until(status) else None

    return wait_until(f"{job_id}: {what}", probe, timeout=timeout, interval=0.25)


def settled(
    stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str, until: Callable[[pb.JobStatus], bool]
) -> pb.JobStatus:
    """The status once it has stayed the same for a second: a finished Job's counts (pods not yet
    counted, finished_at) land a sync after its condition."""
    previous = status_of(stub, namespace, job_id)
    for _ in range(20):
        time.sleep(1)
        current = status_of(stub, namespace, job_id)
        if current == previous and until(current):
            return current
        previous = current
    raise AssertionError(f"{job_id}: its status kept changing for 20s (last: {previous})")
