"""The Taskfile offers the original service's tasks plus the project's own, each described."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import tool

ORIGINAL = {
    "run",  # `LOG_LEVEL=debug task run`, as the original documents
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
OURS = {"cluster:up", "cluster:down", "run:local", "matrix", "bench"}


@pytest.fixture(scope="module")
def task() -> str:
    return tool("task")


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


def test_run_task_serves_through_dev_sh_with_the_callers_log_level(task: str, tmp_path: Path) -> None:
    # `bash` on PATH replaced by one that reports how it was called, so nothing is started.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bash").write_text('#!/bin/sh\necho "bash $* LOG_LEVEL=$LOG_LEVEL"\n')
    (fake / "bash").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LOG_LEVEL": "debug"}

    out = subprocess.run([task, "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bash hack/dev.sh run LOG_LEVEL=debug"
