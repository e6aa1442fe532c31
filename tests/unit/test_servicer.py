"""Domain errors become the right gRPC status codes (jobscheduler.transport.errors, applied by
the interceptor), and surprises become a generic INTERNAL.

Runs the real grpc server on a free port with a real channel; the service behind the servicer
is a stand-in that raises (it is not a Kubernetes client: nothing here talks to a cluster).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain import errors
from jobscheduler.domain.registry import Registry
from jobscheduler.transport.errors import status_code_for
from jobscheduler.transport.rpcs import JobSchedulerServicer
from jobscheduler.transport.server import UNARY_WORKERS, rpc_server


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgumentError("name", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFoundError("gone"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExistsError("dup"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPreconditionError("finished"), grpc.StatusCode.FAILED_PRECONDITION),
        # A resourceVersion conflict: retry the read-modify-write (gRPC's guidance for ABORTED).
        (errors.ConflictError("changed"), grpc.StatusCode.ABORTED),
        (errors.PermissionDeniedError("rbac"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.UnavailableError("down"), grpc.StatusCode.UNAVAILABLE),
        (errors.GoneError("relist"), grpc.StatusCode.UNAVAILABLE),
        (errors.NodeUnavailableError("kubelet"), grpc.StatusCode.UNAVAILABLE),
        (errors.UnauthenticatedError("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.TokenScopeError("not here"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.ResourceExhaustedError("slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.JobSchedulerError("unclassified"), grpc.StatusCode.INTERNAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name,
)
def test_each_domain_error_maps_to_one_status_code(
    error: errors.JobSchedulerError, code: grpc.StatusCode
) -> None:
    assert status_code_for(error) is code


class Raising:
    """Stands in for JobService: every use case raises the given exception."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_status(self, *_: Any, **__: Any) -> Any:
        raise self.exc


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []
    unavailable: list[bool] = []

    def start(exc: Exception) -> pb_grpc.JobSchedulerStub:
        servicer = JobSchedulerServicer(Raising(exc), Registry([]))  # type: ignore[arg-type]
        server = rpc_server(servicer, max_streams=2, on_unavailable=lambda: unavailable.append(True))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return pb_grpc.JobSchedulerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    start.unavailable = unavailable  # type: ignore[attr-defined]
    yield start
    for server in servers:
        server.stop(0)


def test_unexpected_exception_is_internal_with_a_generic_message_and_a_logged_traceback(serve: Any) -> None:
    stub = serve(RuntimeError("secret detail from deep inside"))
    with structlog.testing.capture_logs() as logs, pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-1"), timeout=5)

    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in err.value.details()
    assert "incident" in err.value.details()
    [crash] = [e for e in logs if e["event"] == "rpc crashed"]
    assert crash["log_level"] == "error"
    assert crash["exc_info"] is True
    assert crash["incident"] in err.value.details()


def test_domain_error_keeps_its_message_and_code(serve: Any) -> None:
    stub = serve(errors.NotFoundError("job 'job-1' not found in namespace 'default'"))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-1"), timeout=5)

    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "job 'job-1' not found in namespace 'default'"


def test_unavailable_flips_health_at_once(serve: Any) -> None:
    stub = serve(errors.UnavailableError("Kubernetes API unavailable"))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-1"), timeout=5)

    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert serve.unavailable == [True]


def test_schedule_without_a_job_type_names_the_field(serve: Any) -> None:
    stub = serve(RuntimeError("not reached"))
    with pytest.raises(grpc.RpcError) as err:
        stub.ScheduleJob(pb.ScheduleJobRequest(name="x"), timeout=5)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("job_type:")
    assert "timer_job" in err.value.details()


class SilentWatch:
    """Stands in for JobService.watch: WatchJobs streams stay open (silent) until the client goes."""

    def jobs(self, *_: Any, alive: Any, **__: Any) -> Iterator[Any]:
        while alive():
            time.sleep(0.05)
        yield from ()


class Watching:
    """Stands in for JobService: WatchJobs streams stay open (silent) until the client goes,
    and GetJobStatus answers NOT_FOUND at once."""

    watch = SilentWatch()

    def get_status(self, *_: Any, **__: Any) -> Any:
        raise errors.NotFoundError("stand-in")


@pytest.fixture
def watch_server() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(max_streams: int) -> pb_grpc.JobSchedulerStub:
        server = rpc_server(JobSchedulerServicer(Watching(), Registry([])), max_streams=max_streams)  # type: ignore[arg-type]
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return pb_grpc.JobSchedulerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    yield start
    for server in servers:
        server.stop(0)


def unary_code(stub: pb_grpc.JobSchedulerStub) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-1"), timeout=5)
    return err.value.code()


def test_max_watch_streams_zero_serves_no_streams_and_unary_calls_still_answer(watch_server: Any) -> None:
    stub = watch_server(0)
    with pytest.raises(grpc.RpcError) as err:
        next(stub.WatchJobs(pb.WatchJobsRequest(), timeout=5))

    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MAX_WATCH_STREAMS=0" in err.value.details()
    assert unary_code(stub) == grpc.StatusCode.NOT_FOUND


def test_with_every_stream_slot_taken_more_streams_are_refused_and_unary_calls_answer(
    watch_server: Any,
) -> None:
    stub = watch_server(3)
    open_streams = [stub.WatchJobs(pb.WatchJobsRequest(), timeout=30) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while True:  # the three streams take their slots as the server starts them
            with pytest.raises(grpc.RpcError) as err:
                next(stub.WatchJobs(pb.WatchJobsRequest(), timeout=5))
            if err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                break
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAX_WATCH_STREAMS" in err.value.details()
        # The pool has UNARY_WORKERS threads besides the three the streams hold.
        calls = [unary_code(stub) for _ in range(UNARY_WORKERS)]
        assert set(calls) == {grpc.StatusCode.NOT_FOUND}
    finally:
        for stream in open_streams:
            stream.cancel()


def test_invalid_argument_carries_each_field_as_a_bad_request_violation(serve: Any) -> None:
    violations = [
        errors.FieldViolation("spec.template.spec.containers[0].image", "Required value"),
        errors.FieldViolation("metadata.labels", "Invalid value"),
    ]
    stub = serve(
        errors.InvalidArgumentError("", "Kubernetes rejected the request: ...", violations=violations)
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-1"), timeout=5)

    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    [detail] = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        (v.field, v.description) for v in violations
    ]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_resource_exhausted_carries_retry_info(serve: Any) -> None:
    stub = serve(errors.ResourceExhaustedError("over the rate", retry_after=1.5))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-1"), timeout=5)

    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.ToNanoseconds() == 1_500_000_000
