"""The latency statistics both sides are judged by, CPU per call, and closed-loop load from
Python threads (for set-up only: both measured sides are driven by Go tools, ghz and vegeta).

`drive` runs one operation `count` times from `concurrency` threads, each starting its next
call as soon as the previous one returned (what `ghz -c N -n COUNT` does), and records every
call's latency with perf_counter. `summarize` turns latencies into the figures in the report,
with the same percentile definition for the raw side and for ghz's per-request details.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def say(message: str) -> None:
    """Progress for people: one timestamped line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class LoadResult:
    """One measured run: every successful call's latency (seconds) and the run's wall time."""

    latencies: list[float]
    wall_seconds: float
    concurrency: int
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies) + self.errors

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "error_samples": self.error_samples[:3],
            "concurrency": self.concurrency,
            "wall_seconds": round(self.wall_seconds, 3),
            "rps": round(len(self.latencies) / self.wall_seconds, 1) if self.wall_seconds else 0.0,
            **summarize(self.latencies),
        }


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (p100 is the maximum)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds."""
    values = sorted(latencies)
    if not values:
        return {"p50_ms": math.nan, "p90_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p90_ms": round(percentile(values, 90) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
        "mean_ms": round(sum(values) / len(values) * 1000, 3),
    }


def drive(
    op: Callable[[int], object],
    *,
    count: int,
    concurrency: int,
    progress: str = "",
) -> LoadResult:
    """Calls op(i) for i in 0..count-1 from `concurrency` threads; a raised exception is an error.

    With `progress`, reports how many calls are done every few seconds (for long set-up loads).
    """
    counter = itertools.count()  # next() on a count is atomic under the GIL
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    done = [0]
    start_gate = threading.Barrier(concurrency + 1)

    def work(slot: int) -> None:
        mine = latencies[slot]
        start_gate.wait()
        while (i := next(counter)) < count:
            started = time.perf_counter()
            try:
                op(i)
            except Exception as e:  # any failure is counted, and the run carries on
                errors.append(f"{type(e).__name__}: {e}")
            else:
                mine.append(time.perf_counter() - started)
            done[0] += 1

    threads = [
        threading.Thread(target=work, args=(slot,), name=f"load-{slot}", daemon=True)
        for slot in range(concurrency)
    ]
    for t in threads:
        t.start()
    start_gate.wait()
    started = time.perf_counter()
    last_report = started
    while any(t.is_alive() for t in threads):
        threads[0].join(0.25)
        if progress and time.perf_counter() - last_report >= 5:
            last_report = time.perf_counter()
            rate = done[0] / (last_report - started)
            say(f"  {progress}: {done[0]}/{count} ({rate:.0f}/s)")
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return LoadResult(
        latencies=list(itertools.chain.from_iterable(latencies)),
        wall_seconds=wall,
        concurrency=concurrency,
        errors=len(errors),
        error_samples=errors[:3],
    )


# The processes whose CPU per call is the headline of every measurement.
HEADLINE_PROCESSES = ("service", "kube-apiserver", "etcd")


def cpu_per_call(cpu: dict[str, float], calls: int) -> dict[str, float]:
    """CPU milliseconds per call, by process, largest first ("other" is not the benchmark's)."""
    per = {name: round(seconds * 1000 / max(calls, 1), 3) for name, seconds in cpu.items()}
    return dict(sorted(per.items(), key=lambda item: -item[1]))


def measured_side(result: LoadResult, cpu: dict[str, float], *, driver: str) -> dict[str, Any]:
    """One side of a comparison as the record keeps it: the latency summary, how it was
    driven, and the CPU every process spent per call."""
    return {**result.summary(), "driver": driver, "cpu_ms_per_call": cpu_per_call(cpu, result.count)}
