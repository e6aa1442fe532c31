"""Jobs run for real through the deployed service: each one scheduled with ScheduleJob (the real
node's placement) on the service reached through port-forward, and each outcome asserted twice,
as the service reports it (JobStatus) and as the real kubelet wrote it (pod status, container
state, termination message, logs). The reports and webhook calls reach an HTTP receiver on the
real node's bridge gateway."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from kubernetes import client, watch

from jobscheduler.api import scheduler_pb2 as pb
from tests.realnode.deployed import (
    NAMESPACE,
    NODE_SELECTOR,
    TOLERATIONS,
    Deployed,
    Receiver,
    deployed_service,
    kubectl_json,
    receiver,
    record,
)
from tests.realnode.support import wait_until

pytestmark = pytest.mark.timeout(420)  # the first test may deploy k8s/

JOB_TIMEOUT = 90  # a job on the idle real node ends within seconds; no image is ever pulled
RPC_TIMEOUT = 15
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


@pytest.fixture(scope="package")
def service(request: pytest.FixtureRequest, cluster: object, real_node: str, image: str) -> Deployed:  # noqa: ARG001
    return deployed_service(request, image)


@pytest.fixture
def http() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def schedule(service: Deployed, name: str, **fields: Any) -> str:
    reply = service.stub.ScheduleJob(
        pb.ScheduleJobRequest(name=name, node_selector=NODE_SELECTOR, tolerations=TOLERATIONS, **fields),
        timeout=RPC_TIMEOUT,
    )
    assert reply.namespace == NAMESPACE
    return str(reply.job_id)


def status(service: Deployed, job_id: str) -> pb.JobStatus:
    return service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=RPC_TIMEOUT).status


def wait_state(
    service: Deployed, job_id: str, states: set[int], *, timeout: float = JOB_TIMEOUT
) -> pb.JobStatus:
    def reached() -> pb.JobStatus | None:
        s = status(service, job_id)
        if s.state in states:
            return s
        assert s.state not in TERMINAL, f"{job_id} ended {pb.JobState.Name(s.state)} {s.reason}: {s.message}"
        return None

    names = "/".join(pb.JobState.Name(s) for s in states)
    final = wait_until(f"{job_id} {names}", reached, timeout=timeout)
    if final.state in TERMINAL:
        record(job_id, final)
    return final


def pods(job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(
        "get", "pods", "-n", NAMESPACE, "-l", f"batch.kubernetes.io/job-name={job_id}"
    )["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def only_pod(job_id: str, node: str) -> dict[str, Any]:
    [pod] = pods(job_id)
    assert pod["spec"]["nodeName"] == node
    return pod


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["status"]["containerStatuses"]
    state: dict[str, Any] = container["state"]
    assert "terminated" in state, json.dumps(pod["status"], indent=1)
    return dict(state["terminated"])


def log_lines(service: Deployed, job_id: str, **fields: Any) -> list[str]:
    chunks = service.stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id, **fields), timeout=RPC_TIMEOUT)
    return [line for chunk in chunks for line in chunk.lines]


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def python_job(image: str, code: str) -> pb.ContainerJob:
    return pb.ContainerJob(image=image, command=["python", "-c", code])


def closed_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


# ---------------------------------------------------------------------------------------------


def test_timer_job_runs_the_timer_workload_and_its_report_reaches_the_receiver(
    service: Deployed, http: Receiver, real_node: str
) -> None:
    job_id = schedule(
        service,
        "timer-e2e",
        timer_job=pb.TimerJob(
            duration_seconds=2, timer_name="e2e", control_plane_endpoint=http.url("/report")
        ),
    )
    done = wait_state(service, job_id, {pb.JOB_STATE_SUCCEEDED})
    assert (done.reason, done.exit_code, done.job_type) == ("Completed", 0, "timer"), done

    pod = only_pod(job_id, real_node)
    assert pod["status"]["phase"] == "Succeeded"
    assert (terminated(pod)["exitCode"], terminated(pod)["reason"]) == (0, "Completed")
    assert pod["spec"]["containers"][0]["image"] == service.image  # TIMER_IMAGE of the ConfigMap

    [report] = http.seen(lambda r: r.path == "/report")
    body = report.json()
    assert report.method == "POST"
    assert report.headers["content-type"] == "application/json"
    assert report.headers["user-agent"].startswith("jobscheduler-timer/")
    assert report.headers["idempotency-key"] == f"{job_id}-{body['started_at']}"
    assert body["schema"] == "jobscheduler.timer.report/v1"
    assert (body["timer_name"], body["job_id"], body["namespace"], body["pod"]) == (
        "e2e",
        job_id,
        NAMESPACE,
        pod["metadata"]["name"],
    )
    assert (body["duration_seconds"], body["outcome"]) == (2, "completed")
    assert 2 <= body["elapsed_seconds"] < 3

    logged = [e["event"] for e in events(log_lines(service, job_id))]
    assert logged[0] == "timer.started"
    assert {"timer.completed", "report.delivered", "timer.exiting"} <= set(logged)


def test_container_exiting_3_fails_with_exit_code_3(service: Deployed, real_node: str) -> None:
    job_id = schedule(
        service,
        "exit-3",
        container_job=python_job(service.image, "import sys; print('bye', flush=True); sys.exit(3)"),
    )
    done = wait_state(service, job_id, {pb.JOB_STATE_FAILED})
    assert done.exit_code == 3, done
    assert done.reason == "BackoffLimitExceeded", done
    pod = only_pod(job_id, real_node)
    assert (terminated(pod)["exitCode"], terminated(pod)["reason"]) == (3, "Error")
    # GetJobLogs of a finished job: what the container wrote, through the kubelet.
    assert log_lines(service, job_id) == ["bye"]


def test_memory_limit_exceeded_fails_oomkilled(service: Deployed, real_node: str) -> None:
    job_id = schedule(
        service,
        "oom",
        container_job=python_job(service.image, "x = ' ' * (200 * 1024 * 1024); print(len(x))"),
        resources=pb.Resources(memory_request="20Mi", memory_limit="20Mi"),
    )
    done = wait_state(service, job_id, {pb.JOB_STATE_FAILED})
    pod = only_pod(job_id, real_node)
    state = terminated(pod)
    assert (state["reason"], state["exitCode"]) == ("OOMKilled", 137), state
    assert done.reason == "OOMKilled", done
    assert done.exit_code == 137, done


def test_missing_image_reports_the_pull_error_and_pending_timeout_fails_it(
    service: Deployed, real_node: str
) -> None:
    job_id = schedule(
        service,
        "no-image",
        container_job=pb.ContainerJob(image="localhost/jobscheduler-missing:1", command=["true"]),
        pending_timeout_seconds=20,
    )
    # Before the timeout: PENDING with the pull error the kubelet wrote.
    pending = wait_state(service, job_id, {pb.JOB_STATE_PENDING}, timeout=30)

    def pull_error() -> tuple[pb.JobStatus, str] | None:
        s = status(service, job_id)
        [pod] = pods(job_id) or [None]
        waiting = (
            ((pod or {}).get("status", {}).get("containerStatuses") or [{}])[0]
            .get("state", {})
            .get("waiting")
        )
        if s.state == pb.JOB_STATE_PENDING and waiting and s.reason in ("ErrImagePull", "ImagePullBackOff"):
            return s, waiting["reason"]
        return None

    pending, kubelet_reason = wait_until("the pull error in the status", pull_error, timeout=30)
    assert kubelet_reason in ("ErrImagePull", "ImagePullBackOff")
    assert "localhost/jobscheduler-missing:1" in pending.message, pending
    assert only_pod(job_id, real_node)["status"]["phase"] == "Pending"

    failed = wait_state(service, job_id, {pb.JOB_STATE_FAILED}, timeout=60)
    assert failed.reason in ("ErrImagePull", "ImagePullBackOff"), failed
    assert f"pending timeout of 20s with {failed.reason}" in failed.message, failed


def test_health_check_against_a_target_that_is_down_fails_naming_it(
    service: Deployed, http: Receiver, real_node: str
) -> None:
    port = closed_port(http.host)
    job_id = schedule(
        service,
        "health",
        health_check_job=pb.HealthCheckJob(
            targets=[pb.HealthCheckTarget(type="tcp", name="db", host=http.host, port=port)],
            timeout_seconds=3,
        ),
    )
    done = wait_state(service, job_id, {pb.JOB_STATE_FAILED})
    state = terminated(only_pod(job_id, real_node))
    assert state["exitCode"] == 1, state
    # The healthcheck's termination message, as the kubelet read it from /dev/termination-log.
    message = f"0/1 healthy; unhealthy: db (tcp {http.host}:{port}: connection refused)"
    assert state.get("message") == message, state
    assert done.message.endswith(f"container healthcheck exited with code 1 (Error): {message}"), done
    assert done.exit_code == 1


def test_webhook_job_reaches_the_receiver(service: Deployed, http: Receiver, real_node: str) -> None:
    job_id = schedule(
        service,
        "hook",
        webhook_job=pb.WebhookJob(
            url=http.url("/hook?x=1"), method="PUT", headers={"X-E2e": "yes"}, body='{"a": 1}'
        ),
    )
    done = wait_state(service, job_id, {pb.JOB_STATE_SUCCEEDED})
    assert done.exit_code == 0
    assert terminated(only_pod(job_id, real_node))["exitCode"] == 0
    [hook] = http.seen(lambda r: r.path.startswith("/hook"))
    assert (hook.method, hook.path, hook.body) == ("PUT", "/hook?x=1", b'{"a": 1}')
    assert hook.headers["x-e2e"] == "yes"


def test_indexed_batch_job_names_its_failing_index(service: Deployed, real_node: str) -> None:
    code = (
        "import os, sys\n"
        "i = os.environ['JOB_COMPLETION_INDEX']\n"
        "print('index', i)\n"
        "sys.exit(4 if i == '1' else 0)\n"
    )
    job_id = schedule(
        service,
        "batch",
        batch_job=pb.BatchJob(
            image=service.image,
            command=["python", "-c", code],
            completions=3,
            parallelism=3,
            backoff_limit_per_index=0,
        ),
    )
    done = wait_state(service, job_id, {pb.JOB_STATE_FAILED}, timeout=120)
    assert (done.failed_indexes, done.completed_indexes) == ("1", "0,2"), done
    by_index = {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: terminated(p)["exitCode"]
        for p in pods(job_id)
    }
    assert by_index == {"0": 0, "1": 4, "2": 0}
    assert {p["spec"]["nodeName"] for p in pods(job_id)} == {real_node}


def test_follow_streams_the_logs_and_ends_when_the_container_ends(service: Deployed, real_node: str) -> None:
    code = "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.5)"
    job_id = schedule(service, "follow", container_job=python_job(service.image, code))
    wait_state(service, job_id, {pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED})
    stream = service.stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id, follow=True), timeout=60)
    lines = [line for chunk in stream for line in chunk.lines]  # returns only when the stream ends
    ended = time.time()
    assert lines == [f"line {i}" for i in range(6)]
    pod = only_pod(job_id, real_node)
    state = terminated(pod)
    finished = datetime.fromisoformat(state["finishedAt"].replace("Z", "+00:00")).timestamp()
    assert ended - finished < 10, (ended, state["finishedAt"])  # followed to the end, then closed
    assert wait_state(service, job_id, {pb.JOB_STATE_SUCCEEDED}).exit_code == 0


def test_cancel_sends_sigterm_and_the_timer_exits_cleanly(
    service: Deployed, http: Receiver, real_node: str, cluster: Any
) -> None:
    job_id = schedule(
        service,
        "cancel-me",
        timer_job=pb.TimerJob(
            duration_seconds=300, timer_name="long", control_plane_endpoint=http.url("/report")
        ),
    )
    wait_state(service, job_id, {pb.JOB_STATE_RUNNING})
    wait_until(
        "timer.started in the log",
        lambda: any(e["event"] == "timer.started" for e in events(log_lines(service, job_id))),
        timeout=30,
    )
    pod_name = only_pod(job_id, real_node)["metadata"]["name"]

    # The pod is deleted once cancelled: follow its log and remember the kubelet's last word.
    followed: list[str] = []
    last_seen: dict[str, Any] = {}

    def follow() -> None:
        try:
            for chunk in service.stub.GetJobLogs(
                pb.GetJobLogsRequest(job_id=job_id, follow=True), timeout=60
            ):
                followed.extend(chunk.lines)
        except grpc.RpcError as e:
            followed.append(f"<rpc error {e.code()}>")

    def watch_pod() -> None:
        # A watch, not polling: the kubelet's final status comes moments before the deletion.
        stream = watch.Watch().stream(
            client.CoreV1Api(cluster.api).list_namespaced_pod,  # type: ignore[attr-defined]
            NAMESPACE,
            field_selector=f"metadata.name={pod_name}",
            timeout_seconds=60,
        )
        for event in stream:
            last_seen.update(event["object"].to_dict())
            if event["type"] == "DELETED":
                return

    threads = [threading.Thread(target=follow), threading.Thread(target=watch_pod)]
    for t in threads:
        t.start()
    time.sleep(1)  # the follow stream is open before the signal
    cancelled = service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=RPC_TIMEOUT).status
    for t in threads:
        t.join(timeout=70)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    final = status(service, job_id)
    record(job_id, final)
    assert final.state == pb.JOB_STATE_CANCELLED, final

    logged = {e["event"]: e for e in events(followed)}
    assert logged["timer.cancelled"]["signal"] == "SIGTERM", followed
    assert (logged["timer.exiting"]["outcome"], logged["timer.exiting"]["exit_code"]) == (
        "cancelled",
        0,
    ), followed
    [report] = http.seen(lambda r: r.path == "/report")
    assert report.json()["outcome"] == "cancelled"
    assert report.json()["elapsed_seconds"] < 60
    # The kubelet's last word on the container before the pod went: it exited 0 on SIGTERM.
    [container] = last_seen["status"]["container_statuses"]
    assert container["state"]["terminated"]["exit_code"] == 0, last_seen["status"]
    assert container["state"]["terminated"]["reason"] == "Completed", last_seen["status"]


def test_job_pod_runs_as_10001_and_cannot_write_to_its_root(service: Deployed, real_node: str) -> None:
    code = (
        "import errno, os, sys\n"
        "try:\n"
        "    open('/probe', 'w')\n"
        "    write = 'allowed'\n"
        "except OSError as e:\n"
        "    write = errno.errorcode[e.errno]\n"
        "print('write', write)\n"
        "print('uid', os.getuid(), 'euid', os.geteuid())\n"
        "sys.exit(0 if write == 'EROFS' and os.geteuid() == 10001 else 1)\n"
    )
    job_id = schedule(service, "inside", container_job=python_job(service.image, code))
    done = wait_state(service, job_id, {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED})
    lines = log_lines(service, job_id)
    assert lines == ["write EROFS", "uid 10001 euid 10001"], lines
    assert done.state == pb.JOB_STATE_SUCCEEDED
    pod = only_pod(job_id, real_node)
    assert terminated(pod)["exitCode"] == 0
    # What the kubelet ran the container as (status.containerStatuses[].user, Kubernetes ≥ 1.31).
    assert pod["status"]["containerStatuses"][0]["user"]["linux"]["uid"] == 10001
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
