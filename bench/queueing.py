"""Admission latency through Kueue: ScheduleJob → admitted (the Job unsuspended by Kueue), beside
the raw Kubernetes API (a suspended Job with Kueue's queue label, created directly), with an empty
cluster queue and with a backlog of jobs queued behind a full one.

    hack/devcluster.py kueue-up        # or: hack/devcluster.py up --kueue
    .venv/bin/python -m bench.queueing [--jobs 100] [--backlog 1000] [--rate 4]

Both sides' jobs go to a ClusterQueue with ample quota; the backlog waits in another one whose
quota is zero, so Kueue's scheduler carries it on every cycle. Admission is observed by a watch
on the namespace's Jobs (the moment spec.suspend turns false). Kueue's RSS is read from its pid
file in the dev cluster's state. Writes bench/results/queueing-<date>-<commit>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from bench.service import ServiceProcess
from hack import kueue
from jobscheduler.api import scheduler_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
KUEUE = ("kueue.x-k8s.io", "v1beta2")
STATE = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster"))


def say(message: str) -> None:
    print(f"[bench.queueing {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Admissions:
    """When each Job of the namespace was first seen unsuspended (a watch of its own)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            for event in w.stream(self.batch.list_namespaced_job, self.namespace, timeout_seconds=5):
                job = event["object"]
                if job.spec.suspend is False and job.metadata.name not in self.at:
                    self.at[job.metadata.name] = time.time()
                if self._stop.is_set():
                    w.stop()

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(n not in self.at for n in names):
            if time.monotonic() > deadline:
                missing = [n for n in names if n not in self.at]
                raise SystemExit(
                    f"{len(missing)} jobs not admitted within {timeout:.0f}s (e.g. {missing[0]})"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"n": len(ordered), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def raw_job(name: str, namespace: str, queue: str, duration: str) -> dict[str, Any]:
    """What the service renders for a timer job, in essence: restricted pod, 100m/64Mi."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kueue.x-k8s.io/queue-name": queue}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"sim.jobscheduler.io/duration": duration}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "timer",
                            "image": "registry.example/jobscheduler:bench",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ],
                },
            },
        },
    }


def make_queue(api: client.ApiClient, namespace: str, name: str, cpu: str, flavor: str) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(
        *KUEUE, "clusterqueues", kueue.cluster_queue(name, flavor=flavor, cpu=cpu, memory="10Ti")
    )
    custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", kueue.local_queue(name, name))


def kueue_rss_mb() -> float | None:
    try:
        pid = int((STATE / "pids" / "kueue.pid").read_text())
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def measure(label: str, count: int, rate: float, submit: Any, admissions: Admissions) -> dict[str, float]:
    """Submits `count` jobs at `rate` per second (a paced arrival, so that each job's latency is
    Kueue admitting it, not a burst waiting on Kueue's own API rate), then waits for them all."""
    started: dict[str, float] = {}
    begin = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, begin + i / rate - time.monotonic()))
        t0 = time.time()
        name = submit(i)
        started[name] = t0
    admissions.wait(list(started), timeout=120 + count)
    result = percentiles([admissions.at[n] - t for n, t in started.items()])
    say(f"{label}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms over {count} jobs")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", default=str(STATE / "kubeconfig"))
    parser.add_argument("--jobs", type=int, default=100, help="jobs measured per side and phase")
    parser.add_argument("--backlog", type=int, default=1000, help="jobs queued behind a full ClusterQueue")
    parser.add_argument(
        "--rate", type=float, default=4.0, help="jobs submitted per second, per side and phase"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    # Stopped by a signal, it still removes what it made (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    api = config.new_client_from_config(config_file=args.kubeconfig)
    if not any(g.name == "kueue.x-k8s.io" for g in client.ApisApi(api).get_api_versions().groups):
        say("the cluster has no Kueue: run `hack/devcluster.py kueue-up` (or `up --kueue`) first")
        return 2
    suffix = secrets.token_hex(3)
    namespace, open_q, full_q = f"bench-queueing-{suffix}", f"bench-open-{suffix}", f"bench-full-{suffix}"
    flavor = f"bench-flavor-{suffix}"
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    serve = ServiceProcess(
        kubeconfig=Path(args.kubeconfig),
        namespace=namespace,
        log_path=Path(tempfile.gettempdir()) / f"{namespace}.log",
    )
    serve.env.update(
        SCHEDULE_LOOP="false",
    )
    record: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "jobs": args.jobs,
        "backlog": args.backlog,
        "rate_per_second": args.rate,
    }
    admissions = Admissions(api, namespace)
    try:
        custom.create_cluster_custom_object(
            *KUEUE,
            "resourceflavors",
            {"apiVersion": "/".join(KUEUE), "kind": "ResourceFlavor", "metadata": {"name": flavor}},
        )
        make_queue(api, namespace, open_q, "100000", flavor)
        make_queue(api, namespace, full_q, "0", flavor)
        serve.start()
        assert serve.stub is not None
        stub = serve.stub
        record["kueue_rss_mb_start"] = kueue_rss_mb()

        def via_service(_: int) -> str:
            request = pb.ScheduleJobRequest(
                name="bench",
                namespace=namespace,
                queue=open_q,
                annotations={"sim.jobscheduler.io/duration": "600s"},
                timer_job=pb.TimerJob(
                    duration_seconds=600, timer_name="b", control_plane_endpoint="http://cp:1"
                ),
            )
            return str(stub.ScheduleJob(request, timeout=15).job_id)

        def via_api(phase: str) -> Any:
            def submit(i: int) -> str:
                name = f"raw-{phase}-{i}"
                batch.create_namespaced_job(namespace, raw_job(name, namespace, open_q, "600s"))
                return name

            return submit

        for phase in ("empty", "backlog"):
            if phase == "backlog":
                say(f"queueing a backlog of {args.backlog} jobs behind a ClusterQueue with no quota")
                for i in range(args.backlog):
                    batch.create_namespaced_job(namespace, raw_job(f"backlog-{i}", namespace, full_q, "1s"))
                    if (i + 1) % 250 == 0:
                        say(f"  {i + 1}/{args.backlog} created")
                deadline = time.monotonic() + 600
                while True:
                    lq = custom.get_namespaced_custom_object(*KUEUE, namespace, "localqueues", full_q)
                    pending = (lq.get("status") or {}).get("pendingWorkloads", 0)
                    if pending >= args.backlog or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                record["backlog_pending"] = pending
                record["kueue_rss_mb_backlog"] = kueue_rss_mb()
                say(f"  Kueue holds {pending} pending workloads; its RSS {record['kueue_rss_mb_backlog']} MB")
            record[f"service_{phase}"] = measure(
                f"service, {phase}", args.jobs, args.rate, via_service, admissions
            )
            record[f"raw_api_{phase}"] = measure(
                f"raw API, {phase}", args.jobs, args.rate, via_api(phase), admissions
            )
        record["kueue_rss_mb_end"] = kueue_rss_mb()
    finally:
        admissions.stop()
        serve.stop()
        core.delete_namespace(namespace)
        for resource, name in (
            ("clusterqueues", open_q),
            ("clusterqueues", full_q),
            ("resourceflavors", flavor),
        ):
            with contextlib.suppress(client.ApiException):
                custom.delete_cluster_custom_object(*KUEUE, resource, name)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    stem = f"queueing-{datetime.now(UTC):%Y-%m-%d}-{commit.stdout.strip() or 'unknown'}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = [
        "| phase | service p50 | service p99 | raw API p50 | raw API p99 |",
        "|---|---|---|---|---|",
        *(
            f"| {phase} | {record[f'service_{phase}']['p50_ms']} ms | "
            f"{record[f'service_{phase}']['p99_ms']} ms | {record[f'raw_api_{phase}']['p50_ms']} ms | "
            f"{record[f'raw_api_{phase}']['p99_ms']} ms |"
            for phase in ("empty", "backlog")
        ),
    ]
    text = (
        f"# Admission latency through Kueue ({args.jobs} jobs per cell at {args.rate:g}/s; "
        f"backlog {args.backlog})\n\n"
        + "\n".join(rows)
        + f"\n\nKueue RSS: {record['kueue_rss_mb_start']} MB at start, "
        f"{record.get('kueue_rss_mb_backlog')} MB with the backlog, "
        f"{record['kueue_rss_mb_end']} MB at the end.\n"
    )
    (args.results / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
