"""The verdicts and the written results: targets checked, the JSON record, its markdown, and
docs/performance.md generated from the latest committed results.

A missed target is reported, never turned into a failing exit code: the benchmark measures,
it does not gate (request errors do fail a run, see bench/run.py). A full run writes
bench/results/<YYYY-MM-DD>-<commit12>.json and .md, which are committed; every run also
writes bench/results/local/ (ignored): <stamp>.json/.md for quick runs, latest.json/.md.

    python -m bench.report --write-docs     # docs/performance.md from the latest results
    python -m bench.report --check          # fails when docs/performance.md is stale
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The concurrency the GetJobStatus targets are set at; the others are shown for context.
STATUS_TARGET_KEY = "c8"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "goal": self.goal, "measured": self.measured, "passed": self.passed}


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _n(count: int) -> str:
    return f"{count:,}"


def dig(record: Mapping[str, Any], *keys: str) -> Any:
    """record[k1][k2]... or None when any level is missing (results files of every vintage)."""
    value: Any = record
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def largest_level(section: dict[str, Any] | None) -> str | None:
    """The key of the largest job count measured ("10000"), if any."""
    return max(section, key=int) if section else None


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    """The issue's targets, judged on this run (rows without a measurement are left out)."""
    targets: list[Target] = []
    service_cpu = dig(results, "schedule_job", "c8", "service", "cpu_ms_per_call", "service")
    if service_cpu is not None:
        targets.append(
            Target(
                "service CPU per ScheduleJob, c=8", "<= 0.5 ms", f"{service_cpu:.2f} ms", service_cpu <= 0.5
            )
        )
    for c in ("8", "32"):
        entry = dig(results, "schedule_job", f"c{c}")
        if entry:
            targets.append(
                Target(
                    f"ScheduleJob throughput vs vegeta's raw POST, c={c}",
                    ">= 0.9x",
                    f"{entry['throughput_ratio']:.2f}x "
                    f"({entry['service']['rps']:.0f} vs {entry['raw']['rps']:.0f}/s)",
                    entry["throughput_ratio"] >= 0.9,
                )
            )
    entry = dig(results, "schedule_job", "c1")
    if entry:
        added = entry["added_latency_p50_ms"]
        targets.append(
            Target(
                "ScheduleJob latency added by the service, p50, c=1",
                "<= +0.7 ms",
                f"{added:+.2f} ms ({_ms(entry['service']['p50_ms'])} vs {_ms(entry['raw']['p50_ms'])} ms)",
                added <= 0.7,
            )
        )
    level = largest_level(results.get("get_job_status"))
    status = dig(results, "get_job_status", level or "", STATUS_TARGET_KEY)
    if level and status:
        jobs = _n(int(level))
        p99 = status["service"]["p99_ms"]
        targets.append(Target(f"GetJobStatus p99, c=8, {jobs} jobs", "<= 2 ms", f"{_ms(p99)} ms", p99 <= 2.0))
        vs_health = status.get("throughput_vs_health")
        if vs_health is not None:
            targets.append(
                Target(
                    f"GetJobStatus throughput vs Health/Check on the same server, c=8, {jobs} jobs",
                    ">= 0.8x",
                    f"{vs_health:.2f}x "
                    f"({status['service']['rps']:.0f} vs {status['health_check']['rps']:.0f}/s)",
                    vs_health >= 0.8,
                )
            )
        vs_get = status.get("p50_vs_cache_job_get")
        if vs_get is not None:
            targets.append(
                Target(
                    f"GetJobStatus p50 vs the API server's watch-cache GET of the Job, c=8, {jobs} jobs",
                    "<= 0.5x",
                    f"{vs_get:.2f}x ({_ms(status['service']['p50_ms'])} vs "
                    f"{_ms(status['raw_cache_job_get']['p50_ms'])} ms)",
                    vs_get <= 0.5,
                )
            )
    level = largest_level(results.get("list_jobs"))
    listing = dig(results, "list_jobs", level or "", "filtered c8")
    if level and listing:
        p99 = listing["service"]["p99_ms"]
        targets.append(
            Target(
                f"ListJobs page of 100, 10% label filter, p99, c=8, {_n(int(level))} jobs",
                "<= 10 ms",
                f"{_ms(p99)} ms",
                p99 <= 10.0,
            )
        )
    memory = results.get("memory") or {}
    cached = [k for k in memory if k.startswith("jobs_")]
    if cached:
        key = max(cached, key=lambda k: int(k.removeprefix("jobs_")))
        rss = memory[key]["rss_mb"]
        targets.append(
            Target(
                f"RSS with {_n(int(key.removeprefix('jobs_')))} jobs cached",
                "<= 150 MB",
                f"{rss:.0f} MB",
                rss <= 150,
            )
        )
    watch = results.get("watch_job")
    if watch:
        targets.append(
            Target(
                "WatchJob event delay p99",
                "<= 100 ms",
                f"{_ms(watch['p99_ms'])} ms ({watch['events_missed']} missed)",
                watch["p99_ms"] <= 100 and watch["events_missed"] == 0,
            )
        )
    return targets


def _rounds(rps: list[float] | None) -> str:
    return ", ".join(f"{v:.0f}" for v in rps or [])


def _p50_p99(summary: dict[str, Any]) -> str:
    return f"{_ms(summary['p50_ms'])} / {_ms(summary['p99_ms'])} ms"


def _cpu(side: dict[str, Any], process: str) -> str:
    value = (side.get("cpu_ms_per_call") or {}).get(process)
    return "n/a" if value is None else f"{value:.2f}"


# (key in a comparison entry, what the side is) in the order the tables show them.
STATUS_SIDES = (
    ("service", "GetJobStatus"),
    ("health_check", "Health/Check, same server (floor)"),
    ("raw", "status read, cold: GET Job + LIST its pods"),
    ("raw_cache", "status read, watch cache (resourceVersion=0)"),
    ("raw_cache_job_get", "GET Job, watch cache (resourceVersion=0)"),
)
LIST_SIDES = (
    ("service", "ListJobs"),
    ("raw", "LIST jobs, limit=100, cold"),
    ("raw_cache", "LIST jobs, watch cache (resourceVersion=0; limit ignored)"),
)


def measurement_rows(results: dict[str, Any]) -> list[tuple[str, int, str, dict[str, Any]]]:
    """(measurement, concurrency, side, the side's summary) for every side of every comparison."""
    rows: list[tuple[str, int, str, dict[str, Any]]] = []
    for key, e in (results.get("schedule_job") or {}).items():
        if key.startswith("c"):
            rows.append(("ScheduleJob", e["concurrency"], "ScheduleJob", e["service"]))
            rows.append(("ScheduleJob", e["concurrency"], "POST Job", e["raw"]))
    for level, entries in sorted((results.get("get_job_status") or {}).items(), key=lambda kv: int(kv[0])):
        for e in entries.values():
            what = f"GetJobStatus, {_n(int(level))} jobs"
            c = e["service"]["concurrency"]
            rows += [(what, c, label, e[key]) for key, label in STATUS_SIDES if key in e]
    for level, entries in sorted((results.get("list_jobs") or {}).items(), key=lambda kv: int(kv[0])):
        for e in entries.values():
            selector = f"`{e['label_selector']}` (10%)" if e["label_selector"] else "no filter"
            what = f"ListJobs page of 100, {_n(int(level))} jobs, {selector}"
            c = e["service"]["concurrency"]
            rows += [(what, c, label, e[key]) for key, label in LIST_SIDES if key in e]
    return rows


def render_targets(targets: list[Target]) -> str:
    lines = ["| target | goal | measured | result |", "|---|---|---|---|"]
    lines += [
        f"| {t.name} | {t.goal} | {t.measured} | {'met' if t.passed else '**missed**'} |" for t in targets
    ]
    lines += ["", f"{sum(t.passed for t in targets)} of {len(targets)} targets met."]
    return "\n".join(lines)


def render_measurements(results: dict[str, Any]) -> str:
    """Every side of every comparison: CPU per call first, then throughput and latency."""
    lines = [
        "| measurement | c | side (driver) | service CPU ms/call | kube-apiserver CPU ms/call "
        "| etcd CPU ms/call | calls/s | p50 / p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for what, c, label, side in measurement_rows(results):
        extra = f", {side['items_returned']} items" if "items_returned" in side else ""
        lines.append(
            f"| {what} | {c} | {label}{extra} ({side.get('driver', '?')}) | {_cpu(side, 'service')} | "
            f"{_cpu(side, 'kube-apiserver')} | {_cpu(side, 'etcd')} | {side['rps']:.0f} | {_p50_p99(side)} | "
            f"{side['errors']} |"
        )
    return "\n".join(lines)


def render_other(results: dict[str, Any]) -> str:
    """Memory, WatchJob and the ScheduleJob rounds: the figures that are not a comparison."""
    lines = ["| measurement | value |", "|---|---|"]
    for key, e in (results.get("schedule_job") or {}).items():
        if key.startswith("c"):
            rounds = e.get("rps_by_round") or {}
            lines.append(
                f"| ScheduleJob c={e['concurrency']}, calls/s by round (service; raw) | "
                f"{_rounds(rounds.get('service'))}; {_rounds(rounds.get('raw'))} |"
            )
    for m in (results.get("memory") or {}).values():
        lines.append(f"| service RSS {m['label']} | {m['rss_mb']:.0f} MB (peak {m['peak_rss_mb']:.0f} MB) |")
    watch = results.get("watch_job")
    if watch:
        lines.append(
            f"| WatchJob event delay p50 / p99 / max ({watch['changes']} pod changes) | "
            f"{_ms(watch['p50_ms'])} / {_ms(watch['p99_ms'])} / {_ms(watch['max_ms'])} ms, "
            f"{watch['events_missed']} missed |"
        )
    for level, seconds in (results.get("cache_fill_seconds") or {}).items():
        lines.append(f"| service cache caught up with {_n(int(level))} jobs after the fill | {seconds} s |")
    return "\n".join(lines)


def request_errors(results: dict[str, Any]) -> list[str]:
    """Every measured side that had failed requests: "<measurement> c=<N> <side>: <count>"."""
    return [
        f"{what} c={c} {label}: {side['errors']} errors, e.g. {(side.get('error_samples') or ['?'])[0]}"
        for what, c, label, side in measurement_rows(results)
        if side["errors"]
    ]


def describe_run(results: dict[str, Any]) -> str:
    git = results.get("git") or {}
    machine = results.get("machine") or {}
    pinned = (results.get("versions") or {}).get("pinned") or {}
    return (
        f"{results['mode']} run of {results['started_at']}, commit {str(git.get('commit', '?'))[:12]}"
        f"{' (with uncommitted changes)' if git.get('dirty') else ''}; {machine.get('cores')} cores "
        f"({machine.get('cpu_model', '?')}), {machine.get('memory_gib')} GiB; Kubernetes "
        f"{pinned.get('KUBERNETES_VERSION', '?')}, ghz {pinned.get('GHZ_VERSION', '?')}, vegeta "
        f"{pinned.get('VEGETA_VERSION', '?')}"
    )


def render_markdown(results: dict[str, Any], targets: list[Target]) -> str:
    lines = [
        f"# jobscheduler benchmark ({results['mode']} run, {results['started_at']})",
        "",
        describe_run(results)
        + ". Service and raw API measured in the same run against the same local cluster.",
        "",
        f"**{results['cluster_note']}**",
        "",
        *[
            f"> WARNING: {note}; the figures may not be representative."
            for note in results.get("disturbances") or []
        ],
        *[f"> ERROR: {e}" for e in request_errors(results)],
        *([f"> The run failed: {results['error']}", ""] if results.get("error") else []),
        "",
        render_targets(targets),
        "",
        render_measurements(results),
        "",
        render_other(results),
    ]
    for phase, profile in (results.get("profiles") or {}).items():
        lines += ["", f"Profile of the service during {phase} (pyinstrument; {profile['path']}):", "", "```"]
        lines += profile["top"]
        lines += ["```"]
    return "\n".join(lines) + "\n"


# -- written results ------------------------------------------------------------------------------

FULL_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-([0-9a-f]{12})\.json$")
SCALE_NAME = re.compile(r"^scale-(\d{4}-\d{2}-\d{2})-([0-9a-f]{12})\.json$")


def results_name(results: dict[str, Any]) -> str:
    """<YYYY-MM-DD>-<12-char commit>: the name of a full run's committed files."""
    commit = str((results.get("git") or {}).get("commit") or "unknown")[:12]
    return f"{results['started_at'][:10]}-{commit}"


def write_results(results_dir: Path, stamp: str, results: dict[str, Any], markdown: str) -> Path:
    """A full run: <date>-<commit>.json/.md in results_dir (committed); any run: <stamp>.json/.md
    and latest.json/.md in results_dir/local (ignored). Returns the main file written."""
    local = results_dir / "local"
    local.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    if results["mode"] == "full" and not results.get("error"):
        path = results_dir / f"{results_name(results)}.json"
        path.write_text(text)
        path.with_suffix(".md").write_text(markdown)
    else:
        path = local / f"{stamp}.json"
        path.write_text(text)
        path.with_suffix(".md").write_text(markdown)
    (local / "latest.json").write_text(text)
    (local / "latest.md").write_text(markdown)
    return path


def latest_full(results_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest full run's committed results file (by its start time), if any."""
    found = []
    for path in results_dir.glob("*.json"):
        if FULL_NAME.match(path.name):
            record = json.loads(path.read_text())
            if record.get("mode") == "full":
                found.append((record.get("started_at", ""), path.name, path, record))
    if not found:
        return None
    _, _, path, record = max(found, key=lambda f: (f[0], f[1]))
    return path, record


def latest_scale(results_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest scale run's results file (bench/scale.py), by its date, then its start time."""
    found = []
    for path in results_dir.glob("scale-*.json"):
        match = SCALE_NAME.match(path.name)
        if match:
            record = json.loads(path.read_text())
            if record.get("kind") == "scale":
                found.append((match.group(1), str(record.get("started_at", "")), path.name, path, record))
    if not found:
        return None
    *_, path, record = max(found, key=lambda f: (f[0], f[1], f[2]))
    return path, record


def render_scale(found: tuple[Path, dict[str, Any]] | None, *, root: Path) -> str:
    if found is None:
        return (
            "No scale results are committed yet. Produce them with `python -m bench.scale` (see "
            "[bench/README.md](../bench/README.md)); it writes `bench/results/scale-<date>-<commit>.json`, "
            "then regenerate this page."
        )
    path, record = found
    git = record.get("git") or {}
    named = SCALE_NAME.match(path.name)
    commit = str(git.get("commit") or record.get("commit") or (named.group(2) if named else "?"))[:12]
    met = {True: "met", False: "**missed**", None: "—"}
    lines = [
        f"From `{path.relative_to(root)}` (commit {commit}"
        f"{', with uncommitted changes' if git.get('dirty') or record.get('dirty') else ''}).",
        "",
        "| measurement | value | target | result |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {row['measurement']} | {row['value']} | {row.get('target') or ''} | {met[row.get('met')]} |"
        for row in record.get("rows") or []
    ]
    return "\n".join(lines)


def render_docs(root: Path, results_dir: Path) -> str:
    """docs/performance.md: the template filled from the latest committed results files."""
    template = Template((root / "bench" / "performance.md.in").read_text())
    found = latest_full(results_dir)
    scale = render_scale(latest_scale(results_dir), root=root)
    if found is None:
        return template.substitute(
            source="No full results file is committed yet: run `task bench`, commit the "
            "`bench/results/<date>-<commit>.json` and `.md` it writes, then `task bench:docs`.",
            warnings="",
            targets="(none yet)",
            measurements="(none yet)",
            other="(none yet)",
            scale=scale,
        )
    path, record = found
    warnings = [
        f"> Warning: {note}; the figures may not be representative."
        for note in record.get("disturbances") or []
    ]
    return template.substitute(
        source=f"Every figure below comes from one full run's results file, `{path.relative_to(root)}`, "
        f"committed with the code it measured: {describe_run(record)}.",
        warnings="\n".join(warnings),
        targets=render_targets([Target(**t) for t in record.get("targets") or []]),
        measurements=render_measurements(record),
        other=render_other(record),
        scale=scale,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Generate docs/performance.md from the latest committed results in bench/results/.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write-docs", action="store_true", help="write docs/performance.md")
    action.add_argument("--check", action="store_true", help="fail when docs/performance.md is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    doc = args.root / "docs" / "performance.md"
    text = render_docs(args.root, args.root / "bench" / "results")
    if args.write_docs:
        doc.write_text(text)
        print(f"wrote {doc.relative_to(args.root)}")
        return 0
    if not doc.exists() or doc.read_text() != text:
        stale = f"{doc.relative_to(args.root)} is stale"
        print(f"{stale}: regenerate it with `python -m bench.report --write-docs`", file=sys.stderr)
        return 1
    print(f"{doc.relative_to(args.root)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
