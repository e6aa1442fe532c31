"""The built-in job types (container, webhook, health-check, batch) and what they share with
every type: validation that names the parameter, rendering within the restricted pod and the
Job spec allow-list, generic_job params checked against declared parameters, parameter
declarations that match the proto, and the status an indexed or health-check job reports."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.service import JobService
from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError, RegistryError, RenderError
from jobscheduler.domain.models import JobState
from jobscheduler.domain.registry import (
    GENERIC_PARAMS_FIELD,
    JobType,
    Parameter,
    Registry,
    Workload,
    check_generic_params,
    parameters_of,
)
from jobscheduler.domain.render import (
    ALLOWED_CONTAINER_KEYS,
    ALLOWED_JOB_SPEC_KEYS,
    JobRequest,
    check_request,
    render_job,
)
from jobscheduler.domain.status import derive_status
from jobscheduler.jobtypes.batch import BatchJobType
from jobscheduler.jobtypes.container import ContainerJobType
from jobscheduler.jobtypes.healthcheck import HealthCheckJobType
from jobscheduler.jobtypes.timer import TimerJobType
from jobscheduler.jobtypes.webhook import WebhookJobType
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.kube.slim import slim_job
from tests.unit.test_render import restricted_violations

Obj = dict[str, Any]
SETTINGS = Settings(worker_image="registry.example/jobscheduler:1.2")
JOB_ID = "job-7f3k2m9x1q"
TYPES: dict[str, JobType] = {
    t.name: t
    for t in (ContainerJobType(), WebhookJobType(), HealthCheckJobType(), BatchJobType(), TimerJobType())
}
REGISTRY = Registry(TYPES.values())
VALID: dict[str, Obj] = {
    "container": {
        "image": "ghcr.io/acme/tool:1.2",
        "command": ["tool"],
        "args": ["--all"],
        "env": {"A": "1"},
    },
    "webhook": {"url": "https://hooks.example/notify?token=s3cret", "method": "put", "body": '{"ok": true}'},
    "health-check": {
        "targets": [
            {"type": "http", "url": "http://api.team-a.svc:8080/healthz"},
            {"type": "tcp", "host": "db.team-a.svc", "port": 5432, "name": "db"},
            {"type": "grpc", "address": "ledger.team-a.svc:50051", "service": "ledger.v1.Ledger"},
        ]
    },
    "batch": {"image": "ghcr.io/acme/shard:3", "completions": 3, "parallelism": 2},
    "timer": {"duration_seconds": 5, "timer_name": "t", "control_plane_endpoint": "http://cp:50053"},
}


def render(type_name: str, params: Mapping[str, Any], **request: Any) -> Obj:
    """The manifest for a request of a type, through validate and check_request as the service does."""
    job_type = TYPES[type_name]
    validated = job_type.validate(params, SETTINGS)
    checked = check_request(JobRequest(job_type=type_name, params=params, **request), SETTINGS)
    return render_job(checked, job_type=job_type, params=validated, job_id=JOB_ID, settings=SETTINGS)


def only_container(manifest: Obj) -> Obj:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return cast(Obj, container)


def env_of(manifest: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in only_container(manifest).get("env", []) if "value" in e}


# --- every type ---------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_every_type_renders_a_restricted_pod_within_its_fields(type_name: str) -> None:
    manifest = render(type_name, VALID[type_name])

    assert restricted_violations(manifest["spec"]["template"]["spec"]) == []
    assert set(only_container(manifest)) - {"resources", "securityContext", "terminationMessagePolicy"} <= (
        ALLOWED_CONTAINER_KEYS
    )
    assert (
        set(manifest["spec"]) - {"backoffLimit", "template", "ttlSecondsAfterFinished"}
        <= ALLOWED_JOB_SPEC_KEYS
    )
    assert manifest["metadata"]["labels"]["jobscheduler.io/job-type"] == type_name


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_every_type_declares_exactly_the_fields_of_its_proto_message(type_name: str) -> None:
    job_type = TYPES[type_name]
    message = pb.ScheduleJobRequest.DESCRIPTOR.fields_by_name[job_type.request_field].message_type
    declared = {p.name for p in parameters_of(job_type) if "[]." not in p.name}

    assert declared == {f.name for f in message.fields}
    for parameter in parameters_of(job_type):
        if "[]." in parameter.name:
            outer, inner = parameter.name.split("[].")
            nested = message.fields_by_name[outer].message_type
            assert inner in nested.fields_by_name, parameter.name


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_every_type_describes_itself_and_each_parameter(type_name: str) -> None:
    job_type = TYPES[type_name]
    assert getattr(job_type, "description", "")
    assert all(p.description for p in parameters_of(job_type))


@pytest.mark.parametrize(
    ("type_name", "params", "field", "fragment"),
    [
        # container
        pytest.param("container", {}, "image", "is required", id="container-no-image"),
        pytest.param(
            "container", {"image": "bad image"}, "image", "not an image reference", id="container-image"
        ),
        pytest.param(
            "container", {"image": "x", "command": "ls -l"}, "command", "list of strings", id="command-str"
        ),
        pytest.param("container", {"image": "x", "args": ["a\0b"]}, "args[0]", "NUL", id="args-nul"),
        pytest.param(
            "container", {"image": "x", "env": {"1X": "v"}}, "env", "not a valid variable", id="env-name"
        ),
        pytest.param(
            "container", {"image": "x", "working_dir": "work"}, "working_dir", "absolute", id="workdir"
        ),
        pytest.param(
            "container", {"image": "x", "args": ["a" * 70_000]}, "args", "at most 65536", id="args-too-long"
        ),
        # webhook
        pytest.param("webhook", {}, "url", "is required", id="webhook-no-url"),
        pytest.param("webhook", {"url": "ftp://x"}, "url", "http:// or https://", id="webhook-scheme"),
        pytest.param(
            "webhook", {"url": "http://u:pw@x"}, "url", "user or password", id="webhook-credentials"
        ),
        pytest.param("webhook", {"url": "http://x", "method": "BREW"}, "method", "one of GET", id="method"),
        pytest.param(
            "webhook",
            {"url": "http://x", "headers": {"Bad Name": "v"}},
            "headers",
            "header name",
            id="header-name",
        ),
        pytest.param(
            "webhook",
            {"url": "http://x", "headers": {"Content-Length": "1"}},
            "headers",
            "Content-Length",
            id="managed-header",
        ),
        pytest.param(
            "webhook",
            {"url": "http://x", "expected_status": "99"},
            "expected_status",
            "100 to 599",
            id="status",
        ),
        pytest.param(
            "webhook", {"url": "http://x", "attempts": 0}, "attempts", "between 1 and 100", id="attempts"
        ),
        pytest.param(
            "webhook",
            {"url": "http://x", "timeout_seconds": 0},
            "timeout_seconds",
            "greater than 0",
            id="timeout",
        ),
        pytest.param(
            "webhook",
            {"url": "http://x", "backoff_seconds": -1},
            "backoff_seconds",
            "0 or more",
            id="backoff",
        ),
        pytest.param(
            "webhook", {"url": "http://x", "body": "b" * 70_000}, "body", "at most", id="body-too-long"
        ),
        # health-check
        pytest.param("health-check", {}, "targets", "is required", id="no-targets"),
        pytest.param("health-check", {"targets": []}, "targets", "is required", id="empty-targets"),
        pytest.param(
            "health-check", {"targets": [{"type": "icmp"}]}, "targets[0]", "'icmp'", id="target-type"
        ),
        pytest.param("health-check", {"targets": [{"host": "db"}]}, "targets[0]", 'no "type"', id="no-type"),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "host": "db", "port": 1}, {"type": "tcp", "host": "db", "port": 0}]},
            "targets[1]",
            "port 0",
            id="port-zero",
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "host": "db", "port": 5432, "url": "http://db"}]},
            "targets[0]",
            "unknown key(s) 'url'",
            id="key-of-another-type",
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "grpc", "address": "no-port"}]},
            "targets[0]",
            "host:port",
            id="grpc-address",
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "host": "a", "port": 1, "name": "x"}] * 2},
            "targets[1]",
            "repeats the name",
            id="duplicate-name",
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "host": "a", "port": 1}], "attempts": 101},
            "attempts",
            "between 1 and 100",
            id="hc-attempts",
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "host": f"h{i}", "port": 1} for i in range(51)]},
            "targets",
            "at most 50",
            id="too-many-targets",
        ),
        # batch
        pytest.param("batch", {"image": "x"}, "completions", "is required", id="no-completions"),
        pytest.param(
            "batch", {"image": "x", "completions": 0}, "completions", "between 1", id="completions-0"
        ),
        pytest.param(
            "batch",
            {"image": "x", "completions": 100_001},
            "completions",
            "100000",
            id="completions-too-many",
        ),
        pytest.param(
            "batch",
            {"image": "x", "completions": 2, "parallelism": 3},
            "parallelism",
            "at most",
            id="parallelism",
        ),
        pytest.param(
            "batch",
            {"image": "x", "completions": 3, "max_failed_indexes": 1},
            "max_failed_indexes",
            "backoff_limit_per_index",
            id="max-failed-without-per-index",
        ),
        pytest.param(
            "batch",
            {"image": "x", "completions": 3, "backoff_limit_per_index": 0, "max_failed_indexes": 4},
            "max_failed_indexes",
            "between 0 and 3",
            id="max-failed-above-completions",
        ),
        pytest.param(
            "batch",
            {"image": "x", "completions": 3, "backoff_limit_per_index": -1},
            "backoff_limit_per_index",
            "between 0",
            id="per-index-negative",
        ),
        pytest.param(
            "batch",
            {"image": "x", "completions": 1, "env": {"JOB_COMPLETION_INDEX": "7"}},
            "env",
            "set by the service",
            id="index-env-reserved",
        ),
        pytest.param("batch", {}, "image", "is required", id="batch-no-image"),
    ],
)
def test_invalid_parameters_name_the_parameter(
    type_name: str, params: Obj, field: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        TYPES[type_name].validate(params, SETTINGS)
    assert caught.value.field == field, str(caught.value)
    assert fragment in caught.value.detail


# --- container ----------------------------------------------------------------------------------


def test_container_job_runs_the_image_with_its_command_args_env_and_workdir() -> None:
    manifest = render(
        "container",
        {
            "image": "ghcr.io/acme/tool:1.2",
            "command": ["tool"],
            "args": ["--all", "x y"],
            "env": {"B": "2", "A": "1"},
            "working_dir": "/data",
        },
    )
    container = only_container(manifest)

    assert (container["image"], container["command"], container["args"]) == (
        "ghcr.io/acme/tool:1.2",
        ["tool"],
        ["--all", "x y"],
    )
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert container["workingDir"] == "/data"
    assert json.loads(manifest["metadata"]["annotations"]["jobscheduler.io/parameters"]) == {
        "image": "ghcr.io/acme/tool:1.2"
    }


def test_container_job_without_command_keeps_the_images_entrypoint() -> None:
    container = only_container(render("container", {"image": "busybox"}))
    assert set(container) & {"command", "args", "env", "workingDir"} == set()


# --- webhook ------------------------------------------------------------------------------------


def test_webhook_job_runs_the_worker_image_with_the_request_as_its_environment() -> None:
    manifest = render(
        "webhook",
        {
            "url": "https://hooks.example/notify?token=s3cret",
            "method": "put",
            "headers": {"X-Team": "a"},
            "body": '{"ok": true}',
            "expected_status": "200-299, 304",
            "timeout_seconds": 2.5,
            "attempts": 3,
            "backoff_seconds": 0,
        },
    )
    container = only_container(manifest)

    assert (container["image"], container["command"]) == (
        "registry.example/jobscheduler:1.2",
        ["jobscheduler-webhook"],
    )
    assert env_of(manifest) == {
        "WEBHOOK_URL": "https://hooks.example/notify?token=s3cret",
        "WEBHOOK_METHOD": "PUT",
        "WEBHOOK_HEADERS": '{"X-Team": "a"}',
        "WEBHOOK_BODY": '{"ok": true}',
        "WEBHOOK_EXPECTED_STATUS": "200-299,304",
        "WEBHOOK_TIMEOUT_SECONDS": "2.5",
        "WEBHOOK_ATTEMPTS": "3",
        "WEBHOOK_BACKOFF_SECONDS": "0",
        "WEBHOOK_MAX_BACKOFF_SECONDS": "30",
    }
    # Path and query may hold the secret: only the origin is reported.
    reported = manifest["metadata"]["annotations"]["jobscheduler.io/parameters"]
    assert json.loads(reported) == {"method": "PUT", "target": "https://hooks.example"}
    assert "s3cret" not in reported


def test_webhook_headers_can_come_from_secret_env_when_the_parameter_is_empty() -> None:
    manifest = render(
        "webhook", {"url": "http://x"}, secret_env={"WEBHOOK_HEADERS": '{"Authorization": "t"}'}
    )
    names = [e["name"] for e in only_container(manifest)["env"]]
    assert names.count("WEBHOOK_HEADERS") == 1
    with pytest.raises(InvalidArgumentError, match="WEBHOOK_HEADERS"):
        render(
            "webhook",
            {"url": "http://x", "headers": {"A": "b"}},
            secret_env={"WEBHOOK_HEADERS": '{"A": "c"}'},
        )


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[Obj]]]:
    seen: list[Obj] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"path": self.path, "team": self.headers["X-Team"], "body": body.decode()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()


def test_the_rendered_webhook_environment_makes_the_workload_send_the_request(
    http_server: tuple[str, list[Obj]],
) -> None:
    url, seen = http_server
    manifest = render(
        "webhook", {"url": f"{url}/hook?k=1", "method": "PUT", "headers": {"X-Team": "a"}, "body": "hi"}
    )

    proc = subprocess.run(
        [sys.executable, "-m", "jobscheduler.workloads.webhook"],
        env={**os.environ, **env_of(manifest), "NO_PROXY": "*"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seen == [{"path": "/hook?k=1", "team": "a", "body": "hi"}]


# --- health-check -------------------------------------------------------------------------------


def test_health_check_job_passes_its_targets_to_the_worker() -> None:
    manifest = render("health-check", {**VALID["health-check"], "attempts": 2, "interval_seconds": 0.5})
    container = only_container(manifest)
    env = env_of(manifest)

    assert (container["image"], container["command"]) == (
        "registry.example/jobscheduler:1.2",
        ["jobscheduler-healthcheck"],
    )
    assert json.loads(env["HEALTHCHECK_TARGETS"]) == VALID["health-check"]["targets"]
    assert (
        env["HEALTHCHECK_ATTEMPTS"],
        env["HEALTHCHECK_TIMEOUT_SECONDS"],
        env["HEALTHCHECK_INTERVAL_SECONDS"],
    ) == ("2", "5", "0.5")
    assert json.loads(manifest["metadata"]["annotations"]["jobscheduler.io/parameters"]) == {
        "targets": [
            "http://api.team-a.svc:8080/healthz (http)",
            "db (tcp)",
            "ledger.team-a.svc:50051/ledger.v1.Ledger (grpc)",
        ]
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failed_health_check_reports_which_target_failed_and_why_in_the_job_status(tmp_path: Path) -> None:
    """The chain without kwok: the rendered environment makes the real workload fail and write its
    termination message; the status of a Job whose pod ended so carries it."""
    port = closed_port()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = int(listening.getsockname()[1])
        targets = [
            {"type": "tcp", "host": "127.0.0.1", "port": up, "name": "cache"},
            {"type": "tcp", "host": "127.0.0.1", "port": port, "name": "db"},
        ]
        manifest = render("health-check", {"targets": targets, "timeout_seconds": 2})
        termination_log = tmp_path / "termination-log"
        proc = subprocess.run(
            [sys.executable, "-m", "jobscheduler.workloads.healthcheck"],
            env={**os.environ, **env_of(manifest), "HEALTHCHECK_TERMINATION_LOG": str(termination_log)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = termination_log.read_text()
    job = {
        "metadata": {"name": JOB_ID, "namespace": "ns", "labels": manifest["metadata"]["labels"]},
        "status": {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        },
    }
    pod = {
        "metadata": {"name": f"{JOB_ID}-x"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "healthcheck",
                    "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}},
                }
            ],
        },
    }

    status = derive_status(job, [pod])

    assert status.state is JobState.FAILED
    assert status.exit_code == 1
    assert status.message == (
        "Job has reached the specified backoff limit; last attempt: container healthcheck exited with code 1 "
        f"(Error): 1/2 healthy; unhealthy: db (tcp 127.0.0.1:{port}: connection refused)"
    )


# --- batch --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "request_fields", "expected"),
    [
        pytest.param(
            {"completions": 3},
            {},
            {"backoffLimit": 0, "completionMode": "Indexed", "completions": 3, "parallelism": 1},
            id="defaults",
        ),
        pytest.param(
            {"completions": 5, "parallelism": 2, "backoff_limit_per_index": 1, "max_failed_indexes": 2},
            {},
            # No backoffLimit: Kubernetes then defaults it to the largest int32, so only the
            # per-index limit fails indexes.
            {
                "completionMode": "Indexed",
                "completions": 5,
                "parallelism": 2,
                "backoffLimitPerIndex": 1,
                "maxFailedIndexes": 2,
            },
            id="per-index-limits",
        ),
        pytest.param(
            {"completions": 5, "backoff_limit_per_index": 0},
            {"backoff_limit": 7},
            {
                "backoffLimit": 7,
                "completionMode": "Indexed",
                "completions": 5,
                "parallelism": 1,
                "backoffLimitPerIndex": 0,
            },
            id="request-backoff-limit-kept",
        ),
    ],
)
def test_batch_job_is_an_indexed_job(params: Obj, request_fields: Obj, expected: Obj) -> None:
    manifest = render("batch", {"image": "ghcr.io/acme/shard:3", **params}, **request_fields)
    spec = {k: v for k, v in manifest["spec"].items() if k not in ("template", "ttlSecondsAfterFinished")}
    assert spec == expected
    assert only_container(manifest)["image"] == "ghcr.io/acme/shard:3"


class _SpecJobType:
    """A job type whose Job spec asks for more than a type may set."""

    name = "spec"
    request_field = "spec_job"

    def __init__(self, job_spec: Mapping[str, Any]) -> None:
        self.job_spec = job_spec

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        return params

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        return Workload(container={"name": "x", "image": "busybox"}, job_spec=self.job_spec)


@pytest.mark.parametrize(
    ("job_spec", "message"),
    [
        pytest.param({"template": {"spec": {"hostNetwork": True}}}, "template", id="template"),
        pytest.param({"backoffLimit": 100}, "backoffLimit", id="backoff-limit"),
        pytest.param({"suspend": False}, "suspend", id="suspend"),
        pytest.param({"activeDeadlineSeconds": 1}, "activeDeadlineSeconds", id="deadline"),
        pytest.param({"ttlSecondsAfterFinished": 0}, "ttlSecondsAfterFinished", id="ttl"),
        pytest.param({"selector": {}, "manualSelector": True}, "manualSelector", id="selector"),
        pytest.param({"podFailurePolicy": {"rules": []}}, "podFailurePolicy", id="pod-failure-policy"),
        pytest.param({"completions": -1}, "completions=-1", id="negative-count"),
        pytest.param({"parallelism": "2"}, "parallelism='2'", id="count-not-int"),
        pytest.param({"completions": True}, "completions=True", id="count-bool"),
        pytest.param({"completionMode": "Sometimes"}, "completionMode", id="bad-mode"),
    ],
)
def test_a_job_type_cannot_set_job_spec_fields_outside_the_allow_list(job_spec: Obj, message: str) -> None:
    job_type = _SpecJobType(job_spec)
    request = check_request(JobRequest(job_type="spec", params={}), SETTINGS)
    with pytest.raises(RenderError, match=message):
        render_job(request, job_type=job_type, params={}, job_id=JOB_ID, settings=SETTINGS)


def test_a_job_type_within_the_allow_list_sets_the_job_spec() -> None:
    job_type = _SpecJobType({"parallelism": 4, "completions": 8})
    request = check_request(JobRequest(job_type="spec", params={}, suspend=True), SETTINGS)
    spec = render_job(request, job_type=job_type, params={}, job_id=JOB_ID, settings=SETTINGS)["spec"]
    assert (spec["parallelism"], spec["completions"], spec["suspend"], spec["backoffLimit"]) == (
        4,
        8,
        True,
        0,
    )


@pytest.mark.parametrize(
    ("job_status", "completed", "failed"),
    [
        pytest.param({"completedIndexes": "0-2", "succeeded": 3}, "0-2", "", id="all-completed"),
        pytest.param(
            {"completedIndexes": "0,2", "failedIndexes": "1", "failed": 1}, "0,2", "1", id="some-failed"
        ),
        pytest.param({"succeeded": 1}, "", "", id="not-indexed"),
        pytest.param({"completedIndexes": 7}, "", "", id="malformed"),
    ],
)
def test_status_reports_completed_and_failed_indexes(job_status: Obj, completed: str, failed: str) -> None:
    status = derive_status({"metadata": {"name": JOB_ID}, "status": job_status}, [])
    assert (status.completed_indexes, status.failed_indexes) == (completed, failed)


def test_the_watch_cache_keeps_what_indexed_status_needs() -> None:
    job = {
        "metadata": {"name": JOB_ID, "namespace": "ns"},
        "spec": {"completions": 3, "template": {"spec": {"containers": [{"name": "main"}]}}},
        "status": {"completedIndexes": "0,2", "failedIndexes": "1", "failed": 1},
    }
    slim = slim_job(job)
    assert "spec" not in slim
    assert derive_status(slim, []) == derive_status(job, [])


def test_a_long_or_multi_line_termination_message_is_kept_to_its_end_on_one_line() -> None:
    log = "\n".join(f"line {i}" for i in range(1000)) + "\nfatal: the real reason\n"
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 2, "message": log}}}],
        },
    }
    job = {"metadata": {"name": JOB_ID}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}

    message = derive_status(job, [pod]).message

    assert "\n" not in message
    assert message.endswith("line 999 / fatal: the real reason")
    assert len(message) < 2200
    assert "container main exited with code 2: …" in message


# --- generic_job --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "params", "expected"),
    [
        pytest.param(
            "batch",
            {"image": "x", "completions": 3.0, "parallelism": 2.0, "max_failed_indexes": None},
            {"image": "x", "completions": 3, "parallelism": 2},
            id="integral-doubles-become-ints-and-nulls-vanish",
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "host": "db", "port": 5432.0, "name": None}], "timeout_seconds": 2},
            {"targets": [{"type": "tcp", "host": "db", "port": 5432}], "timeout_seconds": 2},
            id="nested-port",
        ),
        pytest.param(
            "webhook",
            {"url": "http://x", "headers": {"A": "b"}},
            {"url": "http://x", "headers": {"A": "b"}},
            id="map",
        ),
    ],
)
def test_generic_params_are_converted_to_the_declared_types(
    type_name: str, params: Obj, expected: Obj
) -> None:
    converted = check_generic_params(TYPES[type_name], params)
    assert converted == expected
    assert [type(v) for v in converted.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    ("type_name", "params", "field", "fragment"),
    [
        pytest.param(
            "batch", {"image": "x", "completions": 2.5}, "completions", "whole number", id="fraction"
        ),
        pytest.param(
            "batch", {"image": "x", "completions": "3"}, "completions", "whole number", id="string-count"
        ),
        pytest.param("batch", {"image": "x", "shards": 3}, "shards", "unknown parameter", id="unknown"),
        pytest.param("container", {"image": 7}, "image", "must be a string", id="number-as-string"),
        pytest.param(
            "container", {"image": "x", "args": ["a", 1]}, "args", "list of strings", id="list-item"
        ),
        pytest.param("container", {"image": "x", "env": {"A": 1}}, "env", "string values", id="map-value"),
        pytest.param(
            "health-check", {"targets": ["db:5432"]}, "targets[0]", "object", id="target-not-object"
        ),
        pytest.param(
            "health-check",
            {"targets": [{"type": "tcp", "port": 1.5}]},
            "targets[0].port",
            "whole",
            id="nested",
        ),
        pytest.param("webhook", {"url": "http://x", "attempts": True}, "attempts", "whole number", id="bool"),
        pytest.param(
            "webhook", {"url": "http://x", "timeout_seconds": "9"}, "timeout_seconds", "a number", id="num"
        ),
    ],
)
def test_generic_params_of_the_wrong_type_name_the_parameter(
    type_name: str, params: Obj, field: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_generic_params(TYPES[type_name], params)
    assert caught.value.field == field
    assert fragment in caught.value.detail


def service() -> JobService:
    # prepare() validates and renders only; it never reaches the gateway.
    return JobService(cast(KubeGateway, None), REGISTRY, SETTINGS)


def test_a_built_in_type_sent_generically_renders_the_same_job() -> None:
    typed = JobRequest(job_type="batch", params={"image": "x", "completions": 3}, request_id="r1")
    generic = JobRequest(
        job_type="batch",
        params={"image": "x", "completions": 3.0},
        request_id="r1",
        params_field=GENERIC_PARAMS_FIELD,
    )

    typed_manifest = service().submission.prepare(typed, job_id=None).manifest
    generic_manifest = service().submission.prepare(generic, job_id=None).manifest

    # Same request id, same fingerprint: a retry through either field meets the same job.
    assert generic_manifest == typed_manifest


@pytest.mark.parametrize(
    ("job_type", "params", "field"),
    [
        pytest.param("nope", {}, "generic_job.type", id="unknown-type"),
        pytest.param("", {}, "generic_job.type", id="no-type"),
        pytest.param(
            "batch", {"image": "x", "completions": 0}, "generic_job.params.completions", id="validate"
        ),
        pytest.param(
            "batch", {"image": "x", "completion": 3}, "generic_job.params.completion", id="unknown-key"
        ),
        pytest.param("webhook", {"url": 5}, "generic_job.params.url", id="wrong-type"),
    ],
)
def test_generic_job_errors_name_generic_job_fields(job_type: str, params: Obj, field: str) -> None:
    request = JobRequest(job_type=job_type, params=params, params_field=GENERIC_PARAMS_FIELD)
    with pytest.raises(InvalidArgumentError) as caught:
        service().submission.prepare(request, job_id=None)
    assert caught.value.field == field
    if field == "generic_job.type":
        assert "registered: batch, container, health-check, timer, webhook" in caught.value.detail


def test_generic_job_image_refused_by_the_allowlist_names_the_params_field() -> None:
    settings = Settings(allowed_images=("ghcr.io/acme/",))
    jobs = JobService(cast(KubeGateway, None), REGISTRY, settings)
    request = JobRequest(
        job_type="container", params={"image": "evil.example/x"}, params_field=GENERIC_PARAMS_FIELD
    )
    with pytest.raises(Exception, match=r"generic_job\.params\.image"):
        jobs.submission.prepare(request, job_id=None)


def test_the_worker_image_is_always_allowed() -> None:
    settings = Settings(allowed_images=("ghcr.io/acme/",), worker_image="registry.example/js:1")
    jobs = JobService(cast(KubeGateway, None), REGISTRY, settings)
    manifest = jobs.submission.prepare(
        JobRequest(job_type="webhook", params={"url": "http://x"}), job_id=None
    ).manifest
    assert only_container(manifest)["image"] == "registry.example/js:1"


# --- the registry with generic types ------------------------------------------------------------


class _PluginType:
    request_field = "generic_job"
    parameters = (Parameter("seconds", "integer", "how long", required=True),)

    def __init__(self, name: str) -> None:
        self.name = name

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        return params

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        return Workload(container={"name": "x", "image": "busybox"})


def test_several_plugin_types_may_share_the_generic_field() -> None:
    registry = Registry([*TYPES.values(), _PluginType("sleep"), _PluginType("nap")])
    assert {"sleep", "nap"} <= set(registry.names())
    assert [t.name for t in registry.types()] == sorted(registry.names())


def test_a_plugin_with_an_unknown_parameter_type_is_refused() -> None:
    bad = _PluginType("odd")
    bad.parameters = (Parameter("when", "datetime", "when"),)  # type: ignore[misc]
    with pytest.raises(RegistryError, match="'datetime'"):
        Registry([bad])


def test_a_plugin_without_parameters_gets_its_generic_params_unchanged() -> None:
    class Bare:
        name = "bare"
        request_field = "generic_job"

        def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
            return params

        def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
            return Workload(container={"name": "x", "image": "busybox"})

    assert isinstance(Bare(), JobType)
    assert check_generic_params(Bare(), {"anything": 1.0}) == {"anything": 1.0}
