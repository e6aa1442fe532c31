"""The built image runs as it will in a cluster: read-only root filesystem, UID 10001, with
the limits these machines allow (root here may not raise rlimits, so podman gets them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.realnode.support import STATE

RUN = [
    "podman",
    "run",
    "--rm",
    "--read-only",
    "--user",
    "10001",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]


def podman_run(image: str, *args: str, entrypoint: str | None = None, timeout: float = 60) -> str:
    argv = [*RUN, "--network", "none"]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    proc = subprocess.run([*argv, image, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_version_full_reports_the_build(image: str) -> None:
    out = podman_run(image, "version-full")
    assert out.startswith("jobscheduler "), out
    assert "python:     3.11" in out, out


@pytest.mark.parametrize(
    "entry_point", ["jobscheduler-timer", "jobscheduler-webhook", "jobscheduler-healthcheck"]
)
def test_workload_entry_points_start(image: str, entry_point: str) -> None:
    out = podman_run(image, "--help", entrypoint=entry_point)
    assert out.startswith("usage:"), out


def test_root_filesystem_is_read_only_and_user_is_10001(image: str) -> None:
    snippet = (
        "import os\n"
        "try:\n    open('/probe', 'w')\nexcept OSError as e:\n    print('write refused', e.errno)\n"
        "print('uid', os.getuid())\n"
    )
    out = podman_run(image, "-c", snippet, entrypoint="python")
    assert "write refused 30" in out, out  # EROFS
    assert "uid 10001" in out, out


def test_the_kubernetes_client_loads_without_its_asyncio_twin(image: str) -> None:
    """The Dockerfile drops kubernetes/aio (68 MB); what the service imports still loads."""
    snippet = (
        "import importlib.util, kubernetes\n"
        "from jobscheduler.kube.connection import load_api_client\n"
        "from jobscheduler.kube.gateway import KubeGateway\n"
        "print('client', kubernetes.__version__)\n"
        "print('aio', importlib.util.find_spec('kubernetes.aio'))\n"
    )
    out = podman_run(image, "-c", snippet, entrypoint="python")
    assert "client 37." in out, out
    assert "aio None" in out, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serving(image: str, cluster: object, tmp_path: Path) -> Iterator[int]:  # noqa: ARG001  (serve talks to it)
    """`serve` in the image against the dev cluster (host network, loopback only)."""
    port = free_port()
    name = f"jobscheduler-serve-{port}"
    # The cluster's kubeconfig is root's, mode 0600; the service runs as UID 10001.
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copy(STATE / "kubeconfig", kubeconfig)
    kubeconfig.chmod(0o644)
    tmp_path.chmod(0o755)
    subprocess.run(
        [
            *(a for a in RUN if a != "--rm"),
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--volume",
            f"{kubeconfig}:/kube/config:ro",
            "--env",
            "IN_CLUSTER=false",
            "--env",
            "KUBECONFIG=/kube/config",
            "--env",
            "GRPC_HOST=127.0.0.1",
            "--env",
            f"GRPC_PORT={port}",
            "--env",
            "METRICS_PORT=0",
            "--env",
            "SCHEDULE_LOOP=false",
            image,
            "serve",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield port
    finally:
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=30)
        subprocess.run(["podman", "rm", "--force", "--time", "5", name], capture_output=True, timeout=60)
        print(logs.stdout[-3000:], logs.stderr[-3000:])


def test_serve_answers_grpc_health(serving: int) -> None:
    deadline = time.monotonic() + 60
    status = None
    with grpc.insecure_channel(f"127.0.0.1:{serving}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                ).status
            except grpc.RpcError as e:
                status = e.code()
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.5)
        assert status == health_pb2.HealthCheckResponse.SERVING, f"health: {status}"
        live = stub.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="liveness"), timeout=5
        )
        assert live.status == health_pb2.HealthCheckResponse.SERVING
