#!/usr/bin/env python3
"""Runs the integration suite on every Kubernetes minor of the matrix (hack/versions.env).

For each version, one after the other: build its tools (hack/tools.sh, cached per version; the
time is recorded and whether the build was cold), start a dev cluster of that version in a
state dir of its own (.devcluster-<version>), run pytest on it with a JUnit report, stop the
cluster (also when the suite fails). The tests record behaviour that differs between minors as
`difference` properties (tests/helpers.py: record_difference); the table collects them.

    python3 hack/matrix.py                      the whole matrix, the whole integration suite
    python3 hack/matrix.py --edges --suite core     the oldest and newest minor, core tests (CI)
    python3 hack/matrix.py --write              also write docs/compatibility.json and .md
    python3 hack/matrix.py --render             docs/compatibility.md from the committed json
    python3 hack/matrix.py --check              fails when docs/compatibility.md is stale

Exit status: 0 when every version passed, 1 when any test failed or a version could not run.
Needs the project's virtualenv (hack/dev.sh setup); standard library otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolversions  # beside this script

ROOT = toolversions.ROOT
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS_JSON = ROOT / "docs" / "compatibility.json"
DOC = ROOT / "docs" / "compatibility.md"
TEMPLATE = ROOT / "hack" / "compatibility.md.in"
REPORTS = ROOT / ".matrix"  # JUnit reports and logs of the last run (ignored)

# The integration tests of the four original RPCs, schedules and the deployment: what CI runs
# on the oldest and newest minors beside the full suite on the default one.
SUITES = {
    "full": ["tests/integration"],
    "core": [
        "tests/integration/test_service.py",
        "tests/integration/test_schedules.py",
        "tests/integration/test_deploy.py",
        "tests/integration/test_compat.py",
    ],
}


def log(msg: str) -> None:
    print(f"[matrix {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class VersionResult:
    version: str
    etcd: str
    suite: str
    build_seconds: float = 0.0
    build_cold: bool = False
    cluster_seconds: float = 0.0
    suite_seconds: float = 0.0
    tests: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    error: str = ""  # the version could not be built or its cluster did not start
    commit: str = ""  # the commit and day it ran at (set when written)
    date: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.failed == 0 and self.passed > 0


def read_junit(path: Path) -> tuple[int, int, int, list[str], list[str]]:
    """(passed, failed, skipped, failed test ids, differences) from a pytest JUnit report."""
    root = ET.parse(path).getroot()  # noqa: S314 (pytest's own report, written by this run)
    passed = failed = skipped = 0
    failures: list[str] = []
    differences: list[str] = []
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failed += 1
            failures.append(test_id)
        elif "skipped" in outcome:
            skipped += 1
        else:
            passed += 1
        for prop in case.iter("property"):
            if prop.get("name") == "difference" and prop.get("value"):
                differences.append(str(prop.get("value")))
    return passed, failed, skipped, failures, sorted(set(differences))


def build_version(version: str, suite: str) -> VersionResult:
    """hack/tools.sh build for the version (its Kubernetes binaries and etcd once, cached)."""
    env = version_env(version)
    result = VersionResult(version=version, etcd=toolversions.selected(env)["ETCD_VERSION"], suite=suite)
    cache = toolversions.cache_dir(env)
    result.build_cold = not (cache / "tools" / f"kubernetes-{version}" / ".done").exists()
    log(f"{version}: tools ({'cold build' if result.build_cold else 'cached'})")
    started = time.monotonic()
    build = subprocess.run(["bash", str(ROOT / "hack" / "tools.sh"), "build"], env=env)
    result.build_seconds = round(time.monotonic() - started, 1)
    if build.returncode != 0:
        result.error = f"hack/tools.sh build exited {build.returncode}"
    return result


def version_env(version: str) -> dict[str, str]:
    env = {**os.environ, "KUBERNETES_VERSION": version, "JOBSCHEDULER_REAL_NODE": "0"}
    env.update(
        JOBSCHEDULER_DEVCLUSTER_DIR=str(ROOT / f".devcluster-{version}"),
        PATH=f"{toolversions.bin_dir(env)}{os.pathsep}{ROOT / '.venv' / 'bin'}{os.pathsep}{env['PATH']}",
    )
    return env


def run_suite(result: VersionResult, pytest_args: list[str]) -> VersionResult:
    """The version's own dev cluster, the suite on it, the cluster stopped again."""
    version, suite, env = result.version, result.suite, version_env(result.version)
    devcluster = [str(VENV_PYTHON), str(ROOT / "hack" / "devcluster.py")]
    REPORTS.mkdir(exist_ok=True)
    report = REPORTS / f"{version}-{suite}.xml"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    up = subprocess.run([*devcluster, "up"], env=env)
    result.cluster_seconds = round(time.monotonic() - started, 1)
    try:
        if up.returncode != 0:
            result.error = (
                f"the {version} dev cluster did not start (logs in {env['JOBSCHEDULER_DEVCLUSTER_DIR']})"
            )
            return result
        log(f"{version}: pytest {' '.join(SUITES[suite] + pytest_args)}")
        started = time.monotonic()
        pytest = subprocess.run(
            [str(VENV_PYTHON), "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}"]
            + SUITES[suite]
            + pytest_args,
            env=env,
            cwd=ROOT,
        )
        result.suite_seconds = round(time.monotonic() - started, 1)
        if pytest.returncode == 2:  # interrupted (Ctrl-C): the whole matrix stops
            raise KeyboardInterrupt
        if not report.exists() or pytest.returncode > 2:
            result.error = f"pytest exited {pytest.returncode} without a complete report"
            return result
        result.passed, result.failed, result.skipped, result.failures, result.differences = read_junit(report)
        result.tests = result.passed + result.failed + result.skipped
        return result
    finally:
        subprocess.run([*devcluster, "down"], env=env, check=False)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def render(record: dict[str, object]) -> str:
    """docs/compatibility.md: the template's prose with the results table and differences."""
    rows = [
        "| Kubernetes | etcd | tests | passed | failed | skipped | suite | tools build | run at "
        "| notable differences |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = record["results"]
    assert isinstance(results, list)
    for r in results:
        build = f"{_minutes(r['build_seconds'])} (cold)" if r["build_cold"] else "cached"
        differences = "<br>".join(r["differences"]) or "none"
        if r["error"]:
            differences = f"did not run: {r['error']}"
        rows.append(
            f"| {r['version']} | {r['etcd']} | {r['suite']} ({r['tests']}) | {r['passed']} | {r['failed']} "
            f"| {r['skipped']} | {_minutes(r['suite_seconds'])} | {build} | {r['date']} `{r['commit']}` "
            f"| {differences} |"
        )
    failures = [f"- {r['version']}: `{test}`" for r in results for test in r["failures"]]
    return Template(TEMPLATE.read_text()).substitute(
        table="\n".join(rows),
        commit=record["commit"],
        date=record["date"],
        client=record["client"],
        failures="\n".join(failures) or "None.",
    )


def write(results: list[VersionResult]) -> None:
    """The results into docs/compatibility.json, replacing the entries of the versions that ran
    and keeping the others (one version can be run again alone), then the page from it."""
    commit = git("rev-parse", "--short=12", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    today = time.strftime("%Y-%m-%d")
    by_version = {}
    if RESULTS_JSON.exists():
        by_version = {r["version"]: r for r in json.loads(RESULTS_JSON.read_text())["results"]}
    for r in results:
        r.commit, r.date = commit, today
        by_version[r.version] = asdict(r)
    record = {
        "date": today,
        "commit": commit,
        "client": _client_version(),
        "results": [by_version[v] for v in toolversions.matrix() if v in by_version],
    }
    RESULTS_JSON.write_text(json.dumps(record, indent=2) + "\n")
    DOC.write_text(render(record))
    log(f"wrote {RESULTS_JSON} and {DOC}")


def _client_version() -> str:
    out = subprocess.run(
        [str(VENV_PYTHON), "-c", "import kubernetes; print(kubernetes.__version__)"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", help="comma-separated, from the matrix (default: all of it)")
    parser.add_argument("--edges", action="store_true", help="only the oldest and the newest version")
    parser.add_argument("--suite", choices=sorted(SUITES), default="full")
    parser.add_argument("--write", action="store_true", help="write docs/compatibility.json and .md")
    parser.add_argument("--render", action="store_true", help="only render the .md from the json")
    parser.add_argument("--check", action="store_true", help="fail when docs/compatibility.md is stale")
    parser.add_argument("pytest_args", nargs="*", help="after --, passed to pytest")
    args = parser.parse_args()
    if args.render or args.check:
        rendered = render(json.loads(RESULTS_JSON.read_text()))
        if args.check:
            if DOC.read_text() != rendered:
                print(
                    "docs/compatibility.md is stale: run `python3 hack/matrix.py --render`", file=sys.stderr
                )
                return 1
            return 0
        DOC.write_text(rendered)
        return 0
    matrix = toolversions.matrix()
    chosen = args.versions or ",".join([matrix[0], matrix[-1]] if args.edges else matrix)
    versions = [v if v.startswith("v") else f"v{v}" for v in chosen.split(",")]
    unknown = [v for v in versions if v not in matrix]
    if unknown:
        print(f"not in the matrix ({', '.join(matrix)}): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not VENV_PYTHON.exists():
        print("no virtualenv: run `bash hack/dev.sh setup` first", file=sys.stderr)
        return 2
    # Builds one after the other (each takes both cores), then the suites one after the other:
    # side by side they would collide on the fixed ports some tests use (the README's 50054).
    built = [build_version(version, args.suite) for version in versions]
    try:
        for i, result in enumerate([r for r in built if not r.error], 1):
            log(f"version {i}: Kubernetes {result.version}, suite {args.suite}")
            run_suite(result, args.pytest_args)
    except KeyboardInterrupt:
        log("interrupted: the clusters are stopped, nothing written")
        return 130
    results = built
    for result in results:
        verdict = "ok" if result.ok else f"FAILED {result.error or ', '.join(result.failures[:5])}"
        log(
            f"{result.version}: {result.passed} passed, {result.failed} failed, {result.skipped} skipped in "
            f"{_minutes(result.suite_seconds)} (tools {result.build_seconds:.0f} s); {verdict}"
        )
    for r in results:
        verdict = "ok" if r.ok else "FAILED"
        log(f"  {r.version:9} {verdict}  {r.passed}/{r.tests} passed  {_minutes(r.suite_seconds)}")
    if args.write:
        write(results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
