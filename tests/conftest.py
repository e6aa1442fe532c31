"""Fixtures shared by every test: the Kubernetes cluster and a fresh namespace per test.

The cluster is the project's own dev cluster (hack/devcluster.py), started here when it is
not already running and stopped again at the end of the session if this session started it.
With JOBSCHEDULER_TEST_KUBECONFIG set, that cluster is used instead and nothing is started,
so the same suite runs against kind, k3s or a cloud cluster.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parent.parent
DEVCLUSTER = ROOT / "hack" / "devcluster.py"


@dataclass(frozen=True, slots=True)
class Cluster:
    kubeconfig: Path
    api: client.ApiClient
    local: bool  # the project's own dev cluster, whose components tests may restart

    def devcluster(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Runs hack/devcluster.py with args; raises with its output when it fails."""
        proc = subprocess.run(
            [sys.executable, str(DEVCLUSTER), *args],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, **(env or {})},
        )
        if proc.returncode != 0:
            raise AssertionError(f"devcluster {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc


def _devcluster_state() -> Path:
    return Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("JOBSCHEDULER_TEST_KUBECONFIG")
    started_here = False
    if external:
        kubeconfig, local = Path(external), False
    else:
        state = _devcluster_state()
        running = (
            subprocess.run(
                [sys.executable, str(DEVCLUSTER), "running"], capture_output=True, text=True
            ).returncode
            == 0
        )
        if not running:
            proc = subprocess.run(
                [sys.executable, str(DEVCLUSTER), "up"], text=True, stdout=sys.stderr, stderr=sys.stderr
            )
            if proc.returncode != 0:
                pytest.exit("the dev cluster did not come up (see its log tail above)", returncode=3)
            started_here = True
        kubeconfig, local = state / "kubeconfig", True
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(kubeconfig=kubeconfig, api=api, local=local)
    finally:
        api.close()
        if started_here and not os.environ.get("JOBSCHEDULER_KEEP_CLUSTER"):
            subprocess.run([sys.executable, str(DEVCLUSTER), "down"], check=False)


@pytest.fixture
def local_cluster(cluster: Cluster) -> Cluster:
    """The cluster, when it is the project's own one (tests that restart its components)."""
    if not cluster.local:
        pytest.skip(
            "restarts control-plane components: needs the project's dev cluster, "
            "not JOBSCHEDULER_TEST_KUBECONFIG"
        )
    return cluster


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing PodSecurity `restricted`, deleted after the test."""
    core = client.CoreV1Api(cluster.api)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "jobscheduler.io/test": "true",
                },
            )
        )
    )
    # Pods are refused until the ServiceAccount controller has made the default account.
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
