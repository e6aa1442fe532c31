"""Real pods on the dev cluster's real node: registration, exit codes, logs through the
kubelet, and the API server reached through the `kubernetes` Service with in-cluster config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hack import toolversions
from tests.realnode.support import REAL_NODE_LABEL, ROOT, STATE, node_info, real_node_pod, wait_until

POD_TIMEOUT = 90  # a pod on an idle real node ends in a few seconds; image pulls never happen


def core(cluster: Any) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api)


def finished_pod(api: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    def done() -> client.V1Pod | None:
        pod = api.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    return wait_until(f"pod {name} to finish", done, timeout=POD_TIMEOUT)


def kubectl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    kubectl_bin = toolversions.bin_dir() / "kubectl"
    return subprocess.run(
        [str(kubectl_bin), f"--kubeconfig={STATE / 'kubeconfig'}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_real_node_is_ready_tainted_and_labelled(cluster: Any, real_node: str) -> None:
    node = core(cluster).read_node(real_node)
    key, value = REAL_NODE_LABEL
    assert node.metadata.labels.get(key) == value
    assert any(
        t.key == key and t.value == value and t.effect == "NoSchedule" for t in node.spec.taints or []
    ), node.spec.taints
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert [c.status for c in ready] == ["True"], node.status.conditions
    assert node.status.node_info.kubelet_version == client.VersionApi(cluster.api).get_code().git_version
    assert node.status.node_info.container_runtime_version.startswith("containerd://2.")


@pytest.mark.parametrize(("exit_code", "phase"), [(0, "Succeeded"), (3, "Failed")])
def test_container_exit_code_decides_the_pod_phase(
    cluster: Any, namespace: str, real_node: str, exit_code: int, phase: str
) -> None:
    api = core(cluster)
    image = str(node_info()["image"])
    pod = real_node_pod(
        f"exit-{exit_code}", image=image, command=["python", "-c", f"import sys; sys.exit({exit_code})"]
    )
    api.create_namespaced_pod(namespace, pod)
    done = finished_pod(api, namespace, pod.metadata.name)
    assert done.spec.node_name == real_node
    assert done.status.phase == phase
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == exit_code
    assert terminated.reason == ("Completed" if exit_code == 0 else "Error")


def test_kubectl_logs_go_through_the_kubelet(cluster: Any, namespace: str) -> None:
    api = core(cluster)
    image = str(node_info()["image"])
    pod = real_node_pod("logs", image=image, command=["python", "-c", "print('hello from the real node')"])
    api.create_namespaced_pod(namespace, pod)
    assert finished_pod(api, namespace, "logs").status.phase == "Succeeded"
    proc = kubectl("logs", "-n", namespace, "logs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from the real node"


# Runs in the pod: the API server through the `kubernetes` Service with the pod's own
# ServiceAccount token (in-cluster config), then the kubelet's API without credentials.
IN_CLUSTER = r"""
import json, os, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request(f"https://{host}:{port}/version")
req.add_header("Authorization", "Bearer " + open(f"{sa}/token").read())
print("version", json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"])
print("service", host, port)
anon = ssl.create_default_context()
anon.check_hostname, anon.verify_mode = False, ssl.CERT_NONE
try:
    urllib.request.urlopen(f"https://{os.environ['NODE_IP']}:10250/pods", context=anon, timeout=10)
    print("kubelet anonymous allowed")
except urllib.error.HTTPError as e:
    print("kubelet anonymous", e.code)
"""


def test_pod_reaches_the_api_server_through_the_kubernetes_service(cluster: Any, namespace: str) -> None:
    api = core(cluster)
    wait_until(
        "the namespace's default ServiceAccount",
        lambda: api.list_namespaced_service_account(namespace).items,
        timeout=30,
    )
    pod = real_node_pod(
        "in-cluster",
        image=str(node_info()["image"]),
        command=["python", "-c", IN_CLUSTER],
        service_account_token=True,
    )
    pod.spec.containers[0].env = [
        client.V1EnvVar(
            name="NODE_IP",
            value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="status.hostIP")
            ),
        )
    ]
    api.create_namespaced_pod(namespace, pod)
    done = finished_pod(api, namespace, "in-cluster")
    logs = api.read_namespaced_pod_log("in-cluster", namespace)
    assert done.status.phase == "Succeeded", logs
    version = client.VersionApi(cluster.api).get_code().git_version
    assert f"version {version}" in logs
    assert "service 10.96.0.1 443" in logs
    assert "kubelet anonymous 401" in logs


def test_a_second_cluster_cannot_start_a_second_real_node(real_node: str, tmp_path: Path) -> None:  # noqa: ARG001
    other = tmp_path / "other-cluster"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "devcluster.py"), "up", "--real-node"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JOBSCHEDULER_DEVCLUSTER_DIR": str(other)},
    )
    try:
        assert proc.returncode == 1, proc.stderr
        assert "only one per machine" in proc.stderr
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(other) in read_cmdline(p)]
    finally:
        subprocess.run(
            [sys.executable, str(ROOT / "hack" / "devcluster.py"), "down"],
            capture_output=True,
            timeout=120,
            env={**os.environ, "JOBSCHEDULER_DEVCLUSTER_DIR": str(other)},
        )
    assert (STATE / "node" / "pids" / "kubelet.pid").exists(), "the first cluster's node was touched"


def read_cmdline(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_job_outcome_on_the_real_node_is_its_condition(cluster: Any, namespace: str) -> None:
    """A Job whose only pod exits 3 (backoffLimit 0) ends with condition Failed,
    BackoffLimitExceeded, as the Job controller decides it from a real pod."""
    batch = client.BatchV1Api(cluster.api)
    pod = real_node_pod(
        "unused", image=str(node_info()["image"]), command=["python", "-c", "raise SystemExit(3)"]
    )
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="exit-3"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(spec=pod.spec),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def condition() -> client.V1JobCondition | None:
        status = batch.read_namespaced_job("exit-3", namespace).status
        return next(
            (c for c in status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"),
            None,
        )

    done = wait_until("the Job's Complete or Failed condition", condition, timeout=POD_TIMEOUT)
    assert (done.type, done.reason) == ("Failed", "BackoffLimitExceeded")
    pods = core(cluster).list_namespaced_pod(namespace, label_selector="job-name=exit-3").items
    assert [p.status.container_statuses[0].state.terminated.exit_code for p in pods] == [3]
