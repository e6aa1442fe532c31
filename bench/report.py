"""The verdicts and the written results: targets checked (PASS/FAIL), JSON and a markdown table.

A missed target is reported, never turned into a failing exit code: the benchmark measures,
it does not gate. Results go to bench/results/<UTC timestamp>.json, latest.json and latest.md.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    targets: list[Target] = []
    schedule = results.get("schedule_job") or {}
    for key, entry in schedule.items():
        if not key.startswith("c"):
            continue
        c = entry["concurrency"]
        targets.append(
            Target(
                f"ScheduleJob throughput, c={c}",
                ">= 0.95x raw",
                f"{entry['throughput_ratio']:.2f}x "
                f"({entry['service']['rps']:.0f} vs {entry['raw']['rps']:.0f}/s)",
                entry["throughput_ratio"] >= 0.95,
            )
        )
        targets.append(
            Target(
                f"ScheduleJob service-added latency p50, c={c}",
                "<= 1 ms",
                f"{entry['added_latency_p50_ms']:+.2f} ms",
                entry["added_latency_p50_ms"] <= 1.0,
            )
        )
    status = results.get("get_job_status") or {}
    levels = sorted((lv for lv in status if STATUS_TARGET_KEY in status[lv]), key=int)
    for level in levels:
        entry = status[level][STATUS_TARGET_KEY]
        targets.append(
            Target(
                f"GetJobStatus p99, {_n(int(level))} jobs, c={entry['service']['concurrency']}",
                "<= 2 ms",
                f"{_ms(entry['service']['p99_ms'])} ms",
                entry["service"]["p99_ms"] <= 2.0,
            )
        )
        targets.append(
            Target(
                f"GetJobStatus vs direct reads, {_n(int(level))} jobs, c={entry['service']['concurrency']}",
                ">= 10x faster at p50 and p99",
                f"{entry['speedup_p50']:.1f}x p50, {entry['speedup_p99']:.1f}x p99",
                entry["speedup_p50"] >= 10 and entry["speedup_p99"] >= 10,
            )
        )
    if len(levels) >= 2:
        small = status[levels[0]][STATUS_TARGET_KEY]["service"]["p50_ms"]
        large = status[levels[-1]][STATUS_TARGET_KEY]["service"]["p50_ms"]
        targets.append(
            Target(
                f"GetJobStatus p50 at {_n(int(levels[-1]))} vs {_n(int(levels[0]))} jobs",
                "<= 1.5x",
                f"{large / small:.2f}x ({_ms(large)} vs {_ms(small)} ms)",
                large <= 1.5 * small,
            )
        )
    listing = results.get("list_jobs") or {}
    if listing:
        level = max(listing, key=int)
        for entry in listing[level].values():
            targets.append(
                Target(
                    f"ListJobs page p99, {_n(int(level))} jobs, {entry['variant']}, "
                    f"c={entry['service']['concurrency']}",
                    "<= 20 ms",
                    f"{_ms(entry['service']['p99_ms'])} ms",
                    entry["service"]["p99_ms"] <= 20.0,
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
                "<= 200 MB",
                f"{rss:.0f} MB",
                rss <= 200,
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


def render_markdown(results: dict[str, Any], targets: list[Target]) -> str:
    lines = [
        f"# jobscheduler benchmark ({results['mode']} run, {results['started_at']})",
        "",
        f"{results['machine']['cores']} cores, {results['machine']['memory_gib']} GiB; "
        f"Kubernetes {results['versions']['pinned'].get('KUBERNETES_VERSION', '?')}; "
        f"commit {results['git']['commit'][:12]}{' (dirty)' if results['git']['dirty'] else ''}. "
        "Service and raw API measured in the same run against the same local cluster.",
        "",
        f"**{results['cluster_note']}**",
        "",
        *[
            f"> WARNING: {note}; the figures may not be representative."
            for note in results.get("disturbances") or []
        ],
        "",
        "| measurement | c | service | raw API | service vs raw |",
        "|---|---|---|---|---|",
    ]
    schedule = results.get("schedule_job") or {}
    for key, e in schedule.items():
        if not key.startswith("c"):
            continue
        s, r = e["service"], e["raw"]
        rounds = e.get("rps_by_round") or {}
        service_rounds, raw_rounds = _rounds(rounds.get("service")), _rounds(rounds.get("raw"))
        lines.append(
            f"| ScheduleJob throughput ({_n(e['requests_per_side'])} per side; by round) | "
            f"{e['concurrency']} | {s['rps']:.0f}/s ({service_rounds}) | {r['rps']:.0f}/s ({raw_rounds}) | "
            f"{e['throughput_ratio']:.2f}x |"
        )
        lines.append(
            f"| ScheduleJob latency p50 / p99 | {e['concurrency']} | {_p50_p99(s)} | {_p50_p99(r)} | "
            f"{e['added_latency_p50_ms']:+.2f} ms added at p50 |"
        )
    for level, entries in sorted((results.get("get_job_status") or {}).items(), key=lambda kv: int(kv[0])):
        for e in entries.values():
            lines.append(
                f"| GetJobStatus p50 / p99, {_n(int(level))} jobs (raw: GET job + list its pods) | "
                f"{e['service']['concurrency']} | {_p50_p99(e['service'])} | {_p50_p99(e['raw'])} | "
                f"{e['speedup_p50']:.1f}x / {e['speedup_p99']:.1f}x faster |"
            )
    for level, entries in sorted((results.get("list_jobs") or {}).items(), key=lambda kv: int(kv[0])):
        for e in entries.values():
            what = f"`{e['label_selector']}` (10%)" if e["label_selector"] else "no filter"
            lines.append(
                f"| ListJobs page of 100 p50 / p99, {_n(int(level))} jobs, {what} | "
                f"{e['service']['concurrency']} | {_p50_p99(e['service'])} | {_p50_p99(e['raw'])} | "
                f"{e['speedup_p50']:.1f}x / {e['speedup_p99']:.1f}x faster |"
            )
    memory = results.get("memory") or {}
    if memory:
        parts = [f"{m['label']}: {m['rss_mb']:.0f} MB" for m in memory.values()]
        lines.append(f"| service RSS (VmRSS) | | {'; '.join(parts)} | | |")
    watch = results.get("watch_job")
    if watch:
        lines.append(
            f"| WatchJob event delay p50 / p99 / max ({watch['changes']} pod changes) | 1 | "
            f"{_ms(watch['p50_ms'])} / {_ms(watch['p99_ms'])} / {_ms(watch['max_ms'])} ms | | |"
        )
    lines += ["", "| target | goal | measured | result |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.goal} | {t.measured} | {'PASS' if t.passed else 'FAIL'} |" for t in targets]
    passed = sum(t.passed for t in targets)
    lines += ["", f"{passed} of {len(targets)} targets met."]
    cpu_rows = _cpu_rows(schedule)
    if cpu_rows:
        lines += [
            "",
            "CPU per ScheduleJob in milliseconds, by process (including the watch-cache and "
            "Job-controller work a request causes):",
            "",
            *cpu_rows,
        ]
    for phase, profile in (results.get("profiles") or {}).items():
        lines += ["", f"Profile of the service during {phase} (pyinstrument; {profile['path']}):", "", "```"]
        lines += profile["top"]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def _cpu_rows(schedule: dict[str, Any]) -> list[str]:
    entries = [e for k, e in schedule.items() if k.startswith("c")]
    if not entries:
        return []
    names = sorted({n for e in entries for side in e["cpu_ms_per_request"].values() for n in side})
    names = [n for n in names if n != "other"] + ["other"]  # last: not the benchmark's own
    header = "| c | side | " + " | ".join(names) + " | total (without other) |"
    rows = [header, "|" + "---|" * (len(names) + 3)]
    for e in entries:
        for side in ("service", "raw"):
            cpu = e["cpu_ms_per_request"][side]
            cells = " | ".join(f"{cpu.get(n, 0.0):.2f}" for n in names)
            own = sum(ms for name, ms in cpu.items() if name != "other")
            rows.append(f"| {e['concurrency']} | {side} | {cells} | {own:.2f} |")
    return rows


def write_results(results_dir: Path, stamp: str, results: dict[str, Any], markdown: str) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    shutil.copyfile(path, results_dir / "latest.json")
    (results_dir / f"{stamp}.md").write_text(markdown)
    (results_dir / "latest.md").write_text(markdown)
    return path
