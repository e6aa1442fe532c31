"""What tracing costs: CPU time of the service process per ScheduleJob (dry_run=false, timer jobs
on the kwok dev cluster), with tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT) and on (the OTel
gRPC server instrumentation, exporting every span over OTLP to a local Jaeger), beside the
kube-apiserver's CPU per Job created by the raw API.

    .venv/bin/python hack/devcluster.py up
    .venv/bin/python -m bench.tracing [--calls 400] [--rounds 2]

Each round runs the modes one after the other (off, on, off, on, ...), each in a fresh service
process: a warm-up, then `--calls` sequential ScheduleJob calls that carry a caller's
`traceparent` (as a traced caller sends it), the service's utime+stime from /proc/<pid>/stat
read before and after. The kube-apiserver's CPU over the same window is read from its pid file.
The raw side creates as many Jobs directly (bench/kube.py, one HTTP/2 connection). Each run's
namespace is deleted, and gone, before the next run starts. Writes
bench/results/tracing-<date>-<commit12>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.kube import RawKube, jobs_path
from bench.machine import describe_git, describe_machine, find_cluster_pids, wait_until_quiet
from bench.queueing import raw_job
from bench.service import ServiceProcess, read_cpu_seconds
from hack.jaeger import Jaeger
from jobscheduler.api import scheduler_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster"))
RESULTS = ROOT / "bench" / "results"


def say(message: str) -> None:
    print(f"[bench.tracing {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def request(namespace: str, i: int) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        name=f"t{i}",
        namespace=namespace,
        annotations={"sim.jobscheduler.io/duration": "1h"},
        timer_job=pb.TimerJob(duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:50053"),
    )


def apiserver_cpu() -> float:
    pid = find_cluster_pids(STATE).get("kube-apiserver")
    return read_cpu_seconds(pid) if pid else 0.0


def run_service(
    mode: str, *, kube: RawKube, jaeger: Jaeger, calls: int, warmup: int, logs: Path
) -> dict[str, Any]:
    namespace = f"bench-tracing-{mode}-{secrets.token_hex(3)}"
    kube.create_namespace(namespace, labels={"bench": "tracing"})
    service = ServiceProcess(
        kubeconfig=STATE / "kubeconfig", namespace=namespace, log_path=logs / f"{namespace}.log"
    )
    if mode == "on":
        service.env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_endpoint, OTEL_SERVICE_NAME=f"bench-{namespace}"
        )
    service.env["AUDIT_LOG"] = "off"  # the same in both modes; the audit line is not what is measured
    try:
        service.start()
        assert service.stub is not None
        for i in range(warmup):
            service.stub.ScheduleJob(
                request(namespace, i), timeout=30, metadata=(("traceparent", traceparent()),)
            )
        wait_until_quiet(cores=0.5, timeout=15)
        cpu0, api0, t0 = read_cpu_seconds(service.pid), apiserver_cpu(), time.perf_counter()
        for i in range(warmup, warmup + calls):
            service.stub.ScheduleJob(
                request(namespace, i), timeout=30, metadata=(("traceparent", traceparent()),)
            )
        elapsed = time.perf_counter() - t0
        # The batch exporter sends after the calls: its CPU counts too (up to 5 s of schedule
        # delay). Both modes wait as long, so the idle process's own ticks weigh the same.
        time.sleep(6)
        cpu = read_cpu_seconds(service.pid) - cpu0
        api = apiserver_cpu() - api0
    finally:
        service.stop()
        delete_and_wait(kube, namespace)
    return {
        "mode": mode,
        "calls": calls,
        "service_cpu_ms_per_call": round(cpu / calls * 1000, 3),
        "apiserver_cpu_ms_per_call": round(api / calls * 1000, 3),
        "wall_ms_per_call": round(elapsed / calls * 1000, 3),
    }


def run_raw(*, kube: RawKube, calls: int) -> dict[str, Any]:
    namespace = f"bench-tracing-raw-{secrets.token_hex(3)}"
    kube.create_namespace(namespace, labels={"bench": "tracing"})
    try:
        wait_until_quiet(cores=0.5, timeout=15)
        api0, t0 = apiserver_cpu(), time.perf_counter()
        for i in range(calls):
            kube.post_json(jobs_path(namespace), unsuspended(raw_job(f"raw-{i}", namespace, "none", "1h")))
        elapsed = time.perf_counter() - t0
        api = apiserver_cpu() - api0
    finally:
        delete_and_wait(kube, namespace)
    return {
        "mode": "raw",
        "calls": calls,
        "apiserver_cpu_ms_per_call": round(api / calls * 1000, 3),
        "wall_ms_per_call": round(elapsed / calls * 1000, 3),
    }


def unsuspended(job: dict[str, Any]) -> dict[str, Any]:
    """The service's jobs run (kwok pods): so do the raw ones, out of any queue."""
    job["spec"]["suspend"] = False
    job["metadata"]["labels"] = {}
    return job


def delete_and_wait(kube: RawKube, namespace: str) -> None:
    """The namespace gone with its Jobs and pods: a deletion still running would spend the
    API server's CPU inside the next run's window."""
    kube.delete_namespace(namespace)
    kube.wait_for(
        f"namespace {namespace} deleted",
        lambda: not kube.exists(f"/api/v1/namespaces/{namespace}"),
        timeout=180,
        interval=1,
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in ("off", "on", "raw"):
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        out[mode] = {
            key: round(statistics.median(r[key] for r in mine), 3)
            for key in ("service_cpu_ms_per_call", "apiserver_cpu_ms_per_call", "wall_ms_per_call")
            if key in mine[0]
        }
    if "off" in out and "on" in out:
        out["added_by_tracing"] = {
            "service_cpu_ms_per_call": round(
                out["on"]["service_cpu_ms_per_call"] - out["off"]["service_cpu_ms_per_call"], 3
            )
        }
    return out


def markdown(record: dict[str, Any]) -> str:
    s = record["summary"]
    lines = [
        f"# Tracing cost per ScheduleJob ({record['started'][:10]}, commit {record['git']['commit'][:12]})",
        "",
        f"{record['calls']} sequential ScheduleJob calls (dry_run=false, timer jobs, kwok) per run, "
        f"{record['rounds']} rounds, medians; CPU from /proc/<pid>/stat (utime+stime).",
        "",
        "| side | service CPU ms / call | kube-apiserver CPU ms / call | wall ms / call |",
        "|---|---|---|---|",
    ]
    labels = {
        "off": "service, tracing off",
        "on": "service, tracing on (OTLP to Jaeger)",
        "raw": "raw API create",
    }
    for mode, label in labels.items():
        if mode in s:
            row = s[mode]
            lines.append(
                f"| {label} | {row.get('service_cpu_ms_per_call', '-')} | {row['apiserver_cpu_ms_per_call']} "
                f"| {row['wall_ms_per_call']} |"
            )
    if "added_by_tracing" in s:
        lines += [
            "",
            f"Added by tracing: {s['added_by_tracing']['service_cpu_ms_per_call']} ms of service CPU "
            "per call.",
        ]
    lines += ["", "Runs:", "", "```json", json.dumps(record["runs"], indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; write no results file")
    args = parser.parse_args(argv)
    logs = RESULTS / "local" / f"tracing-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    kube = RawKube(STATE / "kubeconfig")
    started = datetime.now(UTC).isoformat()
    runs: list[dict[str, Any]] = []
    with Jaeger() as jaeger:
        for r in range(args.rounds):
            for mode in ("off", "on"):
                say(f"round {r + 1}/{args.rounds}: tracing {mode}, {args.calls} calls")
                runs.append(
                    run_service(
                        mode, kube=kube, jaeger=jaeger, calls=args.calls, warmup=args.warmup, logs=logs
                    )
                )
                say(f"  {runs[-1]}")
            say(f"round {r + 1}/{args.rounds}: raw API, {args.calls} creates")
            runs.append(run_raw(kube=kube, calls=args.calls))
            say(f"  {runs[-1]}")
    kube.close()
    record = {
        "benchmark": "tracing",
        "started": started,
        "calls": args.calls,
        "rounds": args.rounds,
        "machine": describe_machine(),
        "git": describe_git(ROOT),
        "runs": runs,
        "summary": summarize(runs),
    }
    text = markdown(record)
    print(text)
    if not args.no_write:
        stem = f"tracing-{started[:10]}-{record['git']['commit'][:12]}"
        (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(text)
        say(f"wrote bench/results/{stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
