#!/usr/bin/env python3
"""Which tool versions this run uses, from hack/versions.env and KUBERNETES_VERSION.

versions.env pins one default Kubernetes version and the matrix of minors the project is tested
on, each with the etcd it runs on (ETCD_VERSION_<major>_<minor>). KUBERNETES_VERSION in the
environment ("1.37.2" or "v1.37.2") picks another member of the matrix for the tools, the dev
cluster, the tests and the benchmark. The one place that resolves it: hack/tools.sh evaluates
`toolversions.py shell`, hack/devcluster.py, bench/ and the tests import it.

    python3 hack/toolversions.py shell     KEY='value' lines for bash (the resolved set)
    python3 hack/toolversions.py matrix    the matrix's versions, one per line
    python3 hack/toolversions.py bin       the bin directory of the selected version
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSIONS_ENV = ROOT / "hack" / "versions.env"


class VersionError(Exception):
    """KUBERNETES_VERSION names a version outside the matrix, or versions.env is incomplete."""


def pinned(path: Path = VERSIONS_ENV) -> dict[str, str]:
    """versions.env as written: KEY=value lines, no expansion."""
    versions = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def matrix(versions: Mapping[str, str] | None = None) -> list[str]:
    return (versions if versions is not None else pinned())["KUBERNETES_MATRIX"].split()


def minor_key(version: str) -> str:
    """v1.37.2 -> 1_37, the suffix of the per-minor keys in versions.env."""
    major, minor = version.lstrip("v").split(".")[:2]
    return f"{major}_{minor}"


def selected(environ: Mapping[str, str] = os.environ, path: Path = VERSIONS_ENV) -> dict[str, str]:
    """versions.env resolved for this run: KUBERNETES_VERSION (the environment's, else the
    default) and ETCD_VERSION for its minor; every other key as pinned."""
    versions = pinned(path)
    default = versions["KUBERNETES_VERSION"]
    wanted = environ.get("KUBERNETES_VERSION", "").strip() or default
    wanted = wanted if wanted.startswith("v") else f"v{wanted}"
    tested = matrix(versions)
    if wanted not in tested:
        raise VersionError(
            f"KUBERNETES_VERSION={wanted} is not in the tested matrix ({', '.join(tested)}); "
            "pick one of those, or add it to KUBERNETES_MATRIX in hack/versions.env with its "
            f"ETCD_VERSION_{minor_key(wanted)}"
        )
    etcd = versions.get(f"ETCD_VERSION_{minor_key(wanted)}")
    if not etcd:
        raise VersionError(f"hack/versions.env has no ETCD_VERSION_{minor_key(wanted)} for {wanted}")
    versions.update(KUBERNETES_VERSION=wanted, ETCD_VERSION=etcd, KUBERNETES_DEFAULT=default)
    return versions


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    cache = environ.get("JOBSCHEDULER_CACHE") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jobscheduler"
    )
    return Path(cache)


def bin_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The default version's tools are in <cache>/bin (the directory people put on PATH); another
    version of the matrix gets <cache>/bin-<version>, holding every tool, so one PATH entry
    selects a whole consistent set."""
    versions = selected(environ)
    if versions["KUBERNETES_VERSION"] == versions["KUBERNETES_DEFAULT"]:
        return cache_dir(environ) / "bin"
    return cache_dir(environ) / f"bin-{versions['KUBERNETES_VERSION']}"


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    try:
        if command == "shell":
            for key, value in selected().items():
                print(f"{key}={shlex.quote(value)}")
            print(f"BIN={shlex.quote(str(bin_dir()))}")
        elif command == "matrix":
            print("\n".join(matrix()))
        elif command == "bin":
            print(bin_dir())
        else:
            print("usage: toolversions.py shell|matrix|bin", file=sys.stderr)
            return 2
    except VersionError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
