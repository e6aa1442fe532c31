"""Build information: version, commit, build date. Embedded at build time into
_buildinfo.json (by hack/buildinfo.sh or the container build); read from git otherwise."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jobscheduler import __version__


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    commit: str
    dirty: bool
    build_date: str
    python: str

    def full(self) -> str:
        commit = self.commit + ("-dirty" if self.dirty else "")
        return (
            f"jobscheduler {self.version}\n"
            f"  commit:     {commit}\n"
            f"  build date: {self.build_date}\n"
            f"  python:     {self.python} ({platform.python_implementation()}, {platform.machine()})"
        )


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    return out.stdout.strip() if out.returncode == 0 else ""


def build_info() -> BuildInfo:
    python = platform.python_version()
    try:
        raw = json.loads(resources.files("jobscheduler").joinpath("_buildinfo.json").read_text())
        return BuildInfo(
            version=str(raw.get("version") or __version__),
            commit=str(raw.get("commit") or "unknown"),
            dirty=bool(raw.get("dirty")),
            build_date=str(raw.get("build_date") or "unknown"),
            python=python,
        )
    except (OSError, ValueError):
        pass
    try:
        described = _git("describe", "--tags", "--always", "--dirty")
        commit = _git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        described, commit = "", ""
    return BuildInfo(
        version=described.removesuffix("-dirty") or __version__,
        commit=commit or "unknown",
        dirty=described.endswith("-dirty"),
        build_date="unknown (not a build)",
        python=python,
    )
