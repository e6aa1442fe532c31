"""Job control end to end: retry rules as the Job controller applies them, and the leader ending
jobs stuck pending past their timeout, on the real cluster with kwok playing the pods.

Pods are driven by the sim.jobscheduler.io/* annotations (docs/development.md, "Simulating pods"): an exit
code, a container held waiting with ImagePullBackOff, or, for Unschedulable, a CPU request no
node has.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.models import FAILED_REASON_ANNOTATION, PENDING_TIMEOUT_ANNOTATION
from tests.conftest import Cluster
from tests.helpers import tool, wait_until
from tests.integration.conftest import ServeProcess, Service, free_port, start_serve
from tests.integration.test_readme import readme_grpcurl_lines

S = pb.JobState
CONTAINER = pb.ContainerJob(image="registry.example/tool:1")
QUICK = {"sim.jobscheduler.io/duration": "200ms"}
IMAGE_PULL_BACK_OFF = {"sim.jobscheduler.io/waiting-reason": "ImagePullBackOff"}


def request(namespace: str, **kwargs: Any) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(namespace=namespace, container_job=CONTAINER, **kwargs)


def status_of(stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str) -> pb.JobStatus:
    return stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10).status


def wait_for_state(
    stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str, state: int, timeout: float = 60
) -> pb.JobStatus:
    def probe() -> pb.JobStatus | None:
        status = status_of(stub, namespace, job_id)
        return status if status.state == state else None

    return wait_until(f"{job_id} in {S.Name(state)}", probe, timeout=timeout)


def k8s_job(cluster: Cluster, namespace: str, job_id: str) -> client.V1Job:
    return client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace)


def pods_of(cluster: Cluster, namespace: str, job_id: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, label_selector=f"job-name={job_id}")
    return list(pods.items)


def refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details() or ""


# -- retry rules -------------------------------------------------------------------------------


def test_exit_code_in_fail_on_exit_codes_fails_the_job_after_one_pod(
    service: Service, namespace: str, cluster: Cluster
) -> None:
    created = service.stub.ScheduleJob(
        request(
            namespace,
            annotations={**QUICK, "sim.jobscheduler.io/exit-code": "3"},
            backoff_limit=5,
            retry=pb.RetryPolicy(fail_on_exit_codes=[3]),
        ),
        timeout=10,
    )
    status = wait_for_state(service.stub, namespace, created.job_id, S.JOB_STATE_FAILED)
    assert (status.reason, status.exit_code, status.attempts) == ("PodFailurePolicy", 3, 1)
    assert status.message.startswith("failed at once by a retry rule: Container main for pod ")
    assert "exit code 3" in status.message
    # Five retries were allowed; the rule ended it at the first failure.
    assert len(pods_of(cluster, namespace, created.job_id)) == 1
    job = k8s_job(cluster, namespace, created.job_id)
    assert [
        (r.action, r.on_exit_codes.operator, r.on_exit_codes.values)
        for r in job.spec.pod_failure_policy.rules
    ] == [("FailJob", "In", [3])]


def test_exit_code_not_in_the_rule_is_retried(service: Service, namespace: str, cluster: Cluster) -> None:
    created = service.stub.ScheduleJob(
        request(
            namespace,
            annotations={**QUICK, "sim.jobscheduler.io/exit-code": "1"},
            backoff_limit=1,
            retry=pb.RetryPolicy(fail_on_exit_codes=[3]),
        ),
        timeout=10,
    )
    # The Job controller waits ~10 s before the retry.
    status = wait_for_state(service.stub, namespace, created.job_id, S.JOB_STATE_FAILED, timeout=90)
    assert (status.reason, status.exit_code, status.attempts) == ("BackoffLimitExceeded", 1, 2)
    assert len(pods_of(cluster, namespace, created.job_id)) == 2


def test_every_retry_rule_is_admitted_by_the_api_server(service: Service, namespace: str) -> None:
    policy = pb.RetryPolicy(
        fail_on_exit_codes=[3, 42],
        retry_on_exit_codes=[1],
        ignore_disruptions=True,
        count_oom=True,
        rules=[
            pb.RetryRule(
                action=pb.RETRY_ACTION_FAIL_INDEX,
                exit_codes=[0, 1, 2],
                operator=pb.RETRY_OPERATOR_NOT_IN,
                container_name="main",
            ),
            pb.RetryRule(action=pb.RETRY_ACTION_IGNORE, pod_conditions=["ConfigIssue"]),
        ],
    )
    batch = pb.BatchJob(image="registry.example/shard:1", completions=3, backoff_limit_per_index=1)
    response = service.stub.ScheduleJob(
        pb.ScheduleJobRequest(namespace=namespace, batch_job=batch, retry=policy, dry_run=True), timeout=10
    )
    rules = yaml.safe_load(response.manifest)["spec"]["podFailurePolicy"]["rules"]
    assert [rule["action"] for rule in rules] == [
        "Ignore",
        "Count",
        "FailJob",
        "FailJob",
        "FailIndex",
        "Ignore",
    ]


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        pytest.param(pb.RetryPolicy(fail_on_exit_codes=[0]), "retry.fail_on_exit_codes", id="exit-code-0"),
        pytest.param(
            pb.RetryPolicy(rules=[pb.RetryRule(action=pb.RETRY_ACTION_FAIL_INDEX, exit_codes=[1])]),
            "retry.rules[0].action",
            id="fail-index-without-indexes",
        ),
        pytest.param(
            pb.RetryPolicy(
                rules=[pb.RetryRule(action=pb.RETRY_ACTION_COUNT, exit_codes=[1], container_name="sidecar")]
            ),
            "retry.rules[0].container_name",
            id="unknown-container",
        ),
    ],
)
def test_bad_retry_policy_is_invalid_argument_and_creates_nothing(
    service: Service, namespace: str, cluster: Cluster, retry: pb.RetryPolicy, field: str
) -> None:
    code, message = refused(lambda: service.stub.ScheduleJob(request(namespace, retry=retry), timeout=10))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(f"{field}: ")
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


# -- pending timeouts --------------------------------------------------------------------------


@contextmanager
def replica(
    cluster: Cluster, tmp_path: Path, namespace: str, **env: str
) -> Iterator[pb_grpc.JobSchedulerStub]:
    """`jobscheduler serve` leading in (and watching) the test's namespace, ticking fast."""
    server: ServeProcess = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={
            "K8S_NAMESPACE": namespace,
            "WATCH_NAMESPACES": namespace,
            "SCHEDULE_TICK_SECONDS": "0.2",
            "LEADER_LEASE_SECONDS": "3",
            **env,
        },
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.JobSchedulerStub(channel)
    finally:
        channel.close()
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert "leader task crashed" not in server.output()
    assert "rpc crashed" not in server.output()


def assert_ended_by_kubernetes(cluster: Cluster, namespace: str, job_id: str) -> None:
    """The Job controller took the shortened deadline: Failed, and no pod left."""

    def failed() -> bool:
        job = k8s_job(cluster, namespace, job_id)
        conditions = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
        return "Failed" in conditions and not pods_of(cluster, namespace, job_id)

    wait_until(f"{job_id} Failed on the cluster, its pods deleted", failed, timeout=30)


def test_job_stuck_in_image_pull_back_off_fails_after_its_timeout(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as stub:
        created = stub.ScheduleJob(
            request(namespace, annotations=IMAGE_PULL_BACK_OFF, pending_timeout_seconds=3), timeout=10
        )
        assert (
            k8s_job(cluster, namespace, created.job_id).metadata.annotations[PENDING_TIMEOUT_ANNOTATION]
            == "3"
        )
        wait_until(
            "the pod stuck in ImagePullBackOff",
            lambda: status_of(stub, namespace, created.job_id).reason == "ImagePullBackOff",
            timeout=20,
        )
        started = time.monotonic()
        status = wait_for_state(stub, namespace, created.job_id, S.JOB_STATE_FAILED, timeout=20)
        assert time.monotonic() - started < 10
        assert status.reason == "ImagePullBackOff"
        assert "pending timeout of 3s" in status.message
        assert "container main" in status.message
        assert status.HasField("finished_at")
        assert_ended_by_kubernetes(cluster, namespace, created.job_id)
        # Still reported as the service ended it, not as the deadline it used.
        assert status_of(stub, namespace, created.job_id).reason == "ImagePullBackOff"


def test_unschedulable_job_fails_after_the_default_timeout(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace, DEFAULT_PENDING_TIMEOUT_SECONDS="3") as stub:
        # Each kwok node has 16 CPUs.
        created = stub.ScheduleJob(request(namespace, resources=pb.Resources(cpu_request="64")), timeout=10)
        status = wait_for_state(stub, namespace, created.job_id, S.JOB_STATE_FAILED, timeout=30)
        assert status.reason == "Unschedulable"
        assert "pending timeout of 3s" in status.message
        assert "Insufficient cpu" in status.message
        assert_ended_by_kubernetes(cluster, namespace, created.job_id)


def test_jobs_without_a_timeout_or_that_start_in_time_are_left_alone(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace, DEFAULT_PENDING_TIMEOUT_SECONDS="2") as stub:
        # No timeout at all: 0 turns the default off.
        unlimited = stub.ScheduleJob(
            request(namespace, annotations=IMAGE_PULL_BACK_OFF, pending_timeout_seconds=0), timeout=10
        ).job_id
        # Pending for a second (no stuck reason), then runs longer than its timeout.
        in_time = stub.ScheduleJob(
            request(
                namespace,
                annotations={"sim.jobscheduler.io/start-delay": "1s", "sim.jobscheduler.io/duration": "4s"},
                pending_timeout_seconds=2,
            ),
            timeout=10,
        ).job_id
        # The control: the leader is acting in this namespace.
        stuck = stub.ScheduleJob(request(namespace, annotations=IMAGE_PULL_BACK_OFF), timeout=10).job_id
        wait_for_state(stub, namespace, stuck, S.JOB_STATE_FAILED, timeout=20)
        done = wait_for_state(stub, namespace, in_time, S.JOB_STATE_SUCCEEDED, timeout=30)
        assert done.reason == "Completed"
        left = status_of(stub, namespace, unlimited)
        assert (left.state, left.reason) == (S.JOB_STATE_PENDING, "ImagePullBackOff")
        for job_id in (unlimited, in_time):
            annotations = k8s_job(cluster, namespace, job_id).metadata.annotations or {}
            assert FAILED_REASON_ANNOTATION not in annotations


def test_pending_timeout_without_a_watch_cache(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    # WATCH_NAMESPACES=-: the leader lists Jobs and pods from the API (at most every 10 s).
    with replica(cluster, tmp_path, namespace, WATCH_NAMESPACES="-") as stub:
        created = stub.ScheduleJob(
            request(namespace, annotations=IMAGE_PULL_BACK_OFF, pending_timeout_seconds=2), timeout=10
        )
        status = wait_for_state(stub, namespace, created.job_id, S.JOB_STATE_FAILED, timeout=40)
        assert status.reason == "ImagePullBackOff"
        assert_ended_by_kubernetes(cluster, namespace, created.job_id)


def test_bad_pending_timeout_is_invalid_argument(service: Service, namespace: str) -> None:
    code, message = refused(
        lambda: service.stub.ScheduleJob(request(namespace, pending_timeout_seconds=-1), timeout=10)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("pending_timeout_seconds: ")


def test_the_readme_job_control_examples_work_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    lines = readme_grpcurl_lines("### Job control")
    assert len(lines) == 2
    grpcurl = tool("grpcurl")
    port = free_port()  # not the README's 50054, which other test sessions may be using
    server = start_serve(cluster, tmp_path, port=port, env={"K8S_NAMESPACE": namespace})
    try:
        for line in lines:
            argv = [grpcurl, *shlex.split(line.replace("localhost:50054", f"localhost:{port}"))[1:]]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, f"{line}\n{out.stderr}"
            job = k8s_job(cluster, namespace, json.loads(out.stdout)["job_id"])
            if "retry" in line:
                assert [rule.action for rule in job.spec.pod_failure_policy.rules] == ["Ignore", "FailJob"]
            else:
                assert job.metadata.annotations[PENDING_TIMEOUT_ANNOTATION] == "300"
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def test_a_schedules_runs_carry_its_retry_rules_and_pending_timeout(
    service: Service, namespace: str, cluster: Cluster
) -> None:
    retry = pb.RetryPolicy(fail_on_exit_codes=[3], ignore_disruptions=True)
    job = pb.ScheduleJobRequest(container_job=CONTAINER, retry=retry, pending_timeout_seconds=60)
    spec = pb.ScheduleSpec(name="nightly", namespace=namespace, cron="0 2 * * *", job=job)
    created = service.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec), timeout=10)
    assert (created.spec.job.retry, created.spec.job.pending_timeout_seconds) == (retry, 60)
    read = service.stub.GetSchedule(pb.GetScheduleRequest(name="nightly", namespace=namespace), timeout=10)
    assert (read.spec.job.retry, read.spec.job.pending_timeout_seconds) == (retry, 60)
    template = client.BatchV1Api(cluster.api).read_namespaced_cron_job("nightly", namespace).spec.job_template
    assert [rule.action for rule in template.spec.pod_failure_policy.rules] == ["Ignore", "FailJob"]
    assert template.metadata.annotations[PENDING_TIMEOUT_ANNOTATION] == "60"
