"""Measurements 2 and 3: GetJobStatus and ListJobs with many managed Jobs present, against the
API server's own reads, cold and from its watch cache, and against the service's transport floor.

The namespace is filled with suspended copies of the service's own Job (its labels and
annotations, unique names; every tenth also labelled bench-group=a) by the set-up client,
and the reads start only once ListJobs, served from the service's watch cache, counts them all.

- GetJobStatus over every job id, shuffled (ghz cycles through them), against what a client
  without the service must do for the same answer: GET the Job, then list its pods by
  `batch.kubernetes.io/controller-uid=<uid>`. vegeta sends both kinds of request, interleaved,
  for the same ids in the same order at the same concurrency; a "status read" is one Job GET
  and the pod LIST of the same job, its latency the sum of the two (a client needs the Job's
  uid before it can list the pods), reads per second = pairs / wall time, CPU per read = CPU
  / pairs. Measured cold (consistent reads: the Job GET goes to etcd) and from the API
  server's watch cache (`resourceVersion=0` on both); the watch-cache GET of the Job alone
  is measured too. grpc.health.v1.Health/Check on the same server, with ghz at the same
  concurrency, is the floor of any RPC there.
- ListJobs, first page of 100, without a filter and with `bench-group=a` (10% of the jobs),
  against GET .../jobs?labelSelector=<managed-by>[,bench-group=a]&limit=100, and (filtered
  only) the same with resourceVersion=0, which the API server serves from its watch cache,
  ignoring `limit`: it returns every match (recorded as `items_returned`), and unfiltered
  that would be every job in the namespace.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench.ghz import HEALTH_SERVICE
from bench.harness import MANAGED_SELECTOR, Harness
from bench.kube import jobs_path, pods_path, with_query
from bench.load import drive, measured_side, say
from bench.schedule import RAW_DRIVER, SERVICE_DRIVER, ratio
from bench.vegeta import Hit, Request, interleave, pair_reads, to_load_result
from jobscheduler.api import scheduler_pb2 as pb

GROUP_LABEL = ("bench-group", "a")
GROUP_EVERY = 10  # one job in ten carries the group label
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
# The API server's watch-cache list ignores `limit`: a smaller count keeps its huge pages bounded.
CACHE_LIST_SHARE = 5


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


def read_uids(h: Harness) -> dict[str, str]:
    """Job name -> uid of every managed job in the namespace (set-up, paged, not timed)."""
    uids: dict[str, str] = {}
    token = ""
    while True:
        params = {"labelSelector": MANAGED_SELECTOR, "limit": "1000"} | ({"continue": token} if token else {})
        page = h.kube.get_json(with_query(jobs_path(h.namespace), **params))
        for job in page.get("items") or []:
            uids[job["metadata"]["name"]] = job["metadata"]["uid"]
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return uids


def compare(service: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """How many times faster the service answered than the direct reads, at p50 and p99."""
    return {
        "service": service,
        "raw": raw,
        "speedup_p50": ratio(raw["p50_ms"], service["p50_ms"]),
        "speedup_p99": ratio(raw["p99_ms"], service["p99_ms"]),
    }


def status_requests(
    h: Harness, ids: list[str], uids: dict[str, str], *, count: int, cached: bool
) -> list[Request]:
    """`count` status reads over `ids` (cycled): each the Job's GET and its pods' LIST."""
    rv = {"resourceVersion": "0"} if cached else {}
    pods = pods_path(h.namespace)
    chosen = [ids[i % len(ids)] for i in range(count)]
    gets = [
        Request("GET", with_query(f"{jobs_path(h.namespace)}/{n}", **rv), kind="job", key=n) for n in chosen
    ]
    lists = [
        Request(
            "GET", with_query(pods, labelSelector=f"{CONTROLLER_UID}={uids[n]}", **rv), kind="pods", key=n
        )
        for n in chosen
    ]
    return interleave(gets, lists)


def status_reads(
    h: Harness, requests: list[Request], *, concurrency: int
) -> tuple[dict[str, Any], list[Hit]]:
    """Sends the status reads' requests through vegeta; the pairs as one side, and the hits."""
    table = {h.kube.server + r.path: (r.kind, r.key) for r in requests}
    attack, used = h.measure_vegeta(requests, concurrency=concurrency)
    pairs = pair_reads(
        attack.hits, classify=lambda hit: table[hit.url], kinds=("job", "pods"), concurrency=concurrency
    )
    side = measured_side(pairs, used, driver=RAW_DRIVER) | {
        "connections": attack.connections,
        "requests": len(attack.hits),
        "by_kind": {
            kind: to_load_result(
                [x for x in attack.hits if table[x.url][0] == kind], concurrency=concurrency
            ).summary()
            for kind in ("job", "pods")
        },
    }
    return side, attack.hits


def measure_status(
    h: Harness,
    names: list[str],
    *,
    count: int,
    concurrencies: tuple[int, ...],
    warmup: int,
    uids: dict[str, str] | None = None,
) -> dict[str, Any]:
    """GetJobStatus against the API server's status reads (cold, watch cache) and the same
    server's Health/Check, at each concurrency; keyed "c<N>"."""
    uids = uids if uids is not None else read_uids(h)
    ids = list(names)
    random.Random(len(ids)).shuffle(ids)
    requests = [{"job_id": i, "namespace": h.namespace} for i in ids]
    health = [{"service": ""}]
    results: dict[str, Any] = {}
    for c in concurrencies:
        say(f"GetJobStatus with {len(names):,} jobs: {count} calls per side over {len(ids)} ids, c={c}")
        h.call_service("GetJobStatus", requests, count=warmup, concurrency=c)
        service, service_cpu = h.measure_service("GetJobStatus", requests, count=count, concurrency=c)
        h.call_service("Check", health, count=warmup, concurrency=c, service=HEALTH_SERVICE)
        floor, floor_cpu = h.measure_service(
            "Check", health, count=count, concurrency=c, service=HEALTH_SERVICE
        )
        service_side = measured_side(service, service_cpu, driver=SERVICE_DRIVER)
        floor_side = measured_side(floor, floor_cpu, driver=SERVICE_DRIVER)
        h.call_vegeta(status_requests(h, ids, uids, count=min(warmup, count), cached=False), concurrency=c)
        cold, _ = status_reads(h, status_requests(h, ids, uids, count=count, cached=False), concurrency=c)
        cache, _ = status_reads(h, status_requests(h, ids, uids, count=count, cached=True), concurrency=c)
        gets = [
            Request("GET", with_query(f"{jobs_path(h.namespace)}/{ids[i % len(ids)]}", resourceVersion="0"))
            for i in range(count)
        ]
        attack, used = h.measure_vegeta(gets, concurrency=c)
        cache_get = measured_side(to_load_result(attack.hits, concurrency=c), used, driver=RAW_DRIVER) | {
            "connections": attack.connections
        }
        result = compare(service_side, cold)
        result |= {
            "health_check": floor_side,
            "raw_cache": cache,
            "raw_cache_job_get": cache_get,
            "throughput_vs_health": ratio(service_side["rps"], floor_side["rps"]),
            "p50_vs_cache_job_get": ratio(service_side["p50_ms"], cache_get["p50_ms"]),
            "speedup_p50_vs_cache": ratio(cache["p50_ms"], service_side["p50_ms"]),
            "distinct_ids": len(ids),
        }
        results[f"c{c}"] = result
        report_status(result)
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
        labels = ",".join(s for s in (MANAGED_SELECTOR, selector) if s)
        path = with_query(jobs_path(h.namespace), labelSelector=labels, limit="100")
        cache_path = with_query(
            jobs_path(h.namespace), labelSelector=labels, limit="100", resourceVersion="0"
        )
        page = h.stub.ListJobs(pb.ListJobsRequest(**request), timeout=30)
        cache_items = len(h.kube.get_json(cache_path).get("items") or []) if selector else 0
        cache_count = max(count // CACHE_LIST_SHARE, 10)
        for c in concurrencies:
            say(
                f"ListJobs with {total:,} jobs, {selector or 'no filter'}: {count} calls per side, c={c}; "
                f"the first page holds {len(page.jobs)} jobs"
            )
            h.call_service("ListJobs", [request], count=warmup, concurrency=c)
            service, service_cpu = h.measure_service("ListJobs", [request], count=count, concurrency=c)
            h.call_vegeta([Request("GET", path)] * min(warmup, count), concurrency=c)
            attack, used = h.measure_vegeta([Request("GET", path)] * count, concurrency=c)
            raw = measured_side(to_load_result(attack.hits, concurrency=c), used, driver=RAW_DRIVER)
            result = compare(
                measured_side(service, service_cpu, driver=SERVICE_DRIVER),
                raw | {"connections": attack.connections},
            )
            if selector:
                attack, used = h.measure_vegeta([Request("GET", cache_path)] * cache_count, concurrency=c)
                cache = measured_side(to_load_result(attack.hits, concurrency=c), used, driver=RAW_DRIVER)
                result["raw_cache"] = cache | {
                    "items_returned": cache_items,
                    "connections": attack.connections,
                }
            result |= {"variant": variant, "label_selector": selector, "first_page_jobs": len(page.jobs)}
            results[f"{variant} c{c}"] = result
            report_pair("ListJobs", result)
    return results


def report_pair(what: str, result: dict[str, Any]) -> None:
    service, raw = result["service"], result["raw"]
    say(
        f"  {what} p50/p99: service {service['p50_ms']}/{service['p99_ms']} ms, "
        f"direct {raw['p50_ms']}/{raw['p99_ms']} ms ({result['speedup_p50']}x / {result['speedup_p99']}x)"
    )


def report_status(result: dict[str, Any]) -> None:
    s, f, cold, cache, get = (
        result[k] for k in ("service", "health_check", "raw", "raw_cache", "raw_cache_job_get")
    )
    say(
        f"  GetJobStatus {s['rps']:.0f}/s p50/p99 {s['p50_ms']}/{s['p99_ms']} ms "
        f"({s['cpu_ms_per_call'].get('service', 0):.2f} ms service CPU); Health/Check {f['rps']:.0f}/s; "
        f"status read cold p50 {cold['p50_ms']} ms, watch cache {cache['p50_ms']} ms; "
        f"cached Job GET p50 {get['p50_ms']} ms"
    )
    for name in ("service", "health_check", "raw", "raw_cache", "raw_cache_job_get"):
        if result[name]["errors"]:
            say(f"  {name}: {result[name]['errors']} errors, e.g. {result[name]['error_samples'][:1]}")
