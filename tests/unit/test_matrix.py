"""The matrix runner's reading of JUnit reports and its results page (hack/matrix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hack import matrix

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.integration.test_a" name="test_ok" time="1.0">
  <properties><property name="difference" value="v1.37: Jobs get field X" /></properties>
</testcase>
<testcase classname="tests.integration.test_a" name="test_also_ok" time="1.0">
  <properties><property name="difference" value="v1.37: Jobs get field X" /></properties>
</testcase>
<testcase classname="tests.integration.test_b" name="test_broken"><failure message="x">x</failure></testcase>
<testcase classname="tests.integration.test_b" name="test_setup_broken"><error message="y" /></testcase>
<testcase classname="tests.integration.test_c" name="test_skip" time="0.0"><skipped message="z" /></testcase>
</testsuite></testsuites>
"""


def test_junit_counts_outcomes_and_collects_each_difference_once(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_text(REPORT)
    passed, failed, skipped, failures, differences = matrix.read_junit(path)
    assert (passed, failed, skipped) == (2, 2, 1)
    assert failures == [
        "tests.integration.test_b::test_broken",
        "tests.integration.test_b::test_setup_broken",
    ]
    assert differences == ["v1.37: Jobs get field X"]


def test_a_version_is_ok_only_when_it_ran_tests_and_none_failed() -> None:
    ran = matrix.VersionResult(version="v1.34.4", etcd="v3.6.16", suite="core", passed=3)
    assert ran.ok
    assert not matrix.VersionResult(version="v1.34.4", etcd="v3.6.16", suite="core").ok
    assert not matrix.VersionResult(version="v1", etcd="v3", suite="core", passed=3, failed=1).ok
    assert not matrix.VersionResult(version="v1", etcd="v3", suite="core", passed=3, error="no cluster").ok


def test_the_page_shows_a_row_per_version_with_its_differences_and_failures() -> None:
    ok = matrix.VersionResult(
        version="v1.37.2",
        etcd="v3.7.4",
        suite="full",
        tests=10,
        passed=10,
        suite_seconds=600,
        build_seconds=420,
        build_cold=True,
        differences=["a", "b"],
        commit="abc",
        date="2026-12-07",
    )
    bad = matrix.VersionResult(
        version="v1.34.4",
        etcd="v3.6.16",
        suite="full",
        tests=10,
        passed=9,
        failed=1,
        failures=["t::x"],
    )
    broken = matrix.VersionResult(version="v1.36.3", etcd="v3.6.16", suite="full", error="no cluster")
    record = {
        "date": "2026-12-07",
        "commit": "abc",
        "client": "35.0.0",
        "results": [matrix.asdict(r) for r in (bad, broken, ok)],
    }
    page = matrix.render(record)
    assert (
        "| v1.37.2 | v3.7.4 | full (10) | 10 | 0 | 0 | 10.0 min | 7.0 min (cold) | 2026-12-07 `abc` "
        "| a<br>b |" in page
    )
    assert "| v1.34.4 | v3.6.16 | full (10) | 9 | 1 | 0 | 0.0 min | cached |" in page
    assert "did not run: no cluster" in page
    assert "- v1.34.4: `t::x`" in page
    assert "commit `abc`" in page


def test_writing_one_version_again_keeps_the_others_in_matrix_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matrix, "RESULTS_JSON", tmp_path / "compatibility.json")
    monkeypatch.setattr(matrix, "DOC", tmp_path / "compatibility.md")
    monkeypatch.setattr(matrix, "_client_version", lambda: "37.0.3")
    oldest, newest = matrix.toolversions.matrix()[0], matrix.toolversions.matrix()[-1]

    def result(version: str, **counts: int) -> matrix.VersionResult:
        return matrix.VersionResult(version=version, etcd="v3", suite="full", **counts)

    matrix.write([result(newest, passed=8, failed=1), result(oldest, passed=9)])
    matrix.write([result(newest, passed=9)])

    record = json.loads((tmp_path / "compatibility.json").read_text())
    assert [(r["version"], r["passed"], r["failed"]) for r in record["results"]] == [
        (oldest, 9, 0),
        (newest, 9, 0),
    ]
    assert all(r["commit"] and r["date"] for r in record["results"])
    assert (tmp_path / "compatibility.md").read_text() == matrix.render(record)
