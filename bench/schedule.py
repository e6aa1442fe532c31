"""Measurement 1: ScheduleJob throughput and latency against a raw POST of the same Job.

At each concurrency N, ghz sends the same timer request (suspend: true) with N workers, and
N Python threads POST the service's own manifest (unique names) to
/apis/batch/v1/namespaces/<ns>/jobs. Each side runs twice, in the order raw, service,
service, raw, so that drift (etcd growing, caches warming) favours neither; the two halves
are pooled. Both sides start from warm connections.
"""

from __future__ import annotations

from typing import Any

from bench.harness import TIMER_REQUEST, Harness
from bench.kube import jobs_path
from bench.load import LoadResult, drive, say


def pool_runs(runs: list[tuple[LoadResult, dict[str, float]]]) -> tuple[LoadResult, dict[str, float]]:
    """Several runs of one side as one: all latencies, wall times and CPU added up."""
    pooled = LoadResult(latencies=[], wall_seconds=0.0, concurrency=runs[0][0].concurrency)
    cpu: dict[str, float] = {}
    for result, used in runs:
        pooled.latencies.extend(result.latencies)
        pooled.wall_seconds += result.wall_seconds
        pooled.errors += result.errors
        pooled.error_samples.extend(result.error_samples)
        for name, seconds in used.items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    return pooled, cpu


def cpu_per_request(cpu: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request, by process, largest first."""
    per = {name: round(seconds * 1000 / max(requests, 1), 3) for name, seconds in cpu.items()}
    return dict(sorted(per.items(), key=lambda item: -item[1]))


def measure_schedule(h: Harness, *, counts: dict[int, int], warmup: int) -> dict[str, Any]:
    path = jobs_path(h.namespace)
    created = 0
    results: dict[str, Any] = {}

    def post_raw(bodies: list[bytes]) -> Any:
        return lambda i: h.kube.send("POST", path, body=bodies[i], expect=(201,))

    for concurrency, count in counts.items():
        say(f"ScheduleJob c={concurrency}: warm-up, {warmup} jobs per side")
        bodies = [h.render_raw_job(f"raw-c{concurrency}-warm-{i}") for i in range(warmup)]
        drive(post_raw(bodies), count=warmup, concurrency=concurrency)
        h.call_service("ScheduleJob", [TIMER_REQUEST], count=warmup, concurrency=concurrency)
        created += 2 * warmup
        runs: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {"raw": [], "service": []}
        halves = (count // 2, count - count // 2)
        for round_no, order in enumerate((("raw", "service"), ("service", "raw"))):
            n = halves[round_no]
            for side in order:
                if side == "raw":
                    bodies = [h.render_raw_job(f"raw-c{concurrency}-r{round_no}-{i}") for i in range(n)]
                    run = h.measure_raw(
                        post_raw(bodies), count=n, concurrency=concurrency, deferred_work=True
                    )
                else:
                    run = h.measure_service(
                        "ScheduleJob", [TIMER_REQUEST], count=n, concurrency=concurrency, deferred_work=True
                    )
                runs[side].append(run)
                created += n
                say(
                    f"  {side:7} round {round_no + 1}/2: {n} jobs in {run[0].wall_seconds:.2f}s "
                    f"({len(run[0].latencies) / run[0].wall_seconds:.0f}/s, {run[0].errors} errors); "
                    f"{created} jobs created so far"
                )
        raw, raw_cpu = pool_runs(runs["raw"])
        service, service_cpu = pool_runs(runs["service"])
        raw_summary, service_summary = raw.summary(), service.summary()
        results[f"c{concurrency}"] = {
            "concurrency": concurrency,
            "requests_per_side": count,
            "service": service_summary,
            "raw": raw_summary,
            "rps_by_round": {
                side: [round(len(r.latencies) / r.wall_seconds, 1) for r, _ in runs[side]] for side in runs
            },
            "throughput_ratio": round(service_summary["rps"] / raw_summary["rps"], 3),
            "added_latency_p50_ms": round(service_summary["p50_ms"] - raw_summary["p50_ms"], 3),
            "added_latency_p99_ms": round(service_summary["p99_ms"] - raw_summary["p99_ms"], 3),
            "cpu_ms_per_request": {
                "service": cpu_per_request(service_cpu, service.count),
                "raw": cpu_per_request(raw_cpu, raw.count),
            },
        }
        say(
            f"ScheduleJob c={concurrency}: service {service_summary['rps']}/s "
            f"p50 {service_summary['p50_ms']} ms; raw {raw_summary['rps']}/s p50 {raw_summary['p50_ms']} ms"
        )
    results["jobs_created"] = created
    return results
