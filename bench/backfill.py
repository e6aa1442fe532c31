"""BackfillSchedule beside the raw Kubernetes API: the wall time of one call that creates N runs
of a past range (and of the same call repeated, when every run already exists), against creating
the same N Jobs (the schedule's template, owned by its CronJob) one by one with the client.

    .venv/bin/python -m bench.backfill [--runs 100] [--rounds 3]

The schedule is a paused `* * * * *` CronJob, so the CronJob controller starts nothing of its
own; each round backfills a new range of N minutes. Writes bench/results/backfill-<date>-<commit>.json
and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from kubernetes import client, config

from bench.service import ServiceProcess
from jobscheduler.api import scheduler_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster"))


def say(message: str) -> None:
    print(f"[bench.backfill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", default=str(STATE / "kubeconfig"))
    parser.add_argument("--runs", type=int, default=100, help="runs per backfill (at most BACKFILL_MAX_RUNS)")
    parser.add_argument("--rounds", type=int, default=3, help="backfills measured per side")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    api = config.new_client_from_config(config_file=args.kubeconfig)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    namespace = f"bench-backfill-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    serve = ServiceProcess(
        kubeconfig=Path(args.kubeconfig),
        namespace=namespace,
        log_path=Path(tempfile.gettempdir()) / f"{namespace}.log",
    )
    serve.env.update(
        SCHEDULE_LOOP="false",
        BACKFILL_MAX_RUNS=str(max(100, args.runs)),
    )
    record: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "runs": args.runs,
        "rounds": args.rounds,
    }
    try:
        serve.start()
        assert serve.stub is not None
        stub = serve.stub
        stub.CreateSchedule(
            pb.CreateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    name="bf",
                    cron="* * * * *",
                    paused=True,
                    successful_runs_history_limit=1000,
                    failed_runs_history_limit=1000,
                    job=pb.ScheduleJobRequest(
                        annotations={"sim.jobscheduler.io/duration": "1s"},
                        timer_job=pb.TimerJob(
                            duration_seconds=1, timer_name="b", control_plane_endpoint="http://cp:1"
                        ),
                    ),
                )
            ),
            timeout=15,
        )
        cronjob = batch.read_namespaced_cron_job("bf", namespace)
        template = api.sanitize_for_serialization(cronjob.spec.job_template)
        owner = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "bf",
            "uid": cronjob.metadata.uid,
            "controller": True,
        }
        base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(
            minutes=args.runs * args.rounds * 2 + 5
        )
        service, repeat, raw = [], [], []
        for round_ in range(args.rounds):
            start = base + timedelta(minutes=round_ * args.runs)
            end = start + timedelta(minutes=args.runs)
            request = pb.BackfillScheduleRequest(
                name="bf", namespace=namespace, start=stamp(start), end=stamp(end)
            )
            began = time.perf_counter()
            answer = stub.BackfillSchedule(request, timeout=120)
            service.append(time.perf_counter() - began)
            assert len(answer.created) == args.runs, answer
            began = time.perf_counter()
            again = stub.BackfillSchedule(request, timeout=120)
            repeat.append(time.perf_counter() - began)
            assert len(again.existing) == args.runs, again
            raw_start = base + timedelta(minutes=(args.rounds + round_) * args.runs)
            began = time.perf_counter()
            for k in range(args.runs):
                at = raw_start + timedelta(minutes=k)
                job = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {
                        "name": f"bf-{int(at.timestamp()) // 60}",
                        "labels": template["metadata"].get("labels") or {},
                        "annotations": {
                            **(template["metadata"].get("annotations") or {}),
                            "batch.kubernetes.io/cronjob-scheduled-timestamp": at.strftime(
                                "%Y-%m-%dT%H:%M:%SZ"
                            ),
                        },
                        "ownerReferences": [owner],
                    },
                    "spec": template["spec"],
                }
                batch.create_namespaced_job(namespace, job)
            raw.append(time.perf_counter() - began)
            say(
                f"round {round_ + 1}: service {service[-1]:.2f}s, repeat {repeat[-1]:.2f}s, "
                f"raw API {raw[-1]:.2f}s"
            )
        for name, values in (
            ("service_seconds", service),
            ("repeat_seconds", repeat),
            ("raw_api_seconds", raw),
        ):
            record[name] = {
                "median": round(statistics.median(values), 3),
                "all": [round(v, 3) for v in values],
            }
    finally:
        serve.stop()
        core.delete_namespace(namespace)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    stem = f"backfill-{datetime.now(UTC):%Y-%m-%d}-{commit.stdout.strip() or 'unknown'}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    per = {
        k: record[k]["median"] / args.runs * 1000
        for k in ("service_seconds", "repeat_seconds", "raw_api_seconds")
    }
    text = (
        f"# BackfillSchedule beside the raw API ({args.runs} runs per call, {args.rounds} rounds, median)\n\n"
        "| side | one call (s) | per run (ms) |\n|---|---|---|\n"
        f"| BackfillSchedule, creating | {record['service_seconds']['median']} | "
        f"{per['service_seconds']:.1f} |\n"
        f"| BackfillSchedule, repeated (all exist) | {record['repeat_seconds']['median']} | "
        f"{per['repeat_seconds']:.1f} |\n"
        f"| raw API, {args.runs} sequential creates | {record['raw_api_seconds']['median']} | "
        f"{per['raw_api_seconds']:.1f} |\n"
    )
    (args.results / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
