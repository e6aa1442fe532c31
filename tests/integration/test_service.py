"""The JobScheduler service end to end: the real gRPC stack against the real local cluster.

Pods are driven through kwok by the sim.jobscheduler.io/* annotations (see the README), which
the service passes through to the pod template like any caller's annotations.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from tests.conftest import Cluster
from tests.helpers import tool, wait_until
from tests.integration.conftest import Service, start_serve

TIMER = {
    "duration_seconds": 300,
    "timer_name": "build-timeout",
    "control_plane_endpoint": "http://control-plane:50053",
}
S = pb.JobState
# Verbatim from the original service's README.
README_SCHEDULE = '{"name": "my-timer", "timer_job": {"duration_seconds": 300, "timer_name": "build-timeout", "control_plane_endpoint": "http://control-plane:50053"}}'  # noqa: E501


def timer_request(namespace: str, **kwargs: Any) -> pb.ScheduleJobRequest:
    timer = kwargs.pop("timer", TIMER)
    return pb.ScheduleJobRequest(
        name=kwargs.pop("name", "my-timer"), namespace=namespace, timer_job=pb.TimerJob(**timer), **kwargs
    )


def jobs_in(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items)


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


def grpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


# -- the original README's calls ----------------------------------------------------------------


@pytest.fixture
def grpcurl() -> str:
    return tool("grpcurl")


def run_grpcurl(grpcurl: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([grpcurl, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_grpcurl_calls_from_the_original_readme_work_verbatim(
    cluster: Cluster, namespace: str, tmp_path: Path, grpcurl: str
) -> None:
    # The README's calls name no namespace and no port but 50054: serve there, defaulting to ours.
    server = start_serve(cluster, tmp_path, port=50054, env={"K8S_NAMESPACE": namespace})
    try:
        created = run_grpcurl(
            grpcurl,
            "-plaintext",
            "-d",
            README_SCHEDULE,
            "localhost:50054",
            "jobscheduler.JobScheduler/ScheduleJob",
        )
        job_id = created["job_id"]
        assert job_id.startswith("job-")
        assert created["created"] is True
        assert client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace).metadata.name == job_id

        got = run_grpcurl(
            grpcurl,
            "-plaintext",
            "-d",
            f'{{"job_id": "{job_id}"}}',
            "localhost:50054",
            "jobscheduler.JobScheduler/GetJobStatus",
        )
        assert got["status"]["job_id"] == job_id
        assert got["status"]["name"] == "my-timer"
        assert got["status"]["job_type"] == "timer"

        listed = run_grpcurl(
            grpcurl, "-plaintext", "-d", "{}", "localhost:50054", "jobscheduler.JobScheduler/ListJobs"
        )
        assert [j["job_id"] for j in listed["jobs"]] == [job_id]

        # A second job that keeps running, so the cancel finds it active.
        long_job = pb.ScheduleJobRequest(
            name="long", timer_job=pb.TimerJob(**TIMER), annotations={"sim.jobscheduler.io/duration": "10m"}
        )
        with grpc.insecure_channel("localhost:50054") as channel:
            from jobscheduler.api import scheduler_pb2_grpc

            long_id = scheduler_pb2_grpc.JobSchedulerStub(channel).ScheduleJob(long_job, timeout=10).job_id
        cancelled = run_grpcurl(
            grpcurl,
            "-plaintext",
            "-d",
            f'{{"job_id": "{long_id}"}}',
            "localhost:50054",
            "jobscheduler.JobScheduler/CancelJob",
        )
        assert cancelled["status"]["state"] == "JOB_STATE_CANCELLED"
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


# -- status paths --------------------------------------------------------------------------------


def test_timer_job_goes_pending_then_running_then_succeeded(service: Service, namespace: str) -> None:
    sim = {"sim.jobscheduler.io/start-delay": "2s", "sim.jobscheduler.io/duration": "2s"}
    job_id = service.stub.ScheduleJob(timer_request(namespace, annotations=sim), timeout=10).job_id

    seen: list[int] = []

    def record() -> pb.JobStatus | None:
        status = status_of(service, namespace, job_id)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        return status if status.state == S.JOB_STATE_SUCCEEDED else None

    final = wait_until("SUCCEEDED", record, timeout=60, interval=0.1)
    assert seen == [S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED]
    assert final.reason == "Completed"
    assert final.succeeded == 1
    assert final.exit_code == 0
    assert len(final.pods) == 1
    assert final.started_at.seconds >= final.created_at.seconds
    assert final.finished_at.seconds >= final.started_at.seconds


def test_failing_job_reads_failed_with_reason_and_exit_code(service: Service, namespace: str) -> None:
    sim = {"sim.jobscheduler.io/exit-code": "3", "sim.jobscheduler.io/duration": "100ms"}
    job_id = service.stub.ScheduleJob(timer_request(namespace, annotations=sim), timeout=10).job_id

    status = wait_for_state(service, namespace, job_id, S.JOB_STATE_FAILED)
    assert status.reason == "BackoffLimitExceeded"
    assert status.exit_code == 3
    assert status.attempts == 1
    assert "exited with code 3" in status.message


def test_oom_killed_job_reads_oomkilled(service: Service, namespace: str) -> None:
    sim = {
        "sim.jobscheduler.io/exit-code": "137",
        "sim.jobscheduler.io/reason": "OOMKilled",
        "sim.jobscheduler.io/duration": "100ms",
    }
    job_id = service.stub.ScheduleJob(timer_request(namespace, annotations=sim), timeout=10).job_id

    status = wait_for_state(service, namespace, job_id, S.JOB_STATE_FAILED)
    assert (status.reason, status.exit_code) == ("OOMKilled", 137)


def test_image_pull_backoff_reads_pending_with_that_reason(service: Service, namespace: str) -> None:
    sim = {"sim.jobscheduler.io/waiting-reason": "ImagePullBackOff"}
    job_id = service.stub.ScheduleJob(timer_request(namespace, annotations=sim), timeout=10).job_id

    status = wait_until(
        "ImagePullBackOff",
        lambda: (s if (s := status_of(service, namespace, job_id)).reason == "ImagePullBackOff" else None),
    )
    assert status.state == S.JOB_STATE_PENDING
    assert status.pods[0] in status.message


def test_request_larger_than_any_node_reads_unschedulable(service: Service, namespace: str) -> None:
    request = timer_request(namespace, resources=pb.Resources(cpu_request="64", memory_request="64Mi"))
    job_id = service.stub.ScheduleJob(request, timeout=10).job_id

    status = wait_until(
        "Unschedulable",
        lambda: (s if (s := status_of(service, namespace, job_id)).reason == "Unschedulable" else None),
    )
    assert status.state == S.JOB_STATE_PENDING
    assert "Insufficient cpu" in status.message


# -- cancel --------------------------------------------------------------------------------------


def test_cancel_stops_the_pods_and_reads_cancelled(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    sim = {"sim.jobscheduler.io/duration": "10m"}
    job_id = service.stub.ScheduleJob(timer_request(namespace, annotations=sim), timeout=10).job_id
    wait_for_state(service, namespace, job_id, S.JOB_STATE_RUNNING)

    cancelled = service.stub.CancelJob(
        pb.CancelJobRequest(job_id=job_id, namespace=namespace), timeout=10
    ).status

    assert cancelled.state == S.JOB_STATE_CANCELLED
    assert cancelled.reason == "Cancelled"
    core = client.CoreV1Api(cluster.api)
    wait_until(
        "pods terminated",
        lambda: not core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job_id}"
        ).items,
        timeout=30,
    )
    assert status_of(service, namespace, job_id).state == S.JOB_STATE_CANCELLED
    again = service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, namespace=namespace), timeout=10).status
    assert again.state == S.JOB_STATE_CANCELLED


def test_cancel_a_finished_job_is_a_failed_precondition(service: Service, namespace: str) -> None:
    job_id = service.stub.ScheduleJob(timer_request(namespace), timeout=10).job_id
    wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)

    err = grpc_error(lambda: service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, namespace=namespace)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SUCCEEDED" in err.details()
    assert status_of(service, namespace, job_id).state == S.JOB_STATE_SUCCEEDED


def test_cancel_an_unknown_job_is_not_found(service: Service, namespace: str) -> None:
    err = grpc_error(
        lambda: service.stub.CancelJob(pb.CancelJobRequest(job_id="job-nope", namespace=namespace))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "job-nope" in err.details()


def test_jobs_not_created_by_the_service_are_not_visible(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    from tests.helpers import job_manifest

    client.BatchV1Api(cluster.api).create_namespaced_job(namespace, job_manifest("foreign"))
    err = grpc_error(lambda: status_of(service, namespace, "foreign"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- idempotency ---------------------------------------------------------------------------------


def test_twenty_concurrent_calls_with_one_request_id_create_exactly_one_job(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    request = timer_request(namespace, request_id="deploy-42")
    responses: list[pb.ScheduleJobResponse] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        try:
            responses.append(service.stub.ScheduleJob(request, timeout=20))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len({r.job_id for r in responses}) == 1
    assert sum(r.created for r in responses) == 1
    assert [j.metadata.name for j in jobs_in(cluster, namespace)] == [responses[0].job_id]


def test_request_id_reused_for_a_different_request_is_already_exists(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    first = service.stub.ScheduleJob(timer_request(namespace, request_id="k1"), timeout=10)
    changed = timer_request(namespace, request_id="k1", timer={**TIMER, "duration_seconds": 5})

    err = grpc_error(lambda: service.stub.ScheduleJob(changed, timeout=10))

    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id" in err.details()
    assert [j.metadata.name for j in jobs_in(cluster, namespace)] == [first.job_id]


# -- validation ----------------------------------------------------------------------------------


def _invalid(namespace: str) -> list[tuple[str, pb.ScheduleJobRequest, str]]:
    def timer(**changes: Any) -> dict[str, Any]:
        return {**TIMER, **changes}

    return [
        ("no job type", pb.ScheduleJobRequest(name="x", namespace=namespace), "job_type"),
        (
            "zero duration",
            timer_request(namespace, timer=timer(duration_seconds=0)),
            "timer_job.duration_seconds",
        ),
        (
            "negative duration",
            timer_request(namespace, timer=timer(duration_seconds=-5)),
            "timer_job.duration_seconds",
        ),
        (
            "duration above max",
            timer_request(namespace, timer=timer(duration_seconds=86401)),
            "timer_job.duration_seconds",
        ),
        ("no timer name", timer_request(namespace, timer=timer(timer_name="")), "timer_job.timer_name"),
        (
            "no endpoint",
            timer_request(namespace, timer=timer(control_plane_endpoint="")),
            "timer_job.control_plane_endpoint",
        ),
        (
            "non-http endpoint",
            timer_request(namespace, timer=timer(control_plane_endpoint="ftp://x")),
            "timer_job.control_plane_endpoint",
        ),
        ("bad log level", timer_request(namespace, timer=timer(log_level="loud")), "timer_job.log_level"),
        (
            "env name not a C identifier",
            timer_request(namespace, timer=timer(env={"A-B": "1"})),
            "timer_job.env",
        ),
        (
            "env name starting with a digit",
            timer_request(namespace, timer=timer(env={"1X": "1"})),
            "timer_job.env",
        ),
        (
            "bad cpu quantity",
            timer_request(namespace, resources=pb.Resources(cpu_request="100x")),
            "resources.cpu_request",
        ),
        (
            "memory limit below request",
            timer_request(namespace, resources=pb.Resources(memory_request="64Mi", memory_limit="1Mi")),
            "resources.memory_limit",
        ),
        ("bad label key", timer_request(namespace, labels={"bad key": "v"}), "labels"),
        ("bad label value", timer_request(namespace, labels={"team": "x" * 64}), "labels[team]"),
        ("reserved label", timer_request(namespace, labels={"jobscheduler.io/name": "spoof"}), "labels"),
        ("name not DNS-1123", timer_request(namespace, name="Not_A_Name!"), "name"),
        ("negative backoff limit", timer_request(namespace, backoff_limit=-1), "backoff_limit"),
        ("unknown namespace", timer_request("no-such-namespace-here"), "namespace"),
    ]


@pytest.mark.parametrize("case", range(18), ids=[c[0] for c in _invalid("ns")])
def test_bad_input_is_invalid_argument_naming_the_field_and_creates_nothing(
    cluster: Cluster, service: Service, namespace: str, case: int
) -> None:
    _, request, field = _invalid(namespace)[case]

    err = grpc_error(lambda: service.stub.ScheduleJob(request, timeout=10))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(field), err.details()
    assert jobs_in(cluster, namespace) == []


def test_dry_run_returns_the_manifest_and_creates_nothing(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    resp = service.stub.ScheduleJob(timer_request(namespace, dry_run=True), timeout=10)

    manifest = yaml.safe_load(resp.manifest)
    assert manifest["kind"] == "Job"
    assert manifest["metadata"]["name"] == resp.job_id
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "100m", "memory": "64Mi"}
    assert resp.created is False
    assert jobs_in(cluster, namespace) == []


def test_rendered_pods_are_admitted_under_restricted_pod_security(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    job_id = service.stub.ScheduleJob(timer_request(namespace), timeout=10).job_id
    wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)
    labels = client.CoreV1Api(cluster.api).read_namespace(namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- list ----------------------------------------------------------------------------------------


def test_list_filters_and_pages_newest_first(service: Service, namespace: str) -> None:
    ids = []
    for i in range(5):
        labels = {"team": "a"} if i % 2 == 0 else {"team": "b"}
        ids.append(
            service.stub.ScheduleJob(timer_request(namespace, name=f"n{i}", labels=labels), timeout=10).job_id
        )
    for job_id in ids:
        wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)

    def page(**kw: Any) -> pb.ListJobsResponse:
        return service.stub.ListJobs(pb.ListJobsRequest(namespace=namespace, **kw), timeout=10)

    seen, token, pages = [], "", 0
    while True:
        resp = page(page_size=2, page_token=token)
        pages += 1
        seen += [j.job_id for j in resp.jobs]
        token = resp.next_page_token
        if not token:
            break
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    all_jobs = page().jobs
    created = [(j.created_at.seconds, j.created_at.nanos) for j in all_jobs]
    assert created == sorted(created, reverse=True)
    assert [j.job_id for j in all_jobs] == seen

    assert {j.job_id for j in page(label_selector="team=a").jobs} == {ids[0], ids[2], ids[4]}
    assert [j.job_id for j in page(name="n3").jobs] == [ids[3]]
    assert len(page(job_type="timer").jobs) == 5
    assert page(job_type="other").jobs == []
    assert len(page(states=[S.JOB_STATE_SUCCEEDED]).jobs) == 5
    assert page(states=[S.JOB_STATE_RUNNING, S.JOB_STATE_FAILED]).jobs == []

    for kw, field in (
        ({"label_selector": "team in (a"}, "label_selector"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_size": 5000}, "page_size"),
    ):
        err = grpc_error(lambda kw=kw: page(**kw))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith(field)


# -- Kubernetes API outage ----------------------------------------------------------------------


@pytest.mark.local_cluster
def test_api_server_down_gives_unavailable_and_not_serving_then_recovers(
    local_cluster: Cluster, service: Service, namespace: str
) -> None:
    job_id = service.stub.ScheduleJob(timer_request(namespace), timeout=10).job_id
    serving = health_pb2.HealthCheckResponse.SERVING
    assert service.health_status() == serving

    local_cluster.devcluster("stop", "kube-apiserver")
    try:
        err = grpc_error(lambda: status_of(service, namespace, job_id))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        err = grpc_error(lambda: service.stub.ScheduleJob(timer_request(namespace), timeout=3))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert service.health_status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (
            service.health_status("jobscheduler.JobScheduler") == health_pb2.HealthCheckResponse.NOT_SERVING
        )
    finally:
        local_cluster.devcluster("start", "kube-apiserver")

    wait_until("SERVING again", lambda: service.health_status() == serving, timeout=10)
    assert status_of(service, namespace, job_id).job_id == job_id


# -- the process ---------------------------------------------------------------------------------


def test_serve_shuts_down_cleanly_on_sigterm(cluster: Cluster, tmp_path: Path) -> None:
    from tests.integration.conftest import free_port

    server = start_serve(cluster, tmp_path, port=free_port(), env={"SHUTDOWN_GRACE_SECONDS": "5"})
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    out = server.output()
    assert '"event": "shutting down"' in out
    assert '"signal": "SIGTERM"' in out
    assert '"event": "stopped"' in out


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GRPC_PORT": "abc"}, "GRPC_PORT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"DEFAULT_CPU_REQUEST": "100x"}, "DEFAULT_CPU_REQUEST"),
        ({"IN_CLUSTER": "maybe"}, "IN_CLUSTER"),
        ({"K8S_NAMESPACE": "Bad_NS"}, "K8S_NAMESPACE"),
    ],
)
def test_bad_configuration_fails_at_start_naming_the_variable(env: dict[str, str], variable: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jobscheduler.cli.main", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "IN_CLUSTER": "false", **env},
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert variable in line
    assert env[variable] in line
