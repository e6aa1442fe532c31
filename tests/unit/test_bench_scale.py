"""The pure parts of the scale point (bench/scale.py): which clusters it refuses, how it reads the
service's metrics, its progress line, its timeline, and the rows docs/performance.md renders."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.scale import (
    Timeline,
    build_rows,
    format_duration,
    metric_value,
    progress_line,
    refusal,
    render_markdown,
    results_stem,
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A directory laid out as hack/devcluster.py leaves its state."""
    state = tmp_path / "scale-cluster"
    (state / "pids").mkdir(parents=True)
    (state / "ports.json").write_text("{}")
    return state


SYSTEM = ["default", "kube-system", "kube-public", "kube-node-lease"]


def test_a_cluster_of_its_own_with_system_and_earlier_scale_namespaces_is_used(state_dir: Path) -> None:
    assert refusal(state_dir, [*SYSTEM, "scale-20261207t090000z"]) is None


def test_a_checkouts_shared_devcluster_is_refused_naming_the_fix(tmp_path: Path) -> None:
    shared = tmp_path / ".devcluster"
    (shared / "pids").mkdir(parents=True)
    (shared / "ports.json").write_text("{}")
    reason = refusal(shared, SYSTEM)
    assert reason is not None
    assert "shared dev cluster" in reason
    assert "JOBSCHEDULER_DEVCLUSTER_DIR=" in reason
    assert "hack/devcluster.py up" in reason


def test_a_kubeconfig_outside_a_devcluster_state_dir_is_refused(tmp_path: Path) -> None:
    reason = refusal(tmp_path, SYSTEM)
    assert reason is not None
    assert "cannot be restarted" in reason


def test_a_cluster_someone_else_uses_is_refused_naming_their_namespaces(state_dir: Path) -> None:
    reason = refusal(state_dir, [*SYSTEM, "bench-20261207t080000z", "test-abc"])
    assert reason is not None
    assert "bench-20261207t080000z" in reason
    assert "test-abc" in reason


METRICS = """\
# HELP jobscheduler_cache_objects Objects held by the watch cache
# TYPE jobscheduler_cache_objects gauge
jobscheduler_cache_objects{resource="jobs"} 100000.0
jobscheduler_cache_objects{resource="pods"} 0.0
# TYPE jobscheduler_watch_restarts_total counter
jobscheduler_watch_restarts_total{reason="gone",resource="jobs"} 1.0
jobscheduler_watch_restarts_total{reason="error",resource="jobs"} 2.0
jobscheduler_watch_restarts_total{reason="gone",resource="pods"} 1.0
jobscheduler_watch_restarts_created{reason="gone",resource="jobs"} 1.7e+09
"""


def test_metric_value_picks_the_samples_whose_labels_match() -> None:
    assert metric_value(METRICS, "jobscheduler_cache_objects", resource="jobs") == 100000
    assert metric_value(METRICS, "jobscheduler_watch_restarts_total", resource="jobs", reason="gone") == 1
    # without a label, every sample of the metric (and no sample of a longer-named one) counts
    assert metric_value(METRICS, "jobscheduler_watch_restarts_total", reason="gone") == 2
    assert metric_value(METRICS, "jobscheduler_watch_restarts_total") == 4


def test_metric_value_of_a_metric_not_exported_yet_is_zero() -> None:
    assert metric_value(METRICS, "jobscheduler_watch_restarts_total", reason="expired") == 0


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600, "60m00s"), (math.nan, "?"), (-1, "?")],
)
def test_format_duration(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_progress_line_estimates_from_the_recent_rate() -> None:
    line = progress_line(10_000, 100_000, 50.0, 300.0)
    assert line == "10,000/100,000 jobs created, 300/s (200/s overall), ETA 5m00s"


def test_progress_line_before_any_rate_is_known() -> None:
    assert progress_line(0, 100_000, 0.0, 0.0).endswith("ETA ?")


def test_timeline_keeps_the_first_time_of_each_moment() -> None:
    timeline = Timeline(started=100.0)
    assert timeline.mark("API server down", now=101.0)
    assert not timeline.mark("API server down", now=102.0)
    timeline.mark("API server ready", now=108.5)
    assert timeline.moments == {"API server down": 1.0, "API server ready": 8.5}
    assert timeline.since("API server ready", "API server down") == 7.5
    assert timeline.since("probe Job created", "API server down") is None


def level(p50: float, p99: float = 5.0) -> dict[str, Any]:
    def run(c: int) -> dict[str, Any]:
        summary = {"p50_ms": p50, "p99_ms": p99, "concurrency": c, "rps": 1000.0, "errors": 0}
        return {"service": summary, "service_cpu_ms_per_call": 0.4}

    return {
        "get_job_status": {"c1": run(1), "c8": run(8)},
        "list_jobs": {"all c8": run(8), "filtered c8": run(8)},
        "memory": {"service": {"rss_mb": 550.0, "peak_rss_mb": 700.0}},
    }


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "scale",
        "plan": {"jobs": 100_000, "small": 1_000},
        "levels": {"1000": level(1.0), "100000": level(1.1)},
        "restart": {"ready_seconds": 41.26},
        "resync": {
            "cache_serves_again_s": 30.0,
            "cache_serves_after_api_back_s": 12.0,
            "probe_in_cache_after_created_s": 11.5,
            "relisted": True,
        },
    }
    base.update(overrides)
    return base


def rows_by_name(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["measurement"]: r for r in build_rows(rec)}


def test_rows_have_the_shape_docs_performance_renders() -> None:
    rows = build_rows(record())
    assert rows
    for row in rows:
        assert set(row) == {"measurement", "value", "target", "met"}
        assert isinstance(row["measurement"], str)
        assert isinstance(row["value"], str)
        assert isinstance(row["target"], str)
        assert row["met"] in (True, False, None)
    json.dumps(rows)  # written to the results file as they are


def test_rows_judge_rss_and_the_status_p50_ratio_against_their_targets() -> None:
    rows = rows_by_name(record())
    rss = rows["Service RSS with 100,000 jobs cached"]
    assert rss["met"] is True
    assert rss["value"] == "550 MB (peak 700 MB)"
    ratio = rows["GetJobStatus p50 at 100,000 vs 1,000 jobs, c=8"]
    assert ratio["value"] == "1.10 vs 1.00 ms (1.10x)"
    assert ratio["met"] is True

    slower = record(levels={"1000": level(1.0), "100000": level(1.3)})
    slower["levels"]["100000"]["memory"]["service"]["rss_mb"] = 601.0
    rows = rows_by_name(slower)
    assert rows["Service RSS with 100,000 jobs cached"]["met"] is False
    assert rows["GetJobStatus p50 at 100,000 vs 1,000 jobs, c=8"]["met"] is False


def test_rows_name_the_resync_and_how_it_happened() -> None:
    rows = rows_by_name(record())
    resync = rows["Watch resync after a kube-apiserver restart"]["value"]
    assert "30.0 s from the restart command" in resync
    assert "relisted (410 Gone)" in resync
    resumed = record(resync={**record()["resync"], "relisted": False})
    resumed_row = rows_by_name(resumed)["Watch resync after a kube-apiserver restart"]
    assert "resumed its watch" in resumed_row["value"]
    assert rows_by_name(record())["Time to cache 100,000 jobs at service start"]["value"] == "41.3 s"


def test_rows_of_an_interrupted_run_say_not_measured_and_judge_nothing() -> None:
    rows = build_rows(record(levels={"1000": level(1.0)}, restart=None, resync=None))
    for row in rows:
        assert row["met"] is None
    by_name = {r["measurement"]: r for r in rows}
    assert by_name["Service RSS with 100,000 jobs cached"]["value"] == "not measured"
    assert by_name["Watch resync after a kube-apiserver restart"]["value"] == "not measured"


def test_results_are_named_by_date_and_twelve_characters_of_the_commit() -> None:
    when = datetime(2026, 12, 7, 9, 10, tzinfo=UTC)
    assert results_stem(when, "a38d4d6c0ffee0123456789") == "scale-2026-12-07-a38d4d6c0ffe"


def test_markdown_shows_every_row_and_an_interrupted_run() -> None:
    rec = record(error="KeyboardInterrupt: signal 15", git={"commit": "a38d4d6c0ffee0123", "dirty": True})
    rec["rows"] = build_rows(rec)
    text = render_markdown(rec)
    assert "did not finish" in text
    assert "with uncommitted changes" in text
    for row in rec["rows"]:
        assert row["measurement"] in text


def test_a_service_that_could_not_cache_the_jobs_at_start_is_reported_as_such() -> None:
    rec = record(
        restart={"ready_seconds": None, "error": "not ready within 600s"}, resync={"error": "skipped"}
    )
    rows = rows_by_name(rec)
    assert rows["Time to cache 100,000 jobs at service start"]["value"] == "failed: not ready within 600s"
    assert rows["Watch resync after a kube-apiserver restart"]["value"] == "not completed: skipped"
    rec["rows"] = build_rows(rec)
    text = render_markdown(rec)
    assert "The service did not get there: not ready within 600s" in text
