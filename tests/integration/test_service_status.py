"""GetServiceStatus and the jobscheduler_service_* metrics on the real cluster: two replicas
agree on who leads, each reports its watch streams and the Kubernetes API; when the leader dies
the other reports the change and takes over. (The API server's outages are in test_faults: the
status answers through them and says Unreachable.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.models import MANAGED_SELECTOR
from jobscheduler.domain.servicehealth import WATCH_LAG_THRESHOLD_SECONDS
from jobscheduler.kube.connection import load_api_client
from jobscheduler.kube.gateway import OPENED, KubeGateway
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import ServeProcess, free_port, service_account_kubeconfig, start_serve
from tests.integration.test_readme import _run_example, readme_grpcurl_lines


@pytest.fixture
def replicas(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[list[tuple[ServeProcess, int]]]:
    started: list[tuple[ServeProcess, int]] = []
    try:
        for _ in range(2):
            metrics_port = free_port()
            env = {
                "K8S_NAMESPACE": namespace,
                "WATCH_NAMESPACES": namespace,
                "SCHEDULE_TICK_SECONDS": "0.2",
                "LEADER_LEASE_SECONDS": "3",
                "HEALTH_INTERVAL_SECONDS": "0.5",
                "METRICS_PORT": str(metrics_port),
            }
            started.append((start_serve(cluster, tmp_path, port=free_port(), env=env), metrics_port))
        yield started
    finally:
        for server, _ in started:
            if server.proc.poll() is None:
                server.proc.terminate()
                server.proc.wait(timeout=30)


def status_of(server: ServeProcess) -> pb.ServiceStatus:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return pb_grpc.JobSchedulerStub(channel).GetServiceStatus(pb.GetServiceStatusRequest(), timeout=5)


def health_details(server: ServeProcess) -> subprocess.CompletedProcess[str]:
    """`jobscheduler health --details` against the server, as a person runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jobscheduler.cli.main",
            "--server",
            f"127.0.0.1:{server.port}",
            "health",
            "--details",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def conditions(status: pb.ServiceStatus) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.ok, c.reason) for c in status.conditions}


def settled(server: ServeProcess) -> pb.ServiceStatus | None:
    status = status_of(server)
    return status if status.leader.identity and not status.degraded else None


def test_two_replicas_agree_on_the_leader_and_report_their_streams(
    cluster: Cluster, namespace: str, replicas: list[tuple[ServeProcess, int]]
) -> None:
    (a, _), (b, _) = replicas
    first = wait_until("replica a settled", lambda: settled(a), timeout=30)
    second = wait_until("replica b settled", lambda: settled(b), timeout=30)
    assert first.leader.identity == second.leader.identity
    assert first.replica != second.replica
    assert [s.leader.this_replica for s in (first, second)].count(True) == 1
    leader = first if first.leader.this_replica else second
    assert leader.leader.identity == leader.replica
    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease("jobscheduler-schedules", namespace)
    assert lease.spec.holder_identity == leader.replica
    for status in (first, second):
        assert status.serving
        assert conditions(status) == {
            "KubernetesAPI": (True, "Reachable"),
            "APIErrors": (True, "Normal"),
            "WatchCache": (True, "Current"),
            "Leader": (True, "Elected"),
            "Notifications": (True, "Delivering"),
        }
        assert {(w.resource, w.namespace, w.synced, w.healthy) for w in status.watches} == {
            ("jobs", namespace, True, True),
            ("pods", namespace, True, True),
        }
        assert all(0 <= w.lag_seconds < WATCH_LAG_THRESHOLD_SECONDS for w in status.watches)
        assert status.kubernetes.reachable
        assert status.kubernetes.version == client.VersionApi(cluster.api).get_code().git_version
        assert status.kubernetes.requests > 0  # the lists, watches and Lease renewals it made
        assert status.kubernetes.window_seconds == 60
        assert status.notifications.pending == 0
        assert not status.notifications.failing_sinks


def test_the_survivor_reports_the_dead_leader_then_leads(replicas: list[tuple[ServeProcess, int]]) -> None:
    (a, _), (b, _) = replicas
    first = wait_until("replica a settled", lambda: settled(a), timeout=30)
    wait_until("replica b settled", lambda: settled(b), timeout=30)
    leader, survivor = (a, b) if first.leader.this_replica else (b, a)
    dead = status_of(leader).replica
    before = status_of(survivor)
    assert (before.leader.identity, before.leader.this_replica) == (dead, False)
    leader.proc.send_signal(signal.SIGKILL)  # no release: the Lease must lapse first
    leader.proc.wait(timeout=10)
    after = wait_until(
        "the survivor leads", lambda: (s := status_of(survivor)).leader.this_replica and s, timeout=20
    )
    assert after.leader.identity == after.replica != dead
    [elected] = [c for c in after.conditions if c.type == "Leader"]
    assert (elected.ok, elected.message) == (True, "this replica leads")


def test_the_metrics_show_the_conditions(replicas: list[tuple[ServeProcess, int]], namespace: str) -> None:
    (server, metrics_port), _ = replicas
    wait_until("settled", lambda: settled(server), timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["jobscheduler_service_degraded"]) == 0
    for condition, reason in [
        ("KubernetesAPI", "Reachable"),
        ("WatchCache", "Current"),
        ("Leader", "Elected"),
    ]:
        assert (
            float(samples[f'jobscheduler_service_condition{{condition="{condition}",reason="{reason}"}}'])
            == 1
        )
    lag = float(samples[f'jobscheduler_watch_lag_seconds{{namespace="{namespace}",resource="jobs"}}'])
    assert 0 <= lag < WATCH_LAG_THRESHOLD_SECONDS
    assert float(samples["jobscheduler_kube_error_ratio"]) == 0


def test_an_idle_watch_says_it_was_opened_so_its_lag_restarts_with_each_reconnection(
    cluster: Cluster, namespace: str
) -> None:
    api = load_api_client(in_cluster=False, kubeconfig=str(cluster.kubeconfig))
    try:
        gateway = KubeGateway(api)
        version = gateway.list_all("jobs", namespace, label_selector=MANAGED_SELECTOR)[1]
        started = time.monotonic()
        events = list(
            gateway.watch(
                "jobs",
                namespace,
                label_selector=MANAGED_SELECTOR,
                resource_version=version,
                timeout_seconds=1,
            )
        )
    finally:
        api.close()
    assert time.monotonic() - started < 10
    assert events[0] == {"type": OPENED}
    assert all(e["type"] == "BOOKMARK" for e in events[1:])  # nothing happened in the namespace


def test_the_guides_grpcurl_example_and_the_cli_table(replicas: list[tuple[ServeProcess, int]]) -> None:
    (server, _), _ = replicas
    wait_until("settled", lambda: settled(server), timeout=30)
    [(method, [reply])] = [
        _run_example(line, address=f"localhost:{server.port}", job_id="", pod="")
        for line in readme_grpcurl_lines("Service status")
    ]
    assert method == "GetServiceStatus"
    assert reply["serving"] is True
    assert "degraded" not in reply  # false: proto3 JSON leaves it out
    assert [c["type"] for c in reply["conditions"]] == [
        "KubernetesAPI",
        "APIErrors",
        "WatchCache",
        "Leader",
        "Notifications",
    ]
    shown = health_details(server)
    assert shown.returncode == 0, shown.stderr
    head, header, *rows = shown.stdout.splitlines()
    assert head.startswith("SERVING, healthy; replica ")
    assert header.split() == ["CONDITION", "OK", "REASON", "SINCE", "MESSAGE"]
    assert [r.split()[:3] for r in rows] == [
        ["KubernetesAPI", "yes", "Reachable"],
        ["APIErrors", "yes", "Normal"],
        ["WatchCache", "yes", "Current"],
        ["Leader", "yes", "Elected"],
        ["Notifications", "yes", "Delivering"],
    ]


def test_a_replica_without_rights_serves_degraded_and_says_why(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # A ServiceAccount with no Role: /readyz answers (it is public), but the Jobs, Pods and the
    # Lease are forbidden, so the cache never lists and nobody can lead.
    client.CoreV1Api(cluster.api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    kubeconfig = service_account_kubeconfig(cluster, namespace, "nobody", tmp_path / "nobody.kubeconfig")
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={
            "KUBECONFIG": str(kubeconfig),
            "K8S_NAMESPACE": namespace,
            "WATCH_NAMESPACES": namespace,
            "SCHEDULE_TICK_SECONDS": "0.2",
            "HEALTH_INTERVAL_SECONDS": "0.5",
        },
    )
    try:
        status = wait_until(
            "degraded", lambda: (s := status_of(server)).degraded and len(s.conditions) == 5 and s, timeout=30
        )
        assert status.serving
        assert conditions(status) == {
            "KubernetesAPI": (True, "Reachable"),
            "APIErrors": (True, "Normal"),  # 403s are the API answering
            "WatchCache": (False, "NotSynced"),
            "Leader": (False, "NoLeader"),
            "Notifications": (True, "Delivering"),
        }
        shown = health_details(server)
        assert shown.returncode == 8, shown.stderr
        assert "degraded: WatchCache (NotSynced), Leader (NoLeader)" in shown.stderr
        assert "service condition changed" in server.output()
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
