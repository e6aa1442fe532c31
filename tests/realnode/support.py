"""Helpers of the real-node tests: polling with a deadline, the machine's view of what a real
node leaves behind, and pods pinned to the real node."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from kubernetes import client

from tests.helpers import wait_until as wait_until  # the realnode tests import it from here

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster")).resolve()
RUN_DIR = Path("/run/jobscheduler-realnode")
CGROUP_ROOT = "jobscheduler-realnode"
BRIDGE = "jsrn0"
REAL_NODE_LABEL = ("jobscheduler.io/real-node", "true")


def node_info() -> dict[str, object]:
    """What hack/devcluster.py wrote about the real node (name, image, subnet, ...)."""
    info: dict[str, object] = json.loads((STATE / "realnode.json").read_text())
    return info


def real_node_pod(
    name: str, *, image: str, command: list[str], service_account_token: bool = False
) -> client.V1Pod:
    """A bare pod that asks for the real node (selector and toleration) and runs command in
    the project's image as the image's non-root user, read-only root filesystem."""
    key, value = REAL_NODE_LABEL
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            restart_policy="Never",
            node_selector={key: value},
            tolerations=[client.V1Toleration(key=key, operator="Equal", value=value, effect="NoSchedule")],
            automount_service_account_token=service_account_token,
            termination_grace_period_seconds=2,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=10001,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="main",
                    image=image,
                    image_pull_policy="Never",
                    command=command,
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        read_only_root_filesystem=True,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                    ),
                )
            ],
        ),
    )


def leftovers(state: Path = STATE) -> list[str]:
    """Everything of a real node still on this machine, found independently of the scripts
    that made it: processes of the node's binaries or in its cgroups, mounts under its
    directories, its cgroups, bridge, netns files and iptables chains."""
    found = []
    binaries = {"containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy"}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                exe = os.readlink(proc / "exe")
            except OSError:
                continue
            if Path(exe.removesuffix(" (deleted)")).name in binaries and "/jobscheduler/" in exe:
                found.append(f"process {proc.name} {exe}")
    prefixes = (f"{state}/node/", f"{RUN_DIR}/")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(prefixes):
            found.append(f"mount {point}")
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / CGROUP_ROOT).exists():
            found.append(f"cgroup {hierarchy / CGROUP_ROOT}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    for ipt in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            out = subprocess.run([ipt, "-w", "5", "-t", table, "-S"], capture_output=True, text=True).stdout
            found += [
                f"{ipt} {table} {line}"
                for line in out.splitlines()
                if line.startswith("-N ") and line.split()[1].startswith(("KUBE-", "JSRN-"))
            ]
    if RUN_DIR.exists():
        found.append(f"dir {RUN_DIR}")
    shims = Path("/run/containerd/s")  # shim sockets; the machine runs no containerd of its own
    if not Path("/run/containerd/containerd.sock").exists() and shims.exists() and any(shims.iterdir()):
        found.append(f"shim sockets in {shims}")
    return found
