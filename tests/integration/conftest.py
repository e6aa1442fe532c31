"""Fixtures for the gRPC service: the real server on a free port with a real channel, talking
to the real cluster, and a way to run `jobscheduler serve` as its own process."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.config import Settings
from jobscheduler.domain.registry import Registry
from jobscheduler.kube.connection import BackoffPolicy, load_api_client
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.transport.server import App, build_server
from tests.conftest import Cluster


@dataclass
class Service:
    app: App
    channel: grpc.Channel
    stub: pb_grpc.JobSchedulerStub
    health: health_pb2_grpc.HealthStub
    address: str

    def health_status(self, service: str = "") -> int:
        return int(self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def _start_service(cluster: Cluster, *, watch: tuple[str, ...] | None) -> tuple[App, object]:
    settings = Settings(
        grpc_port=free_port(),
        grpc_host="127.0.0.1",
        in_cluster=False,
        kubeconfig=str(cluster.kubeconfig),
        health_interval_seconds=0.5,
        timer_image="registry.example/jobscheduler:test",
        watch_namespaces=watch,
        # The schedule tests run their own replicas with the loop; these must not lead it.
        schedule_loop=False,
    )
    api = load_api_client(in_cluster=False, kubeconfig=str(cluster.kubeconfig))
    app = build_server(
        settings, KubeGateway(api, backoff=BackoffPolicy(default_timeout=5)), Registry.from_entry_points()
    )
    app.start()
    if app.cache is not None:
        assert app.cache.wait_synced(30), "the watch cache did not sync"
    return app, api


def _serve_session(cluster: Cluster, watch: tuple[str, ...] | None) -> Iterator[Service]:
    app, api = _start_service(cluster, watch=watch)
    address = f"127.0.0.1:{app.port}"
    channel = grpc.insecure_channel(address)
    try:
        yield Service(
            app, channel, pb_grpc.JobSchedulerStub(channel), health_pb2_grpc.HealthStub(channel), address
        )
    finally:
        channel.close()
        app.stop(0).wait()
        api.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def cached_service(cluster: Cluster) -> Iterator[Service]:
    """A server whose reads come from the watch cache (every namespace watched)."""
    yield from _serve_session(cluster, ("",))


@pytest.fixture(scope="session")
def api_service(cluster: Cluster) -> Iterator[Service]:
    """A server without a cache: every read goes to the API server."""
    yield from _serve_session(cluster, None)


@pytest.fixture(params=["cache", "api"])
def service(request: pytest.FixtureRequest) -> Service:
    """Each test using it runs against both kinds of server (requests name their namespaces)."""
    return request.getfixturevalue(f"{request.param.replace('cache', 'cached')}_service")  # type: ignore[no-any-return]


# Ports the README's examples use: test servers on free ports must never take them.
RESERVED_PORTS = frozenset({50054, 8080})


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def start_serve(
    cluster: Cluster, tmp_path: Path, *, port: int, env: dict[str, str] | None = None
) -> ServeProcess:
    """`jobscheduler serve` as a real process, waiting until its port accepts connections."""
    log = tmp_path / f"serve-{port}.log"
    full_env = {
        **os.environ,
        "IN_CLUSTER": "false",
        "KUBECONFIG": str(cluster.kubeconfig),
        "GRPC_PORT": str(port),
        "METRICS_PORT": "0",
        "LOG_LEVEL": "debug",
        **(env or {}),
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobscheduler.cli.main", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return ServeProcess(proc, port, log)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve did not listen on {port} within 20s:\n{log.read_text()}")


def service_account_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a bearer token (an hour's)."""
    token = (
        client.CoreV1Api(cluster.api)
        .create_namespaced_service_account_token(
            account,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        )
        .status.token
    )
    ca = Path(cluster.api.configuration.ssl_ca_cert).read_bytes()
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster.api.configuration.host,
                            "certificate-authority-data": base64.b64encode(ca).decode(),
                        },
                    }
                ],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}
                ],
            }
        )
    )
    return path
