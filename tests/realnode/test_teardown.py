"""Teardown leaves nothing behind, also when every part of the node was SIGKILLed with a
container running; and `node-up` after such a dirty stop works."""

from __future__ import annotations

import os
import signal
from typing import Any

from kubernetes import client

from tests.realnode.conftest import devcluster
from tests.realnode.support import STATE, leftovers, node_info, real_node_pod, wait_until


def sigkill_node() -> list[int]:
    killed = []
    for component in ("kube-proxy", "kubelet", "containerd"):
        pid = int((STATE / "node" / "pids" / f"{component}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    return killed


def running_sleeper(api: client.CoreV1Api, namespace: str, name: str) -> None:
    pod = real_node_pod(
        name, image=str(node_info()["image"]), command=["python", "-c", "import time; time.sleep(600)"]
    )
    api.create_namespaced_pod(namespace, pod)
    wait_until(
        f"pod {name} Running",
        lambda: api.read_namespaced_pod(name, namespace).status.phase == "Running",
        timeout=90,
    )


def node_ready(api: client.CoreV1Api, name: str) -> bool:
    node = api.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def test_sigkill_then_up_then_down_leaves_nothing(cluster: Any, namespace: str, real_node: str) -> None:
    api = client.CoreV1Api(cluster.api)
    running_sleeper(api, namespace, "sleeper-1")
    sigkill_node()  # the shims and the container live on: an orphaned, dirty node

    # up after a dirty stop: leftovers are cleaned first, then the node comes back Ready.
    devcluster("node-up")
    wait_until("the real node Ready again", lambda: node_ready(api, real_node), timeout=60)

    running_sleeper(api, namespace, "sleeper-2")
    sigkill_node()
    devcluster("node-down")
    assert leftovers() == []

    devcluster("node-up")  # the rest of the session keeps its node
    wait_until("the real node Ready again", lambda: node_ready(api, real_node), timeout=60)
