"""The benchmark's verdicts and its generated page: targets judged, results files found and named,
docs/performance.md rendered from them and checked fresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from tests.conftest import ROOT


def side(*, rps: float, p50: float, p99: float, service_cpu: float = 0.0, errors: int = 0) -> dict[str, Any]:
    return {
        "count": 100,
        "errors": errors,
        "error_samples": ["boom"] * min(errors, 1),
        "concurrency": 8,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "driver": "ghz",
        "cpu_ms_per_call": {"service": service_cpu, "kube-apiserver": 1.0, "etcd": 0.5},
    }


def record(*, commit: str = "a" * 40, started: str = "2026-12-07T10:00:00+00:00") -> dict[str, Any]:
    schedule = {
        f"c{c}": {
            "concurrency": c,
            "requests_per_side": 100,
            "service": side(rps=90.0 * c, p50=2.0, p99=4.0, service_cpu=0.4),
            "raw": side(rps=100.0 * c, p50=1.5, p99=3.0),
            "rps_by_round": {"service": [90.0], "raw": [100.0]},
            "throughput_ratio": 0.9,
            "added_latency_p50_ms": 0.5,
        }
        for c in (1, 8, 32)
    }
    status = {
        "service": side(rps=800, p50=1.0, p99=1.9, service_cpu=0.3),
        "health_check": side(rps=1000, p50=0.5, p99=1.0),
        "raw": side(rps=300, p50=6.0, p99=20.0),
        "raw_cache": side(rps=500, p50=3.0, p99=9.0),
        "raw_cache_job_get": side(rps=1500, p50=2.0, p99=5.0),
        "throughput_vs_health": 0.8,
        "p50_vs_cache_job_get": 0.5,
        "speedup_p50": 6.0,
        "speedup_p99": 10.5,
    }
    listing = {
        "service": side(rps=300, p50=3.0, p99=10.0),
        "raw": side(rps=100, p50=10.0, p99=30.0),
        "raw_cache": side(rps=20, p50=50.0, p99=90.0) | {"items_returned": 1000},
        "variant": "filtered",
        "label_selector": "bench-group=a",
    }
    return {
        "mode": "full",
        "started_at": started,
        "cluster_note": "Every benchmark Job is created suspended.",
        "git": {"commit": commit, "dirty": False},
        "machine": {"cores": 2, "cpu_model": "test CPU", "memory_gib": 8},
        "versions": {
            "pinned": {"KUBERNETES_VERSION": "v1.35.4", "GHZ_VERSION": "v0", "VEGETA_VERSION": "v12"}
        },
        "schedule_job": schedule | {"jobs_created": 1000},
        "get_job_status": {"1000": {"c8": status}, "10000": {"c8": status}},
        "list_jobs": {"10000": {"filtered c8": listing}},
        "memory": {"jobs_10000": {"label": "10,000 jobs cached", "rss_mb": 150.0, "peak_rss_mb": 160.0}},
        "watch_job": {"changes": 10, "p50_ms": 1, "p99_ms": 3, "max_ms": 4, "events_missed": 0},
    }


def verdicts(results: dict[str, Any]) -> dict[str, bool]:
    return {t.name: t.passed for t in report.evaluate_targets(results)}


def test_every_target_of_the_issue_is_judged_at_its_boundary() -> None:
    judged = verdicts(record())
    assert judged == {
        "service CPU per ScheduleJob, c=8": True,
        "ScheduleJob throughput vs vegeta's raw POST, c=8": True,
        "ScheduleJob throughput vs vegeta's raw POST, c=32": True,
        "ScheduleJob latency added by the service, p50, c=1": True,
        "GetJobStatus p99, c=8, 10,000 jobs": True,
        "GetJobStatus throughput vs Health/Check on the same server, c=8, 10,000 jobs": True,
        "GetJobStatus p50 vs the API server's watch-cache GET of the Job, c=8, 10,000 jobs": True,
        "ListJobs page of 100, 10% label filter, p99, c=8, 10,000 jobs": True,
        "RSS with 10,000 jobs cached": True,
        "WatchJob event delay p99": True,
    }


@pytest.mark.parametrize(
    ("path", "value", "target"),
    [
        (
            ("schedule_job", "c8", "service", "cpu_ms_per_call", "service"),
            0.51,
            "service CPU per ScheduleJob, c=8",
        ),
        (
            ("schedule_job", "c32", "throughput_ratio"),
            0.89,
            "ScheduleJob throughput vs vegeta's raw POST, c=32",
        ),
        (
            ("schedule_job", "c1", "added_latency_p50_ms"),
            0.71,
            "ScheduleJob latency added by the service, p50, c=1",
        ),
        (("get_job_status", "10000", "c8", "service", "p99_ms"), 2.01, "GetJobStatus p99, c=8, 10,000 jobs"),
        (
            ("get_job_status", "10000", "c8", "throughput_vs_health"),
            0.79,
            "GetJobStatus throughput vs Health/Check on the same server, c=8, 10,000 jobs",
        ),
        (
            ("get_job_status", "10000", "c8", "p50_vs_cache_job_get"),
            0.51,
            "GetJobStatus p50 vs the API server's watch-cache GET of the Job, c=8, 10,000 jobs",
        ),
        (
            ("list_jobs", "10000", "filtered c8", "service", "p99_ms"),
            10.1,
            "ListJobs page of 100, 10% label filter, p99, c=8, 10,000 jobs",
        ),
        (("memory", "jobs_10000", "rss_mb"), 151.0, "RSS with 10,000 jobs cached"),
    ],
)
def test_a_figure_past_its_target_is_missed(path: tuple[str, ...], value: float, target: str) -> None:
    results = record()
    node: Any = results
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert verdicts(results)[target] is False


def test_targets_are_judged_at_the_largest_job_count() -> None:
    results = record()
    results["get_job_status"]["1000"] = {"c8": {**results["get_job_status"]["1000"]["c8"]}}
    results["get_job_status"]["1000"]["c8"]["service"] = side(rps=1, p50=9, p99=99)
    assert verdicts(results)["GetJobStatus p99, c=8, 10,000 jobs"] is True


def test_request_errors_name_the_measurement_and_side() -> None:
    results = record()
    results["schedule_job"]["c8"]["raw"] = side(rps=1, p50=1, p99=1, errors=3)
    (error,) = report.request_errors(results)
    assert error.startswith("ScheduleJob c=8 POST Job: 3 errors")


def write(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content))


def test_a_full_runs_results_are_named_by_date_and_commit(tmp_path: Path) -> None:
    results = record(commit="0123456789abcdef" * 2)
    path = report.write_results(tmp_path, "20261207T100000Z", results, "# md\n")
    assert path.name == "2026-12-07-0123456789ab.json"
    assert path.with_suffix(".md").read_text() == "# md\n"
    assert (tmp_path / "local" / "latest.json").exists()


def test_a_quick_run_stays_in_the_ignored_local_directory(tmp_path: Path) -> None:
    path = report.write_results(tmp_path, "20261207T100000Z", record() | {"mode": "quick"}, "# md\n")
    assert path == tmp_path / "local" / "20261207T100000Z.json"
    assert list(tmp_path.glob("*.json")) == []


def test_the_latest_full_run_is_chosen_by_its_start_time(tmp_path: Path) -> None:
    write(tmp_path / "2026-12-07-aaaaaaaaaaaa.json", record(started="2026-12-07T09:00:00+00:00"))
    write(tmp_path / "2026-12-07-bbbbbbbbbbbb.json", record(started="2026-12-07T11:00:00+00:00"))
    write(tmp_path / "2026-12-06-cccccccccccc.json", record(started="2026-12-06T23:00:00+00:00"))
    write(tmp_path / "notes.json", record(started="2027-01-01T00:00:00+00:00"))
    found = report.latest_full(tmp_path)
    assert found is not None
    assert found[0].name == "2026-12-07-bbbbbbbbbbbb.json"


def test_the_latest_scale_file_is_rendered_as_its_rows(tmp_path: Path) -> None:
    rows = [
        {
            "measurement": "RSS with 100,000 jobs cached",
            "value": "512 MB",
            "target": "<= 600 MB",
            "met": True,
        },
        {"measurement": "watch resync", "value": "12 s", "target": "", "met": None},
    ]
    write(tmp_path / "scale-2026-12-05-aaaaaaaaaaaa.json", {"kind": "scale", "rows": rows[:1]})
    write(
        tmp_path / "scale-2026-12-07-bbbbbbbbbbbb.json",
        {"kind": "scale", "rows": rows, "git": {"commit": "b" * 40}},
    )
    text = report.render_scale(report.latest_scale(tmp_path), root=tmp_path)
    assert "scale-2026-12-07-bbbbbbbbbbbb.json" in text
    assert "| RSS with 100,000 jobs cached | 512 MB | <= 600 MB | met |" in text
    assert "| watch resync | 12 s |  | — |" in text
    assert "bbbbbbbbbbbb" in text


def test_without_a_scale_file_the_page_says_how_to_make_one(tmp_path: Path) -> None:
    assert "python -m bench.scale" in report.render_scale(report.latest_scale(tmp_path), root=tmp_path)


def make_tree(tmp_path: Path) -> Path:
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "bench" / "performance.md.in").write_text((ROOT / "bench" / "performance.md.in").read_text())
    return tmp_path


def test_the_page_names_its_results_file_and_commit_and_quotes_its_figures(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    results = record(commit="fedcba9876543210" * 2)
    results["targets"] = [t.as_dict() for t in report.evaluate_targets(results)]
    write(root / "bench" / "results" / "2026-12-07-fedcba987654.json", results)
    text = report.render_docs(root, root / "bench" / "results")
    assert "`bench/results/2026-12-07-fedcba987654.json`" in text
    assert "commit fedcba987654" in text
    assert "| service CPU per ScheduleJob, c=8 | <= 0.5 ms | 0.40 ms | met |" in text
    assert "status read, cold: GET Job + LIST its pods" in text
    assert "$" not in text  # every placeholder filled


def test_check_fails_on_a_stale_page_and_passes_once_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(tmp_path)
    write(root / "bench" / "results" / "2026-12-07-aaaaaaaaaaaa.json", record() | {"targets": []})
    assert report.main(["--check", "--root", str(root)]) == 1
    assert "stale" in capsys.readouterr().err
    assert report.main(["--write-docs", "--root", str(root)]) == 0
    assert report.main(["--check", "--root", str(root)]) == 0
    write(
        root / "bench" / "results" / "2026-12-08-bbbbbbbbbbbb.json",
        record(started="2026-12-08T00:00:00+00:00"),
    )
    assert report.main(["--check", "--root", str(root)]) == 1
