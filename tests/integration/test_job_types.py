"""The job types end to end: each one's job admitted under PodSecurity `restricted` and driven
by kwok to its outcome, indexed batch status, ListJobTypes, generic_job, and bad parameters
refused with the field named and nothing created.

kwok runs no containers: the webhook and health-check workloads are not executed here (their
own tests and tests/unit/test_job_types.py run them); the pods they would be are simulated
through the sim.jobscheduler.io/* annotations (docs/development.md, "Simulating pods").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Struct
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.config import Settings
from jobscheduler.domain.registry import Registry
from tests.conftest import ROOT, Cluster
from tests.helpers import wait_until
from tests.integration.conftest import Service

S = pb.JobState
QUICK = {"sim.jobscheduler.io/duration": "200ms"}
CONTAINER = pb.ContainerJob(image="registry.example/tool:1", command=["tool"], args=["--all"], env={"A": "1"})
WEBHOOK = pb.WebhookJob(url="http://hooks.example/notify", method="POST", body='{"ok": true}', attempts=2)
HEALTH_CHECK = pb.HealthCheckJob(
    targets=[
        pb.HealthCheckTarget(type="http", url="http://api.team-a.svc:8080/healthz"),
        pb.HealthCheckTarget(type="tcp", name="db", host="db.team-a.svc", port=5432),
        pb.HealthCheckTarget(type="grpc", address="ledger.team-a.svc:50051"),
    ]
)
BUILT_IN = {"batch", "container", "health-check", "timer", "webhook"}


def struct(value: dict[str, Any]) -> Struct:
    message = Struct()
    ParseDict(value, message)
    return message


def status_of(service: Service, namespace: str, job_id: str) -> pb.JobStatus:
    return service.stub.GetJobStatus(
        pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10
    ).status


def wait_for_state(
    service: Service, namespace: str, job_id: str, state: int, timeout: float = 60
) -> pb.JobStatus:
    def probe() -> pb.JobStatus | None:
        status = status_of(service, namespace, job_id)
        return status if status.state == state else None

    return wait_until(f"{job_id} in {S.Name(state)}", probe, timeout=timeout)


def pod_spec_of(cluster: Cluster, namespace: str, job_id: str) -> client.V1PodSpec:
    job = client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace)
    return job.spec.template.spec


def kwok_runs_the_current_stages() -> bool:
    """Whether the dev cluster's kwok was started after hack/kwok/stages.yaml last changed:
    kwok reads its Stages once, at start."""
    state = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster"))
    try:
        pid = int((state / "pids" / "kwok.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, ValueError, StopIteration):
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in ticks
    return started > (ROOT / "hack" / "kwok" / "stages.yaml").stat().st_mtime


@pytest.fixture
def current_stages(cluster: Cluster) -> None:
    """Fails a test that needs a simulation added to hack/kwok/stages.yaml after the running kwok
    started (sim.jobscheduler.io/message, sim.jobscheduler.io/fail-indexes)."""
    if not cluster.local:
        pytest.skip("needs the project's own kwok Stages (hack/kwok/stages.yaml)")
    if not kwok_runs_the_current_stages():
        # A fail, not a skip: a stale simulator must not let these tests count as passed.
        pytest.fail(
            "the running kwok was started before hack/kwok/stages.yaml last changed; restart it "
            "(hack/devcluster.py restart kwok, or a fresh hack/dev.sh test) to simulate this"
        )


# --- ListJobTypes -------------------------------------------------------------------------------


def test_list_job_types_reports_every_registered_type_with_its_parameters(cached_service: Service) -> None:
    reply = cached_service.stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=10)
    types = {t.name: t for t in reply.job_types}

    assert [t.name for t in reply.job_types] == Registry.from_entry_points().names()
    assert set(types) >= BUILT_IN
    assert {name: types[name].request_field for name in BUILT_IN} == {
        "batch": "batch_job",
        "container": "container_job",
        "health-check": "health_check_job",
        "timer": "timer_job",
        "webhook": "webhook_job",
    }
    assert all(types[name].description for name in BUILT_IN)
    webhook = {p.name: p for p in types["webhook"].parameters}
    assert (webhook["url"].type, webhook["url"].required) == ("string", True)
    assert (webhook["method"].default, webhook["method"].required) == ("POST", False)
    assert webhook["headers"].type == "map<string,string>"
    health = {p.name: p for p in types["health-check"].parameters}
    assert (health["targets"].type, health["targets[].port"].type) == ("list<object>", "integer")
    batch = {p.name: p for p in types["batch"].parameters}
    assert (batch["completions"].required, batch["parallelism"].default) == (True, "1")
    timer = {p.name for p in types["timer"].parameters}
    assert timer == {"duration_seconds", "timer_name", "control_plane_endpoint", "image", "log_level", "env"}


def test_list_job_types_by_name(cached_service: Service) -> None:
    (only,) = cached_service.stub.ListJobTypes(pb.ListJobTypesRequest(name="batch"), timeout=10).job_types
    assert only.name == "batch"

    with pytest.raises(grpc.RpcError) as err:
        cached_service.stub.ListJobTypes(pb.ListJobTypesRequest(name="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "registered: batch, container, health-check" in (err.value.details() or "")


# --- every type runs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "job_type", "command"),
    [
        pytest.param({"container_job": CONTAINER}, "container", ["tool"], id="container"),
        pytest.param({"webhook_job": WEBHOOK}, "webhook", ["jobscheduler-webhook"], id="webhook"),
        pytest.param(
            {"health_check_job": HEALTH_CHECK},
            "health-check",
            ["jobscheduler-healthcheck"],
            id="health-check",
        ),
        pytest.param(
            {"batch_job": pb.BatchJob(image="registry.example/shard:1", completions=2, parallelism=2)},
            "batch",
            None,
            id="batch",
        ),
        pytest.param(
            {
                "generic_job": pb.GenericJob(
                    type="container", params=struct({"image": "registry.example/tool:1", "args": ["x"]})
                )
            },
            "container",
            None,
            id="container-sent-generically",
        ),
    ],
)
def test_each_type_is_admitted_as_restricted_and_succeeds(
    cached_service: Service,
    cluster: Cluster,
    namespace: str,
    request_fields: dict[str, Any],
    job_type: str,
    command: list[str] | None,
) -> None:
    request = pb.ScheduleJobRequest(namespace=namespace, annotations=QUICK, **request_fields)
    job_id = cached_service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_for_state(cached_service, namespace, job_id, S.JOB_STATE_SUCCEEDED)
    assert status.job_type == job_type
    assert status.reason == "Completed"
    (container,) = pod_spec_of(cluster, namespace, job_id).containers
    assert container.command == command
    assert container.security_context.run_as_non_root is True


def test_webhook_and_health_check_jobs_run_the_worker_image(
    cached_service: Service, cluster: Cluster, namespace: str
) -> None:
    # The test servers leave WORKER_IMAGE at its default.
    for request in (
        pb.ScheduleJobRequest(namespace=namespace, suspend=True, webhook_job=WEBHOOK),
        pb.ScheduleJobRequest(namespace=namespace, suspend=True, health_check_job=HEALTH_CHECK),
    ):
        job_id = cached_service.stub.ScheduleJob(request, timeout=10).job_id
        (container,) = pod_spec_of(cluster, namespace, job_id).containers
        assert container.image == Settings().worker_image


# --- failures -----------------------------------------------------------------------------------


def test_a_failing_webhook_job_reads_failed_with_its_exit_code(
    cached_service: Service, namespace: str
) -> None:
    sim = {**QUICK, "sim.jobscheduler.io/exit-code": "1"}
    request = pb.ScheduleJobRequest(namespace=namespace, annotations=sim, webhook_job=WEBHOOK)
    job_id = cached_service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_for_state(cached_service, namespace, job_id, S.JOB_STATE_FAILED)
    assert (status.reason, status.exit_code) == ("BackoffLimitExceeded", 1)
    assert "container webhook exited with code 1" in status.message


@pytest.mark.usefixtures("current_stages")
def test_a_failing_health_check_names_the_unhealthy_target_and_why(
    cached_service: Service, namespace: str
) -> None:
    # What jobscheduler-healthcheck writes as its termination message (docs/workloads.md); kwok
    # plays the pod that wrote it.
    summary = "2/3 healthy; unhealthy: db (tcp db.team-a.svc:5432: connection refused)"
    sim = {**QUICK, "sim.jobscheduler.io/exit-code": "1", "sim.jobscheduler.io/message": summary}
    request = pb.ScheduleJobRequest(namespace=namespace, annotations=sim, health_check_job=HEALTH_CHECK)
    job_id = cached_service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_for_state(cached_service, namespace, job_id, S.JOB_STATE_FAILED)
    assert status.exit_code == 1
    assert status.message.endswith(f"container healthcheck exited with code 1 (Error): {summary}")


# --- indexed batch ------------------------------------------------------------------------------


def test_a_batch_job_completes_every_index(service: Service, namespace: str) -> None:
    batch = pb.BatchJob(image="registry.example/shard:1", completions=3, parallelism=2)
    request = pb.ScheduleJobRequest(namespace=namespace, annotations=QUICK, batch_job=batch)
    job_id = service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)
    assert (status.completed_indexes, status.failed_indexes) == ("0-2", "")
    assert status.succeeded == 3
    assert len(status.pods) == 3


def test_a_batch_job_whose_pods_all_fail_reports_every_index_failed(service: Service, namespace: str) -> None:
    """kwok fails every pod of the Job alike (sim.jobscheduler.io/exit-code); the per-index
    simulation is the next test's."""
    batch = pb.BatchJob(
        image="registry.example/shard:1", completions=3, parallelism=3, backoff_limit_per_index=0
    )
    sim = {**QUICK, "sim.jobscheduler.io/exit-code": "2"}
    request = pb.ScheduleJobRequest(namespace=namespace, annotations=sim, batch_job=batch)
    job_id = service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_for_state(service, namespace, job_id, S.JOB_STATE_FAILED)
    assert (status.completed_indexes, status.failed_indexes) == ("", "0-2")
    assert status.reason == "FailedIndexes"
    assert status.exit_code == 2


@pytest.mark.usefixtures("current_stages")
def test_a_batch_job_with_one_failing_index_completes_the_others(
    cached_service: Service, namespace: str
) -> None:
    batch = pb.BatchJob(
        image="registry.example/shard:1", completions=4, parallelism=2, backoff_limit_per_index=1
    )
    sim = {
        **QUICK,
        "sim.jobscheduler.io/fail-indexes": "2",
        "sim.jobscheduler.io/message": "shard 2: corrupt input",
    }
    request = pb.ScheduleJobRequest(namespace=namespace, annotations=sim, batch_job=batch)
    job_id = cached_service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_for_state(cached_service, namespace, job_id, S.JOB_STATE_FAILED, timeout=120)
    assert (status.completed_indexes, status.failed_indexes) == ("0,1,3", "2")
    assert status.reason == "FailedIndexes"
    assert status.attempts == 2  # index 2 was retried once (backoff_limit_per_index=1)
    assert status.message.endswith("exited with code 1 (Error): shard 2: corrupt input")


def test_a_batch_dry_run_is_admitted_with_its_indexed_spec(cached_service: Service, namespace: str) -> None:
    batch = pb.BatchJob(
        image="registry.example/shard:1",
        completions=5,
        parallelism=2,
        backoff_limit_per_index=1,
        max_failed_indexes=2,
    )
    reply = cached_service.stub.ScheduleJob(
        pb.ScheduleJobRequest(namespace=namespace, dry_run=True, batch_job=batch), timeout=10
    )
    spec = yaml.safe_load(reply.manifest)["spec"]
    assert {
        k: spec.get(k)
        for k in (
            "completionMode",
            "completions",
            "parallelism",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "backoffLimit",
        )
    } == {
        "completionMode": "Indexed",
        "completions": 5,
        "parallelism": 2,
        "backoffLimitPerIndex": 1,
        "maxFailedIndexes": 2,
        "backoffLimit": None,
    }


# --- refused requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        pytest.param({"container_job": pb.ContainerJob()}, "container_job.image", id="container-no-image"),
        pytest.param(
            {"container_job": pb.ContainerJob(image="x", working_dir="rel")},
            "container_job.working_dir",
            id="workdir",
        ),
        pytest.param({"webhook_job": pb.WebhookJob(url="ftp://x")}, "webhook_job.url", id="webhook-url"),
        pytest.param(
            {"webhook_job": pb.WebhookJob(url="http://x", method="BREW")},
            "webhook_job.method",
            id="webhook-method",
        ),
        pytest.param({"health_check_job": pb.HealthCheckJob()}, "health_check_job.targets", id="no-targets"),
        pytest.param(
            {"health_check_job": pb.HealthCheckJob(targets=[pb.HealthCheckTarget(type="tcp", host="db")])},
            "health_check_job.targets[0]",
            id="tcp-without-port",
        ),
        pytest.param({"batch_job": pb.BatchJob(image="x")}, "batch_job.completions", id="no-completions"),
        pytest.param(
            {"batch_job": pb.BatchJob(image="x", completions=2, parallelism=5)},
            "batch_job.parallelism",
            id="parallel",
        ),
        pytest.param(
            {"generic_job": pb.GenericJob(type="nope")}, "generic_job.type", id="generic-unknown-type"
        ),
        pytest.param({"generic_job": pb.GenericJob()}, "generic_job.type", id="generic-no-type"),
        pytest.param(
            {"generic_job": pb.GenericJob(type="batch", params=struct({"image": "x", "completions": 1.5}))},
            "generic_job.params.completions",
            id="generic-fraction",
        ),
        pytest.param(
            {"generic_job": pb.GenericJob(type="container", params=struct({"image": "x", "cmd": ["a"]}))},
            "generic_job.params.cmd",
            id="generic-unknown-parameter",
        ),
    ],
)
def test_bad_parameters_are_invalid_argument_naming_the_field_and_create_nothing(
    cached_service: Service, cluster: Cluster, namespace: str, request_fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cached_service.stub.ScheduleJob(
            pb.ScheduleJobRequest(namespace=namespace, **request_fields), timeout=10
        )

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{field}: "), err.value.details()
    if field == "generic_job.type":
        assert "registered: batch, container, health-check, timer, webhook" in (err.value.details() or "")
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


# --- schedules keep the type --------------------------------------------------------------------


def test_a_schedule_reports_its_job_in_the_field_it_was_given(
    cached_service: Service, namespace: str
) -> None:
    generic = pb.GenericJob(type="container", params=struct({"image": "registry.example/tool:1"}))
    for name, job in (
        (
            "typed",
            pb.ScheduleJobRequest(batch_job=pb.BatchJob(image="registry.example/shard:1", completions=2)),
        ),
        ("generic", pb.ScheduleJobRequest(generic_job=generic)),
    ):
        spec = pb.ScheduleSpec(name=name, namespace=namespace, cron="0 0 1 1 *", paused=True, job=job)
        cached_service.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec), timeout=10)
        got = cached_service.stub.GetSchedule(
            pb.GetScheduleRequest(name=name, namespace=namespace), timeout=10
        )
        assert got.spec.job.WhichOneof("job_type") == job.WhichOneof("job_type")
        if name == "generic":
            assert got.spec.job.generic_job.type == "container"
            assert dict(got.spec.job.generic_job.params) == {"image": "registry.example/tool:1"}
        else:
            assert (got.spec.job.batch_job.completions, got.spec.job.batch_job.image) == (
                2,
                "registry.example/shard:1",
            )
