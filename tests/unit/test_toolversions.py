"""KUBERNETES_VERSION picks one version of the matrix, with its own etcd and bin directory
(hack/toolversions.py, which hack/tools.sh, hack/devcluster.py and the tests share)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hack import toolversions
from tests.conftest import ROOT

ENV = {"JOBSCHEDULER_CACHE": "/cache"}


def test_without_kubernetes_version_the_default_is_used_from_the_plain_bin_dir() -> None:
    pinned = toolversions.pinned()
    chosen = toolversions.selected(ENV)
    assert chosen["KUBERNETES_VERSION"] == pinned["KUBERNETES_VERSION"]
    assert (
        chosen["ETCD_VERSION"]
        == pinned[f"ETCD_VERSION_{toolversions.minor_key(pinned['KUBERNETES_VERSION'])}"]
    )
    assert toolversions.bin_dir(ENV) == Path("/cache/bin")


def test_every_version_of_the_matrix_has_its_etcd_and_a_bin_dir_of_its_own() -> None:
    default = toolversions.pinned()["KUBERNETES_VERSION"]
    dirs = set()
    for version in toolversions.matrix():
        env = {**ENV, "KUBERNETES_VERSION": version.removeprefix("v")}  # "1.37.2" works too
        chosen = toolversions.selected(env)
        assert chosen["KUBERNETES_VERSION"] == version
        assert chosen["ETCD_VERSION"].startswith("v3.")
        dirs.add(toolversions.bin_dir(env))
        if version != default:
            assert toolversions.bin_dir(env) == Path(f"/cache/bin-{version}")
    assert len(dirs) == len(toolversions.matrix())
    assert default in toolversions.matrix()


def test_the_matrix_spans_four_minors_oldest_first() -> None:
    minors = [tuple(int(p) for p in v.lstrip("v").split(".")[:2]) for v in toolversions.matrix()]
    assert minors == sorted(minors)
    assert len(set(minors)) == len(minors) == 4


def test_a_version_outside_the_matrix_is_refused_naming_the_matrix() -> None:
    with pytest.raises(toolversions.VersionError, match=r"v1\.33\.1 is not in the tested matrix \(v1\.34"):
        toolversions.selected({**ENV, "KUBERNETES_VERSION": "1.33.1"})


def test_tools_sh_resolves_versions_as_python_does() -> None:
    newest = toolversions.matrix()[-1]
    env = {**os.environ, "KUBERNETES_VERSION": newest}
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), "path"], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == str(toolversions.bin_dir(env))
    bad = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), "path"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBERNETES_VERSION": "1.20.0"},
    )
    assert bad.returncode == 1
    assert "not in the tested matrix" in bad.stderr
