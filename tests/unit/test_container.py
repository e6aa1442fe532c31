"""The container image, checked without a Docker engine: the Dockerfile's rules are read from
the file, and its build steps and entrypoint commands are replayed in a scratch directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobscheduler.domain.render import WORKLOAD_UID
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_is_multi_stage_on_a_slim_python_base() -> None:
    assert len(stages()) == 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base
    assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim-\w+", base.group(1))


def test_final_stage_runs_as_the_numeric_uid_the_job_pods_use() -> None:
    final = stages()[-1]
    assert re.search(rf"^USER {WORKLOAD_UID}:{WORKLOAD_UID}$", final, re.M)
    assert WORKLOAD_UID != 0


def test_no_compilers_or_package_installs_in_the_final_stage() -> None:
    final = stages()[-1]
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", final)
    assert "COPY --from=build /opt/jobscheduler /opt/jobscheduler" in final


def test_one_image_serves_the_service_and_the_timer() -> None:
    final = stages()[-1]
    assert 'ENTRYPOINT ["jobscheduler"]' in final
    assert 'CMD ["serve"]' in final
    # Timer Jobs override the command with the workload's console script from the same venv.
    assert "jobscheduler-timer" in (ROOT / "pyproject.toml").read_text()


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage replayed: the same files copied, build info from build args, a venv."""
    work = tmp_path_factory.mktemp("image")
    src = work / "src"
    for line in re.findall(r"^COPY (?!--from)(.+)$", stages()[0], re.M):
        *sources, dest = line.split()
        for name in sources:
            target = (src / dest / Path(name).name) if dest.endswith("/") or dest == "./" else src / dest
            if (ROOT / name).is_dir():
                shutil.copytree(
                    ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__", "_buildinfo.json")
                )
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / name, target)
    env = {
        **os.environ,
        "VERSION": "v0.9.0",
        "COMMIT": "feedface",
        "DIRTY": "false",
        "BUILD_DATE": "2026-11-27T00:00:00Z",
    }
    subprocess.run(["bash", "hack/buildinfo.sh"], cwd=src, env=env, check=True, capture_output=True)
    venv = work / "opt"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile", "."],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


def entry(venv: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"}
    return subprocess.run(
        argv, capture_output=True, text=True, env={**base, **(env or {})}, timeout=60, cwd="/"
    )


def test_version_full_shows_the_build_args(image_root: Path) -> None:
    out = entry(image_root, "jobscheduler", "version-full")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "jobscheduler v0.9.0"
    assert "commit:     feedface\n" in out.stdout
    assert "build date: 2026-11-27T00:00:00Z" in out.stdout


def test_serve_outside_a_cluster_fails_with_a_clear_line(image_root: Path) -> None:
    out = entry(image_root, "jobscheduler", "serve")
    assert out.returncode == 2
    assert "in-cluster ServiceAccount" in out.stderr


def test_timer_entrypoint_runs_and_rejects_missing_configuration(image_root: Path) -> None:
    out = entry(image_root, "jobscheduler-timer")
    assert out.returncode == 2
    assert "TIMER_NAME" in out.stderr
