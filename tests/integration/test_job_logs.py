"""GetJobLogs end to end: the real gRPC stack, the real API server's pods/log subresource, and
kwok's fake kubelets serving hack/kwok/pod.log as every pod's log (hack/devcluster.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from tests.conftest import ROOT, Cluster
from tests.helpers import restricted_pod_spec, wait_until
from tests.integration.conftest import Service, free_port

TIMER = pb.TimerJob(duration_seconds=60, timer_name="logs", control_plane_endpoint="http://cp:50053")


def simulated_log(path: Path = ROOT / "hack" / "kwok" / "pod.log") -> list[tuple[str, str]]:
    """(timestamp, text) of each line kwok serves: CRI log format, `TIME STREAM F TEXT`."""
    lines = []
    for raw in path.read_text().splitlines():
        stamp, _stream, _tag, text = raw.split(" ", 3)
        lines.append((stamp, text))
    return lines


SIMULATED = simulated_log()
TEXT = [text for _, text in SIMULATED]


def schedule(service: Service, namespace: str, **annotations: str) -> str:
    reply = service.stub.ScheduleJob(
        pb.ScheduleJobRequest(name="logs", namespace=namespace, timer_job=TIMER, annotations=annotations),
        timeout=10,
    )
    return reply.job_id


def state_of(service: Service, namespace: str, job_id: str) -> pb.JobStatus:
    request = pb.GetJobStatusRequest(job_id=job_id, namespace=namespace)
    return service.stub.GetJobStatus(request, timeout=10).status


def wait_for(service: Service, namespace: str, job_id: str, state: int) -> pb.JobStatus:
    return wait_until(
        pb.JobState.Name(state),
        lambda: s if (s := state_of(service, namespace, job_id)).state == state else None,
        timeout=60,
    )


def logs(
    service: Service, namespace: str, job_id: str, *, timeout: float = 20, **fields: Any
) -> list[pb.LogChunk]:
    request = pb.GetJobLogsRequest(job_id=job_id, namespace=namespace, **fields)
    return list(service.stub.GetJobLogs(request, timeout=timeout))


def lines_of(chunks: list[pb.LogChunk]) -> list[str]:
    return [line for chunk in chunks for line in chunk.lines]


def error_of(service: Service, namespace: str, job_id: str, **fields: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        logs(service, namespace, job_id, **fields)
    return err.value


def test_logs_of_a_finished_job(service: Service, cluster: Cluster, namespace: str) -> None:
    job_id = schedule(service, namespace)
    status = wait_for(service, namespace, job_id, pb.JOB_STATE_SUCCEEDED)
    [pod] = status.pods
    container = client.CoreV1Api(cluster.api).read_namespaced_pod(pod, namespace).spec.containers[0].name

    chunks = logs(service, namespace, job_id)
    assert lines_of(chunks) == TEXT
    assert {(c.pod, c.container) for c in chunks} == {(pod, container)}

    assert lines_of(logs(service, namespace, job_id, tail_lines=2)) == TEXT[-2:]
    assert lines_of(logs(service, namespace, job_id, tail_lines=0)) == []
    stamped = lines_of(logs(service, namespace, job_id, pod=pod, tail_lines=1, timestamps=True))
    assert stamped == [f"{SIMULATED[-1][0]} {SIMULATED[-1][1]}"]
    # The simulated lines were written on 2026-01-01: none is from the last hour.
    assert lines_of(logs(service, namespace, job_id, since_seconds=3600)) == []

    err = error_of(service, namespace, job_id, pod="not-its-pod")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert f"is not a pod of job {job_id!r} (its pods: {pod})" in err.details()
    err = error_of(service, namespace, job_id, container="sidecar")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"container: pod {pod} has no container 'sidecar'; its containers: {container}"


def test_an_unknown_job_is_not_found(service: Service, namespace: str) -> None:
    err = error_of(service, namespace, "job-missing000")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "job-missing000" in err.details()


def test_bad_options_name_the_field(service: Service, namespace: str) -> None:
    for fields, field in (
        ({"tail_lines": -1}, "tail_lines"),
        ({"since_seconds": 0}, "since_seconds"),
        ({"pod": "Not_A_Pod"}, "pod"),
        ({"job_id": ""}, "job_id"),
    ):
        err = error_of(service, namespace, **{"job_id": "job-any", **fields})
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert err.details().startswith(f"{field}:"), err.details()


def test_follow_waits_for_the_pod_streams_its_lines_and_ends_when_it_finishes(
    cached_service: Service, cluster: Cluster, namespace: str
) -> None:
    service, core = cached_service, client.CoreV1Api(cluster.api)
    job_id = schedule(
        service,
        namespace,
        **{"sim.jobscheduler.io/start-delay": "2s", "sim.jobscheduler.io/duration": "4s"},
    )
    request = pb.GetJobLogsRequest(job_id=job_id, namespace=namespace, follow=True)
    received: list[str] = []
    phase_at_first_line = ""
    for chunk in service.stub.GetJobLogs(request, timeout=60):
        if not received:
            phase_at_first_line = core.read_namespaced_pod(chunk.pod, namespace).status.phase
        received.extend(chunk.lines)
        pod = chunk.pod
    ended = datetime.now(UTC)
    assert received == TEXT
    # The lines came while the pod ran (it was Pending when the call began), and the stream
    # ended once its container had terminated, soon after, not at the deadline.
    assert phase_at_first_line == "Running"
    [status] = core.read_namespaced_pod(pod, namespace).status.container_statuses
    assert status.state.terminated is not None
    assert 0 <= (ended - status.state.terminated.finished_at).total_seconds() < 15


def test_follow_of_a_finished_job_ends_at_once(cached_service: Service, namespace: str) -> None:
    job_id = schedule(cached_service, namespace)
    wait_for(cached_service, namespace, job_id, pb.JOB_STATE_SUCCEEDED)
    started = time.monotonic()
    assert lines_of(logs(cached_service, namespace, job_id, follow=True)) == TEXT
    assert time.monotonic() - started < 10  # not held open: a kwok node never ends a follow


def test_a_pending_pod_has_no_logs_and_says_why(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace, **{"sim.jobscheduler.io/waiting-reason": "ImagePullBackOff"})
    [pod] = wait_until(
        "a pod waiting with ImagePullBackOff",
        lambda: (s := state_of(service, namespace, job_id)).reason == "ImagePullBackOff" and s.pods,
    )
    for follow in (False, True):
        err = error_of(service, namespace, job_id, follow=follow)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert pod in err.details()
        assert "is waiting to start (ImagePullBackOff: Back-off pulling image" in err.details(), err.details()


def test_an_unschedulable_pod_has_no_logs_yet(cached_service: Service, namespace: str) -> None:
    reply = cached_service.stub.ScheduleJob(
        pb.ScheduleJobRequest(
            name="huge", namespace=namespace, timer_job=TIMER, resources=pb.Resources(cpu_request="64")
        ),
        timeout=10,
    )
    wait_for_reason = wait_until(
        "Unschedulable",
        lambda: state_of(cached_service, namespace, reply.job_id).reason == "Unschedulable",
    )
    assert wait_for_reason
    err = error_of(cached_service, namespace, reply.job_id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not scheduled to a node yet (Unschedulable:" in err.details(), err.details()


def test_a_job_without_pods_says_so(cached_service: Service, namespace: str) -> None:
    reply = cached_service.stub.ScheduleJob(
        pb.ScheduleJobRequest(name="held", namespace=namespace, timer_job=TIMER, suspend=True), timeout=10
    )
    err = error_of(cached_service, namespace, reply.job_id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has no pods" in err.details()


def test_every_attempt_of_a_retried_job_oldest_first(
    cached_service: Service, cluster: Cluster, namespace: str
) -> None:
    reply = cached_service.stub.ScheduleJob(
        pb.ScheduleJobRequest(
            name="flaky",
            namespace=namespace,
            timer_job=TIMER,
            backoff_limit=1,
            annotations={"sim.jobscheduler.io/exit-code": "1", "sim.jobscheduler.io/duration": "0s"},
        ),
        timeout=10,
    )
    status = wait_for(cached_service, namespace, reply.job_id, pb.JOB_STATE_FAILED)
    chunks = logs(cached_service, namespace, reply.job_id)
    assert lines_of(chunks) == TEXT + TEXT
    # Oldest first: the first attempt's lines, then the retry's.
    created = sorted(
        (p.metadata.creation_timestamp, p.metadata.name)
        for p in client.CoreV1Api(cluster.api).list_namespaced_pod(namespace).items
    )
    assert list(dict.fromkeys(c.pod for c in chunks)) == [name for _, name in created]
    assert sorted(status.pods) == sorted(name for _, name in created)
    assert len(created) == 2


def _log_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pod-log-")]


def test_a_follow_stops_reading_when_the_caller_goes_away(cached_service: Service, namespace: str) -> None:
    # The server runs in this process: its log readers are threads here.
    job_id = schedule(cached_service, namespace, **{"sim.jobscheduler.io/duration": "10m"})
    wait_for(cached_service, namespace, job_id, pb.JOB_STATE_RUNNING)
    request = pb.GetJobLogsRequest(job_id=job_id, namespace=namespace, follow=True)

    call = cached_service.stub.GetJobLogs(request, timeout=60)
    assert list(next(call).lines)
    assert _log_threads()
    call.cancel()
    wait_until("the log reader to stop after a cancel", lambda: not _log_threads(), timeout=10)

    # A deadline ends it the same way (and the caller hears DEADLINE_EXCEEDED).
    with pytest.raises(grpc.RpcError) as err:
        lines_of(list(cached_service.stub.GetJobLogs(request, timeout=3)))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until("the log reader to stop after the deadline", lambda: not _log_threads(), timeout=10)


def test_a_node_that_does_not_serve_logs_is_unavailable_and_health_stays_serving(
    cached_service: Service, cluster: Cluster, namespace: str
) -> None:
    # A pod of the job "running" on a node whose kubelet endpoint nobody listens on: the API
    # server's own answer (HTTP 500, dial refused) is what the service translates.
    service, core = cached_service, client.CoreV1Api(cluster.api)
    reply = service.stub.ScheduleJob(
        pb.ScheduleJobRequest(name="ghostly", namespace=namespace, timer_job=TIMER, suspend=True), timeout=10
    )
    node = f"ghost-{namespace[-6:]}"
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
    try:
        core.patch_node_status(
            node,
            {
                "status": {
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": free_port()}},
                }
            },
        )
        template = restricted_pod_spec()
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=f"{reply.job_id}-ghost",
                labels={
                    "app.kubernetes.io/managed-by": "jobscheduler",
                    "batch.kubernetes.io/job-name": reply.job_id,
                },
            ),
            spec=template.spec,
        )
        pod.spec.node_name = node
        core.create_namespaced_pod(namespace, pod)
        now = "2026-01-01T00:00:00Z"
        core.patch_namespaced_pod_status(
            pod.metadata.name,
            namespace,
            {
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {
                            "name": "main",
                            "image": "registry.example/sleeper:1",
                            "imageID": "",
                            "ready": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": now}},
                        }
                    ],
                }
            },
        )
        err = error_of(service, namespace, reply.job_id, timeout=3)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert f"the node of pod '{pod.metadata.name}' did not serve its logs" in err.details()
        assert "connection refused" in err.details()
        assert service.health_status() == health_pb2.HealthCheckResponse.SERVING
    finally:
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        core.delete_node(node)
