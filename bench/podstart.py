"""ScheduleJob → pod Running on the real node and on kwok: p50/p99 over N jobs each, through the
service (the real gRPC server, in this process, against the dev cluster).

    JOBSCHEDULER_DEVCLUSTER_DIR=.devcluster .venv/bin/python -m bench.podstart [--jobs 20]

Each job is a container job of the project's image (as loaded into the real node) running
`sleep 3`, scheduled one at a time, alternating real and kwok, into a fresh namespace that is
deleted at the end. The clock starts just before the ScheduleJob call and stops at:

- pod Running: the pod's first watch event (a Kubernetes watch from this process) with phase
  Running and its container running, i.e. when the kubelet (or kwok) wrote it;
- RUNNING reported: the first WatchJobs event from the service with state RUNNING.

Placement: real node `jobscheduler.io/real-node=true` plus its taint's toleration; kwok
`type=kwok` (kwok's pod-ready stage has no delay: what it measures is the control plane, the
scheduler and kwok). Warm-up jobs (2 per side) are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from kubernetes import client, watch

from bench.load import percentile, say
from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.config import Settings
from jobscheduler.domain.registry import Registry
from jobscheduler.kube.connection import BackoffPolicy, load_api_client
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.obs.logs import configure_logging
from jobscheduler.transport.server import build_server

ROOT = Path(__file__).resolve().parent.parent
REAL_KEY, REAL_VALUE = "jobscheduler.io/real-node", "true"
PLACEMENT = {
    "real": {
        "node_selector": {REAL_KEY: REAL_VALUE},
        "tolerations": [pb.Toleration(key=REAL_KEY, operator="Equal", value=REAL_VALUE, effect="NoSchedule")],
    },
    "kwok": {"node_selector": {"type": "kwok"}},
}
JOB_TIMEOUT = 60.0  # one job's wait for both clocks; an idle real node needs 1-3 s


@dataclass
class Clocks:
    """Monotonic times per job id, filled by the two watcher threads."""

    pod_running: dict[str, float] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def mark(self, table: dict[str, float], job_id: str) -> None:
        with self.changed:
            table.setdefault(job_id, time.monotonic())
            self.changed.notify_all()

    def wait(self, job_id: str, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: job_id in self.pod_running and job_id in self.reported, timeout=timeout
            )


def watch_pods(core: client.CoreV1Api, namespace: str, clocks: Clocks, stop: threading.Event) -> None:
    while not stop.is_set():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, namespace, timeout_seconds=5):
            pod = event["object"]
            job_id = (pod.metadata.labels or {}).get("batch.kubernetes.io/job-name")
            statuses = pod.status.container_statuses or []
            if job_id and pod.status.phase == "Running" and any(s.state.running for s in statuses):
                clocks.mark(clocks.pod_running, job_id)
            if stop.is_set():
                w.stop()
                break


def watch_service(stub: pb_grpc.JobSchedulerStub, namespace: str, clocks: Clocks) -> Any:
    """The WatchJobs call (cancel it to stop), consumed by a thread that marks RUNNING events."""
    stream = stub.WatchJobs(
        pb.WatchJobsRequest(namespace=namespace, states=[pb.JOB_STATE_RUNNING], skip_initial=True)
    )

    def consume() -> None:
        try:
            for event in stream:
                if event.status.state == pb.JOB_STATE_RUNNING:
                    clocks.mark(clocks.reported, event.status.job_id)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise

    threading.Thread(target=consume, daemon=True).start()
    return stream


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20, help="measured jobs per side (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted jobs per side first (default 2)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    # The service's own log: warnings only, on stderr, so stdout is the table.
    configure_logging(level="warn", fmt="console")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    state = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster")).resolve()
    kubeconfig = state / "kubeconfig"
    image = json.loads((state / "realnode.json").read_text())["image"]
    api = load_api_client(in_cluster=False, kubeconfig=str(kubeconfig))
    core = client.CoreV1Api(api)
    namespace = f"bench-podstart-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    settings = Settings(
        grpc_port=0,
        grpc_host="127.0.0.1",
        in_cluster=False,
        kubeconfig=str(kubeconfig),
        namespace=namespace,
        watch_namespaces=(namespace,),
        schedule_loop=False,
    )
    app = build_server(
        settings, KubeGateway(api, backoff=BackoffPolicy(default_timeout=10)), Registry.from_entry_points()
    )
    app.start()
    stop = threading.Event()
    clocks = Clocks()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    stream = None
    samples: dict[str, dict[str, list[float]]] = {
        side: {"pod": [], "reported": []} for side in ("real", "kwok")
    }
    try:
        if app.cache is not None and not app.cache.wait_synced(30):
            raise SystemExit("the service's watch cache did not sync in 30 s")
        stub = pb_grpc.JobSchedulerStub(channel)
        threading.Thread(target=watch_pods, args=(core, namespace, clocks, stop), daemon=True).start()
        stream = watch_service(stub, namespace, clocks)
        time.sleep(1)  # both watches established
        for i in range(args.warmup + args.jobs):
            for side in ("real", "kwok"):
                request = pb.ScheduleJobRequest(
                    name=f"{side}-{i}",
                    namespace=namespace,
                    container_job=pb.ContainerJob(image=image, command=["sleep", "3"]),
                    annotations={"sim.jobscheduler.io/duration": "3s"} if side == "kwok" else {},
                    **PLACEMENT[side],  # type: ignore[arg-type]
                )
                started = time.monotonic()
                job_id = stub.ScheduleJob(request, timeout=15).job_id
                if not clocks.wait(job_id, JOB_TIMEOUT):
                    raise SystemExit(f"{side} job {job_id} not Running within {JOB_TIMEOUT:.0f} s")
                if i >= args.warmup:
                    samples[side]["pod"].append(clocks.pod_running[job_id] - started)
                    samples[side]["reported"].append(clocks.reported[job_id] - started)
            if i == args.warmup - 1:
                say("warm-up done")
        say(f"{args.jobs} jobs per side measured")
    finally:
        stop.set()
        if stream is not None:
            stream.cancel()
        channel.close()
        app.stop(0).wait()
        core.delete_namespace(namespace, grace_period_seconds=0)
        api.close()

    figures = {
        side: {
            what: {
                "p50_ms": round(percentile(sorted(values), 50) * 1000, 1),
                "p99_ms": round(percentile(sorted(values), 99) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1),
            }
            for what, values in kinds.items()
        }
        for side, kinds in samples.items()
    }
    print(f"ScheduleJob → Running, {args.jobs} jobs per side (nearest-rank percentiles)\n")
    print("| node | pod Running p50 | p99 | RUNNING reported p50 | p99 |")
    print("|---|---|---|---|---|")
    for side in ("real", "kwok"):
        pod, reported = figures[side]["pod"], figures[side]["reported"]
        print(
            f"| {side} | {pod['p50_ms']:.0f} ms | {pod['p99_ms']:.0f} ms "
            f"| {reported['p50_ms']:.0f} ms | {reported['p99_ms']:.0f} ms |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"jobs": args.jobs, "figures": figures, "samples": samples}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
