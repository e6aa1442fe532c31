"""Measurement 1: ScheduleJob throughput and latency against a raw POST of the same Job.

At each concurrency N, ghz sends the same timer request (suspend: true) with N workers, and
vegeta POSTs the service's own manifest (a unique name per request) to
/apis/batch/v1/namespaces/<ns>/jobs with N in flight. Each side runs twice, in the order raw,
service, service, raw, so that drift (etcd growing, caches warming) favours neither; the two
halves are pooled. Each side is warmed up first with its own driver.
"""

from __future__ import annotations

from typing import Any

from bench.harness import TIMER_REQUEST, Harness
from bench.kube import jobs_path
from bench.load import LoadResult, cpu_per_call, measured_side, say
from bench.vegeta import Request, to_load_result

SERVICE_DRIVER = "ghz"
RAW_DRIVER = "vegeta"


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
    return cpu_per_call(cpu, requests)


def measure_schedule(h: Harness, *, counts: dict[int, int], warmup: int) -> dict[str, Any]:
    path = jobs_path(h.namespace)
    created = 0
    results: dict[str, Any] = {}

    def posts(prefix: str, n: int) -> list[Request]:
        return [Request("POST", path, h.render_raw_job(f"{prefix}-{i}"), kind="create") for i in range(n)]

    for concurrency, count in counts.items():
        say(f"ScheduleJob c={concurrency}: warm-up, {warmup} jobs per side")
        warm = to_load_result(
            h.call_vegeta(posts(f"raw-c{concurrency}-warm", warmup), concurrency=concurrency).hits,
            concurrency=concurrency,
        )
        h.call_service("ScheduleJob", [TIMER_REQUEST], count=warmup, concurrency=concurrency)
        if warm.errors:
            raise RuntimeError(f"raw POSTs failed in the warm-up: {warm.error_samples}")
        created += 2 * warmup
        runs: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {"raw": [], "service": []}
        connections = 0
        halves = (count // 2, count - count // 2)
        for round_no, order in enumerate((("raw", "service"), ("service", "raw"))):
            n = halves[round_no]
            for side in order:
                if side == "raw":
                    attack, used = h.measure_vegeta(
                        posts(f"raw-c{concurrency}-r{round_no}", n),
                        concurrency=concurrency,
                        deferred_work=True,
                    )
                    connections = max(connections, attack.connections)
                    run = (to_load_result(attack.hits, concurrency=concurrency), used)
                else:
                    run = h.measure_service(
                        "ScheduleJob", [TIMER_REQUEST], count=n, concurrency=concurrency, deferred_work=True
                    )
                runs[side].append(run)
                created += n
                rate = len(run[0].latencies) / max(run[0].wall_seconds, 1e-9)
                say(
                    f"  {side:7} round {round_no + 1}/2: {n} jobs in {run[0].wall_seconds:.2f}s "
                    f"({rate:.0f}/s, {run[0].errors} errors); {created} jobs created so far"
                )
        raw, raw_cpu = pool_runs(runs["raw"])
        service, service_cpu = pool_runs(runs["service"])
        service_side = measured_side(service, service_cpu, driver=SERVICE_DRIVER)
        raw_side = measured_side(raw, raw_cpu, driver=RAW_DRIVER) | {"connections": connections}
        results[f"c{concurrency}"] = {
            "concurrency": concurrency,
            "requests_per_side": count,
            "service": service_side,
            "raw": raw_side,
            "rps_by_round": {
                side: [round(len(r.latencies) / max(r.wall_seconds, 1e-9), 1) for r, _ in runs[side]]
                for side in runs
            },
            "throughput_ratio": ratio(service_side["rps"], raw_side["rps"]),
            "added_latency_p50_ms": round(service_side["p50_ms"] - raw_side["p50_ms"], 3),
            "added_latency_p99_ms": round(service_side["p99_ms"] - raw_side["p99_ms"], 3),
            "cpu_ms_per_request": {
                "service": service_side["cpu_ms_per_call"],
                "raw": raw_side["cpu_ms_per_call"],
            },
        }
        say(
            f"ScheduleJob c={concurrency}: service {service_side['rps']}/s p50 {service_side['p50_ms']} ms "
            f"({service_side['cpu_ms_per_call'].get('service', 0):.2f} ms service CPU per call); "
            f"raw {raw_side['rps']}/s p50 {raw_side['p50_ms']} ms"
        )
    results["jobs_created"] = created
    return results


def ratio(a: float, b: float) -> float:
    """a / b rounded, 0 when b is 0 (a run whose every request failed)."""
    return round(a / b, 3) if b else 0.0
