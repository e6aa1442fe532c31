"""Domain errors as gRPC statuses: ONE table from error class to status code, and the status
details standard clients read (google.rpc.RetryInfo, google.rpc.BadRequest).

ConflictError is ABORTED, as gRPC advises for a concurrency conflict the caller resolves by
retrying the whole read-modify-write; FAILED_PRECONDITION is for a state that a retry alone
does not change (a finished job, a stale expected_version).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)

STATUS_CODES: dict[type[JobSchedulerError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    ConflictError: grpc.StatusCode.ABORTED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# gRPC drops a status whose message is over 16 KiB (the caller would see RESOURCE_EXHAUSTED).
MAX_ERROR_CHARS = 2000


def status_code_for(error: JobSchedulerError) -> grpc.StatusCode:
    """The code of the nearest class in the table; INTERNAL for an unclassified error."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def abort_with(context: grpc.ServicerContext, error: JobSchedulerError) -> NoReturn:
    """Ends the call with the error's code, message and details."""
    abort(
        context,
        status_code_for(error),
        str(error),
        retry_after=getattr(error, "retry_after", None),
        violations=error.violations if isinstance(error, InvalidArgumentError) else (),
    )


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    *,
    retry_after: float | None = None,
    violations: Sequence[FieldViolation] = (),
) -> NoReturn:
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "… (message cut)"
    details = []
    if retry_after is not None:
        # The standard retry hint (google.rpc.RetryInfo in grpc-status-details-bin), which
        # gRPC clients and proxies understand, besides the delay in the message.
        delay = Duration()
        delay.FromNanoseconds(max(1_000_000, round(retry_after * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if violations:
        # Each field on its own (google.rpc.BadRequest), for clients that show them per field.
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description[:MAX_ERROR_CHARS]
                    )
                    for v in violations[:50]
                ]
            )
        )
    if details:
        packed = []
        for detail in details:
            wrapped = AnyProto()
            wrapped.Pack(detail)
            packed.append(wrapped)
        status = status_pb2.Status(code=code.value[0], message=message, details=packed)
        context.abort_with_status(rpc_status.to_status(status))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises
