"""Notification delay: a job's end → its signed CloudEvent received by an HTTP sink, beside what a
caller watching the Kubernetes API itself would get (the job's end → a raw watch seeing the Job
terminal); then duplicates delivered across a leader kill.

    .venv/bin/python hack/devcluster.py up
    .venv/bin/python -m bench.notify [--jobs 200] [--rate 10] [--kill-jobs 40]

Two `jobscheduler serve` replicas (leader-elected) serve one namespace; a ThreadingHTTPServer on
127.0.0.1 is the sink and checks every signature. A raw watch of the namespace's Jobs (a
thread of its own) records when each Job is first seen terminal. "The job's end" is the time of
the Job's first terminal condition (SuccessCriteriaMet/FailureTarget, or Complete/Failed) as the
Job controller wrote it (whole seconds: the API's precision), so both sides are measured from the
same instant, with the same rounding.

Leader kill: the sink answers slowly (1 s), the leader is SIGKILLed while deliveries are in
flight, and every event's deliveries are counted once the other replica has delivered them all.
Writes bench/results/notify-<date>-<commit>.json and .md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from bench.service import ServiceProcess
from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster"))
KEY = secrets.token_bytes(32)
LEASE = "jobscheduler-schedules"
TERMINAL_CONDITIONS = ("SuccessCriteriaMet", "FailureTarget", "Complete", "Failed")


def say(message: str) -> None:
    print(f"[bench.notify {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Sink:
    """The receiver: when each event (by subject) first arrived, and how many times."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.count: Counter[str] = Counter()
        self.bad_signatures = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
                subject = json.loads(body)["subject"]
                with sink.lock:
                    if not hmac.compare_digest(expected, self.headers.get("X-Jobscheduler-Signature", "")):
                        sink.bad_signatures += 1
                    sink.first.setdefault(subject, at)
                    sink.count[subject] += 1
                time.sleep(sink.delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


class Ends:
    """A raw watch of the namespace's Jobs: when each was first seen terminal, and when it ended
    by its Complete/Failed condition."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            for event in w.stream(self.batch.list_namespaced_job, self.namespace, timeout_seconds=5):
                at = time.time()
                job = event["object"]
                # The outcome is decided at SuccessCriteriaMet / FailureTarget (Kubernetes >= 1.31), before
                # Complete / Failed (written once the pods are gone): the earliest counts, as the service's.
                ended = [
                    c.last_transition_time.timestamp()
                    for c in job.status.conditions or []
                    if c.type in TERMINAL_CONDITIONS and c.status == "True"
                ]
                if ended and job.metadata.name not in self.seen:
                    self.seen[job.metadata.name] = at
                    self.ended[job.metadata.name] = min(ended)
                if self._stop.is_set():
                    w.stop()

    def stop(self) -> None:
        self._stop.set()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"n": len(ordered), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def start_replica(kubeconfig: str, namespace: str, name: str, sink: Sink, logs: Path) -> ServiceProcess:
    """One replica, its log under `logs`, started (SERVING, its cache listing the namespace)."""
    replica = ServiceProcess(kubeconfig=Path(kubeconfig), namespace=namespace, log_path=logs / f"{name}.log")
    replica.env.update(
        POD_NAME=name,
        LEADER_LEASE_SECONDS="5",
        ALLOWED_NOTIFY_URLS=f"http://127.0.0.1:{sink.port}/",
        LOG_LEVEL="info",
    )
    replica.start()
    return replica


def submit(
    stub: pb_grpc.JobSchedulerStub, namespace: str, sink: Sink, count: int, rate: float, tag: str
) -> list[str]:
    ids = []
    for i in range(count):
        started = time.monotonic()
        request = pb.ScheduleJobRequest(
            name=f"{tag}-{i}",
            namespace=namespace,
            annotations={"sim.jobscheduler.io/duration": "2s"},
            timer_job=pb.TimerJob(
                duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:50053"
            ),
            notify=[pb.NotifySink(url=f"http://127.0.0.1:{sink.port}/jobs", secret="bench-hooks")],  # noqa: S106 - a name,
        )
        ids.append(stub.ScheduleJob(request, timeout=15).job_id)
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    return ids


def wait_all(sink: Sink, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(i not in sink.first for i in ids):
        if time.monotonic() > deadline:
            missing = [i for i in ids if i not in sink.first]
            raise SystemExit(f"{len(missing)} events not received within {timeout:.0f}s (e.g. {missing[0]})")
        time.sleep(0.2)


def leader(api: client.ApiClient, namespace: str) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    except client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "").split("_", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", default=str(STATE / "kubeconfig"))
    parser.add_argument("--jobs", type=int, default=200, help="jobs whose notification delay is measured")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs submitted per second")
    parser.add_argument("--kill-jobs", type=int, default=40, help="jobs in flight across the leader kill")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    api = config.new_client_from_config(config_file=args.kubeconfig)
    core = client.CoreV1Api(api)
    namespace = f"bench-notify-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="bench-hooks"),
            data={"hmac-key": base64.b64encode(KEY).decode()},
        ),
    )
    logs = ROOT / "bench" / "results" / "local" / f"notify-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    ends = Ends(api, namespace)
    replicas: dict[str, ServiceProcess] = {}
    record: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "jobs": args.jobs,
        "rate_per_second": args.rate,
    }
    try:
        for name in ("r1", "r2"):
            replicas[name] = start_replica(args.kubeconfig, namespace, name, sink, logs)
        deadline = time.monotonic() + 30
        while not leader(api, namespace) and time.monotonic() < deadline:
            time.sleep(0.2)
        stub = replicas["r1"].stub
        assert stub is not None

        say(f"{args.jobs} jobs at {args.rate:g}/s, each notifying on SUCCEEDED")
        ids = submit(stub, namespace, sink, args.jobs, args.rate, "delay")
        wait_all(sink, ids, timeout=120)
        time.sleep(2)
        service = [sink.first[i] - ends.ended[i] for i in ids]
        raw = [ends.seen[i] - ends.ended[i] for i in ids]
        beyond = [sink.first[i] - ends.seen[i] for i in ids]
        record["event_received_after_end"] = percentiles(service)
        record["raw_watch_after_end"] = percentiles(raw)
        record["event_received_after_raw_watch"] = percentiles(beyond)
        record["delay_duplicates"] = sum(sink.count[i] for i in ids) - len(ids)
        say(f"delay: {record['event_received_after_end']}, raw watch: {record['raw_watch_after_end']}")

        say(f"leader kill: {args.kill_jobs} jobs, the sink answering after 1 s")
        sink.delay = 1.0
        victim = leader(api, namespace)
        survivor = "r2" if victim == "r1" else "r1"
        stub = replicas[survivor].stub
        assert stub is not None
        kill_ids = submit(stub, namespace, sink, args.kill_jobs, args.rate, "kill")
        deadline = time.monotonic() + 60
        while (
            sum(1 for i in kill_ids if i in sink.first) < max(1, args.kill_jobs // 4)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        killed_at = time.time()
        in_flight_before = sum(1 for i in kill_ids if i in sink.first)
        victim_proc = replicas[victim].proc
        assert victim_proc is not None
        victim_proc.send_signal(signal.SIGKILL)
        victim_proc.wait(timeout=10)
        wait_all(sink, kill_ids, timeout=180)
        time.sleep(
            8
        )  # a claim left by the dead leader expires after its timeout + 5 s: late duplicates show now
        deliveries = sum(sink.count[i] for i in kill_ids)
        record["leader_kill"] = {
            "jobs": args.kill_jobs,
            "events_received_before_kill": in_flight_before,
            "deliveries": deliveries,
            "duplicates": deliveries - len(kill_ids),
            "events_with_duplicates": sum(1 for i in kill_ids if sink.count[i] > 1),
            "all_received_seconds_after_kill": round(max(sink.first[i] for i in kill_ids) - killed_at, 1),
            "new_leader": leader(api, namespace),
        }
        record["bad_signatures"] = sink.bad_signatures
        say(f"leader kill: {record['leader_kill']}")
    finally:
        ends.stop()
        for replica in replicas.values():
            replica.stop()
        sink.server.shutdown()
        _remove_namespace(api, namespace)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    stem = f"notify-{datetime.now(UTC):%Y-%m-%d}-{commit.stdout.strip() or 'unknown'}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    e, r, b, k = (
        record["event_received_after_end"],
        record["raw_watch_after_end"],
        record["event_received_after_raw_watch"],
        record["leader_kill"],
    )
    text = (
        f"# Notification delay ({args.jobs} jobs at {args.rate:g}/s, two replicas)\n\n"
        "| from the job's end (its first terminal condition, whole seconds) to | p50 | p99 |\n|---|---|---|\n"
        f"| the signed event received by the sink (service) | {e['p50_ms']} ms | {e['p99_ms']} ms |\n"
        f"| a raw watch of the Jobs seeing it terminal (raw API) | {r['p50_ms']} ms | {r['p99_ms']} ms |\n"
        f"| (event received after the raw watch saw it) | {b['p50_ms']} ms | {b['p99_ms']} ms |\n\n"
        f"Duplicates without a fault: {record['delay_duplicates']}. "
        f"Bad signatures: {record['bad_signatures']}.\n\n"
        f"Leader kill (SIGKILL, sink answering after 1 s): {k['jobs']} events, {k['deliveries']} deliveries, "
        f"{k['duplicates']} duplicates ({k['events_with_duplicates']} events delivered twice); every event "
        f"received {k['all_received_seconds_after_kill']} s after the kill at the latest.\n"
    )
    (args.results / f"{stem}.md").write_text(text)
    print(text)
    return 0 if record["bad_signatures"] == 0 else 1


def _remove_namespace(api: client.ApiClient, namespace: str) -> None:
    """Jobs keep the notify finalizer while a delivery is outstanding: let them go, then delete."""
    batch = client.BatchV1Api(api)
    for job in batch.list_namespaced_job(namespace).items:
        if job.metadata.finalizers:
            with contextlib.suppress(client.ApiException):
                batch.patch_namespaced_job(job.metadata.name, namespace, {"metadata": {"finalizers": None}})
    client.CoreV1Api(api).delete_namespace(namespace)


if __name__ == "__main__":
    sys.exit(main())
