"""The healthcheck workload's probes: one attempt at an HTTP, TCP or gRPC target, and the retries of
one target in its own thread, never raising for the target's own failures. Standard library only,
except that gRPC targets import grpcio when they are checked."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass

from jobscheduler.workloads._common import package_version
from jobscheduler.workloads._http import RefuseRedirects, os_error_text, request_error_text
from jobscheduler.workloads._runtime import JsonLogger
from jobscheduler.workloads.health_targets import PROG, GrpcTarget, HttpTarget, Target, TcpTarget

USER_AGENT = f"{PROG}/{package_version()}"


# Checks: one attempt each, never raising for the target's failures.


@dataclass(frozen=True, slots=True)
class CheckResult:
    healthy: bool
    detail: str  # what was seen: "status 200", "connection refused", "NOT_SERVING", ...


def check(target: Target) -> CheckResult:
    if isinstance(target, HttpTarget):
        return check_http(target)
    if isinstance(target, TcpTarget):
        return check_tcp(target)
    return check_grpc(target)


def check_tcp(target: TcpTarget) -> CheckResult:
    try:
        with socket.create_connection((target.host, target.port), timeout=target.timeout_seconds):
            return CheckResult(healthy=True, detail="connected")
    except OSError as e:
        return CheckResult(healthy=False, detail=os_error_text(e, timeout=target.timeout_seconds))


def check_http(target: HttpTarget) -> CheckResult:
    opener = urllib.request.build_opener(RefuseRedirects())
    request = urllib.request.Request(target.url, headers={"User-Agent": USER_AGENT}, method="GET")
    try:
        with opener.open(request, timeout=target.timeout_seconds) as response:
            status: int = response.status
    except urllib.error.HTTPError as e:  # any status urllib does not call success, 3xx included
        with e:
            status = e.code
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
        return CheckResult(healthy=False, detail=request_error_text(e, timeout=target.timeout_seconds))
    if status in target.expected_status:
        return CheckResult(healthy=True, detail=f"status {status}")
    return CheckResult(healthy=False, detail=f"status {status}, expected {target.expected_status}")


def check_grpc(target: GrpcTarget) -> CheckResult:
    # Imported here, not at the top, so that the rest of the workload stays standard-library only and a
    # module import never fails where no gRPC target is configured (load_settings checks they exist).
    import grpc
    from grpc_health.v1 import health_pb2

    request = health_pb2.HealthCheckRequest(service=target.service)
    with grpc.insecure_channel(target.target) as channel:
        # The multicallable rather than HealthStub, whose type stubs lack its methods.
        health_check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = health_check(request, timeout=target.timeout_seconds)
        except grpc.RpcError as e:
            if not isinstance(e, grpc.Call):
                return CheckResult(healthy=False, detail=f"RPC failed: {e}")
            code = e.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return CheckResult(healthy=False, detail=f"no answer within {target.timeout_seconds:g}s")
            if code is grpc.StatusCode.UNIMPLEMENTED:
                detail = "UNIMPLEMENTED: the server offers no grpc.health.v1.Health service"
                return CheckResult(healthy=False, detail=detail)
            return CheckResult(healthy=False, detail=f"{code.name}: {e.details()}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return CheckResult(healthy=response.status == health_pb2.HealthCheckResponse.SERVING, detail=status)


# Probing: one thread per target, so a slow target does not delay the verdict on the others.


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    healthy: bool
    detail: str
    attempts: int | None  # None when the check had not finished
    took_seconds: float
    interrupted: bool = False  # a signal stopped the retries


def probe(
    target: Target,
    *,
    attempts: int,
    interval_seconds: float,
    stop: threading.Event,
    log: JsonLogger,
) -> Verdict:
    """Checks the target until healthy, out of attempts, or stopped; runs in its own thread."""
    start = time.monotonic()
    result = CheckResult(healthy=False, detail="not checked")
    for attempt in range(1, attempts + 1):
        try:
            result = check(target)
        except Exception as e:  # a bug in a check must not leave the main thread waiting for it
            log.error("healthcheck.check_crashed", target=target.name, traceback=traceback.format_exc())
            took = round(time.monotonic() - start, 3)
            return Verdict(target, False, f"check crashed: {type(e).__name__}: {e}", attempt, took)
        took = round(time.monotonic() - start, 3)
        if result.healthy:
            return Verdict(target, healthy=True, detail=result.detail, attempts=attempt, took_seconds=took)
        log.debug("healthcheck.attempt_failed", target=target.name, attempt=attempt, detail=result.detail)
        if attempt < attempts and stop.wait(interval_seconds):
            return Verdict(target, False, result.detail, attempt, took, interrupted=True)
    return Verdict(target, False, result.detail, attempts, round(time.monotonic() - start, 3))


def worst_case_seconds(target: Target, *, attempts: int, interval_seconds: float) -> float:
    return attempts * target.timeout_seconds + (attempts - 1) * interval_seconds
