"""The statistics both sides of the benchmark are judged by."""

from __future__ import annotations

import math

import pytest

from bench.load import LoadResult, cpu_per_call, measured_side, percentile, summarize


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(50, 5), (90, 9), (99, 10), (100, 10), (10, 1), (0, 1)],
)
def test_nearest_rank_percentile(pct: float, expected: int) -> None:
    assert percentile(list(range(1, 11)), pct) == expected


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_summarize_reports_milliseconds() -> None:
    summary = summarize([0.001, 0.003, 0.002])
    assert summary["p50_ms"] == 2.0
    assert summary["max_ms"] == 3.0
    assert summary["mean_ms"] == 2.0


def test_cpu_per_call_is_milliseconds_per_call_largest_first() -> None:
    per = cpu_per_call({"etcd": 0.1, "service": 0.5, "kube-apiserver": 0.3}, 1000)
    assert per == {"service": 0.5, "kube-apiserver": 0.3, "etcd": 0.1}
    assert list(per) == ["service", "kube-apiserver", "etcd"]


def test_measured_side_divides_cpu_by_every_call_including_failed_ones() -> None:
    result = LoadResult(latencies=[0.001] * 9, wall_seconds=1.0, concurrency=8, errors=1)
    side = measured_side(result, {"service": 1.0}, driver="ghz")
    assert side["driver"] == "ghz"
    assert side["count"] == 10
    assert side["cpu_ms_per_call"]["service"] == 100.0
    assert side["rps"] == 9.0
