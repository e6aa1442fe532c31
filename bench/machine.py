"""What the results were measured on: machine, versions, git commit; and where the CPU went.

Everything shares two cores here, so a throughput figure only means something next to the
CPU each process spent on it. `CpuMeter` reads utime+stime from /proc/<pid>/stat for the
service, the bench process itself and every control-plane component (pids from
.devcluster/pids/), getrusage(RUSAGE_CHILDREN) for the ghz and vegeta runs that finished meanwhile, and
/proc/stat for the whole machine: "other" is CPU nobody in the benchmark used (another
workload on the machine would show there, and make the figures suspect).
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.service import CLOCK_TICKS, read_cpu_seconds
from hack import toolversions

CLUSTER_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def describe_machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "")
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(int(meminfo["MemTotal"].split()[0]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def describe_versions() -> dict[str, Any]:
    """hack/versions.env as this run resolved it (KUBERNETES_VERSION from the environment)
    and the Python packages the service runs on."""
    packages = ("jobscheduler", "grpcio", "protobuf", "kubernetes", "urllib3")
    return {
        "pinned": toolversions.selected(),
        "python_packages": {name: _package_version(name) for name in packages},
    }


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_git(root: Path) -> dict[str, Any]:
    """Commit and whether the tree has changes; read-only (no index refresh is written)."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=root, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(changes)}


def read_machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or waiting for I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def wait_until_quiet(*, cores: float = 0.3, interval: float = 0.5, timeout: float = 20.0) -> float:
    """Waits until the machine uses less than `cores` CPUs over `interval`, e.g. until the Job
    controller has caught up with the Jobs just created; returns the seconds waited. Gives up
    after `timeout` (another workload may keep the machine busy)."""
    started = time.monotonic()
    busy = read_machine_busy_seconds()
    while time.monotonic() - started < timeout:
        time.sleep(interval)
        now = read_machine_busy_seconds()
        if (now - busy) / interval < cores:
            break
        busy = now
    return time.monotonic() - started


def find_cluster_pids(state: Path) -> dict[str, int]:
    pids = {}
    for component in CLUSTER_COMPONENTS:
        try:
            pids[component] = int((state / "pids" / f"{component}.pid").read_text())
        except (OSError, ValueError):
            continue
    return pids


@dataclass
class CpuMeter:
    """CPU seconds per process between start() and stop()."""

    cluster_state: Path
    pids: dict[str, int] = field(default_factory=dict)  # besides the cluster: "service", "bench"
    _last: dict[str, tuple[int, float]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, tuple[int, float]]:
        """name -> (pid, CPU seconds); pid 0 for the load drivers and the machine as a whole."""
        values = {}
        for name, pid in {**find_cluster_pids(self.cluster_state), **self.pids}.items():
            try:
                values[name] = (pid, read_cpu_seconds(pid))
            except OSError:
                continue
        # "driver": ghz and vegeta, the runs that finished (were reaped) meanwhile.
        values["driver"] = (0, _children_cpu_seconds())
        values["machine"] = (0, read_machine_busy_seconds())
        return values

    def start(self) -> None:
        self._last = self.snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds each process used since start(), and "other": the rest of the machine's."""
        now = self.snapshot()
        # A process that is not the one measured at start (a restarted component) is left out.
        used = {
            name: seconds - self._last[name][1]
            for name, (pid, seconds) in now.items()
            if name in self._last and self._last[name][0] == pid
        }
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        return {name: round(seconds, 3) for name, seconds in used.items()}


def _children_cpu_seconds() -> float:
    # Only children that exited and were waited for: ghz and vegeta (the service is still running).
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
