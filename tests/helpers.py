"""Small helpers for tests that talk to the cluster: polling and restricted pod specs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from kubernetes import client

from hack import toolversions

T = TypeVar("T")


def record_difference(request: pytest.FixtureRequest, text: str) -> None:
    """Names behaviour the test found to differ between Kubernetes minors ("v1.37: ..."); the
    JUnit report carries it and hack/matrix.py lists it for the version in docs/compatibility.md."""
    request.node.user_properties.append(("difference", text))


def tool(name: str) -> str:
    """A binary hack/tools.sh built: from the bin dir of the Kubernetes version this run selected
    (KUBERNETES_VERSION), else from PATH; fails the test, saying how to build it, when absent."""
    path = toolversions.bin_dir() / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: build the tools with `bash hack/tools.sh build`")
    return found


def wait_until(what: str, probe: Callable[[], T | None], *, timeout: float = 60, interval: float = 0.2) -> T:
    """Calls probe until it returns something truthy, and returns that; fails after timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


def restricted_pod_spec(
    *, annotations: dict[str, str] | None = None, restart_policy: str = "Never"
) -> client.V1PodTemplateSpec:
    """A pod template that PodSecurity `restricted` admits."""
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(annotations=annotations or {}),
        spec=client.V1PodSpec(
            restart_policy=restart_policy,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=65532,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="main",
                    image="registry.example/sleeper:1",
                    resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                        read_only_root_filesystem=True,
                    ),
                )
            ],
        ),
    )


def job_manifest(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    backoff_limit: int = 0,
    active_deadline_seconds: int | None = None,
    ttl_seconds_after_finished: int | None = None,
) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit,
            active_deadline_seconds=active_deadline_seconds,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
            template=restricted_pod_spec(annotations=annotations),
        ),
    )


def job_condition(job: client.V1Job, kind: str) -> client.V1JobCondition | None:
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None
