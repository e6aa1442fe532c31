#!/usr/bin/env python3
"""What Kueue costs the dev cluster: `up` with and without it, kueue-up and kueue-down, the
manager's resident memory idle and after admitting 100 Jobs, and a single Job's admission
latency (created suspended → spec.suspend false). Runs a throwaway cluster in a state dir of
its own (JOBSCHEDULER_DEVCLUSTER_DIR, default /tmp/jobscheduler-measure-kueue), never
.devcluster, and takes it down at the end. Standard library only.

    JOBSCHEDULER_DEVCLUSTER_DIR=/tmp/kq-measure python3 hack/measure-kueue.py [--jobs 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JOBSCHEDULER_DEVCLUSTER_DIR", "/tmp/jobscheduler-measure-kueue")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import devcluster  # beside this script; reads JOBSCHEDULER_DEVCLUSTER_DIR at import

SCRIPT = Path(__file__).resolve().parent / "devcluster.py"
EXAMPLES = devcluster.ROOT / "k8s" / "examples" / "queueing"
NAMESPACE = "team-a"


def timed(*args: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.monotonic() - started


def rss_mb() -> float:
    pid = devcluster.running_pid(devcluster.KUEUE)
    if pid is None:
        raise SystemExit("Kueue's manager is not running")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS")


def job(name: str, cpu: str) -> dict[str, object]:
    container = {
        "name": "main",
        "image": "registry.example/sleeper:1",
        "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": NAMESPACE}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                }
            },
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--latency-samples", type=int, default=10)
    args = parser.parse_args()
    print(f"state dir {devcluster.STATE}")
    timed("down")
    print(f"up:                    {timed('up'):6.1f} s")
    timed("down")
    print(f"up --kueue:            {timed('up', '--kueue'):6.1f} s")
    time.sleep(10)
    print(f"manager RSS, idle:     {rss_mb():6.0f} MB")
    print(f"kueue-down:            {timed('kueue-down'):6.1f} s")
    print(f"kueue-up:              {timed('kueue-up'):6.1f} s")
    devcluster.kubectl("apply", "--server-side", "-f", str(EXAMPLES))
    api = devcluster.Api(devcluster.Ports.load_or_pick().apiserver)
    jobs = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"

    latencies = []
    for i in range(args.latency_samples):
        created = time.monotonic()
        api.request("POST", jobs, job(f"latency-{i}", "100m"))
        while api.request("GET", f"{jobs}/latency-{i}")["spec"]["suspend"]:
            time.sleep(0.01)
        latencies.append(time.monotonic() - created)
    print(
        f"admission latency:     {statistics.median(latencies) * 1000:6.0f} ms median "
        f"(min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}, n={len(latencies)})"
    )

    # Small enough that all of them fit the tenant's quota at once (8 CPUs with borrowing).
    started = time.monotonic()
    for i in range(args.jobs):
        api.request("POST", jobs, job(f"many-{i}", "50m"))
    created = time.monotonic() - started

    def admitted() -> int:
        items = api.request("GET", f"{jobs}?labelSelector=kueue.x-k8s.io%2Fqueue-name", timeout=30)["items"]
        return sum(1 for j in items if j["metadata"]["name"].startswith("many-") and not j["spec"]["suspend"])

    while admitted() < args.jobs:
        time.sleep(0.2)
    print(
        f"{args.jobs} Jobs admitted:     {time.monotonic() - started:6.1f} s after the first was created "
        f"(creating them took {created:.1f} s)"
    )
    time.sleep(5)
    print(f"manager RSS, after {args.jobs} Jobs: {rss_mb():6.0f} MB")
    print(f"down:                  {timed('down'):6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
