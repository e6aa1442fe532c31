#!/usr/bin/env python3
"""Pod create -> Running latency on the dev cluster's real node and on a kwok node, N pods one
after another (a raw-API figure; ScheduleJob's own is measured once jobs can ask for a node).

    .venv/bin/python hack/measure-pod-start.py [N]     (a cluster started with --real-node)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".devcluster"


def pod(name: str, image: str, real: bool) -> client.V1Pod:
    spec = client.V1PodSpec(
        restart_policy="Never",
        termination_grace_period_seconds=0,
        automount_service_account_token=False,
        containers=[
            client.V1Container(
                name="main",
                image=image,
                image_pull_policy="Never",
                command=["python", "-c", "import time; time.sleep(30)"],
                security_context=client.V1SecurityContext(run_as_user=10001, read_only_root_filesystem=True),
            )
        ],
    )
    if real:
        spec.node_selector = {"jobscheduler.io/real-node": "true"}
        spec.tolerations = [client.V1Toleration(key="jobscheduler.io/real-node", operator="Exists")]
    else:
        spec.node_selector = {"type": "kwok"}
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=spec)


def measure(api: client.CoreV1Api, ns: str, image: str, real: bool, n: int) -> list[float]:
    out = []
    for i in range(n):
        name = f"{'real' if real else 'kwok'}-{i}"
        w = watch.Watch()
        started = time.monotonic()
        api.create_namespaced_pod(ns, pod(name, image, real))
        for event in w.stream(
            api.list_namespaced_pod, ns, field_selector=f"metadata.name={name}", timeout_seconds=60
        ):
            if event["object"].status.phase == "Running":
                out.append(time.monotonic() - started)
                w.stop()
        api.delete_namespaced_pod(name, ns, grace_period_seconds=0)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    image = json.loads((STATE / "realnode.json").read_text())["image"]
    api = client.CoreV1Api(config.new_client_from_config(str(STATE / "kubeconfig")))
    ns = f"pod-start-{int(time.time())}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        for real in (True, False):
            times = sorted(measure(api, ns, image, real, n))
            p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
            print(
                f"{'real node' if real else 'kwok node'}: n={len(times)} p50={statistics.median(times):.2f}s "
                f"p99={p99:.2f}s max={times[-1]:.2f}s"
            )
    finally:
        api.delete_namespace(ns)


if __name__ == "__main__":
    main()
