"""The benchmark's entry point: every measurement, service and raw API side by side, in one run.

    python -m bench.run [--quick] [--profile auto|always|never]     (or: hack/dev.sh bench)

Against the running dev cluster (hack/devcluster.py up), in a fresh namespace that is deleted
at the end whatever happens, with `jobscheduler serve` as a subprocess:

1. ScheduleJob throughput and latency at concurrency 1, 8 and 32 (bench/schedule.py); the
   jobs are then deleted and the service restarted, so the reads start from a clean process;
2. + 3. GetJobStatus and ListJobs with 1,000 and then 10,000 managed jobs present (bench/reads.py);
4. the service's RSS at start, and with 1,000 and 10,000 jobs cached;
5. WatchJob event delay (bench/watch.py).

Progress goes to stderr; the markdown table to stdout and, with the full JSON record, to
bench/results/ (see bench/report.py). Missed targets are reported, the exit code stays 0; it
is 1 when the run broke or any request of either side failed. With --profile auto the
phases behind a missed target are run once more under pyinstrument.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3

from bench.harness import MANAGED_SELECTOR, TIMER_REQUEST, Harness
from bench.kube import RAW_CLIENT_DESCRIPTION, ApiError, RawKube, jobs_path, with_query
from bench.load import say
from bench.machine import CpuMeter, describe_git, describe_machine, describe_versions, find_cluster_pids
from bench.reads import fill_jobs, measure_list, measure_status, read_uids, wait_for_cache
from bench.report import Target, evaluate_targets, render_markdown, request_errors, write_results
from bench.schedule import measure_schedule
from bench.service import read_rss_mb
from bench.vegeta import VEGETA_DESCRIPTION, VegetaDriver, negotiated_protocol
from bench.watch import measure_watch_delay
from hack import toolversions
from jobscheduler.domain.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_NOTE = (
    "Every benchmark Job is created suspended (spec.suspend=true), so no pods run; the only pod "
    "is the WatchJob test's, held waiting by kwok."
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything a run does."""

    mode: str
    schedule_counts: dict[int, int]  # concurrency -> ScheduleJob requests per side
    schedule_warmup: int
    levels: tuple[int, ...]  # managed jobs present for the read measurements
    status_count: int
    list_count: int
    read_warmup: int
    watch_changes: int
    fill_concurrency: int = 16
    settle_timeout: float = 20.0  # the longest wait for a quiet machine before each measured run
    # The longest wait for the Job controller after creating or deleting thousands of jobs.
    bulk_settle_timeout: float = 180.0
    # How long to wait for the namespace to be gone at the end (the cluster finishes it anyway).
    cleanup_wait: float = 300.0
    # The first concurrency is the one the targets are judged at; c=1 shows the floor without queueing.
    status_concurrencies: tuple[int, ...] = (8, 1)
    list_concurrencies: tuple[int, ...] = (1, 8)


FULL = Plan(
    mode="full",
    schedule_counts={1: 400, 8: 1600, 32: 1600},
    schedule_warmup=40,
    levels=(1000, 10000),
    status_count=5000,
    list_count=1000,
    read_warmup=200,
    watch_changes=200,
)
QUICK = Plan(
    mode="quick",
    schedule_counts={1: 40, 8: 160, 32: 160},
    schedule_warmup=16,
    levels=(1000,),
    status_count=600,
    list_count=100,
    read_warmup=50,
    watch_changes=30,
    # Only the concurrency the targets are judged at: CI's run stays near two minutes.
    status_concurrencies=(8,),
    list_concurrencies=(8,),
    settle_timeout=1.0,
    bulk_settle_timeout=10.0,
    cleanup_wait=10.0,
)


@dataclass
class Run:
    """The results being assembled, so that a failing phase still leaves the earlier ones."""

    record: dict[str, Any]
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)

    def note_memory(self, key: str, label: str, pid: int) -> None:
        self.memory[key] = {"label": label, **read_rss_mb(pid)}
        say(f"service RSS {label}: {self.memory[key]['rss_mb']:.0f} MB")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (about two minutes)")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        help="rerun phases under pyinstrument: those with a missed target (auto; the default, but "
        "never with --quick), all, none",
    )
    cluster = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR") or ROOT / ".devcluster")
    parser.add_argument("--kubeconfig", type=Path, default=cluster / "kubeconfig")
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench" / "results",
        help="output directory (full runs: <date>-<commit>.json/.md; everything else under local/)",
    )
    return parser.parse_args(argv)


def find_tool(name: str) -> Path:
    """A tool built by hack/tools.sh: from the selected version's bin dir, else from PATH."""
    path = toolversions.bin_dir() / name
    if path.exists():
        return path
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"bench: {name} not found; build the tools with `bash hack/tools.sh build`")
    return Path(found)


def find_ghz() -> Path:
    return find_tool("ghz")


def create_namespace(kube: RawKube, name: str) -> None:
    kube.create_namespace(
        name,
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "jobscheduler.io/bench": "true",
        },
    )
    # The WatchJob test's pod is refused until the ServiceAccount controller made "default".
    kube.wait_for(
        "the namespace's default ServiceAccount",
        lambda: kube.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=60,
    )


def count_jobs_left(kube: RawKube, namespace: str) -> int:
    page = kube.get_json(with_query(jobs_path(namespace), limit="1"), expect=(200, 404))
    items = len(page.get("items") or [])
    return items + int((page.get("metadata") or {}).get("remainingItemCount") or 0)


def clear_jobs(h: Harness, *, settle_timeout: float) -> None:
    """Deletes every job of the ScheduleJob phase, so the read phases count exactly."""
    say(f"deleting the {count_jobs_left(h.kube, h.namespace)} jobs of the ScheduleJob phase")
    h.kube.send(
        "DELETE",
        with_query(jobs_path(h.namespace), labelSelector=MANAGED_SELECTOR, propagationPolicy="Background"),
        expect=(200,),
        timeout=300,
    )
    h.kube.wait_for("the jobs to be deleted", lambda: count_jobs_left(h.kube, h.namespace) == 0, timeout=300)
    h.settle(timeout=settle_timeout)


def delete_namespace(kube: RawKube, name: str, *, timeout: float = 300) -> None:
    """Deletes the namespace and waits (bounded) until it is gone, showing progress. Keeps
    trying while the API server is unreachable (a component may be restarting)."""
    say(f"deleting namespace {name}")
    deadline = time.monotonic() + timeout
    requested = False
    last_report = time.monotonic()
    while time.monotonic() < deadline:
        try:
            if not requested:
                kube.delete_namespace(name)
                requested = True
            if not kube.exists(f"/api/v1/namespaces/{name}"):
                say(f"namespace {name} deleted")
                return
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                say(f"  namespace terminating, {count_jobs_left(kube, name):,} jobs left")
        except (ApiError, urllib3.exceptions.HTTPError, OSError) as e:
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                say(f"  the API server did not answer ({type(e).__name__}); trying again")
        time.sleep(0.5)
    if requested:
        say(f"namespace {name} is still terminating; the cluster will finish deleting it")
    else:
        say(f"could not delete namespace {name}; delete it with: kubectl delete namespace {name}")


def describe_disturbances(before: dict[str, int], after: dict[str, int], cpu: dict[str, float]) -> list[str]:
    """What else happened on the machine during the run that makes its figures suspect."""
    notes = [
        f"{name} was restarted during the run (pid {pid} -> {after.get(name, 'gone')})"
        for name, pid in before.items()
        if after.get(name) != pid
    ]
    wall = cpu.get("wall_seconds", 0.0)
    other = cpu.get("other", 0.0)
    if wall and other / wall > 0.1:
        notes.append(
            f"other workloads used {other:.0f} CPU seconds during the run ({other / wall:.0%} of one core)"
        )
    return notes


def measure_everything(h: Harness, plan: Plan, run: Run) -> None:
    record = run.record
    record["memory"] = run.memory
    service = h.start_service(label="service-1")
    record["service"] = {
        "command": service.command,
        "env": service.env,
        "settings": service_settings(service.env),
        "logs": shown(h.logs_dir),
    }
    run.note_memory("start", "at start (empty namespace)", service.pid)
    h.load_template()
    record["job_template"] = h.template

    say("== 1. ScheduleJob: service vs raw POST ==")
    record["schedule_job"] = measure_schedule(h, counts=plan.schedule_counts, warmup=plan.schedule_warmup)
    created = record["schedule_job"]["jobs_created"]
    run.note_memory("after_schedule_job", f"after the ScheduleJob phase ({created:,} jobs seen)", service.pid)
    h.stop_service()
    clear_jobs(h, settle_timeout=plan.bulk_settle_timeout)
    service = h.start_service(label="service-2")
    run.note_memory("restart", "restarted for the reads (empty namespace)", service.pid)

    say("== 2.-4. GetJobStatus, ListJobs and memory with many jobs present ==")
    record["get_job_status"], record["list_jobs"] = {}, {}
    names: list[str] = []
    for level in plan.levels:
        names += fill_jobs(h, first=len(names), last=level, concurrency=plan.fill_concurrency)
        record.setdefault("cache_fill_seconds", {})[str(level)] = wait_for_cache(h, level)
        say("  waiting for the Job controller to mark every new Job suspended")
        h.settle(timeout=plan.bulk_settle_timeout)
        run.note_memory(f"jobs_{level}", f"{level:,} jobs cached", service.pid)
        record["get_job_status"][str(level)] = measure_status(
            h,
            names,
            count=plan.status_count,
            concurrencies=plan.status_concurrencies,
            warmup=plan.read_warmup,
            uids=read_uids(h),
        )
        record["list_jobs"][str(level)] = measure_list(
            h,
            total=level,
            count=plan.list_count,
            concurrencies=plan.list_concurrencies,
            warmup=plan.read_warmup,
        )

    say("== 5. WatchJob event delay ==")
    record["watch_job"] = measure_watch_delay(h, changes=plan.watch_changes)


def profile_phases(h: Harness, plan: Plan, targets: list[Target], mode: str) -> dict[str, Any]:
    """Reruns the service side of the phases behind missed targets under pyinstrument, one call
    at a time (see bench/profiled_serve.py for why), with the jobs of the last read level present."""
    phases_measured = ("ScheduleJob", "GetJobStatus", "ListJobs")
    missed = {p for p in phases_measured if any(p in t.name and not t.passed for t in targets)}
    wanted = set(phases_measured) if mode == "always" else missed
    level = plan.levels[-1]
    phases: dict[str, tuple[list[dict[str, Any]], int]] = {
        "ScheduleJob": ([TIMER_REQUEST], plan.schedule_counts[1]),
        "GetJobStatus": (
            [{"job_id": f"bench-{i:05d}", "namespace": h.namespace} for i in range(level)],
            plan.status_count // 4,
        ),
        "ListJobs": (
            [
                {"namespace": h.namespace, "page_size": 100},
                {"namespace": h.namespace, "page_size": 100, "label_selector": "bench-group=a"},
            ],
            plan.list_count,
        ),
    }
    profiles: dict[str, Any] = {}
    for name in (p for p in phases if p in wanted):
        requests, count = phases[name]
        label = f"{name}, {level:,} jobs present" + (", filtered and not" if name == "ListJobs" else "")
        out = h.logs_dir / f"profile-{name}.txt"
        say(f"profiling the service under pyinstrument: {label}, {count} calls at c=1 (timings not reported)")
        h.stop_service()
        # start() returns once the cache has listed the namespace; no ListJobs here, it would be profiled.
        service = h.start_service(profile_path=out, label=f"service-profiled-{name}")
        h.call_service(name, requests, count=count, concurrency=1)
        service.stop(timeout=300)  # the profile is written on the way out
        h.stop_service()
        profiles[label] = {"path": shown(out), "top": top_of_profile(out)}
    return profiles


def top_of_profile(path: Path, *, per_section: int = 15) -> list[str]:
    """The profile's CPU split, then the hottest functions (self time) of each kind of work."""
    if not path.exists():
        return ["(no profile written; see the service log)"]
    top: list[str] = []
    in_header, in_hottest, taken = True, False, 0
    for line in path.read_text().splitlines():
        if line.startswith("== "):
            in_header, in_hottest, taken = False, "hottest functions" in line, 0
            if in_hottest:
                top += ["", line]
        elif in_header:
            top.append(line)
        elif in_hottest and line.strip() and taken < per_section:
            top.append(line)
            taken += 1
    return top


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    profile = args.profile or ("never" if args.quick else "auto")
    if not args.kubeconfig.exists():
        raise SystemExit(
            f"bench: {args.kubeconfig} not found; start the cluster: python3 hack/devcluster.py up"
        )
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    namespace = f"bench-{stamp.lower()}"
    results_dir = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    kube = RawKube(args.kubeconfig)
    cpu = CpuMeter(args.kubeconfig.parent, {"bench": os.getpid()})
    h = Harness(
        ROOT, args.kubeconfig, namespace, find_ghz(), kube, cpu, results_dir / "local" / f"{stamp}-logs"
    )
    h.vegeta = VegetaDriver(find_tool("vegeta"), kube.credentials)
    h.settle_timeout = plan.settle_timeout
    h.logs_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "benchmark": "jobscheduler",
        "mode": plan.mode,
        "started_at": started.isoformat(timespec="seconds"),
        "namespace": namespace,
        "cluster_note": CLUSTER_NOTE,
        "machine": describe_machine(),
        "versions": describe_versions(),
        "git": describe_git(ROOT),
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "schedule_counts"}
        | {"schedule_counts": {str(c): n for c, n in plan.schedule_counts.items()}},
        "drivers": {
            "service": {
                "tool": "ghz (Go), built from Go modules by hack/tools.sh",
                "transport": "gRPC over HTTP/2, plaintext on loopback, --connections=1",
                "load": "closed loop: -c N workers, -n COUNT requests",
                "api": "protoset from jobscheduler.api.scheduler_pb2 and grpc.health.v1's health_pb2",
            },
            "raw": VEGETA_DESCRIPTION,
            "setup": RAW_CLIENT_DESCRIPTION,
        },
        "percentiles": "nearest rank over every successful request's latency, both sides alike",
    }
    run = Run(record)
    say(f"benchmark ({plan.mode}) in namespace {namespace}; {CLUSTER_NOTE}")
    failure: BaseException | None = None
    cluster_pids = find_cluster_pids(args.kubeconfig.parent)
    whole_run = CpuMeter(args.kubeconfig.parent, {"bench": os.getpid()})
    whole_run.start()
    wall_started = time.monotonic()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        record["versions"]["kube_apiserver"] = kube.get_json("/version").get("gitVersion", "")
        record["drivers"]["raw"] = VEGETA_DESCRIPTION | {
            "alpn_negotiated": negotiated_protocol(kube.credentials),
            "http2_check": h.vegeta.check_http2("/version"),
        }
        say(f"vegeta's protocol: {record['drivers']['raw']['http2_check']}")
        create_namespace(kube, namespace)
        measure_everything(h, plan, run)
        targets = evaluate_targets(record)
        if profile != "never":
            record["profiles"] = profile_phases(h, plan, targets, profile)
    except BaseException as e:  # still write what was measured, and clean up
        failure = e
        traceback.print_exc()
        say(f"benchmark failed: {type(e).__name__}: {e}")
        record["error"] = f"{type(e).__name__}: {e}"
    finally:
        h.stop_service()
        delete_namespace(kube, namespace, timeout=plan.cleanup_wait)
        kube.close()
        h.vegeta.close()
    used = whole_run.stop()
    used["bench children (ghz, vegeta, service)"] = used.pop("driver")  # reaped children: the services too
    record["cpu_seconds_whole_run"] = used | {"wall_seconds": round(time.monotonic() - wall_started, 1)}
    record["disturbances"] = describe_disturbances(
        cluster_pids, find_cluster_pids(args.kubeconfig.parent), record["cpu_seconds_whole_run"]
    )
    for note in record["disturbances"]:
        say(f"WARNING: {note}; the figures may not be representative")
    finished = datetime.now(UTC)
    record["finished_at"] = finished.isoformat(timespec="seconds")
    record["duration_seconds"] = round((finished - started).total_seconds(), 1)
    targets = evaluate_targets(record)
    record["targets"] = [t.as_dict() for t in targets]
    markdown = render_markdown(record, targets)
    path = write_results(args.results, stamp, record, markdown)
    print(markdown)
    say(f"results: {shown(path)} and .md; {shown(args.results / 'local' / 'latest.json')}")
    if record["mode"] == "full" and failure is None:
        say("regenerate docs/performance.md from it: python -m bench.report --write-docs")
    errors = request_errors(record)
    for error in errors:
        say(f"ERROR: requests failed: {error}")
    say(f"the run took {record['duration_seconds']:.0f} s")
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            return 130
        return 1
    return 1 if errors else 0


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stop_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C does: results so far are written, the namespace deleted."""
    raise KeyboardInterrupt(f"signal {signum}")


def service_settings(env: dict[str, str]) -> dict[str, Any]:
    """The settings the service ran with, as its own configuration code reads them."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(Settings.from_env(env)).items()
    }


if __name__ == "__main__":
    sys.exit(main())
