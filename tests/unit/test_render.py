"""From a request to a Job manifest: check_request's defaults and refusals, render_job's output
(identity, restricted pod security, resources), job ids, the request fingerprint, and the timer
job type's validation and container."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError, RenderError
from jobscheduler.domain.models import SECRET_ENV_PENDING_ANNOTATION
from jobscheduler.domain.registry import Workload
from jobscheduler.domain.render import (
    REQUEST_HASH_ANNOTATION,
    WORKLOAD_UID,
    JobRequest,
    Resources,
    check_request,
    job_id_for_request,
    new_job_id,
    render_job,
    render_secret_env,
    request_hash,
    secret_env_name,
)
from jobscheduler.domain.validation import is_dns1123_label
from jobscheduler.jobtypes.timer import TimerJobType

Obj = dict[str, Any]

SETTINGS = Settings()
TIMER = TimerJobType()
JOB_ID = "job-7f3k2m9x1q"
TIMER_PARAMS: Mapping[str, Any] = {
    "duration_seconds": 30,
    "timer_name": "nightly",
    "control_plane_endpoint": "http://control-plane:8080/done",
}
MISSING = object()  # in a params change: remove that key


def make_request(**changes: Any) -> JobRequest:
    return JobRequest(job_type="timer", params=TIMER_PARAMS, **changes)


def timer_params(changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    params = {**TIMER_PARAMS, **(changes or {})}
    return {k: v for k, v in params.items() if v is not MISSING}


def render(
    *,
    params: Mapping[str, Any] | None = None,
    settings: Settings = SETTINGS,
    job_id: str = JOB_ID,
    **changes: Any,
) -> Obj:
    """The manifest for a timer request, through check_request and validate as the service does."""
    validated = TIMER.validate(timer_params(params), settings)
    request = check_request(make_request(**changes), settings)
    return render_job(request, job_type=TIMER, params=validated, job_id=job_id, settings=settings)


def pod_spec(manifest: Obj) -> Obj:
    spec: Obj = manifest["spec"]["template"]["spec"]
    return spec


def container(manifest: Obj) -> Obj:
    (only,) = pod_spec(manifest)["containers"]
    result: Obj = only
    return result


def env_of(manifest: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container(manifest)["env"]}


def rejected_field(check: Callable[[], object]) -> str | None:
    """The field of the InvalidArgumentError check raises, or None when it accepts."""
    try:
        check()
    except InvalidArgumentError as e:
        return e.field
    return None


# --- check_request: defaults and normalisation -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        pytest.param({}, "namespace", "default", id="namespace-from-settings"),
        pytest.param({"namespace": "team-a"}, "namespace", "team-a", id="namespace-given-kept"),
        pytest.param({}, "name", "timer", id="name-defaults-to-job-type"),
        pytest.param({"name": "My-Job"}, "name", "my-job", id="name-lower-cased"),
        pytest.param({"name": "  Nightly "}, "name", "nightly", id="name-stripped"),
        pytest.param({}, "ttl_seconds_after_finished", 86400, id="ttl-default-from-settings"),
        pytest.param(
            {"ttl_seconds_after_finished": 0}, "ttl_seconds_after_finished", 0, id="ttl-explicit-0-kept"
        ),
        pytest.param(
            {"ttl_seconds_after_finished": 60}, "ttl_seconds_after_finished", 60, id="ttl-explicit-kept"
        ),
        pytest.param({}, "backoff_limit", None, id="backoff-unset-stays-unset"),
        pytest.param({"backoff_limit": 0}, "backoff_limit", 0, id="backoff-0"),
        pytest.param({"backoff_limit": 1000}, "backoff_limit", 1000, id="backoff-1000-max"),
        pytest.param({"active_deadline_seconds": 1}, "active_deadline_seconds", 1, id="deadline-1-min"),
        pytest.param(
            {"active_deadline_seconds": 2**31 - 1},
            "active_deadline_seconds",
            2**31 - 1,
            id="deadline-int32-max",
        ),
        pytest.param({"request_id": "r" * 256}, "request_id", "r" * 256, id="request-id-256-chars"),
        pytest.param({"labels": {"team": "a"}}, "labels", {"team": "a"}, id="labels-kept"),
        pytest.param({"annotations": {"note": "n"}}, "annotations", {"note": "n"}, id="annotations-kept"),
    ],
)
def test_check_request_applies_defaults(changes: dict[str, Any], attribute: str, expected: Any) -> None:
    assert getattr(check_request(make_request(**changes), SETTINGS), attribute) == expected


def test_check_request_namespace_default_comes_from_settings() -> None:
    settings = dataclasses.replace(SETTINGS, namespace="jobs")
    assert check_request(make_request(), settings).namespace == "jobs"


def test_check_request_without_default_ttl_keeps_jobs_forever() -> None:
    settings = dataclasses.replace(SETTINGS, default_ttl_seconds_after_finished=None)
    assert check_request(make_request(), settings).ttl_seconds_after_finished is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(Resources(), Resources("100m", "64Mi"), id="defaults-from-settings"),
        pytest.param(Resources("250m", "128Mi"), Resources("250m", "128Mi"), id="requests-kept"),
        pytest.param(Resources(" 250m ", ""), Resources("250m", "64Mi"), id="request-stripped"),
        pytest.param(
            Resources(cpu_limit="50m"),
            Resources("50m", "64Mi", cpu_limit="50m"),
            id="lone-cpu-limit-below-default-becomes-request",
        ),
        pytest.param(
            Resources(memory_limit="32Mi"),
            Resources("100m", "32Mi", memory_limit="32Mi"),
            id="lone-memory-limit-below-default-becomes-request",
        ),
        pytest.param(
            Resources(cpu_limit="2"),
            Resources("100m", "64Mi", cpu_limit="2"),
            id="lone-cpu-limit-above-default-keeps-default-request",
        ),
        pytest.param(
            Resources(memory_limit="64Mi"),
            Resources("100m", "64Mi", memory_limit="64Mi"),
            id="lone-limit-equal-to-default",
        ),
        pytest.param(
            Resources("1", "1Gi", "1", "1Gi"), Resources("1", "1Gi", "1", "1Gi"), id="limit-equal-to-request"
        ),
        pytest.param(
            Resources("100m", "", "1000m"),
            Resources("100m", "64Mi", "1000m"),
            id="limit-above-request-in-other-units",
        ),
        # Regression (found by the gRPC fuzz test): "1E" (exa) was refused as a bad exponent.
        pytest.param(Resources("1E", "1E"), Resources("1E", "1E"), id="exa-alone"),
    ],
)
def test_check_request_resources(given: Resources, expected: Resources) -> None:
    assert check_request(make_request(resources=given), SETTINGS).resources == expected


def test_check_request_resource_defaults_come_from_settings() -> None:
    settings = dataclasses.replace(SETTINGS, default_cpu_request="1", default_memory_request="1Gi")
    assert check_request(make_request(), settings).resources == Resources("1", "1Gi")


# --- check_request: refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"name": "bad_name"}, "name", id="name-underscore"),
        pytest.param({"name": "a" * 64}, "name", id="name-64-chars"),
        pytest.param({"name": "-job"}, "name", id="name-leading-dash"),
        pytest.param({"namespace": "Team"}, "namespace", id="namespace-upper-case"),
        pytest.param({"namespace": "n" * 64}, "namespace", id="namespace-64-chars"),
        pytest.param({"labels": {"job-name": "x"}}, "labels", id="label-reserved-key"),
        pytest.param({"labels": {"team": "a b"}}, "labels[team]", id="label-bad-value"),
        pytest.param(
            {"annotations": {"jobscheduler.io/request-id": "x"}}, "annotations", id="annotation-reserved-key"
        ),
        pytest.param({"request_id": "r" * 257}, "request_id", id="request-id-257-chars"),
        pytest.param({"request_id": "abc\n"}, "request_id", id="request-id-newline"),
        pytest.param({"request_id": "a\x00b"}, "request_id", id="request-id-nul"),
        pytest.param({"request_id": "a\tb"}, "request_id", id="request-id-tab"),
        pytest.param({"backoff_limit": -1}, "backoff_limit", id="backoff-negative"),
        pytest.param({"backoff_limit": 1001}, "backoff_limit", id="backoff-above-1000"),
        pytest.param({"active_deadline_seconds": 0}, "active_deadline_seconds", id="deadline-zero"),
        pytest.param({"active_deadline_seconds": -5}, "active_deadline_seconds", id="deadline-negative"),
        pytest.param(
            {"active_deadline_seconds": 2**31}, "active_deadline_seconds", id="deadline-above-int32"
        ),
        pytest.param({"ttl_seconds_after_finished": -1}, "ttl_seconds_after_finished", id="ttl-negative"),
        pytest.param(
            {"ttl_seconds_after_finished": 2**31}, "ttl_seconds_after_finished", id="ttl-above-int32"
        ),
        pytest.param(
            {"resources": Resources(cpu_request="0")}, "resources.cpu_request", id="cpu-request-zero"
        ),
        pytest.param(
            {"resources": Resources(cpu_request="-100m")}, "resources.cpu_request", id="cpu-request-negative"
        ),
        pytest.param(
            {"resources": Resources(cpu_request="lots")},
            "resources.cpu_request",
            id="cpu-request-not-quantity",
        ),
        pytest.param(
            {"resources": Resources(memory_request="0Mi")},
            "resources.memory_request",
            id="memory-request-zero-with-suffix",
        ),
        pytest.param(
            {"resources": Resources(cpu_limit="-1")}, "resources.cpu_limit", id="cpu-limit-negative"
        ),
        pytest.param(
            {"resources": Resources(memory_limit="0")}, "resources.memory_limit", id="memory-limit-zero"
        ),
        pytest.param(
            {"resources": Resources(memory_limit="64MB")},
            "resources.memory_limit",
            id="memory-limit-not-quantity",
        ),
        pytest.param(
            {"resources": Resources(cpu_request="200m", cpu_limit="100m")},
            "resources.cpu_limit",
            id="cpu-limit-below-request",
        ),
        pytest.param(
            {"resources": Resources(memory_request="128Mi", memory_limit="64Mi")},
            "resources.memory_limit",
            id="memory-limit-below-request",
        ),
        pytest.param(
            {"resources": Resources(memory_request="1Gi", memory_limit="1G")},
            "resources.memory_limit",
            id="memory-limit-1G-below-request-1Gi",
        ),
        # Regressions (found by the gRPC fuzz test): decimal.Overflow escaped as INTERNAL.
        pytest.param(
            {"resources": Resources(cpu_request="1e1000000")},
            "resources.cpu_request",
            id="cpu-exponent-overflow",
        ),
        pytest.param(
            {"resources": Resources(memory_limit="9" * 1_100_000)},
            "resources.memory_limit",
            id="memory-million-digits",
        ),
        pytest.param(
            {"labels": {f"k{i:04d}.example.com/{'n' * 40}": "v" * 63 for i in range(600)}},
            "labels",
            id="labels-over-64-KiB",
        ),
    ],
)
def test_check_request_rejects_with_field(changes: dict[str, Any], field: str) -> None:
    assert rejected_field(lambda: check_request(make_request(**changes), SETTINGS)) == field


# --- render_job: identity and metadata --------------------------------------------------------


def test_render_job_is_a_batch_v1_job_named_by_the_job_id() -> None:
    manifest = render(namespace="team-a")
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert manifest["metadata"]["name"] == JOB_ID
    assert manifest["metadata"]["namespace"] == "team-a"


def test_render_job_is_pure() -> None:
    assert render(request_id="r-1", labels={"team": "a"}) == render(request_id="r-1", labels={"team": "a"})


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda m: m["metadata"]["labels"], id="job"),
        pytest.param(lambda m: m["spec"]["template"]["metadata"]["labels"], id="pod-template"),
    ],
)
def test_labels_identify_the_service_type_name_and_keep_the_callers(where: Callable[[Obj], Obj]) -> None:
    labels = where(render(name="Nightly-Run", labels={"team": "payments", "example.com/tier": "gold"}))
    assert labels == {
        "team": "payments",
        "example.com/tier": "gold",
        "app.kubernetes.io/managed-by": "jobscheduler",
        "jobscheduler.io/job-type": "timer",
        "jobscheduler.io/name": "nightly-run",
    }


def test_pod_annotations_are_exactly_the_callers() -> None:
    manifest = render(annotations={"note": "hello world", "example.com/owner": "ops"})
    assert manifest["spec"]["template"]["metadata"]["annotations"] == {
        "note": "hello world",
        "example.com/owner": "ops",
    }


@pytest.mark.parametrize(
    ("request_id", "expected"),
    [
        pytest.param("", None, id="absent-without-request-id"),
        pytest.param("order-42", "order-42", id="present-with-request-id"),
    ],
)
def test_job_request_id_annotation(request_id: str, expected: str | None) -> None:
    annotations = render(request_id=request_id)["metadata"]["annotations"]
    assert annotations.get("jobscheduler.io/request-id") == expected


def test_job_carries_the_request_hash_annotation() -> None:
    validated = TIMER.validate(timer_params(), SETTINGS)
    request = check_request(make_request(request_id="r-1"), SETTINGS)
    manifest = render_job(request, job_type=TIMER, params=validated, job_id=JOB_ID, settings=SETTINGS)
    assert manifest["metadata"]["annotations"][REQUEST_HASH_ANNOTATION] == request_hash(request, validated)


# --- render_job: pod and container --------------------------------------------------------------


def test_pod_never_restarts_and_has_no_service_account_token() -> None:
    spec = pod_spec(render())
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


def test_pod_security_context_runs_as_non_root_with_runtime_default_seccomp() -> None:
    context = pod_spec(render())["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == WORKLOAD_UID != 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_security_context_is_locked_down() -> None:
    context = container(render())["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(Resources(), {"requests": {"cpu": "100m", "memory": "64Mi"}}, id="defaults-no-limits"),
        pytest.param(
            Resources("250m", "128Mi"),
            {"requests": {"cpu": "250m", "memory": "128Mi"}},
            id="requests-no-limits",
        ),
        pytest.param(
            Resources(cpu_limit="500m"),
            {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m"}},
            id="cpu-limit-only",
        ),
        pytest.param(
            Resources("1", "1Gi", "2", "2Gi"),
            {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            id="requests-and-limits",
        ),
    ],
)
def test_container_resources(resources: Resources, expected: Obj) -> None:
    assert container(render(resources=resources))["resources"] == expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, {"backoffLimit": 0, "ttlSecondsAfterFinished": 86400}, id="defaults"),
        pytest.param(
            {"backoff_limit": 3}, {"backoffLimit": 3, "ttlSecondsAfterFinished": 86400}, id="backoff"
        ),
        pytest.param(
            {"active_deadline_seconds": 600},
            {"backoffLimit": 0, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 86400},
            id="active-deadline",
        ),
        pytest.param(
            {"ttl_seconds_after_finished": 0},
            {"backoffLimit": 0, "ttlSecondsAfterFinished": 0},
            id="ttl-zero-kept",
        ),
    ],
)
def test_job_spec_scalars_present_only_when_set(changes: dict[str, Any], expected: Obj) -> None:
    spec = render(**changes)["spec"]
    assert {k: v for k, v in spec.items() if k != "template"} == expected


def test_no_ttl_when_settings_keep_jobs_forever() -> None:
    settings = dataclasses.replace(SETTINGS, default_ttl_seconds_after_finished=None)
    assert "ttlSecondsAfterFinished" not in render(settings=settings)["spec"]


# --- PodSecurity "restricted" -----------------------------------------------------------------

_RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SECCOMP_ALLOWED = {"RuntimeDefault", "Localhost"}


def restricted_violations(pod: Obj) -> list[str]:
    """What in a pod spec breaks the PodSecurity `restricted` profile, as far as is checkable
    from the spec alone (the runtime's own defaults are not known here)."""
    found: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(host)
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("sysctls"):
        found.append("sysctls")
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    containers = [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]
    if not containers:
        found.append("no containers")
    for c in containers:
        context = c.get("securityContext") or {}
        name = c.get("name", "?")
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot not true")
        if context.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile")) or {}
        if seccomp.get("type") not in _SECCOMP_ALLOWED:
            found.append(f"{name}: seccomp {seccomp.get('type')}")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            found.append(f"{name}: hostPort")
    return found


def test_rendered_timer_pod_satisfies_pod_security_restricted() -> None:
    manifest = render(
        params={"env": {"EXTRA": "1"}, "image": "reg.example/timer:1"},
        resources=Resources(cpu_limit="1", memory_limit="128Mi"),
        labels={"team": "a"},
    )
    assert restricted_violations(pod_spec(manifest)) == []


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    """Sets a dotted path ("containers.0.securityContext.privileged") in a pod spec."""

    def change(pod: Obj) -> None:
        *parents, last = path.split(".")
        node: Any = pod
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value

    return change


def _drop(path: str) -> Callable[[Obj], None]:
    def change(pod: Obj) -> None:
        *parents, last = path.split(".")
        node: Any = pod
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


@pytest.mark.parametrize(
    "breach",
    [
        pytest.param(_set("hostNetwork", True), id="host-network"),
        pytest.param(_set("hostPID", True), id="host-pid"),
        pytest.param(_set("hostIPC", True), id="host-ipc"),
        pytest.param(_set("volumes", [{"name": "h", "hostPath": {"path": "/"}}]), id="host-path-volume"),
        pytest.param(_set("containers.0.securityContext.privileged", True), id="privileged"),
        pytest.param(_set("containers.0.securityContext.allowPrivilegeEscalation", True), id="escalation"),
        pytest.param(
            _set("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
            id="added-capability",
        ),
        pytest.param(_set("containers.0.securityContext.capabilities", {}), id="capabilities-not-dropped"),
        pytest.param(_set("containers.0.securityContext.runAsNonRoot", False), id="container-run-as-root"),
        pytest.param(_set("containers.0.securityContext.runAsUser", 0), id="container-uid-0"),
        pytest.param(_set("securityContext.seccompProfile", {"type": "Unconfined"}), id="seccomp-unconfined"),
        pytest.param(_drop("securityContext.seccompProfile"), id="seccomp-unset"),
        pytest.param(_set("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]), id="host-port"),
        pytest.param(
            _set("initContainers", [{"name": "init", "image": "busybox"}]), id="bare-init-container"
        ),
    ],
)
def test_restricted_checker_notices_each_breach(breach: Callable[[Obj], None]) -> None:
    pod = copy.deepcopy(pod_spec(render()))
    breach(pod)
    assert restricted_violations(pod) != []


class _EscalatingJobType:
    """A job type whose container asks for more than the service allows."""

    name = "escalating"
    request_field = "escalating_job"

    def __init__(self, container: Mapping[str, Any]) -> None:
        self.container = container

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        return params

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        return Workload(container={"name": "x", "image": "busybox", **self.container})


@pytest.mark.parametrize(
    ("container", "field"),
    [
        pytest.param(
            {"securityContext": {"privileged": True, "runAsUser": 0}}, "securityContext", id="privileged"
        ),
        pytest.param({"ports": [{"containerPort": 80, "hostPort": 80}]}, "ports", id="host-port"),
        pytest.param({"volumeMounts": [{"name": "host", "mountPath": "/host"}]}, "volumeMounts", id="mounts"),
        pytest.param({"resources": {"limits": {"cpu": "64"}}}, "resources", id="own-resources"),
    ],
)
def test_job_type_cannot_set_container_fields_that_belong_to_the_renderer(
    container: Mapping[str, Any], field: str
) -> None:
    job_type = _EscalatingJobType(container)
    request = check_request(JobRequest(job_type=job_type.name, params={}), SETTINGS)
    with pytest.raises(RenderError, match=field):
        render_job(request, job_type=job_type, params={}, job_id=JOB_ID, settings=SETTINGS)


def test_a_job_type_within_its_fields_gets_a_restricted_pod() -> None:
    job_type = _EscalatingJobType({"command": ["run"], "workingDir": "/work"})
    request = check_request(JobRequest(job_type=job_type.name, params={}), SETTINGS)
    manifest = render_job(request, job_type=job_type, params={}, job_id=JOB_ID, settings=SETTINGS)
    assert restricted_violations(pod_spec(manifest)) == []
    assert manifest["metadata"]["labels"]["jobscheduler.io/job-type"] == "escalating"


@pytest.mark.parametrize("request_id", ["a\x7fb", "a\x85b", "a\nb"], ids=["del", "c1-nel", "newline"])
def test_request_id_with_control_characters_is_refused(request_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        check_request(JobRequest(job_type="timer", params={}, request_id=request_id), SETTINGS)
    assert err.value.field == "request_id"


# --- job ids ----------------------------------------------------------------------------------


def test_new_job_id_shape() -> None:
    assert re.fullmatch(r"job-[a-z0-9]{10}", new_job_id())


def test_new_job_id_is_random() -> None:
    assert len({new_job_id() for _ in range(200)}) == 200


def test_job_id_for_request_is_deterministic() -> None:
    assert job_id_for_request("team-a", "order-42") == job_id_for_request("team-a", "order-42")


@pytest.mark.parametrize(
    ("namespace", "request_id"),
    [
        pytest.param("team-b", "order-42", id="other-namespace"),
        pytest.param("team-a", "order-43", id="other-request-id"),
        pytest.param("team-aorder-42", "", id="no-concatenation-collision"),
    ],
)
def test_job_id_for_request_differs(namespace: str, request_id: str) -> None:
    assert job_id_for_request(namespace, request_id) != job_id_for_request("team-a", "order-42")


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param("order-42", id="plain"),
        pytest.param("UPPER/case with spaces", id="not-a-name-itself"),
        pytest.param("x" * 256, id="longest"),
        pytest.param("ü€😀", id="non-ascii"),
    ],
)
def test_job_id_for_request_is_a_dns_label(request_id: str) -> None:
    job_id = job_id_for_request("team-a", request_id)
    assert is_dns1123_label(job_id)
    assert job_id.startswith("job-")


# --- request_hash -----------------------------------------------------------------------------


def _hash_of(request: JobRequest, params: Mapping[str, Any]) -> str:
    return request_hash(check_request(request, SETTINGS), TIMER.validate(params, SETTINGS))


def test_request_hash_equal_for_equal_requests() -> None:
    first = _hash_of(make_request(request_id="r", labels={"a": "1", "b": "2"}), timer_params())
    again = _hash_of(
        make_request(request_id="r", labels={"b": "2", "a": "1"}),
        dict(reversed(list(timer_params().items()))),
    )
    assert first == again


@pytest.mark.parametrize(
    ("changes", "params"),
    [
        pytest.param({}, {"duration_seconds": 31}, id="duration"),
        pytest.param({}, {"timer_name": "other"}, id="timer-name"),
        pytest.param({}, {"env": {"X": "1"}}, id="env"),
        pytest.param({"namespace": "team-b"}, {}, id="namespace"),
        pytest.param({"name": "other"}, {}, id="name"),
        pytest.param({"labels": {"team": "b"}}, {}, id="labels"),
        pytest.param({"resources": Resources(cpu_limit="1")}, {}, id="resources"),
        pytest.param({"backoff_limit": 2}, {}, id="backoff-limit"),
        pytest.param({"secret_env": {"TOKEN": "s"}}, {}, id="secret-env-names"),
    ],
)
def test_request_hash_differs_when_the_request_differs(
    changes: dict[str, Any], params: dict[str, Any]
) -> None:
    base = _hash_of(make_request(request_id="r"), timer_params())
    assert _hash_of(make_request(request_id="r", **changes), timer_params(params)) != base


def test_request_hash_leaves_secret_values_out() -> None:
    first = _hash_of(make_request(request_id="r", secret_env={"TOKEN": "one"}), timer_params())
    assert _hash_of(make_request(request_id="r", secret_env={"TOKEN": "two"}), timer_params()) == first


# --- secret_env --------------------------------------------------------------------------------


def test_secret_env_is_referenced_by_name_never_by_value() -> None:
    manifest = render(secret_env={"DB_PASSWORD": "hunter2", "API_KEY": "k-123"})
    env = container(manifest)["env"]
    assert env[-2:] == [
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": f"{JOB_ID}-env", "key": "API_KEY"}}},
        {
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": f"{JOB_ID}-env", "key": "DB_PASSWORD"}},
        },
    ]
    text = json.dumps(manifest)
    assert "hunter2" not in text
    assert "k-123" not in text


def test_secret_env_job_waits_suspended_for_its_secret() -> None:
    manifest = render(secret_env={"A": "1"})
    assert manifest["spec"]["suspend"] is True
    assert manifest["metadata"]["annotations"][SECRET_ENV_PENDING_ANNOTATION] == "true"
    plain = render()
    assert "suspend" not in plain["spec"]
    assert SECRET_ENV_PENDING_ANNOTATION not in plain["metadata"]["annotations"]


def test_secret_env_secret_is_owned_by_the_job_and_immutable() -> None:
    request = check_request(make_request(secret_env={"B": "2", "A": "1"}), SETTINGS)
    job = {"metadata": {"name": JOB_ID, "namespace": "team-a", "uid": "u-1"}}
    secret = render_secret_env(request, job)
    assert secret["metadata"]["name"] == secret_env_name(JOB_ID) == f"{JOB_ID}-env"
    assert secret["metadata"]["namespace"] == "team-a"
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": JOB_ID, "uid": "u-1"}
    ]
    assert secret["stringData"] == {"A": "1", "B": "2"}
    assert secret["immutable"] is True


@pytest.mark.parametrize(
    ("secret_env", "params", "message"),
    [
        pytest.param({"1BAD": "x"}, {}, "is not a valid variable name", id="bad-name"),
        pytest.param({"TIMER_NAME": "x"}, {}, "already set by the job type", id="service-variable"),
        pytest.param({"X": "x"}, {"env": {"X": "y"}}, "already set by the job type", id="also-in-env"),
        pytest.param({"X": "x" * 70_000}, {}, "at most 65536", id="too-large"),
    ],
)
def test_secret_env_refusals_name_the_field(
    secret_env: dict[str, str], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        render(params=params, secret_env=secret_env)
    assert caught.value.field == "secret_env"
    assert message in caught.value.detail
    assert "x" * 100 not in str(caught.value)


# --- timer job type: validate -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"duration_seconds": 0}, "duration_seconds", id="duration-zero"),
        pytest.param({"duration_seconds": -1}, "duration_seconds", id="duration-negative"),
        pytest.param({"duration_seconds": 86401}, "duration_seconds", id="duration-above-max"),
        pytest.param({"duration_seconds": "5"}, "duration_seconds", id="duration-string"),
        pytest.param({"duration_seconds": True}, "duration_seconds", id="duration-bool"),
        pytest.param({"duration_seconds": 5.0}, "duration_seconds", id="duration-float"),
        pytest.param({"duration_seconds": MISSING}, "duration_seconds", id="duration-missing"),
        pytest.param({"timer_name": MISSING}, "timer_name", id="timer-name-missing"),
        pytest.param({"timer_name": "   "}, "timer_name", id="timer-name-blank"),
        pytest.param({"timer_name": "a\x00b"}, "timer_name", id="timer-name-nul"),
        pytest.param({"timer_name": "a\nb"}, "timer_name", id="timer-name-newline"),
        pytest.param({"timer_name": "a\x7fb"}, "timer_name", id="timer-name-del"),
        pytest.param({"timer_name": "t" * 254}, "timer_name", id="timer-name-254-chars"),
        pytest.param({"timer_name": 7}, "timer_name", id="timer-name-not-string"),
        pytest.param({"control_plane_endpoint": MISSING}, "control_plane_endpoint", id="endpoint-missing"),
        pytest.param(
            {"control_plane_endpoint": "ftp://cp/done"}, "control_plane_endpoint", id="endpoint-ftp"
        ),
        pytest.param(
            {"control_plane_endpoint": "http:///done"}, "control_plane_endpoint", id="endpoint-no-host"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://"}, "control_plane_endpoint", id="endpoint-scheme-only"
        ),
        pytest.param(
            {"control_plane_endpoint": "cp:8080"}, "control_plane_endpoint", id="endpoint-no-scheme"
        ),
        pytest.param({"image": "my image:1"}, "image", id="image-with-space"),
        pytest.param({"image": "i" * 513}, "image", id="image-513-chars"),
        pytest.param({"log_level": "loud"}, "log_level", id="log-level-unknown"),
        pytest.param({"env": {"1BAD": "x"}}, "env", id="env-leading-digit"),
        pytest.param({"env": {"BAD-NAME": "x"}}, "env", id="env-dash"),
        pytest.param({"env": {"TIMER_NAME": "x"}}, "env", id="env-overrides-timer-name"),
        pytest.param({"env": {"JOB_ID": "x"}}, "env", id="env-overrides-job-id"),
        pytest.param({"env": {"POD_NAME": "x"}}, "env", id="env-overrides-pod-name"),
        pytest.param({"env": {"A": 1}}, "env", id="env-value-not-string"),
        pytest.param({"env": ["A=1"]}, "env", id="env-not-a-mapping"),
        # Regressions found by the gRPC fuzz test: urlsplit raised ValueError (INTERNAL); the
        # others were accepted and failed later (at the API server, or in the workload).
        pytest.param(
            {"control_plane_endpoint": "http://[::1"}, "control_plane_endpoint", id="endpoint-open-ipv6"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://[abc]/"}, "control_plane_endpoint", id="endpoint-bad-ipv6"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://]/"}, "control_plane_endpoint", id="endpoint-lone-bracket"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://cp:99999/"}, "control_plane_endpoint", id="endpoint-port-range"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://cp:0/"}, "control_plane_endpoint", id="endpoint-port-zero"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://cp:x/"}, "control_plane_endpoint", id="endpoint-port-text"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://c p/"}, "control_plane_endpoint", id="endpoint-space"
        ),
        pytest.param(
            {"control_plane_endpoint": "http://cp/" + "x" * 2040},
            "control_plane_endpoint",
            id="endpoint-2051-chars",
        ),
        pytest.param({"env": {"A": "x" * (64 * 1024)}}, "env", id="env-over-64-KiB"),
        pytest.param({"env": {"A": "\u00e9" * (32 * 1024)}}, "env", id="env-counted-in-utf8-bytes"),
    ],
)
def test_timer_validate_rejects_with_field(changes: dict[str, Any], field: str) -> None:
    assert rejected_field(lambda: TIMER.validate(timer_params(changes), SETTINGS)) == field


def test_timer_validate_maximum_duration_follows_settings() -> None:
    settings = dataclasses.replace(SETTINGS, max_timer_duration_seconds=60)
    assert TIMER.validate(timer_params({"duration_seconds": 60}), settings)["duration_seconds"] == 60
    assert rejected_field(lambda: TIMER.validate(timer_params({"duration_seconds": 61}), settings)) == (
        "duration_seconds"
    )


@pytest.mark.parametrize(
    ("changes", "key", "expected"),
    [
        pytest.param({"duration_seconds": 86400}, "duration_seconds", 86400, id="duration-at-max"),
        pytest.param({"timer_name": "  nightly  "}, "timer_name", "nightly", id="timer-name-stripped"),
        pytest.param({"timer_name": "t" * 253}, "timer_name", "t" * 253, id="timer-name-253-chars"),
        pytest.param(
            {"control_plane_endpoint": "https://cp.example:443/x"},
            "control_plane_endpoint",
            "https://cp.example:443/x",
            id="endpoint-https",
        ),
        pytest.param({}, "image", "timer-service:latest", id="image-defaults-to-settings"),
        pytest.param({"image": ""}, "image", "timer-service:latest", id="image-empty-is-default"),
        pytest.param(
            {"image": "reg.example/timer@sha256:" + "ab" * 32},
            "image",
            "reg.example/timer@sha256:" + "ab" * 32,
            id="image-given",
        ),
        pytest.param({}, "log_level", "info", id="log-level-default-info"),
        pytest.param({"log_level": "DEBUG"}, "log_level", "debug", id="log-level-lower-cased"),
        pytest.param({}, "env", {}, id="env-default-empty"),
        pytest.param({"env": {"B": "2", "A": "1"}}, "env", {"A": "1", "B": "2"}, id="env-kept"),
        pytest.param(
            {"control_plane_endpoint": "http://[::1]:8080/done"},
            "control_plane_endpoint",
            "http://[::1]:8080/done",
            id="endpoint-ipv6",
        ),
        pytest.param(
            {"control_plane_endpoint": "http://cp/" + "x" * 2038},
            "control_plane_endpoint",
            "http://cp/" + "x" * 2038,
            id="endpoint-2048-chars",
        ),
        pytest.param(
            {"env": {"A": "x" * (64 * 1024 - 1)}}, "env", {"A": "x" * (64 * 1024 - 1)}, id="env-at-64-KiB"
        ),
    ],
)
def test_timer_validate_normalises(changes: dict[str, Any], key: str, expected: Any) -> None:
    assert TIMER.validate(timer_params(changes), SETTINGS)[key] == expected


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"control_plane_endpoint": "ftp://" + "\u00e9" * 2000}, id="endpoint"),
        pytest.param({"image": "\u00e9" * 100_000}, id="image"),
        pytest.param({"log_level": "\u00e9" * 100_000}, id="log-level"),
    ],
)
def test_timer_error_message_quotes_at_most_the_start_of_a_huge_value(changes: dict[str, Any]) -> None:
    # Regression: the whole value went into the gRPC status message, which gRPC refuses over 16 KiB.
    with pytest.raises(InvalidArgumentError) as caught:
        TIMER.validate(timer_params(changes), SETTINGS)
    assert len(str(caught.value)) < 400


def test_timer_validate_default_image_comes_from_settings() -> None:
    settings = dataclasses.replace(SETTINGS, timer_image="reg.example/timer:2")
    assert TIMER.validate(timer_params(), settings)["image"] == "reg.example/timer:2"


# --- timer job type: rendered container -------------------------------------------------------


def test_timer_env_service_variables_first_then_callers() -> None:
    manifest = render(params={"env": {"ZED": "z", "ALPHA": "a"}})
    assert [e["name"] for e in container(manifest)["env"]] == [
        "TIMER_NAME",
        "TIMER_DURATION_SECONDS",
        "CONTROL_PLANE_ENDPOINT",
        "LOG_LEVEL",
        "JOB_ID",
        "JOB_NAMESPACE",
        "POD_NAME",
        "ALPHA",
        "ZED",
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("TIMER_NAME", {"value": "nightly"}, id="timer-name"),
        pytest.param("TIMER_DURATION_SECONDS", {"value": "30"}, id="duration-as-string"),
        pytest.param("CONTROL_PLANE_ENDPOINT", {"value": "http://control-plane:8080/done"}, id="endpoint"),
        pytest.param("LOG_LEVEL", {"value": "warn"}, id="log-level"),
        pytest.param(
            "JOB_ID",
            {"valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}},
            id="job-id-from-the-pods-job-name-label",
        ),
        pytest.param(
            "JOB_NAMESPACE",
            {"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            id="namespace-from-downward-api",
        ),
        pytest.param(
            "POD_NAME",
            {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            id="pod-name-from-downward-api",
        ),
        pytest.param("EXTRA", {"value": "1"}, id="caller-variable"),
    ],
)
def test_timer_env_value(name: str, expected: Obj) -> None:
    entry = env_of(render(params={"log_level": "warn", "env": {"EXTRA": "1"}}))[name]
    assert {k: v for k, v in entry.items() if k != "name"} == expected


def test_timer_job_id_env_does_not_depend_on_the_job_id() -> None:
    # A schedule renders one template for many Jobs: the name comes from the pod at run time.
    assert env_of(render(job_id="job-a"))["JOB_ID"] == env_of(render(job_id="job-b"))["JOB_ID"]


def test_timer_parameters_annotation_is_json_without_caller_env() -> None:
    manifest = render(params={"env": {"API_TOKEN": "s3cr3t-value"}})
    raw = manifest["metadata"]["annotations"]["jobscheduler.io/parameters"]
    assert json.loads(raw) == {
        "timer_name": "nightly",
        "duration_seconds": 30,
        "control_plane_endpoint": "http://control-plane:8080/done",
    }
    assert "s3cr3t-value" not in raw
    assert "API_TOKEN" not in raw


@pytest.mark.parametrize(
    ("params", "settings", "expected"),
    [
        pytest.param({}, SETTINGS, "timer-service:latest", id="settings-default"),
        pytest.param(
            {},
            dataclasses.replace(SETTINGS, timer_image="reg.example/t:9"),
            "reg.example/t:9",
            id="settings-custom",
        ),
        pytest.param({"image": "reg.example/own:1"}, SETTINGS, "reg.example/own:1", id="request-image"),
    ],
)
def test_timer_image(params: dict[str, Any], settings: Settings, expected: str) -> None:
    assert container(render(params=params, settings=settings))["image"] == expected


@pytest.mark.parametrize(
    ("timer_command", "expected"),
    [
        pytest.param(("jobscheduler-timer",), ["jobscheduler-timer"], id="default"),
        pytest.param(("python", "-m", "timer"), ["python", "-m", "timer"], id="custom"),
    ],
)
def test_timer_command_from_settings(timer_command: tuple[str, ...], expected: list[str]) -> None:
    settings = dataclasses.replace(SETTINGS, timer_command=timer_command)
    assert container(render(settings=settings))["command"] == expected


def test_timer_command_absent_when_settings_keep_the_image_entrypoint() -> None:
    settings = Settings.from_env({"TIMER_COMMAND": ""})
    assert "command" not in container(render(settings=settings))


def test_request_hash_is_the_fingerprint_of_every_earlier_release() -> None:
    """Fingerprints are stored on Jobs and compared when a request_id comes back: the hash
    is of the request as dataclasses.asdict renders it, whatever makes it faster."""
    from jobscheduler.domain.dependencies import DependencyCondition
    from jobscheduler.domain.placement import Placement, Toleration
    from jobscheduler.domain.retry import RetryPolicy, RetryRule

    request = check_request(
        make_request(
            request_id="r-9",
            labels={"team": "a", "tier": "b"},
            annotations={"note": "x"},
            secret_env={"TOKEN": "hidden", "A": "b"},
            after=("job-a", "job-b"),
            after_condition=DependencyCondition.FINISHED,
            retry=RetryPolicy(
                fail_on_exit_codes=(3, 4),
                ignore_disruptions=True,
                rules=(RetryRule(action="Ignore", exit_codes=(7,), container_name="timer"),),
            ),
            pending_timeout_seconds=120,
            placement=Placement(
                node_selector={"zone": "z1"},
                tolerations=(
                    Toleration(key="k", operator="Exists", effect="NoExecute", toleration_seconds=5),
                ),
                priority_class_name="high",
            ),
        ),
        SETTINGS,
    )
    params = TIMER.validate(timer_params(), SETTINGS)
    body = dataclasses.asdict(request) | {"params": params, "secret_env": sorted(request.secret_env)}
    del body["params_field"]
    del body["queueing"]  # added later: not in the fingerprint while unset
    del body["notify"]  # likewise
    body["after_condition"] = DependencyCondition.FINISHED.value
    legacy = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
    assert request_hash(request, params) == legacy
