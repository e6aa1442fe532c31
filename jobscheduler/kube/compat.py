"""What the service needs from the API server, checked once at start-up.

An API server that lacks a resource the service calls, or a Job field its manifests carry,
would otherwise fail later, on the first call that needs it, with an error that names neither.
`check_server` asks discovery (kubectl api-resources) and the OpenAPI v3 schema of batch/v1
(kubectl explain) and returns every missing part with the Kubernetes release that added it, so
start-up can refuse with one message that says what to upgrade.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jobscheduler.domain.errors import JobSchedulerError, NotFoundError, UnavailableError
from jobscheduler.kube.gateway import RESOURCES, KubeGateway

# The oldest Kubernetes minor the project's test matrix covers (hack/versions.env); older
# servers are refused only when they lack something below, but start-up says they are untested.
OLDEST_TESTED_MINOR = (1, 34)
OLDEST_TESTED = f"v{OLDEST_TESTED_MINOR[0]}.{OLDEST_TESTED_MINOR[1]}"


def _required_resources() -> dict[str, tuple[str, ...]]:
    """Resources by discovery path: every collection the gateway touches, and the pod log."""
    by_path: dict[str, list[str]] = {}
    for resource, prefix in RESOURCES.items():
        by_path.setdefault(prefix, []).append(resource)
    by_path["/api/v1"].append("pods/log")
    return {path: tuple(resources) for path, resources in by_path.items()}


REQUIRED_RESOURCES = _required_resources()


@dataclass(frozen=True, slots=True)
class Field:
    resource: str  # the batch/v1 resource whose spec has it (not checked when it is missing)
    schema: str  # the OpenAPI schema's name in batch/v1
    name: str
    since: str  # the Kubernetes release where it is enabled by default
    use: str  # what the service needs it for

    def describe(self) -> str:
        kind = self.schema.rsplit(".", 1)[-1]
        return f"batch/v1 {kind}.{self.name} (Kubernetes {self.since}+, for {self.use})"


TRY_SECONDS = 5.0  # one try at /version while waiting for the API at start-up
BATCH_OPENAPI = "/openapi/v3/apis/batch/v1"
REQUIRED_FIELDS = (
    Field("jobs", "io.k8s.api.batch.v1.JobSpec", "podFailurePolicy", "1.26", "exit codes not to retry"),
    Field("jobs", "io.k8s.api.batch.v1.JobSpec", "backoffLimitPerIndex", "1.29", "retries per index"),
    Field("jobs", "io.k8s.api.batch.v1.JobSpec", "maxFailedIndexes", "1.29", "a failed-index budget"),
    Field("jobs", "io.k8s.api.batch.v1.JobSpec", "completionMode", "1.22", "indexed batch jobs"),
    Field("jobs", "io.k8s.api.batch.v1.JobSpec", "ttlSecondsAfterFinished", "1.21", "job retention"),
    Field("cronjobs", "io.k8s.api.batch.v1.CronJobSpec", "timeZone", "1.25", "schedules in a time zone"),
)


class IncompatibleServerError(JobSchedulerError):
    """The API server lacks resources or fields the service needs: a start-up failure."""


@dataclass(frozen=True, slots=True)
class ServerReport:
    version: str  # gitVersion, e.g. v1.35.4
    untested: bool  # older than the oldest minor the matrix tests


def parse_minor(git_version: str) -> tuple[int, int] | None:
    """v1.35.4 (or v1.35.4-gke.100) -> (1, 35); None for something else."""
    parts = git_version.lstrip("v").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def missing_resources(discovered: Mapping[str, set[str] | None]) -> list[str]:
    """Each required resource absent from `discovered` (path -> the resource names its
    discovery lists; None for a group version the server does not serve at all)."""
    missing = []
    for path, resources in REQUIRED_RESOURCES.items():
        group_version = path.removeprefix("/apis/").removeprefix("/api/")
        names = discovered.get(path)
        if names is None:
            missing.append(f"{group_version} (the whole API group version: {', '.join(resources)})")
            continue
        missing.extend(f"{group_version} {r}" for r in resources if r not in names)
    return missing


def missing_fields(openapi: Mapping[str, Any], resources: set[str]) -> list[str]:
    """Each required field of the batch/v1 `resources` the server has that is absent from its
    OpenAPI v3 document's schemas."""
    schemas = openapi.get("components", {}).get("schemas", {})
    return [
        f.describe()
        for f in REQUIRED_FIELDS
        if f.resource in resources and f.name not in schemas.get(f.schema, {}).get("properties", {})
    ]


def check_server(
    gateway: KubeGateway,
    *,
    wait_seconds: float,
    progress: Callable[[str], None],
) -> ServerReport:
    """The API server's version, once it answers; raises IncompatibleServerError naming every
    missing resource and field, or UnavailableError when it did not answer in `wait_seconds`
    (each failed try reported through `progress`)."""
    version = _wait_for_version(gateway, wait_seconds, progress)
    discovered: dict[str, set[str] | None] = {}
    for path in REQUIRED_RESOURCES:
        try:
            listing = gateway.read_path(path)
        except NotFoundError:
            discovered[path] = None
            continue
        discovered[path] = {r.get("name", "") for r in listing.get("resources", [])}
    missing = missing_resources(discovered)
    batch = discovered.get("/apis/batch/v1")
    if batch:
        missing += missing_fields(gateway.read_path(BATCH_OPENAPI), batch)
    git_version = str(version.get("gitVersion", "?"))
    if missing:
        raise IncompatibleServerError(
            f"the Kubernetes API server ({git_version}) lacks what the service needs: "
            + "; ".join(missing)
            + f". Upgrade the cluster (tested: Kubernetes {OLDEST_TESTED} and newer)"
            " or enable those APIs (kube-apiserver --runtime-config)"
        )
    minor = parse_minor(git_version)
    return ServerReport(version=git_version, untested=minor is not None and minor < OLDEST_TESTED_MINOR)


def _wait_for_version(gateway: KubeGateway, wait_seconds: float, progress: Callable[[str], None]) -> Any:
    """GET /version, in tries of at most TRY_SECONDS (the gateway retries within one), with a
    progress line after each failed one, until `wait_seconds` have passed."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return gateway.read_path("/version", deadline=min(deadline, time.monotonic() + TRY_SECONDS))
        except UnavailableError as e:
            left = deadline - time.monotonic()
            if left < 0.5:
                raise UnavailableError(
                    f"the Kubernetes API did not answer for {wait_seconds:.0f} s ({e}); check KUBECONFIG "
                    "or IN_CLUSTER and that the API server is up"
                ) from None
            progress(f"waiting for the Kubernetes API ({left:.0f} s left): {e}")
            time.sleep(min(1.0, left))
