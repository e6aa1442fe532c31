"""Fixtures of the real-node suite: the built image, the dev cluster's real node (added to the
session's cluster when it runs without one, and removed again afterwards), one fresh
namespace per test.

Run alone: `hack/dev.sh test-realnode`, or with a venv and the tools built:
`.venv/bin/python -m pytest -m realnode tests/realnode`. JOBSCHEDULER_REAL_NODE=0 skips them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.realnode.support import ROOT, STATE

DEVCLUSTER = ROOT / "hack" / "devcluster.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realnode: needs the dev cluster's real node (root, Debian packages, hack/tools.sh node)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    off = os.environ.get("JOBSCHEDULER_REAL_NODE") == "0"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.realnode)
            if off:
                item.add_marker(pytest.mark.skip(reason="JOBSCHEDULER_REAL_NODE=0: no real node, no image"))


def devcluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(DEVCLUSTER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"devcluster {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def image() -> str:
    """The project's image, built (or found up to date) by hack/image.sh."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "image.sh"), "build"], stdout=subprocess.PIPE, text=True, timeout=900
    )
    assert proc.returncode == 0, "hack/image.sh build failed (its log is above)"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def real_node(cluster: object) -> Iterator[str]:  # noqa: ARG001  (the node joins that cluster)
    """The real node's name, Ready. Started here (and stopped at the end) when the session's
    cluster runs without it."""
    if os.environ.get("JOBSCHEDULER_TEST_KUBECONFIG"):
        pytest.skip("the real node belongs to the project's own dev cluster")
    running = (
        subprocess.run(
            [sys.executable, str(DEVCLUSTER), "running", "--real-node"],
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    )
    if not running:
        devcluster("node-up")
    try:
        yield "jobscheduler-realnode"
    finally:
        if not running and STATE.exists():
            devcluster("node-down")


@pytest.fixture
def namespace(cluster: object, real_node: str) -> Iterator[str]:  # noqa: ARG001  (tests here need the node)
    api = client.CoreV1Api(cluster.api)  # type: ignore[attr-defined]
    name = f"realnode-{secrets.token_hex(3)}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        api.delete_namespace(name, grace_period_seconds=0)
