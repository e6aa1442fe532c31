"""WatchJob, WatchJobs, ResumeJob, the watch cache's recovery, metrics and several replicas,
through the real gRPC stack against the real cluster."""

from __future__ import annotations

import itertools
import queue
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import Service, _start_service, free_port, start_serve

TIMER = pb.TimerJob(duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053")
S = pb.JobState
E = pb.JobEventType


def schedule(service: Service, namespace: str, **kwargs: object) -> str:
    request = pb.ScheduleJobRequest(
        name=str(kwargs.pop("name", "w")), namespace=namespace, timer_job=TIMER, **kwargs
    )  # type: ignore[arg-type]
    return service.stub.ScheduleJob(request, timeout=10).job_id


def collect(stream: Iterator[pb.JobEvent], into: queue.Queue[pb.JobEvent | Exception]) -> threading.Thread:
    def run() -> None:
        try:
            for event in stream:
                into.put(event)
        except grpc.RpcError as e:
            into.put(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def take(events: queue.Queue[pb.JobEvent | Exception], timeout: float = 30) -> pb.JobEvent:
    item = events.get(timeout=timeout)
    if isinstance(item, Exception):
        raise item
    return item


# -- WatchJob -------------------------------------------------------------------------------------


def test_watch_job_streams_each_change_and_ends_after_the_terminal_state(
    service: Service, namespace: str
) -> None:
    sim = {"sim.jobscheduler.io/start-delay": "1s", "sim.jobscheduler.io/duration": "1s"}
    job_id = schedule(service, namespace, annotations=sim)

    events = list(service.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, namespace=namespace), timeout=60))

    assert events[0].type == E.JOB_EVENT_TYPE_INITIAL
    assert all(e.type == E.JOB_EVENT_TYPE_UPDATED for e in events[1:])
    states = [e.status.state for e in events]
    assert states[-1] == S.JOB_STATE_SUCCEEDED
    assert S.JOB_STATE_RUNNING in states
    # Each event is a change: no two neighbours are the same status.
    assert all(a.status != b.status for a, b in itertools.pairwise(events))
    assert all(e.observed_at.seconds > 0 for e in events)


def test_watch_job_of_a_finished_job_sends_its_status_and_ends(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace)
    wait_until(
        "SUCCEEDED",
        lambda: service.stub.GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10
        ).status.state
        == S.JOB_STATE_SUCCEEDED,
    )

    events = list(service.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, namespace=namespace), timeout=20))

    assert [(e.type, e.status.state) for e in events] == [(E.JOB_EVENT_TYPE_INITIAL, S.JOB_STATE_SUCCEEDED)]


def test_watch_job_sees_a_cancel(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace, annotations={"sim.jobscheduler.io/duration": "10m"})
    events: queue.Queue[pb.JobEvent | Exception] = queue.Queue()
    collect(service.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, namespace=namespace), timeout=60), events)
    assert take(events).type == E.JOB_EVENT_TYPE_INITIAL

    service.stub.CancelJob(pb.CancelJobRequest(job_id=job_id, namespace=namespace), timeout=10)

    while (event := take(events)).status.state != S.JOB_STATE_CANCELLED:
        assert event.status.state in (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)
    assert event.status.reason == "Cancelled"


def test_watch_job_of_an_unknown_job_is_not_found(service: Service, namespace: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(service.stub.WatchJob(pb.WatchJobRequest(job_id="job-nope", namespace=namespace), timeout=10))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- WatchJobs ------------------------------------------------------------------------------------


@pytest.fixture
def cached(cached_service: Service) -> Service:
    """WatchJobs needs the watch cache (without one it is refused: tested below)."""
    return cached_service


def test_watch_jobs_sends_matching_jobs_then_their_changes(cached: Service, namespace: str) -> None:
    held = schedule(cached, namespace, name="held", labels={"team": "a"}, suspend=True)
    schedule(cached, namespace, name="other", labels={"team": "b"}, suspend=True)
    events: queue.Queue[pb.JobEvent | Exception] = queue.Queue()
    call = cached.stub.WatchJobs(
        pb.WatchJobsRequest(namespace=namespace, label_selector="team=a"), timeout=60
    )
    collect(call, events)

    first = take(events)
    assert (first.type, first.status.job_id, first.status.reason) == (
        E.JOB_EVENT_TYPE_INITIAL,
        held,
        "Suspended",
    )

    cached.stub.ResumeJob(pb.ResumeJobRequest(job_id=held, namespace=namespace), timeout=10)
    late = schedule(cached, namespace, name="late", labels={"team": "a"})

    seen: dict[str, list[int]] = {}
    while (
        seen.get(held, [None])[-1] != S.JOB_STATE_SUCCEEDED
        or seen.get(late, [None])[-1] != S.JOB_STATE_SUCCEEDED
    ):
        event = take(events)
        assert event.status.labels["team"] == "a"
        seen.setdefault(event.status.job_id, []).append(event.status.state)
    assert set(seen) == {held, late}
    call.cancel()


def test_watch_jobs_filters_by_state_and_can_skip_the_initial_snapshot(
    cached: Service, namespace: str
) -> None:
    schedule(cached, namespace, name="before", suspend=True)
    events: queue.Queue[pb.JobEvent | Exception] = queue.Queue()
    request = pb.WatchJobsRequest(namespace=namespace, states=[S.JOB_STATE_SUCCEEDED], skip_initial=True)
    call = cached.stub.WatchJobs(request, timeout=60)
    collect(call, events)

    job_id = schedule(cached, namespace, name="after")

    event = take(events)
    assert (event.type, event.status.job_id, event.status.state) == (
        E.JOB_EVENT_TYPE_UPDATED,
        job_id,
        S.JOB_STATE_SUCCEEDED,
    )
    # Later changes of detail (the Complete condition after SuccessCriteriaMet) may follow;
    # they are still about that job, still SUCCEEDED, and nothing about the other one comes.
    try:
        while True:
            later = take(events, timeout=1.5)
            assert (later.status.job_id, later.status.state) == (job_id, S.JOB_STATE_SUCCEEDED)
    except queue.Empty:
        pass
    call.cancel()


def test_watch_jobs_with_a_bad_selector_is_invalid_argument(cached: Service, namespace: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        next(
            iter(
                cached.stub.WatchJobs(
                    pb.WatchJobsRequest(namespace=namespace, label_selector="a in (b"), timeout=10
                )
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("label_selector")


def test_watch_jobs_outside_the_watched_namespaces_is_a_failed_precondition(
    cluster: Cluster, namespace: str
) -> None:
    app, api = _start_service(cluster, watch=("some-other-namespace",))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                next(iter(stub.WatchJobs(pb.WatchJobsRequest(namespace=namespace), timeout=10)))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "WATCH_NAMESPACES" in err.value.details()
            # WatchJob still works there, by polling the API.
            job_id = stub.ScheduleJob(
                pb.ScheduleJobRequest(name="p", namespace=namespace, timer_job=TIMER), timeout=10
            ).job_id
            events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id, namespace=namespace), timeout=60))
            assert events[-1].status.state == S.JOB_STATE_SUCCEEDED
    finally:
        app.stop(0).wait()
        api.close()  # type: ignore[attr-defined]


def test_watch_streams_beyond_the_limit_are_resource_exhausted(
    cluster: Cluster, tmp_path: Path, namespace: str
) -> None:
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={"MAX_WATCH_STREAMS": "1", "WATCH_NAMESPACES": namespace, "K8S_NAMESPACE": namespace},
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            wait_until("cache synced", lambda: stub.ListJobs(pb.ListJobsRequest(), timeout=5) is not None)
            first = stub.WatchJobs(pb.WatchJobsRequest(), timeout=30)
            events: queue.Queue[pb.JobEvent | Exception] = queue.Queue()
            collect(first, events)
            stub.ScheduleJob(pb.ScheduleJobRequest(name="x", timer_job=TIMER, suspend=True), timeout=10)
            take(events)  # the first stream is open and delivering
            with pytest.raises(grpc.RpcError) as err:
                next(iter(stub.WatchJobs(pb.WatchJobsRequest(), timeout=10)))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            first.cancel()
            # The slot is released when the first stream ends.
            wait_until("a new stream is accepted", lambda: _opens(stub), timeout=10)
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def _opens(stub: pb_grpc.JobSchedulerStub) -> bool:
    call = stub.WatchJobs(pb.WatchJobsRequest(), timeout=3)
    try:
        next(iter(call))
        return True
    except grpc.RpcError as e:
        return e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        call.cancel()


# -- ResumeJob ------------------------------------------------------------------------------------


def test_a_suspended_job_waits_until_resumed(cluster: Cluster, service: Service, namespace: str) -> None:
    from kubernetes import client

    job_id = schedule(service, namespace, suspend=True)
    status = wait_until(
        "Suspended",
        lambda: (
            s
            if (
                s := service.stub.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10
                ).status
            ).reason
            == "Suspended"
            else None
        ),
    )
    assert status.state == S.JOB_STATE_PENDING
    assert client.CoreV1Api(cluster.api).list_namespaced_pod(namespace).items == []

    resumed = service.stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id, namespace=namespace), timeout=10)
    assert resumed.status.job_id == job_id
    wait_until(
        "SUCCEEDED",
        lambda: service.stub.GetJobStatus(
            pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10
        ).status.state
        == S.JOB_STATE_SUCCEEDED,
    )

    with pytest.raises(grpc.RpcError) as err:
        service.stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id, namespace=namespace), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# -- replicas and recovery ------------------------------------------------------------------------


def test_a_job_created_on_one_replica_is_readable_at_once_on_another(
    cluster: Cluster, namespace: str
) -> None:
    a, api_a = _start_service(cluster, watch=("",))
    b, api_b = _start_service(cluster, watch=("",))
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{a.port}") as ca,
            grpc.insecure_channel(f"127.0.0.1:{b.port}") as cb,
        ):
            stub_a, stub_b = pb_grpc.JobSchedulerStub(ca), pb_grpc.JobSchedulerStub(cb)
            for i in range(10):
                job_id = stub_a.ScheduleJob(
                    pb.ScheduleJobRequest(name=f"r{i}", namespace=namespace, timer_job=TIMER, suspend=True),
                    timeout=10,
                ).job_id
                got = stub_b.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10
                )
                assert got.status.job_id == job_id
    finally:
        for app, api in ((a, api_a), (b, api_b)):
            app.stop(0).wait()
            api.close()  # type: ignore[attr-defined]


@pytest.mark.local_cluster
def test_the_cache_resumes_after_an_api_server_restart_and_misses_no_change(
    local_cluster: Cluster, cached: Service, namespace: str
) -> None:
    held = schedule(cached, namespace, name="held", suspend=True)
    events: queue.Queue[pb.JobEvent | Exception] = queue.Queue()
    call = cached.stub.WatchJobs(pb.WatchJobsRequest(namespace=namespace, skip_initial=True), timeout=120)
    collect(call, events)

    local_cluster.devcluster("restart", "kube-apiserver", "--signal", "KILL")
    wait_until("SERVING", lambda: cached.health_status() == 1, timeout=20)
    # A change made right after the restart reaches the open stream.
    cached.stub.ResumeJob(pb.ResumeJobRequest(job_id=held, namespace=namespace), timeout=20)

    while (event := take(events, timeout=60)).status.state != S.JOB_STATE_SUCCEEDED:
        assert event.status.job_id == held
    assert event.status.job_id == held
    call.cancel()


def test_metrics_endpoint_serves_the_documented_families(
    cluster: Cluster, tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        # No schedule loop: its Lease writes would count among the Kubernetes calls measured here.
        env={
            "METRICS_PORT": str(port),
            "WATCH_NAMESPACES": namespace,
            "K8S_NAMESPACE": namespace,
            "SCHEDULE_LOOP": "false",
        },
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            job_id = stub.ScheduleJob(pb.ScheduleJobRequest(name="m", timer_job=TIMER), timeout=10).job_id
            wait_until(
                "SUCCEEDED",
                lambda: stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10).status.state
                == S.JOB_STATE_SUCCEEDED,
            )
            with pytest.raises(grpc.RpcError):
                stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-nope"), timeout=10)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return str(resp.read().decode())

        text = wait_until(
            "jobs gauge",
            lambda: (t if 'jobscheduler_jobs{state="SUCCEEDED"} 1.0' in (t := scrape()) else None),
        )
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)

    def value(pattern: str) -> float:
        match = re.search(rf"^{pattern} ([0-9.e+-]+)$", text, re.M)
        assert match, pattern
        return float(match.group(1))

    assert value(r'jobscheduler_rpc_requests_total\{code="OK",method="ScheduleJob"\}') == 1
    assert value(r'jobscheduler_rpc_requests_total\{code="NOT_FOUND",method="GetJobStatus"\}') == 1
    assert value(r'jobscheduler_rpc_duration_seconds_count\{method="ScheduleJob"\}') == 1
    assert value(r'jobscheduler_jobs_scheduled_total\{job_type="timer"\}') == 1
    assert value(r'jobscheduler_kube_requests_total\{code="201",verb="create"\}') == 1
    assert value(r'jobscheduler_kube_request_duration_seconds_count\{verb="create"\}') == 1
    assert value(r'jobscheduler_cache_objects\{resource="jobs"\}') == 1
    assert value(r'jobscheduler_cache_objects\{resource="pods"\}') == 1
    assert value(r"jobscheduler_watch_streams") == 0
    assert "# TYPE jobscheduler_watch_restarts_total counter" in text
    assert "# TYPE jobscheduler_schedule_runs_total counter" in text
    assert value(r"jobscheduler_schedule_leader") == 0  # SCHEDULE_LOOP=false: never leads
