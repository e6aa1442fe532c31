"""The Taskfile offers the original service's tasks plus the project's own, each described."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

ORIGINAL = {
    "tools:install",
    "proto:generate",
    "test",
    "run:debug",
    "build",
    "container:build",
    "k8s:apply",
    "dev",
    "check",
    "health",
    "version:info",
    "k8s:logs",
    "k8s:port-forward",
}
OURS = {"cluster:up", "cluster:down", "run:local"}


@pytest.fixture(scope="module")
def task() -> str:
    path = shutil.which("task") or str(Path.home() / ".cache/jobscheduler/bin/task")
    assert Path(path).exists(), "task is built by hack/tools.sh"
    return path


def test_every_expected_task_exists_with_a_description(task: str) -> None:
    out = subprocess.run([task, "--list", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    tasks = {t["name"]: t["desc"] for t in json.loads(out.stdout)["tasks"]}
    assert (ORIGINAL | OURS) - tasks.keys() == set()
    assert [name for name, desc in tasks.items() if not desc.strip()] == []


def test_version_info_task_prints_the_full_version(task: str) -> None:
    out = subprocess.run([task, "version:info"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("jobscheduler ")
    assert "commit:" in out.stdout
