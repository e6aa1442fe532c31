"""The scale point: the service with 100,000 suspended Jobs in its watch cache, on a cluster of its own.

    JOBSCHEDULER_DEVCLUSTER_DIR=/work/scale-cluster python3 hack/devcluster.py up     # once
    .venv/bin/python -m bench.scale [--jobs 100000] [--kubeconfig PATH] [--results DIR]
    JOBSCHEDULER_DEVCLUSTER_DIR=/work/scale-cluster python3 hack/devcluster.py down   # afterwards

It restarts the API server, so it runs only against a dev cluster started for it (its own
state directory, never a checkout's .devcluster), and refuses a cluster with namespaces of
anyone else in it. In a fresh namespace `scale-<timestamp>`, with `jobscheduler serve` as a
subprocess (WATCH_NAMESPACES=<namespace>, LOG_LEVEL=info, metrics on a free port):

1. 1,000 suspended Jobs (the service's own manifest from a dry run; every tenth labelled
   bench-group=a), then GetJobStatus over shuffled ids and ListJobs' first page of 100
   (unfiltered, and the 10% filter) at c=1 and c=8 with ghz; p50/p99 and the service's CPU
   per call; the service's, etcd's and kube-apiserver's RSS;
2. the same with --jobs (100,000) Jobs, created through the API server with progress, rate and
   ETA, and what creating them cost the control plane;
3. the service restarted: how long it takes to list and cache every Job from scratch;
4. kube-apiserver restarted (hack/devcluster.py restart): how long until the service's cache
   serves again, until a Job created right after the API server came back is visible, and
   whether the service resumed its watch or relisted (410 Gone).

Writes bench/results/scale-<date>-<commit>.json and .md (meant to be committed), then deletes
the namespace with progress (--keep-namespace skips that when the cluster is torn down next:
`down` removes etcd's data at once, while deleting 100,000 Jobs through the API server takes
minutes of both cores). Ctrl-C or SIGTERM stops the run: what was measured is written and the
namespace deleted all the same.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import urllib3
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.ghz import run_ghz
from bench.harness import Harness
from bench.kube import ApiError, RawKube, jobs_path, with_query
from bench.load import say
from bench.machine import (
    CpuMeter,
    describe_git,
    describe_machine,
    describe_versions,
    find_cluster_pids,
)
from bench.report import dig
from bench.service import ServiceProcess, pick_free_port, read_rss_mb
from jobscheduler.api import scheduler_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
NAMESPACE_PREFIX = "scale-"
GROUP_LABEL = ("bench-group", "a")
GROUP_EVERY = 10
PROBE_LABEL = ("bench-probe", "resync")
NAME_PLACEHOLDER = "scale-name-placeholder"
START_COMMAND = "JOBSCHEDULER_DEVCLUSTER_DIR=/work/scale-cluster python3 hack/devcluster.py up"
STOP_COMMAND = "JOBSCHEDULER_DEVCLUSTER_DIR=/work/scale-cluster python3 hack/devcluster.py down"
Obj = dict[str, Any]


@dataclass(frozen=True)
class ScalePlan:
    jobs: int = 100_000
    small: int = 1_000  # the level the large one is compared with
    status_count: int = 5_000  # GetJobStatus calls per run
    list_count: int = 1_000  # ListJobs calls per run
    warmup: int = 200
    concurrencies: tuple[int, ...] = (1, 8)
    fill_concurrency: int = 32
    settle_seconds: float = 10.0  # at most, before each measured run (the machine is shared)


# -- pure helpers (tests/unit/test_bench_scale.py) ------------------------------------------------


def refusal(state_dir: Path, namespaces: Iterable[str]) -> str | None:
    """Why this cluster must not be disturbed by the scale run, or None when it may be used.

    The run restarts kube-apiserver and fills etcd with 100,000 Jobs: only a dev cluster started
    for it will do. A checkout's .devcluster is the one tests and benchmarks share; a namespace
    other than the system ones and earlier scale runs' means someone else is using the cluster.
    """
    fix = f"start a cluster of its own: {START_COMMAND}, and pass --kubeconfig /work/scale-cluster/kubeconfig"
    if state_dir.name == ".devcluster":
        return f"{state_dir} is a checkout's shared dev cluster (tests and bench use it); {fix}"
    if not (state_dir / "ports.json").exists() or not (state_dir / "pids").is_dir():
        return f"{state_dir} is not a hack/devcluster.py state directory (it cannot be restarted); {fix}"
    foreign = sorted(
        n for n in namespaces if n not in SYSTEM_NAMESPACES and not n.startswith(NAMESPACE_PREFIX)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        return f"the cluster has namespaces of someone else ({shown}); {fix}"
    return None


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of one metric in Prometheus text format whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(
            (pair.split("=", 1)[0], pair.split("=", 1)[1].strip('"'))
            for pair in label_text.rstrip("}").split(",")
            if "=" in pair
        )
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def format_duration(seconds: float) -> str:
    if math.isnan(seconds) or seconds < 0:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(done: int, total: int, elapsed: float, recent_rate: float) -> str:
    """'12,000/100,000 jobs created, 410/s (380/s overall), ETA 3m51s'."""
    overall = done / elapsed if elapsed > 0 else 0.0
    rate = recent_rate or overall
    eta = (total - done) / rate if rate > 0 else math.nan
    return (
        f"{done:,}/{total:,} jobs created, {recent_rate:.0f}/s ({overall:.0f}/s overall), "
        f"ETA {format_duration(eta)}"
    )


@dataclass
class Timeline:
    """Seconds since a start of each named moment, the first time it happened."""

    started: float
    moments: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, now: float | None = None) -> bool:
        """Records `name` unless already recorded; True when this call recorded it."""
        if name in self.moments:
            return False
        self.moments[name] = round((time.monotonic() if now is None else now) - self.started, 2)
        return True

    def has(self, name: str) -> bool:
        return name in self.moments

    def since(self, name: str, earlier: str) -> float | None:
        if name in self.moments and earlier in self.moments:
            return round(self.moments[name] - self.moments[earlier], 2)
        return None


def results_stem(when: datetime, commit: str) -> str:
    return f"scale-{when.strftime('%Y-%m-%d')}-{commit[:12]}"


def _pair(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "not measured"
    return f"{entry['p50_ms']:.2f} / {entry['p99_ms']:.2f} ms"


def build_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline rows: measurement, value, target and whether it was met (None: no target
    or not measured). docs/performance.md renders these."""
    large, small = str(dig(record, "plan", "jobs")), str(dig(record, "plan", "small"))
    n = f"{int(large):,}" if large.isdigit() else large
    rows: list[dict[str, Any]] = []

    def row(measurement: str, value: str, target: str, met: bool | None) -> None:
        rows.append({"measurement": measurement, "value": value, "target": target, "met": met})

    memory = dig(record, "levels", large, "memory", "service")
    row(
        f"Service RSS with {n} jobs cached",
        f"{memory['rss_mb']:.0f} MB (peak {memory['peak_rss_mb']:.0f} MB)" if memory else "not measured",
        "≤ 600 MB",
        memory["rss_mb"] <= 600 if memory else None,
    )
    for c in (8, 1):
        big = dig(record, "levels", large, "get_job_status", f"c{c}", "service")
        little = dig(record, "levels", small, "get_job_status", f"c{c}", "service")
        if big and little:
            ratio = big["p50_ms"] / little["p50_ms"]
            value = f"{big['p50_ms']:.2f} vs {little['p50_ms']:.2f} ms ({ratio:.2f}x)"
        else:
            ratio, value = math.nan, "not measured"
        row(
            f"GetJobStatus p50 at {n} vs {int(small):,} jobs, c={c}",
            value,
            "≤ 1.2x" if c == 8 else "— (context for c=8)",
            (ratio <= 1.2 if not math.isnan(ratio) else None) if c == 8 else None,
        )
    status = dig(record, "levels", large, "get_job_status", "c8", "service")
    row(f"GetJobStatus p50 / p99, c=8, {n} jobs", _pair(status), "— (p99 ≤ 2 ms is set at 10,000)", None)
    for variant, target in (("all", "— (p99 ≤ 20 ms at 10,000)"), ("filtered", "— (p99 ≤ 10 ms at 10,000)")):
        entry = dig(record, "levels", large, "list_jobs", f"{variant} c8", "service")
        what = "unfiltered" if variant == "all" else "10% label filter"
        row(f"ListJobs page of 100, {what}, p50 / p99, c=8, {n} jobs", _pair(entry), target, None)
    resync = dig(record, "resync")
    if resync and resync.get("cache_serves_again_s") is not None:
        how = {True: "relisted (410 Gone)", False: "resumed its watch"}.get(resync.get("relisted"), "?")
        visible = resync.get("probe_in_cache_after_created_s")
        value = (
            f"{resync['cache_serves_again_s']:.1f} s from the restart command to the cache serving again "
            f"({resync.get('cache_serves_after_api_back_s')} s after the API server was back); {how}; "
            f"a Job created then reached the cache {visible} s after its POST"
        )
    else:
        value = "not measured" if not resync else f"not completed: {resync.get('error', '?')}"
    row("Watch resync after a kube-apiserver restart", value, "—", None)
    start = dig(record, "restart", "ready_seconds")
    failed = dig(record, "restart", "error")
    row(
        f"Time to cache {n} jobs at service start",
        f"{start:.1f} s"
        if isinstance(start, int | float)
        else f"failed: {failed}"
        if failed
        else "not measured",
        "—",
        None,
    )
    return rows


def render_markdown(record: Mapping[str, Any]) -> str:
    """The results for people: the rows, then every figure behind them."""
    git = record.get("git") or {}
    lines = [
        f"# Scale point: {dig(record, 'plan', 'jobs'):,} suspended Jobs cached",
        "",
        f"`python -m bench.scale --jobs {dig(record, 'plan', 'jobs')}`, "
        f"commit `{git.get('commit', '?')[:12]}`"
        + (" (with uncommitted changes)" if git.get("dirty") else "")
        + f", {record.get('started_at', '?')}, {record.get('duration_seconds', '?')} s. "
        f"Machine: {dig(record, 'machine', 'cores')} cores, {dig(record, 'machine', 'cpu_model')}.",
        "",
    ]
    if record.get("error"):
        lines += [f"**The run did not finish:** {record['error']}", ""]
    lines += ["| measurement | value | target | met |", "|---|---|---|---|"]
    for r in record.get("rows") or []:
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        lines.append(f"| {r['measurement']} | {r['value']} | {r['target']} | {met} |")
    busy = record.get("machine_busy") or {}
    if busy:
        lines += [
            "",
            f"Other workloads on the machine used {busy.get('other_cores', '?')} cores on average over the "
            f"run ({busy.get('other_cpu_seconds', '?')} CPU s in {busy.get('wall_seconds', '?')} s); "
            f"load average {busy.get('loadavg_start', '?')} at the start, {busy.get('loadavg_end', '?')} "
            "at the end. Timings taken while others work on the 2 cores are noisy; CPU per call less so.",
        ]
    for level, data in sorted((record.get("levels") or {}).items(), key=lambda kv: int(kv[0])):
        lines += ["", f"## {int(level):,} jobs", ""]
        lines += [
            "| call | c | p50 ms | p99 ms | calls/s | service CPU ms/call | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, runs in (
            ("GetJobStatus", data.get("get_job_status") or {}),
            ("ListJobs", data.get("list_jobs") or {}),
        ):
            for key, entry in runs.items():
                s = entry["service"]
                label = method if method == "GetJobStatus" else f"ListJobs {key.split()[0]}"
                lines.append(
                    f"| {label} | {s['concurrency']} | {s['p50_ms']} | {s['p99_ms']} | {s['rps']} | "
                    f"{entry.get('service_cpu_ms_per_call', '?')} | {s['errors']} |"
                )
        memory = data.get("memory") or {}
        if "service_idle_cores" in data:
            lines += [
                "",
                f"The service used {data['service_idle_cores']} cores with no call in flight (5 s).",
            ]
        lines += [
            "",
            "RSS (peak) MB: "
            + ", ".join(
                f"{who} {m.get('rss_mb', '?')} ({m.get('peak_rss_mb', '?')})" for who, m in memory.items()
            ),
        ]
        fill = data.get("fill")
        if fill:
            lines += [
                "",
                f"Filled {fill['created']:,} Jobs in {fill['seconds']} s ({fill['rate_per_s']}/s, "
                f"{fill['concurrency']} at a time); the service's cache held them all "
                f"{fill['cache_lag_seconds']} s after the last POST"
                + (
                    "; the Job controller had marked them suspended "
                    f"{fill['job_controller_lag_seconds']} s later"
                    if "job_controller_lag_seconds" in fill
                    else ""
                )
                + ". CPU seconds per 1,000 Jobs created "
                "(until the cluster settled): "
                + ", ".join(f"{k} {v}" for k, v in (fill.get("cpu_s_per_1000_jobs") or {}).items()),
            ]
    restart = record.get("restart")
    if restart:
        lines += [
            "",
            "## Service start with every Job present",
            "",
            (
                f"The service did not get there: {restart['error']}. "
                if restart.get("error")
                else "From spawning `jobscheduler serve` to SERVING with its cache serving the namespace: "
                f"{restart.get('ready_seconds')} s; it then held {restart.get('jobs_cached', '?')} jobs. "
            )
            + f"RSS {dig(restart, 'memory', 'service', 'rss_mb')} MB "
            f"(peak {dig(restart, 'memory', 'service', 'peak_rss_mb')} MB).",
        ]
    resync = record.get("resync")
    if resync and "timeline" not in resync:
        lines += ["", "## kube-apiserver restart", "", str(resync.get("error", "not measured"))]
    elif resync:
        lines += ["", "## kube-apiserver restart", ""]
        lines += ["Seconds since `hack/devcluster.py restart kube-apiserver` was started:", ""]
        lines += ["| moment | s |", "|---|---|"]
        for name, at in (resync.get("timeline") or {}).items():
            lines.append(f"| {name} | {at} |")
        lines += [
            "",
            f"Relisted (410 Gone): {resync.get('relisted')}; watch restarts by reason: "
            f"{resync.get('watch_restarts')}; service log lines: {resync.get('log_lines') or 'none'}.",
            "RSS after (peak since the service started) MB: "
            + ", ".join(
                f"{who} {m.get('rss_mb', '?')} ({m.get('peak_rss_mb', '?')})"
                for who, m in (resync.get("memory") or {}).items()
            ),
            "",
            str(resync.get("method", "")),
        ]
    for note in record.get("disturbances") or []:
        lines += ["", f"**Disturbance:** {note}"]
    cleanup = record.get("cleanup")
    if cleanup:
        lines += ["", f"Cleanup: {cleanup}"]
    return "\n".join(lines) + "\n"


# -- the cluster ----------------------------------------------------------------------------------


def cluster_memory(state_dir: Path, service: ServiceProcess | None) -> dict[str, dict[str, float]]:
    """RSS of the service, etcd and kube-apiserver (MiB, now and peak)."""
    memory: dict[str, dict[str, float]] = {}
    if service is not None and service.proc is not None and service.proc.poll() is None:
        memory["service"] = read_rss_mb(service.pid)
    for component, pid in find_cluster_pids(state_dir).items():
        if component in ("etcd", "kube-apiserver"):
            try:
                memory[component] = read_rss_mb(pid)
            except OSError:
                continue
    return memory


def count_jobs(kube: RawKube, namespace: str) -> int:
    page = kube.get_json(with_query(jobs_path(namespace), limit="1"), expect=(200, 404))
    return len(page.get("items") or []) + int((page.get("metadata") or {}).get("remainingItemCount") or 0)


def wait_for_cluster_quiet(h: Harness, *, timeout: float, cores: float = 0.2) -> float:
    """Waits until the control plane and the service together use less than `cores` CPUs over a
    second (the Job controller has marked every new Job suspended, the watch events are in);
    the seconds waited. Not the whole machine: the other engineers keep it busy."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        meter = CpuMeter(h.cpu.cluster_state, dict(h.cpu.pids))
        meter.start()
        time.sleep(1.0)
        used = meter.stop()
        if sum(v for k, v in used.items() if k not in ("other", "driver", "bench")) < cores:
            break
    return round(time.monotonic() - started, 1)


class BusySampler(threading.Thread):
    """Machine CPU used by no process of this run, summed over short windows (a restarted
    component would otherwise drop out of a whole-run meter and count as someone else's)."""

    def __init__(self, state_dir: Path, pids: dict[str, int], *, interval: float = 2.0) -> None:
        super().__init__(name="busy-sampler", daemon=True)
        self.state_dir, self.pids, self.interval = state_dir, pids, interval
        self.other = 0.0
        self.ours: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            meter = CpuMeter(self.state_dir, dict(self.pids))
            meter.start()
            self.stopping.wait(self.interval)
            for name, seconds in meter.stop().items():
                if name == "other":
                    self.other += seconds
                else:
                    self.ours[name] = self.ours.get(name, 0.0) + seconds


def api_ready(kube: RawKube) -> bool:
    try:
        kube.send("GET", "/readyz", timeout=1.0)
    except (ApiError, urllib3.exceptions.HTTPError, OSError):
        return False
    return True


# -- the service ----------------------------------------------------------------------------------


class ScaleService(ServiceProcess):
    """The service as bench runs it, but logging at info (the informer says when it relists)
    and with its metrics on a free port (cache size and watch restarts, read without RPCs)."""

    def __init__(self, *, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        super().__init__(kubeconfig=kubeconfig, namespace=namespace, log_path=log_path)
        self.metrics_port = pick_free_port()
        self.env["METRICS_PORT"] = str(self.metrics_port)
        self.env["LOG_LEVEL"] = "info"
        # The installed console script, the operators' entry point: ad-hoc scripts on this shared
        # machine clean up with `pkill -f "cli.main serve"`, which must not end a 20-minute run.
        script = Path(sys.executable).parent / "jobscheduler"
        if script.exists():
            self.command = [sys.executable, str(script), "serve"]

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def cached_jobs(self) -> int:
        return int(metric_value(self.metrics(), "jobscheduler_cache_objects", resource="jobs"))

    def job_updates(self) -> float:
        """Job MODIFIED events the service's watch has received so far."""
        return metric_value(
            self.metrics(), "jobscheduler_watch_events_total", resource="jobs", type="MODIFIED"
        )

    def probe_cache(self, label_selector: str) -> str:
        """'down' (the cache does not serve the namespace), 'has' (it serves and holds a job
        matching the selector) or 'unknown' (no answer within 0.3 s: it serves without such a
        job, or it is too busy to answer; never taken as serving): one WatchJobs call."""
        assert self.stub is not None
        stream = self.stub.WatchJobs(
            pb.WatchJobsRequest(namespace=self.namespace, label_selector=label_selector), timeout=0.3
        )
        try:
            for _ in stream:
                return "has"
        except grpc.RpcError as e:
            return "unknown" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "down"
        finally:
            stream.cancel()
        return "unknown"


def current(h: Harness) -> ScaleService:
    assert isinstance(h.service, ScaleService)
    return h.service


def start_service(h: Harness, label: str, *, timeout: float = 60) -> ScaleService:
    service = ScaleService(
        kubeconfig=h.kubeconfig, namespace=h.namespace, log_path=h.logs_dir / f"{label}.log"
    )
    h.service = service
    service.start(timeout=timeout)
    h.cpu.pids["service"] = service.pid
    return service


def wait_for_cache(service: ScaleService, expected: int, *, timeout: float) -> float:
    """Waits until the service's cache holds `expected` jobs (by its metrics); the seconds it took."""
    started = time.monotonic()
    last = 0.0
    while (held := service.cached_jobs()) < expected:
        if time.monotonic() - started > timeout:
            raise TimeoutError(
                f"the service's cache holds {held:,} jobs after {timeout:.0f}s, expected {expected:,}"
            )
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            say(f"  the service's cache holds {held:,}/{expected:,} jobs")
        time.sleep(0.2)
    return round(time.monotonic() - started, 2)


# -- filling ---------------------------------------------------------------------------------------


def job_body_factory(h: Harness) -> Callable[[int], bytes]:
    """Job i's body: the service's own Job (from the dry run) named bench-<i>, every tenth
    labelled bench-group=a; rendered once and the name substituted, not rendered 100,000 times."""
    plain = h.render_raw_job(NAME_PLACEHOLDER)
    grouped = h.render_raw_job(NAME_PLACEHOLDER, extra_labels={GROUP_LABEL[0]: GROUP_LABEL[1]})
    marker = f'"{NAME_PLACEHOLDER}"'.encode()
    for template in (plain, grouped):
        if template.count(marker) != 1:
            raise RuntimeError("the Job template carries its name in more than one place; render each body")

    def body(i: int) -> bytes:
        return (grouped if i % GROUP_EVERY == 0 else plain).replace(marker, f'"{job_name(i)}"'.encode())

    return body


def job_name(i: int) -> str:
    return f"bench-{i:06d}"


def fill(h: Harness, *, first: int, last: int, concurrency: int) -> dict[str, Any]:
    """Creates Jobs first..last-1 through the API server from `concurrency` threads, with
    progress; retries a failed POST (a 409 on a retry means the first try got through)."""
    body_of = job_body_factory(h)
    path = jobs_path(h.namespace)
    indexes = itertools.count(first)
    done = [0]
    errors: list[str] = []
    retries = [0]

    def work() -> None:
        while (i := next(indexes)) < last:
            body = body_of(i)
            for attempt in range(5):
                try:
                    h.kube.send("POST", path, body=body, expect=(201, 409) if attempt else (201,))
                    break
                except (ApiError, urllib3.exceptions.HTTPError, OSError) as e:
                    if attempt == 4:
                        errors.append(f"{job_name(i)}: {type(e).__name__}: {e}")
                    else:
                        retries[0] += 1
                        time.sleep(0.5 * (attempt + 1))
            done[0] += 1

    total = last - first
    say(
        f"creating {total:,} suspended Jobs ({job_name(first)}..{job_name(last - 1)}), "
        f"{concurrency} at a time"
    )
    threads = [threading.Thread(target=work, name=f"fill-{n}", daemon=True) for n in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    window = [(started, 0)]
    while any(t.is_alive() for t in threads):
        threads[0].join(0.5)
        now = time.monotonic()
        if now - window[-1][0] >= 5:
            window.append((now, done[0]))
            window = window[-6:]  # the last ~30 s
            recent = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
            say("  " + progress_line(done[0], total, now - started, recent))
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} Job creations failed, e.g. {errors[0]}")
    say(
        f"  created {total:,} Jobs in {format_duration(seconds)} "
        f"({total / seconds:.0f}/s, {retries[0]} retries)"
    )
    return {
        "created": total,
        "seconds": round(seconds, 1),
        "rate_per_s": round(total / seconds, 1),
        "concurrency": concurrency,
        "retries": retries[0],
    }


def wait_for_job_controller(service: ScaleService, expected: float, *, timeout: float) -> float:
    """Waits until the service has seen `expected` Job updates (one Suspended condition per new
    Job), with progress; the seconds it took. Gives up quietly after `timeout`."""
    started = time.monotonic()
    last = (started, service.job_updates())
    while (seen := service.job_updates()) < expected:
        now = time.monotonic()
        if now - started > timeout:
            say(
                f"  gave up waiting for the Job controller after {timeout:.0f}s ({seen:,.0f}/{expected:,.0f})"
            )
            break
        if now - last[0] >= 10:
            rate = (seen - last[1]) / (now - last[0])
            pace = f", {rate:.0f}/s, ETA {format_duration((expected - seen) / rate)}" if rate > 0 else ""
            say(f"  the Job controller has marked {seen:,.0f}/{expected:,.0f} Jobs suspended{pace}")
            last = (now, seen)
        time.sleep(1)
    return round(time.monotonic() - started, 1)


def fill_level(
    h: Harness, service: ScaleService, *, first: int, last: int, plan: ScalePlan
) -> dict[str, Any]:
    """Fills up to `last` Jobs, waits for the service's cache and the cluster, and says what it cost."""
    meter = CpuMeter(h.cpu.cluster_state, dict(h.cpu.pids))
    meter.start()
    modified = service.job_updates()
    result = fill(h, first=first, last=last, concurrency=plan.fill_concurrency)
    result["cache_lag_seconds"] = wait_for_cache(service, last, timeout=600)
    # The Job controller writes the Suspended condition to every new Job, and lags far behind
    # a fast fill (its API rate limit, two cores): the reads wait until it is done.
    result["job_controller_lag_seconds"] = wait_for_job_controller(
        service, modified + last - first, timeout=1800
    )
    result["settle_seconds"] = wait_for_cluster_quiet(h, timeout=60)
    cpu = meter.stop()
    result["cpu_seconds"] = cpu
    result["cpu_s_per_1000_jobs"] = {k: round(v * 1000 / (last - first), 2) for k, v in cpu.items()}
    return result


# -- measuring -------------------------------------------------------------------------------------


def measure(
    h: Harness, plan: ScalePlan, method: str, requests: list[Obj], *, count: int, c: int, notes: list[str]
) -> dict[str, Any]:
    """One ghz run on a machine as quiet as it gets within settle_seconds, with the CPU each
    process spent on it. On this shared machine a run's calls have been refused mid-run while the
    service process lived on: then the run is repeated (twice at most), after restarting the
    service if it no longer answers on its port, and the failure is noted in the results."""
    for attempt in range(3):
        try:
            return measure_once(h, plan, method, requests, count=count, c=c)
        except RuntimeError as e:
            if attempt == 2:
                raise
            service = current(h)
            alive = service.proc is not None and service.proc.poll() is None
            listening = alive and port_open(service.port)
            note = (
                f"a {method} run at c={c} failed ({e}); the service process was "
                f"{'alive' if alive else 'gone'}, its port {'accepted' if listening else 'refused'} "
                "connections; "
            )
            if listening:
                note += "the run was repeated"
            else:
                service.stop()
                start_service(h, f"service-after-failure-{len(notes) + 1}", timeout=900)
                note += "the service was restarted and the run repeated"
            say(f"WARNING: {note}")
            notes.append(note)
    raise AssertionError("unreachable")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def measure_once(
    h: Harness, plan: ScalePlan, method: str, requests: list[Obj], *, count: int, c: int
) -> dict[str, Any]:
    assert h.service is not None
    run_ghz(h.ghz, h.service.address, method, requests=requests, count=plan.warmup, concurrency=c)
    wait_for_cluster_quiet(h, timeout=plan.settle_seconds)
    h.cpu.start()
    result, ghz_summary = run_ghz(
        h.ghz, h.service.address, method, requests=requests, count=count, concurrency=c
    )
    cpu = h.cpu.stop()
    summary = result.summary()
    if result.errors:
        raise RuntimeError(
            f"{method}: {result.errors} of {count} calls failed, e.g. {result.error_samples[0]}"
        )
    return {
        "service": summary,
        "ghz": ghz_summary,
        "cpu_seconds": cpu,
        "service_cpu_ms_per_call": round(cpu.get("service", math.nan) * 1000 / count, 3),
    }


def idle_cores(h: Harness, *, seconds: float) -> float:
    meter = CpuMeter(h.cpu.cluster_state, {"service": current(h).pid})
    meter.start()
    time.sleep(seconds)
    return round(meter.stop().get("service", math.nan) / seconds, 3)


def measure_level(
    h: Harness, plan: ScalePlan, level: int, names: list[str], notes: list[str]
) -> dict[str, Any]:
    ids = list(names)
    random.Random(level).shuffle(ids)
    status_requests = [{"job_id": i, "namespace": h.namespace} for i in ids[: plan.status_count]]
    results: dict[str, Any] = {"get_job_status": {}, "list_jobs": {}}
    # What the service spends with no call at all (the leader's loops scan every cached job):
    # part of every per-call CPU figure below, and growing with the jobs cached.
    results["service_idle_cores"] = idle_cores(h, seconds=5.0)
    say(f"  the service uses {results['service_idle_cores']} cores with no call in flight")
    for c in plan.concurrencies:
        entry = measure(h, plan, "GetJobStatus", status_requests, count=plan.status_count, c=c, notes=notes)
        entry["distinct_ids"] = len(status_requests)
        results["get_job_status"][f"c{c}"] = entry
        s = entry["service"]
        say(
            f"  GetJobStatus, {level:,} jobs, c={c}: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
            f"{s['rps']}/s, service CPU {entry['service_cpu_ms_per_call']} ms/call"
        )
    group = f"{GROUP_LABEL[0]}={GROUP_LABEL[1]}"
    for variant, selector in (("all", ""), ("filtered", group)):
        request: Obj = {"namespace": h.namespace, "page_size": 100}
        if selector:
            request["label_selector"] = selector
        for c in plan.concurrencies:
            entry = measure(h, plan, "ListJobs", [request], count=plan.list_count, c=c, notes=notes)
            entry["label_selector"] = selector
            results["list_jobs"][f"{variant} c{c}"] = entry
            s = entry["service"]
            say(
                f"  ListJobs page of 100, {selector or 'no filter'}, {level:,} jobs, c={c}: "
                f"p50 {s['p50_ms']} ms, "
                f"p99 {s['p99_ms']} ms, service CPU {entry['service_cpu_ms_per_call']} ms/call"
            )
    return results


def measure_start(h: Harness, state_dir: Path, jobs: int, *, timeout: float = 600) -> dict[str, Any]:
    """Restarts the service with every Job present: how long until it serves them from its cache.
    A start that does not get there within `timeout` is recorded with what its log says."""
    assert h.service is not None
    say(f"restarting the service with {jobs:,} Jobs present: how long until it has cached them all")
    h.service.stop()
    wait_for_cluster_quiet(h, timeout=30)
    method = (
        "from spawning the process to SERVING on gRPC health and WatchJobs accepted for the "
        "namespace (the cache lists before it serves); then the count from its metrics"
    )
    started = time.monotonic()
    service = ScaleService(
        kubeconfig=h.kubeconfig, namespace=h.namespace, log_path=h.logs_dir / "service-restarted.log"
    )
    h.service = service
    peak: dict[str, float] = {}
    done = threading.Event()

    def report() -> None:
        while not done.wait(15):
            if service.proc is None or service.proc.poll() is not None:
                continue
            with contextlib.suppress(OSError):
                peak.update(read_rss_mb(service.pid))
            failures = list_failures(service.log_path)
            say(
                f"  starting for {time.monotonic() - started:.0f}s: RSS {peak.get('rss_mb', 0):.0f} MB, "
                f"{failures} failed list attempts so far"
            )

    threading.Thread(target=report, name="start-progress", daemon=True).start()
    try:
        service.start(timeout=timeout)
    except TimeoutError as e:
        failures = list_failures(service.log_path)
        memory = cluster_memory(state_dir, service)
        say(f"  the service did not serve its cache within {timeout:.0f}s ({failures} failed list attempts)")
        return {
            "ready_seconds": None,
            "error": f"{e}; its informer's list of the Jobs failed {failures} times "
            "(kube/informer.py lists every page within one 60 s deadline, then starts over)",
            "list_failures": failures,
            "memory": memory,
            "method": method,
        }
    else:
        # SERVING and WatchJobs not refused in time is not enough: a service too busy listing
        # to answer within the probe's 0.3 s passes that check. The count is the proof.
        try:
            wait_for_cache(service, jobs, timeout=max(1.0, timeout - (time.monotonic() - started)))
        except TimeoutError as e:
            return {
                "ready_seconds": None,
                "error": f"{e}; its informer's list of the Jobs failed {list_failures(service.log_path)} "
                "times (kube/informer.py lists every page within one 60 s deadline, then starts over)",
                "list_failures": list_failures(service.log_path),
                "memory": cluster_memory(state_dir, service),
                "method": method,
            }
    finally:
        done.set()
    h.cpu.pids["service"] = service.pid
    ready = round(time.monotonic() - started, 2)
    held = service.cached_jobs()
    memory = cluster_memory(state_dir, service)
    say(
        f"  serving from its cache after {ready} s, holding {held:,} jobs; "
        f"RSS {memory['service']['rss_mb']:.0f} MB"
    )
    return {
        "ready_seconds": ready,
        "jobs_cached": held,
        "list_failures": list_failures(service.log_path),
        "memory": memory,
        "method": method,
    }


def list_failures(log_path: Path) -> int:
    """How often the service's informer failed to list the Jobs, by its log."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(
        1
        for line in text.splitlines()
        if '"resource": "jobs"' in line
        and ("watch broken" in line or "informer crashed" in line)
        and "list_jobs" in line
    )


def measure_resync(
    h: Harness, service: ScaleService, state_dir: Path, *, timeout: float = 600
) -> dict[str, Any]:
    """Restarts kube-apiserver and follows the service back: its cache, a Job created right
    after the API server returned, and whether it resumed its watch or relisted."""
    before = service.metrics()
    log_offset = service.log_path.stat().st_size
    probe_selector = f"{PROBE_LABEL[0]}={PROBE_LABEL[1]}"
    # A Job the cache holds before the restart: its INITIAL event is the positive proof that the
    # cache serves again (a WatchJobs call that merely times out proves nothing).
    marker_selector = f"{PROBE_LABEL[0]}=marker"
    h.kube.send(
        "POST",
        jobs_path(h.namespace),
        body=h.render_raw_job("resync-marker", extra_labels={PROBE_LABEL[0]: "marker"}),
        expect=(201,),
    )
    h.kube.wait_for(
        "the marker Job in the service's cache",
        lambda: service.probe_cache(marker_selector) == "has",
        timeout=120,
    )
    probe = h.render_raw_job("resync-probe", extra_labels={PROBE_LABEL[0]: PROBE_LABEL[1]})
    assert service.stub is not None
    assert service.channel is not None
    health: Any = health_pb2_grpc.HealthStub(service.channel)
    say(
        "restarting kube-apiserver (hack/devcluster.py restart kube-apiserver; "
        "it also restarts the controllers)"
    )
    timeline = Timeline(time.monotonic())
    restart_log = h.logs_dir / "restart-kube-apiserver.log"
    with open(restart_log, "ab") as out:
        # A session of its own: a Ctrl-C of the run must not leave the API server half restarted.
        restart = subprocess.Popen(
            [sys.executable, str(ROOT / "hack" / "devcluster.py"), "restart", "kube-apiserver"],
            env={**os.environ, "JOBSCHEDULER_DEVCLUSTER_DIR": str(state_dir)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while time.monotonic() - timeline.started < timeout:
            done = restart.poll() is not None and timeline.mark("restart command done")
            if done and restart.returncode != 0:
                raise RuntimeError(
                    f"hack/devcluster.py restart failed ({restart.returncode}); see {restart_log}"
                )
            up = api_ready(h.kube)
            if not up:
                timeline.mark("API server down")
            elif timeline.has("API server down") and timeline.mark("API server ready"):
                say(f"  API server ready after {timeline.moments['API server ready']} s")
            if timeline.has("API server ready") and not timeline.has("probe Job created"):
                try:
                    h.kube.send("POST", jobs_path(h.namespace), body=probe, expect=(201,))
                    timeline.mark("probe Job created")
                except (ApiError, urllib3.exceptions.HTTPError, OSError):
                    pass
            try:
                serving = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                if serving != health_pb2.HealthCheckResponse.SERVING:
                    timeline.mark("service health NOT_SERVING")
                elif timeline.has("service health NOT_SERVING"):
                    timeline.mark("service health SERVING again")
            except grpc.RpcError:
                timeline.mark("service health unanswered")
            state = service.probe_cache(marker_selector)
            if state == "down":
                timeline.mark("service cache not serving")
            elif (
                state == "has"
                and timeline.has("service cache not serving")
                and timeline.mark("service cache serving again")
            ):
                at = timeline.moments["service cache serving again"]
                say(f"  the service's cache serves again after {at} s")
            if (
                timeline.has("probe Job created")
                and service.probe_cache(probe_selector) == "has"
                and timeline.mark("probe Job in the service's cache")
            ):
                at = timeline.moments["probe Job in the service's cache"]
                say(f"  the probe Job reached the service's cache after {at} s")
            if timeline.has("probe Job created") and not timeline.has("probe Job answered by GetJobStatus"):
                try:
                    service.stub.GetJobStatus(
                        pb.GetJobStatusRequest(job_id="resync-probe", namespace=h.namespace), timeout=2
                    )
                    timeline.mark("probe Job answered by GetJobStatus")
                except grpc.RpcError:
                    pass
            if all(
                timeline.has(m)
                for m in (
                    "restart command done",
                    "probe Job in the service's cache",
                    "probe Job answered by GetJobStatus",
                )
            ) and (
                timeline.has("service cache serving again") or not timeline.has("service cache not serving")
            ):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"the service did not recover within {timeout:.0f}s: {timeline.moments}")
    finally:
        if restart.poll() is None:
            say("  waiting for the restart command to finish (the cluster must not be left half restarted)")
            restart.wait(300)
    after = service.metrics()
    restarts = {
        reason: metric_value(after, "jobscheduler_watch_restarts_total", resource="jobs", reason=reason)
        - metric_value(before, "jobscheduler_watch_restarts_total", resource="jobs", reason=reason)
        for reason in ("expired", "gone", "error")
    }
    with open(service.log_path, "rb") as f:
        f.seek(log_offset)
        logged = [
            line.strip()[:300]
            for line in f.read().decode(errors="replace").splitlines()
            if "relisting" in line or "watch broken" in line or "kubernetes api" in line
        ]
    serves_again = timeline.moments.get("service cache serving again")
    return {
        "timeline": dict(sorted(timeline.moments.items(), key=lambda kv: kv[1])),
        "cache_serves_again_s": serves_again,
        "cache_serves_after_api_back_s": timeline.since("service cache serving again", "API server ready"),
        "probe_answered_after_created_s": timeline.since(
            "probe Job answered by GetJobStatus", "probe Job created"
        ),
        "probe_in_cache_after_created_s": timeline.since(
            "probe Job in the service's cache", "probe Job created"
        ),
        "relisted": restarts["gone"] > 0,
        "watch_restarts": restarts,
        "log_lines": logged[:20],
        "jobs_cached_after": service.cached_jobs(),
        "memory": cluster_memory(state_dir, service),
        "method": (
            "One loop, about every 0.1 s plus the calls' own time (a WatchJobs probe waits up to 0.3 s): "
            "kube-apiserver /readyz; the service's gRPC health; WatchJobs with the label of a marker Job "
            "the cache held before the restart (refused while the cache does not serve the namespace, "
            "the marker's INITIAL event once it serves again; a call that only times out counts as "
            "neither) and with the probe Job's label (its INITIAL event once the cache holds it); "
            "GetJobStatus of the probe Job (which falls back to an API read when the "
            "cache misses, so it answers as soon as the API server does). The probe Job is POSTed as "
            "soon as /readyz answers again. 'relisted' is the service's jobscheduler_watch_restarts_total"
            '{resource="jobs",reason="gone"} counter going up. hack/devcluster.py restart also restarts '
            "kube-controller-manager, kube-scheduler and kwok and waits for them: the restart command "
            "ends after the API server is back."
        ),
    }


# -- the run ---------------------------------------------------------------------------------------


def delete_namespace(kube: RawKube, namespace: str, *, timeout: float = 1800) -> str:
    """Deletes the namespace and follows its Jobs going, with rate and ETA; what happened."""
    say(
        f"deleting namespace {namespace} and its Jobs "
        "(--keep-namespace skips this when the cluster goes down next)"
    )
    started = time.monotonic()
    requested = False
    last = (started, -1)
    while time.monotonic() - started < timeout:
        try:
            if not requested:
                kube.delete_namespace(namespace)
                requested = True
            if not kube.exists(f"/api/v1/namespaces/{namespace}"):
                seconds = time.monotonic() - started
                say(f"namespace {namespace} deleted in {format_duration(seconds)}")
                return f"namespace {namespace} deleted in {seconds:.0f} s"
            if time.monotonic() - last[0] >= 10:
                left = count_jobs(kube, namespace)
                now = time.monotonic()
                rate = (last[1] - left) / (now - last[0]) if last[1] >= 0 else 0.0
                pace = f", {rate:.0f}/s, ETA {format_duration(left / rate)}" if rate > 0 else ""
                say(f"  namespace terminating: {left:,} Jobs left{pace}")
                last = (now, left)
        except (ApiError, urllib3.exceptions.HTTPError, OSError) as e:
            say(f"  the API server did not answer ({type(e).__name__}); trying again")
            time.sleep(2)
        time.sleep(1)
    note = (
        f"namespace {namespace} still terminating after {timeout:.0f} s; "
        "the cluster finishes it (or `down` it)"
    )
    say(note)
    return note


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    state = os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR")
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--jobs", type=int, default=ScalePlan.jobs, help="Jobs at the large level (default 100000)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(state) / "kubeconfig" if state else None,
        help="the kubeconfig of a dev cluster started for this run (default: "
        "$JOBSCHEDULER_DEVCLUSTER_DIR/kubeconfig); its directory must be that cluster's state directory",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="output directory")
    parser.add_argument(
        "--keep-namespace",
        action="store_true",
        help="do not delete the namespace at the end (the cluster is torn down next anyway)",
    )
    args = parser.parse_args(argv)
    if args.kubeconfig is None:
        parser.error(f"no cluster given: {START_COMMAND}, then --kubeconfig /work/scale-cluster/kubeconfig")
    if args.jobs < ScalePlan.small:
        parser.error(f"--jobs must be at least {ScalePlan.small}")
    return args


def stop_on_sigterm(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def machine_busy(sampler: BusySampler, wall: float, load_start: str) -> dict[str, Any]:
    sampler.stopping.set()
    sampler.join(10)
    return {
        "other_cpu_seconds": round(sampler.other, 1),
        "other_cores": round(sampler.other / wall, 2) if wall else None,
        "wall_seconds": round(wall, 1),
        "cpu_seconds_by_process": {k: round(v, 1) for k, v in sampler.ours.items()},
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "note": "'other' is machine CPU used by no process of this run or its cluster (summed over "
        "2-second windows): the other engineers' tests and runs on the same 2 cores",
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_record(results: Path, stem: str, record: dict[str, Any]) -> Path:
    record["rows"] = build_rows(record)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{stem}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    (results / f"{stem}.md").write_text(render_markdown(record))
    return path


def run_phases(h: Harness, plan: ScalePlan, state_dir: Path, record: dict[str, Any]) -> None:
    levels: dict[str, Any] = record["levels"]
    service = start_service(h, "service")
    record["service"] = {"command": service.command, "env": service.env}
    record["memory_at_start"] = cluster_memory(state_dir, service)
    h.load_template()
    record["job_template"] = h.template
    names: list[str] = []
    for level in (plan.small, plan.jobs):
        say(f"== {level:,} jobs ==")
        data: dict[str, Any] = {}
        levels[str(level)] = data
        data["fill"] = fill_level(h, current(h), first=len(names), last=level, plan=plan)
        names += [job_name(i) for i in range(len(names), level)]
        data["memory"] = cluster_memory(state_dir, current(h))
        say(
            "  RSS MB: "
            + ", ".join(
                f"{who} {m['rss_mb']:.0f} (peak {m['peak_rss_mb']:.0f})" for who, m in data["memory"].items()
            )
        )
        data.update(measure_level(h, plan, level, names, record["disturbances"]))
    say("== the service restarted with every Job present ==")
    record["restart"] = measure_start(h, state_dir, plan.jobs)
    if record["restart"]["ready_seconds"] is None:
        record["resync"] = {"error": "not measured: the service could not cache the Jobs at start"}
        return
    say("== kube-apiserver restarted ==")
    try:
        record["resync"] = measure_resync(h, current(h), state_dir)
    except Exception as e:
        record["resync"] = {"error": f"{type(e).__name__}: {e}"}
        raise
    resync = record["resync"]
    say(
        f"  cache serving again {resync['cache_serves_again_s']} s after the restart command; "
        f"relisted: {resync['relisted']}; RSS {resync['memory']['service']['rss_mb']:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = ScalePlan(jobs=args.jobs)
    kubeconfig: Path = args.kubeconfig.resolve()
    state_dir = kubeconfig.parent
    if not kubeconfig.exists():
        raise SystemExit(f"bench.scale: {kubeconfig} not found; start the cluster: {START_COMMAND}")
    kube = RawKube(kubeconfig)
    namespaces = [n["metadata"]["name"] for n in kube.get_json("/api/v1/namespaces")["items"]]
    reason = refusal(state_dir, namespaces)
    if reason:
        raise SystemExit(f"bench.scale: refusing to run: {reason}")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    namespace = f"{NAMESPACE_PREFIX}{stamp.lower()}"
    git = describe_git(ROOT)
    stem = results_stem(started, git["commit"])
    logs_dir = args.results / f"{stem}-logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    cpu = CpuMeter(state_dir, {"bench": os.getpid()})
    from bench.run import find_ghz  # the one place that knows where the tools are cached

    h = Harness(ROOT, kubeconfig, namespace, find_ghz(), kube, cpu, logs_dir)
    record: dict[str, Any] = {
        "kind": "scale",
        "started_at": started.isoformat(timespec="seconds"),
        "namespace": namespace,
        "cluster": str(state_dir),
        "git": git,
        "machine": describe_machine(),
        "versions": describe_versions() | {"kube_apiserver": kube.get_json("/version").get("gitVersion", "")},
        "plan": asdict(plan),
        "cluster_note": "every Job is created suspended (spec.suspend=true): no pods run",
        "percentiles": "nearest rank over every successful call's latency (bench/load.py), "
        "from ghz's per-call details",
        "levels": {},
        "disturbances": [],
        "logs": str(logs_dir),
    }
    say(f"scale point: {plan.jobs:,} Jobs in namespace {namespace} on the cluster in {state_dir}")
    sampler = BusySampler(state_dir, cpu.pids)  # the same dict: it follows the service's restarts
    sampler.start()
    load_start = loadavg()
    wall_started = time.monotonic()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    failure: BaseException | None = None
    try:
        kube.create_namespace(
            namespace,
            labels={"pod-security.kubernetes.io/enforce": "restricted", "jobscheduler.io/bench": "scale"},
        )
        run_phases(h, plan, state_dir, record)
    except BaseException as e:  # still write what was measured, and clean up
        failure = e
        traceback.print_exc()
        record["error"] = f"{type(e).__name__}: {e}"
        say(f"the run stopped: {record['error']}")
    finally:
        if h.service is not None:
            h.service.stop()
        record["machine_busy"] = machine_busy(sampler, time.monotonic() - wall_started, load_start)
        finished = datetime.now(UTC)
        record["finished_at"] = finished.isoformat(timespec="seconds")
        record["duration_seconds"] = round((finished - started).total_seconds(), 1)
        path = write_record(args.results, stem, record)
        say(f"results: {path} and {path.with_suffix('.md')}")
        if args.keep_namespace:
            record["cleanup"] = f"namespace {namespace} kept (--keep-namespace)"
        else:
            record["cleanup"] = delete_namespace(kube, namespace)
        write_record(args.results, stem, record)
        kube.close()
    print(render_markdown(record))
    if failure is not None:
        return 130 if isinstance(failure, KeyboardInterrupt) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
