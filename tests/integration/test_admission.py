"""Admission guards and secret env on `jobscheduler serve` run as its own process against the real
cluster: the image and namespace allowlists, the per-caller rate and active-job cap (with the
standard RetryInfo hint), and secret_env stored in a Secret owned by the Job, whose values never
reach the Job, a response or the log, even at LOG_LEVEL=trace."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import ServeProcess, free_port, start_serve

FOREVER = {"sim.jobscheduler.io/duration": "10m"}


def timer(**fields: object) -> pb.TimerJob:
    return pb.TimerJob(
        duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053", **fields
    )  # type: ignore[arg-type]


@contextmanager
def serving(
    cluster: Cluster, tmp_path: Path, **env: str
) -> Iterator[tuple[ServeProcess, pb_grpc.JobSchedulerStub]]:
    server = start_serve(cluster, tmp_path, port=free_port(), env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, pb_grpc.JobSchedulerStub(channel)
    finally:
        channel.close()
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()


def rpc_error(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str, float | None]:
    """(code, message, RetryInfo delay in seconds or None) of a failed call."""
    error = excinfo.value
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    delay = None
    for detail in status.details if status else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            delay = info.retry_delay.ToNanoseconds() / 1e9
    return error.code(), error.details() or "", delay


def jobs_in(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items)


def test_image_allowlist_refuses_other_images_and_creates_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with serving(cluster, tmp_path, ALLOWED_IMAGES="ghcr.io/acme/,docker.io/library/busybox:*") as (_, stub):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ScheduleJob(
                pb.ScheduleJobRequest(namespace=namespace, timer_job=timer(image="evil.io/miner:1")),
                timeout=10,
            )
        code, message, _ = rpc_error(caught)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("timer_job.image: image 'evil.io/miner:1' is not allowed here")
        assert "ghcr.io/acme/, docker.io/library/busybox:* (ALLOWED_IMAGES)" in message
        assert jobs_in(cluster, namespace) == []

        for image in ("ghcr.io/acme/tool:2", "busybox:1.36", ""):  # "" is TIMER_IMAGE, the operator's own
            stub.ScheduleJob(
                pb.ScheduleJobRequest(namespace=namespace, suspend=True, timer_job=timer(image=image)),
                timeout=10,
            )
        images = sorted(j.spec.template.spec.containers[0].image for j in jobs_in(cluster, namespace))
        assert images == ["busybox:1.36", "ghcr.io/acme/tool:2", "timer-service:latest"]


def test_namespace_allowlist_refuses_every_call_outside_it(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with serving(cluster, tmp_path, ALLOWED_NAMESPACES=f"{namespace},team-*") as (_, stub):
        created = stub.ScheduleJob(
            pb.ScheduleJobRequest(namespace=namespace, suspend=True, timer_job=timer()), timeout=10
        )
        calls = {
            "ScheduleJob": lambda: stub.ScheduleJob(
                pb.ScheduleJobRequest(namespace="default", name="outside", timer_job=timer()), timeout=10
            ),
            "GetJobStatus": lambda: stub.GetJobStatus(
                pb.GetJobStatusRequest(namespace="default", job_id=created.job_id), timeout=10
            ),
            "ListJobs": lambda: stub.ListJobs(pb.ListJobsRequest(namespace="default"), timeout=10),
            "CancelJob": lambda: stub.CancelJob(
                pb.CancelJobRequest(namespace="default", job_id=created.job_id), timeout=10
            ),
            "ResumeJob": lambda: stub.ResumeJob(
                pb.ResumeJobRequest(namespace="default", job_id=created.job_id), timeout=10
            ),
        }
        for rpc, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            code, message, _ = rpc_error(caught)
            assert code == grpc.StatusCode.PERMISSION_DENIED, rpc
            assert message == (
                f"namespace 'default' is not served by this jobscheduler (ALLOWED_NAMESPACES: {namespace}, "
                "team-*); pick one of those"
            ), rpc
        stub.GetJobStatus(pb.GetJobStatusRequest(namespace=namespace, job_id=created.job_id), timeout=10)
    outside = client.BatchV1Api(cluster.api).list_namespaced_job(
        "default", label_selector="jobscheduler.io/name=outside"
    )
    assert outside.items == []


def test_rate_limit_refuses_with_a_retry_hint_that_works(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with serving(cluster, tmp_path, SCHEDULE_RATE_PER_CALLER="1", SCHEDULE_BURST_PER_CALLER="2") as (_, stub):

        def schedule(i: int) -> pb.ScheduleJobResponse:
            request = pb.ScheduleJobRequest(
                namespace=namespace, request_id=f"r{i}", suspend=True, timer_job=timer()
            )
            return stub.ScheduleJob(request, timeout=10)

        schedule(1)
        schedule(2)
        with pytest.raises(grpc.RpcError) as caught:
            schedule(3)
        code, message, delay = rpc_error(caught)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert message.startswith("caller '127.0.0.1' is over its rate of 1 ScheduleJob calls per second")
        assert delay is not None
        assert 0 < delay <= 1.0
        assert f"retry in {delay:.2f}s" in message
        time.sleep(delay)
        schedule(3)
    jobs = jobs_in(cluster, namespace)
    assert len(jobs) == 3
    assert {j.metadata.labels["jobscheduler.io/caller"] for j in jobs} == {"127.0.0.1"}


@pytest.mark.parametrize("watch", ["cache", "api"])
def test_active_job_cap_per_caller(cluster: Cluster, namespace: str, tmp_path: Path, watch: str) -> None:
    env = {"MAX_ACTIVE_JOBS_PER_CALLER": "2", "WATCH_NAMESPACES": namespace if watch == "cache" else "-"}
    with serving(cluster, tmp_path, **env) as (_, stub):

        def schedule(request_id: str) -> pb.ScheduleJobResponse:
            request = pb.ScheduleJobRequest(
                namespace=namespace, request_id=request_id, annotations=FOREVER, timer_job=timer()
            )
            return stub.ScheduleJob(request, timeout=10)

        first, _second = schedule("a"), schedule("b")
        with pytest.raises(grpc.RpcError) as caught:
            schedule("c")
        code, message, delay = rpc_error(caught)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert message == (
            f"caller '127.0.0.1' has 2 unfinished jobs in namespace {namespace!r}, the most allowed "
            "(MAX_ACTIVE_JOBS_PER_CALLER=2); retry when one finishes, or cancel one"
        )
        assert delay == 5.0
        assert len(jobs_in(cluster, namespace)) == 2

        again = schedule("a")  # a retry of an admitted request is not a new job
        assert (again.job_id, again.created) == (first.job_id, False)

        stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=first.job_id), timeout=10)
        wait_until(
            "the cancelled job to read CANCELLED",
            lambda: stub.GetJobStatus(
                pb.GetJobStatusRequest(namespace=namespace, job_id=first.job_id), timeout=10
            ).status.state
            == pb.JOB_STATE_CANCELLED,
            timeout=60,
        )
        assert schedule("c").created
    assert len(jobs_in(cluster, namespace)) == 3


def test_secret_env_lives_in_a_secret_owned_by_the_job_and_never_in_logs(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    secret_value = "s3cr3t-" + "q7Zp2" * 4
    other_value = "0ther-" + "Xy9" * 5
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    with serving(cluster, tmp_path, LOG_LEVEL="trace", WATCH_NAMESPACES=namespace) as (server, stub):

        def schedule(value: str, **fields: object) -> pb.ScheduleJobResponse:
            request = pb.ScheduleJobRequest(
                namespace=namespace,
                request_id="with-secret",
                annotations=FOREVER,
                secret_env={"API_KEY": value},
                timer_job=timer(env={"PLAIN": "visible"}),
                **fields,  # type: ignore[arg-type]
            )
            return stub.ScheduleJob(request, timeout=10)

        dry = schedule(secret_value, dry_run=True)
        assert "API_KEY" in dry.manifest
        assert secret_value not in dry.manifest
        created = schedule(secret_value)
        assert created.created
        retried = schedule(other_value)  # values are not part of the fingerprint: same job
        assert (retried.job_id, retried.created) == (created.job_id, False)

        job = batch.read_namespaced_job(created.job_id, namespace)
        assert not job.spec.suspend, "released once its Secret was stored"
        assert "jobscheduler.io/secret-env-pending" not in (job.metadata.annotations or {})
        env = {e.name: e for e in job.spec.template.spec.containers[0].env}
        assert env["API_KEY"].value is None
        ref = env["API_KEY"].value_from.secret_key_ref
        assert (ref.name, ref.key) == (f"{created.job_id}-env", "API_KEY")
        assert secret_value not in str(cluster.api.sanitize_for_serialization(job))

        secret = core.read_namespaced_secret(f"{created.job_id}-env", namespace)
        assert [(o.kind, o.name, o.uid) for o in secret.metadata.owner_references] == [
            ("Job", created.job_id, job.metadata.uid)
        ]
        assert secret.immutable
        assert base64.b64decode(secret.data["API_KEY"]).decode() == secret_value  # the first call's value

        wait_until(
            "the job with secret env to run",
            lambda: stub.GetJobStatus(
                pb.GetJobStatusRequest(namespace=namespace, job_id=created.job_id), timeout=10
            ).status.state
            == pb.JOB_STATE_RUNNING,
            timeout=60,
        )
        listed = stub.ListJobs(pb.ListJobsRequest(namespace=namespace), timeout=10)
        assert secret_value not in str(listed)

    log = server.output()
    assert created.job_id in log
    for value in (secret_value, other_value):
        assert value not in log
        assert base64.b64encode(value.encode()).decode() not in log


def test_secret_env_that_cannot_be_stored_leaves_no_job_and_a_retry_finishes(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(cluster.api)
    # A quota of zero Secrets: the API server refuses the Secret after the Job was created.
    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="no-secrets"),
            spec=client.V1ResourceQuotaSpec(hard={"secrets": "0"}),
        ),
    )
    wait_until(
        "the quota controller to count the namespace's secrets",
        lambda: (core.read_namespaced_resource_quota("no-secrets", namespace).status.hard or {}).get(
            "secrets"
        )
        == "0",
        timeout=30,
    )
    request = pb.ScheduleJobRequest(
        namespace=namespace, request_id="quota", secret_env={"API_KEY": "v"}, timer_job=timer()
    )
    with serving(cluster, tmp_path) as (_, stub):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ScheduleJob(request, timeout=10)
        code, message, _ = rpc_error(caught)
        assert code == grpc.StatusCode.PERMISSION_DENIED, message
        assert "exceeded quota" in message
        wait_until(
            "the half-made Job to be deleted",
            lambda: jobs_in(cluster, namespace) == [],
            timeout=30,
        )
        core.delete_namespaced_resource_quota("no-secrets", namespace)
        wait_until(
            "the quota to go",
            lambda: not core.list_namespaced_resource_quota(namespace).items,
            timeout=30,
        )

        def retry() -> bool:
            try:
                return stub.ScheduleJob(request, timeout=10).created
            except grpc.RpcError as e:  # the quota admission cache may still hold the quota briefly
                if e.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                return False

        wait_until("the retried ScheduleJob to succeed", retry, timeout=30)
    (job,) = jobs_in(cluster, namespace)
    assert not job.spec.suspend
    assert core.read_namespaced_secret(f"{job.metadata.name}-env", namespace).metadata.owner_references
