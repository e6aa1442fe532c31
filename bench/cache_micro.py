"""The watch cache alone, without a cluster: memory per cached job and the cost of the reads
the service makes of it (ListJobs pages, the leader's per-second reconcilers).

Feeds JobCache the way its informer does (watch ADDED events, or one relist through
replace()), each Job a fresh json.loads of a suspended Job as the API server returns it (the
bench's own: a timer, four labels, two annotations, a Suspended condition); one job in ten
also carries bench-group=a, as in bench/reads.py. Nothing here is a target by itself: it is
the same command run before and after a change to the cache, on the same machine.

    .venv/bin/python -m bench.cache_micro --jobs 10000
    .venv/bin/python -m bench.cache_micro --jobs 100000 --memory-only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from jobscheduler.app.service import JobQuery, JobService
from jobscheduler.control.pending import PendingTimeouts
from jobscheduler.control.release import DependencyReleaser
from jobscheduler.domain.config import Settings
from jobscheduler.domain.models import JobState
from jobscheduler.domain.registry import Registry
from jobscheduler.kube.cache import JobCache
from jobscheduler.kube.gateway import KubeGateway

NAMESPACE = "bench-micro"
GROUP_EVERY = 10
SET_SELECTOR = "bench-group in (a,b),jobscheduler.io/caller"  # set-based forms: in, exists
START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)

SAMPLE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "annotations": {
            "jobscheduler.io/parameters": json.dumps(
                {
                    "control_plane_endpoint": "http://127.0.0.1:9/unused",
                    "duration_seconds": 3600,
                    "timer_name": "bench",
                }
            ),
            "jobscheduler.io/request-hash": "88700cce09b28be6023ae64c06daa408",
        },
        "creationTimestamp": "",
        "generation": 1,
        "labels": {
            "app.kubernetes.io/managed-by": "jobscheduler",
            "jobscheduler.io/caller": "127.0.0.1",
            "jobscheduler.io/job-type": "timer",
            "jobscheduler.io/name": "bench",
        },
        "name": "",
        "namespace": NAMESPACE,
        "resourceVersion": "",
        "uid": "",
    },
    "spec": {
        "backoffLimit": 0,
        "completionMode": "NonIndexed",
        "completions": 1,
        "manualSelector": False,
        "parallelism": 1,
        "podReplacementPolicy": "TerminatingOrFailed",
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": ""}},
        "suspend": True,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "jobscheduler", "job-name": ""}},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "timer-service:latest",
                        "args": ["--duration", "3600"],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
                "restartPolicy": "Never",
            },
        },
    },
    "status": {
        "conditions": [
            {
                "lastProbeTime": "",
                "lastTransitionTime": "",
                "message": "Job suspended",
                "reason": "JobSuspended",
                "status": "True",
                "type": "Suspended",
            }
        ],
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
}


def job_text(i: int) -> str:
    """Job i as the API server would send it: unique name, uid and version; a creation time that
    several jobs share (the API's one-second resolution), so ties are broken by name."""
    job = json.loads(json.dumps(SAMPLE))
    meta = job["metadata"]
    created = (START + timedelta(seconds=i // 4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta.update(
        name=f"job-{i:07d}x", uid=f"{i:08x}-dfd9-40d9-ad65-8c59ff8a7fa9", resourceVersion=str(1000 + i)
    )
    meta["creationTimestamp"] = created
    if i % GROUP_EVERY == 0:
        meta["labels"]["bench-group"] = "a"
    for condition in job["status"]["conditions"]:
        condition["lastProbeTime"] = condition["lastTransitionTime"] = created
    job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] = meta["uid"]
    job["spec"]["template"]["metadata"]["labels"]["job-name"] = meta["name"]
    return json.dumps(job)


def events(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield json.loads(job_text(i))  # a fresh object per job, as the informer parses it


class CoveringCache(JobCache):
    """A cache whose informers are never started, serving its namespace as if synced."""

    def covers(self, namespace: str) -> bool:
        return namespace == NAMESPACE


def new_cache() -> CoveringCache:
    return CoveringCache(cast(KubeGateway, None), [NAMESPACE])


def fill(cache: JobCache, count: int, how: str) -> None:
    if how == "relist":  # one list of every Job, as the informer relists today
        cache.replace("jobs", NAMESPACE, list(events(count)))
    elif how == "relist-streamed":  # the Jobs as a paged list yields them
        cache.replace("jobs", NAMESPACE, events(count))
    else:
        for job in events(count):
            cache.apply("jobs", "ADDED", job)


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def timed(call: Callable[[], object], *, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
    }


def measure_memory(count: int, how: str) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    cache = new_cache()
    fill(cache, count, how)
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert cache.counts()[0]["jobs"] == count
    return {
        "fill": how,
        "bytes_per_job": round((after - before) / count),
        "peak_bytes_per_job": round((peak - before) / count),
    }


def measure_reads(count: int, runs: int) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_kib()
    cache = new_cache()
    started = time.process_time()  # CPU seconds: on a shared machine, steadier than wall time
    fill(cache, count, "watch")
    fill_seconds = time.process_time() - started
    gc.collect()
    rss_after = rss_kib()
    service = JobService(cast(KubeGateway, None), Registry([]), Settings(namespace=NAMESPACE), cache=cache)

    def page(**query: Any) -> Callable[[], object]:
        return lambda: service.list_jobs(JobQuery(namespace=NAMESPACE, page_size=100, **query))

    fifth = JobQuery(namespace=NAMESPACE, page_size=100, label_selector="bench-group=a")
    for _ in range(4):
        fifth = JobQuery(
            namespace=NAMESPACE,
            page_size=100,
            label_selector="bench-group=a",
            page_token=service.list_jobs(fifth).next_page_token,
        )
    first = service.list_jobs(JobQuery(namespace=NAMESPACE, page_size=100, label_selector="bench-group=a"))
    assert len(first.jobs) == 100, "the filtered page should be full"
    assert first.next_page_token, "the filter should match more than a page"
    now = datetime.now(UTC)
    pending, releaser = PendingTimeouts(service, now=lambda: now), DependencyReleaser(service)
    relisted = list(events(count))
    started = time.process_time()
    cache.replace("jobs", NAMESPACE, relisted)
    relist_seconds = time.process_time() - started
    return {
        "fill_watch_cpu_s": round(fill_seconds, 2),  # json.loads of each event included
        "relist_same_jobs_cpu_s": round(relist_seconds, 2),
        "rss_delta_bytes_per_job": round((rss_after - rss_before) * 1024 / count),
        "list_all": timed(page(), runs=runs),
        "list_group_a": timed(page(label_selector="bench-group=a"), runs=runs),
        "list_group_a_page5": timed(lambda: service.list_jobs(fifth), runs=runs),
        "list_group_a_set": timed(page(label_selector=SET_SELECTOR), runs=runs),
        "list_not_group_a": timed(page(label_selector="bench-group!=a"), runs=runs),
        "list_running": timed(page(states=frozenset({JobState.RUNNING})), runs=runs),
        "list_job_type_timer": timed(page(job_type="timer"), runs=runs),
        "get_status": timed(lambda: service.get_status(NAMESPACE, "job-0000005x"), runs=runs),
        "pending_tick": timed(lambda: pending(NAMESPACE), runs=max(5, runs // 10)),
        "release_tick": timed(lambda: releaser(NAMESPACE), runs=max(5, runs // 10)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200, help="timed calls per read")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"jobs": args.jobs}
    if not args.memory_only:  # first: its RSS figure needs a process that has not grown yet
        result["reads"] = measure_reads(args.jobs, args.runs)
    result["memory_watch"] = measure_memory(args.jobs, "watch")
    if not args.memory_only:
        result["memory_relist"] = measure_memory(args.jobs, "relist")
        result["memory_relist_streamed"] = measure_memory(args.jobs, "relist-streamed")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
