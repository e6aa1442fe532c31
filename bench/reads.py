"""Measurements 2 and 3: GetJobStatus and ListJobs with many managed Jobs present, against direct API reads.

The namespace is filled with suspended copies of the service's own Job (its labels and
annotations, unique names; every tenth also labelled bench-group=a) by the raw client, and
the reads start only once ListJobs, served from the service's watch cache, counts them all.

- GetJobStatus over every job id, shuffled (ghz cycles through them), against what a client
  without the service must do for the same answer: GET the Job, then list its pods by
  `batch.kubernetes.io/controller-uid=<uid>`; the same ids in the same order, same concurrency.
- ListJobs, first page of 100, without a filter and with `bench-group=a` (10% of the jobs),
  against GET .../jobs?labelSelector=<managed-by>[,bench-group=a]&limit=100.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from bench.harness import MANAGED_SELECTOR, Harness
from bench.kube import jobs_path, pods_path, with_query
from bench.load import drive, say
from jobscheduler.api import scheduler_pb2 as pb

GROUP_LABEL = ("bench-group", "a")
GROUP_EVERY = 10  # one job in ten carries the group label


def fill_jobs(h: Harness, *, first: int, last: int, concurrency: int) -> list[str]:
    """Creates jobs bench-<first> … bench-<last - 1> through the raw API; returns their names."""
    names = [f"bench-{i:05d}" for i in range(first, last)]
    group = {GROUP_LABEL[0]: GROUP_LABEL[1]}
    bodies = [
        h.render_raw_job(name, extra_labels=group if i % GROUP_EVERY == 0 else None)
        for i, name in zip(range(first, last), names, strict=True)
    ]
    path = jobs_path(h.namespace)
    say(
        f"creating {len(names)} suspended jobs (bench-{first:05d}..bench-{last - 1:05d}), "
        f"{concurrency} at a time"
    )
    started = time.perf_counter()
    result = drive(
        lambda i: h.kube.send("POST", path, body=bodies[i], expect=(201,)),
        count=len(bodies),
        concurrency=concurrency,
        progress="jobs created",
    )
    if result.errors:
        raise RuntimeError(f"{result.errors} job creations failed, e.g. {result.error_samples[0]}")
    say(f"  created {len(names)} jobs in {time.perf_counter() - started:.1f}s")
    return names


def wait_for_cache(h: Harness, expected: int, *, timeout: float = 300) -> float:
    """Waits until the service's cache holds `expected` jobs; returns the seconds it took."""
    assert h.service is not None
    started = time.monotonic()
    last_report = 0.0
    for seen in h.service.wait_for_jobs(expected, timeout=timeout):
        if time.monotonic() - last_report >= 2 or seen >= expected:
            last_report = time.monotonic()
            say(f"  service cache holds {seen}/{expected} jobs")
    return round(time.monotonic() - started, 2)


def compare(service: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """How many times faster the service answered than the direct reads, at p50 and p99."""
    return {
        "service": service,
        "raw": raw,
        "speedup_p50": round(raw["p50_ms"] / service["p50_ms"], 2),
        "speedup_p99": round(raw["p99_ms"] / service["p99_ms"], 2),
    }


def measure_status(
    h: Harness, names: list[str], *, count: int, concurrencies: tuple[int, ...], warmup: int
) -> dict[str, Any]:
    """GetJobStatus against GET job + list its pods, at each concurrency; keyed "c<N>"."""
    ids = list(names)
    random.Random(len(ids)).shuffle(ids)
    requests = [{"job_id": i, "namespace": h.namespace} for i in ids]
    job_paths = [f"{jobs_path(h.namespace)}/{i}" for i in ids]
    pods = pods_path(h.namespace)

    def read_direct(i: int) -> None:
        job = json.loads(h.kube.send("GET", job_paths[i % len(job_paths)]))
        selector = f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"
        h.kube.send("GET", with_query(pods, labelSelector=selector))

    results: dict[str, Any] = {}
    for c in concurrencies:
        say(f"GetJobStatus with {len(names):,} jobs: {count} calls per side over {len(ids)} ids, c={c}")
        h.call_service("GetJobStatus", requests, count=warmup, concurrency=c)
        service, _ = h.measure_service("GetJobStatus", requests, count=count, concurrency=c)
        drive(read_direct, count=min(warmup, count), concurrency=c)
        raw, _ = h.measure_raw(read_direct, count=count, concurrency=c)
        result = compare(service.summary(), raw.summary())
        result["distinct_ids"] = len(ids)
        results[f"c{c}"] = result
        report_pair("GetJobStatus", result)
    return results


def measure_list(
    h: Harness, *, total: int, count: int, concurrencies: tuple[int, ...], warmup: int
) -> dict[str, Any]:
    """ListJobs' first page against a direct list, unfiltered and filtered, at each concurrency;
    keyed "<all|filtered> c<N>"."""
    results: dict[str, Any] = {}
    group = f"{GROUP_LABEL[0]}={GROUP_LABEL[1]}"
    for variant, selector in (("all", ""), ("filtered", group)):
        request: dict[str, Any] = {"namespace": h.namespace, "page_size": 100}
        if selector:
            request["label_selector"] = selector
        path = with_query(
            jobs_path(h.namespace),
            labelSelector=",".join(s for s in (MANAGED_SELECTOR, selector) if s),
            limit="100",
        )
        page = h.stub.ListJobs(pb.ListJobsRequest(**request), timeout=30)

        def list_direct(_i: int, path: str = path) -> None:
            h.kube.send("GET", path)

        for c in concurrencies:
            say(
                f"ListJobs with {total:,} jobs, {selector or 'no filter'}: {count} calls per side, c={c}; "
                f"the first page holds {len(page.jobs)} jobs"
            )
            h.call_service("ListJobs", [request], count=warmup, concurrency=c)
            service, _ = h.measure_service("ListJobs", [request], count=count, concurrency=c)
            drive(list_direct, count=min(warmup, count), concurrency=c)
            raw, _ = h.measure_raw(list_direct, count=count, concurrency=c)
            result = compare(service.summary(), raw.summary())
            result["variant"] = variant
            result["label_selector"] = selector
            result["first_page_jobs"] = len(page.jobs)
            results[f"{variant} c{c}"] = result
            report_pair("ListJobs", result)
    return results


def report_pair(what: str, result: dict[str, Any]) -> None:
    service, raw = result["service"], result["raw"]
    say(
        f"  {what} p50/p99: service {service['p50_ms']}/{service['p99_ms']} ms, "
        f"direct {raw['p50_ms']}/{raw['p99_ms']} ms ({result['speedup_p50']}x / {result['speedup_p99']}x)"
    )
