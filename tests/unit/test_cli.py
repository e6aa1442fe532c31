"""`jobscheduler version` and `version-full` print what was embedded at build time."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

BUILDINFO = ROOT / "jobscheduler" / "_buildinfo.json"


@pytest.fixture
def embedded() -> Iterator[Path]:
    """Embeds known build info the way a build does, restoring the developer's afterwards."""
    saved = BUILDINFO.read_bytes() if BUILDINFO.exists() else None
    env = {
        **os.environ,
        "VERSION": "v1.2.3",
        "COMMIT": "0123456789abcdef",
        "DIRTY": "true",
        "BUILD_DATE": "2026-11-27T12:00:00Z",
    }
    subprocess.run(["bash", str(ROOT / "hack" / "buildinfo.sh")], env=env, check=True, capture_output=True)
    try:
        yield BUILDINFO
    finally:
        if saved is None:
            BUILDINFO.unlink()
        else:
            BUILDINFO.write_bytes(saved)


def run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "jobscheduler.cli.main", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout


@pytest.mark.usefixtures("embedded")
def test_version_prints_the_embedded_version() -> None:
    assert run("version").strip() == "v1.2.3"


@pytest.mark.usefixtures("embedded")
def test_version_full_prints_commit_with_dirty_flag_build_date_and_python() -> None:
    out = run("version-full")
    assert out.splitlines()[0] == "jobscheduler v1.2.3"
    assert "commit:     0123456789abcdef-dirty" in out
    assert "build date: 2026-11-27T12:00:00Z" in out
    assert f"python:     {platform.python_version()}" in out


def test_without_embedded_info_the_version_comes_from_git() -> None:
    saved = BUILDINFO.read_bytes() if BUILDINFO.exists() else None
    BUILDINFO.unlink(missing_ok=True)
    try:
        out = run("version-full")
    finally:
        if saved is not None:
            BUILDINFO.write_bytes(saved)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    assert head.strip() in out
    assert "not a build" in out
