"""The domain's errors, one root and one class per outcome a caller must tell apart.

The Kubernetes gateway translates API failures into these; the gRPC servicer maps each class
to one status code. Messages are written for the caller and never carry raw API bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class JobSchedulerError(Exception):
    """Root of every error the service raises on purpose."""


class InvalidArgumentError(JobSchedulerError):
    """The request is malformed; `field` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message

    def prefixed(self, prefix: str) -> InvalidArgumentError:
        """The same error with `field` inside a parent message field (e.g. timer_job.)."""
        return InvalidArgumentError(f"{prefix}.{self.field}" if self.field else prefix, self.detail)


class NotFoundError(JobSchedulerError):
    """The job (or namespace) does not exist."""


class AlreadyExistsError(JobSchedulerError):
    """An object with that identity exists and is not the one this request would create."""


class FailedPreconditionError(JobSchedulerError):
    """The request is valid but the job's state does not allow it (e.g. cancel a finished job)."""


class PermissionDeniedError(JobSchedulerError):
    """Kubernetes refused the service's own identity (RBAC)."""


class UnavailableError(JobSchedulerError):
    """The Kubernetes API cannot be reached or is overloaded; retrying later may succeed."""


class DeadlineExceededError(UnavailableError):
    """The caller's deadline passed while the service was waiting on Kubernetes."""


class ResourceExhaustedError(JobSchedulerError):
    """A limit stops the call for now (rate, active jobs, open streams); `retry_after` says when
    trying again may succeed, in seconds, when that is known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@contextmanager
def fields_under(parent: str) -> Iterator[None]:
    """InvalidArgumentErrors raised inside name their field within `parent` (the request message
    that holds it): `duration_seconds` becomes `job.timer_job.duration_seconds`."""
    try:
        yield
    except InvalidArgumentError as e:
        raise e.prefixed(parent) from None
