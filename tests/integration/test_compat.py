"""Start-up against API servers that lack what the service needs, or do not answer: a clear
error naming the missing API (or what to check), exit 1, never a crash later; and the version
the service found in its start-up line (jobscheduler.kube.compat)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes import client

from hack import toolversions
from jobscheduler.kube.connection import load_api_client
from jobscheduler.kube.gateway import KubeGateway
from tests.conftest import Cluster
from tests.integration.conftest import free_port, service_account_kubeconfig, start_serve


def serve_until_exit(kubeconfig: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobscheduler.cli.main", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "IN_CLUSTER": "false",
            "KUBECONFIG": str(kubeconfig),
            "GRPC_PORT": str(free_port()),
            "METRICS_PORT": "0",
            **(env or {}),
        },
    )


def test_the_start_up_line_names_the_api_servers_version(cluster: Cluster, tmp_path: Path) -> None:
    server = start_serve(cluster, tmp_path, port=free_port())
    try:
        serving = next(
            json.loads(line)
            for line in server.output().splitlines()
            if line.startswith("{") and json.loads(line).get("event") == "serving"
        )
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=20)
    if cluster.local:
        assert serving["kubernetes"] == toolversions.selected()["KUBERNETES_VERSION"]
    assert serving["kubernetes"].startswith("v1.")


def test_an_api_server_without_cronjobs_is_refused_at_start_naming_them(
    local_cluster: Cluster, tmp_path: Path
) -> None:
    env = {
        "JOBSCHEDULER_DEVCLUSTER_DIR": str(tmp_path / "no-cronjobs"),
        "JOBSCHEDULER_DEVCLUSTER_NODES": "1",
        "JOBSCHEDULER_DEVCLUSTER_APISERVER_ARGS": "--runtime-config=batch/v1/cronjobs=false",
    }
    local_cluster.devcluster("up", env=env)
    try:
        out = serve_until_exit(tmp_path / "no-cronjobs" / "kubeconfig")
    finally:
        local_cluster.devcluster("down", env=env)
    assert out.returncode == 1, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("jobscheduler: the Kubernetes API server (v1.")
    assert "lacks what the service needs: batch/v1 cronjobs." in line
    assert "Upgrade the cluster (tested: Kubernetes v1.34 and newer)" in line
    assert '"event": "serving"' not in out.stdout


def test_an_api_server_that_never_answers_ends_start_up_saying_what_to_check(
    cluster: Cluster, tmp_path: Path
) -> None:
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))

    out = serve_until_exit(path, {"KUBE_STARTUP_WAIT_SECONDS": "8", "LOG_FORMAT": "json"})

    assert out.returncode == 1
    assert "the Kubernetes API did not answer for 8 s" in out.stderr
    assert "check KUBECONFIG or IN_CLUSTER and that the API server is up" in out.stderr
    waits = [line for line in out.stdout.splitlines() if "waiting for the Kubernetes API" in line]
    assert waits, out.stdout  # progress while it waited
    assert '"event": "serving"' not in out.stdout


def test_a_bearer_token_from_the_kubeconfig_authenticates_every_call(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The client keeps the token where its major version likes (35: api_key["authorization"],
    37: api_key["BearerToken"]); the service's own HTTP path must send it either way, or every
    call in a pod (a ServiceAccount token) would be anonymous."""
    client.CoreV1Api(cluster.api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="caller"))
    )
    kubeconfig = service_account_kubeconfig(cluster, namespace, "caller", tmp_path / "kubeconfig")
    gateway = KubeGateway(load_api_client(in_cluster=False, kubeconfig=str(kubeconfig)))

    review = gateway.http.call(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        timeout=10,
    )

    user = json.loads(review.data)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:caller"
