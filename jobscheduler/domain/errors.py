"""The service's errors: one root, one class per outcome a caller must tell apart.

Every error the service raises on purpose is defined here. The Kubernetes gateway translates
API failures into these; the transport maps each class to one gRPC status code
(jobscheduler.transport.errors). Messages are written for the caller and never carry raw API
bodies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


class JobSchedulerError(Exception):
    """Root of every error the service raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One field a request got wrong, and why (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class InvalidArgumentError(JobSchedulerError):
    """The request is malformed; `field` names the offending request field. `violations`
    lists every field found wrong when there are several (e.g. the causes of a 422); by
    default it is the one `field`."""

    def __init__(self, field: str, message: str, *, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message
        self.violations: tuple[FieldViolation, ...] = tuple(violations) or (
            (FieldViolation(field, message),) if field else ()
        )

    def prefixed(self, prefix: str) -> InvalidArgumentError:
        """The same error with `field` (and each violation's) inside a parent message field
        (e.g. timer_job.)."""

        def under(name: str) -> str:
            return f"{prefix}.{name}" if name else prefix

        return InvalidArgumentError(
            under(self.field),
            self.detail,
            violations=[FieldViolation(under(v.field), v.description) for v in self.violations],
        )


class NotFoundError(JobSchedulerError):
    """The job (or namespace) does not exist."""


class AlreadyExistsError(JobSchedulerError):
    """An object with that identity exists and is not the one this request would create."""


class FailedPreconditionError(JobSchedulerError):
    """The request is valid but the job's state does not allow it (e.g. cancel a finished job)."""


class ConflictError(JobSchedulerError):
    """The object changed since it was read (HTTP 409 Conflict on a write conditional on its
    resourceVersion): a concurrency conflict, which a fresh read and another try resolves."""


class PermissionDeniedError(JobSchedulerError):
    """Kubernetes refused the service's own identity (RBAC), or a guard refused the caller."""


class TokenScopeError(PermissionDeniedError):
    """A known bearer token whose scope does not cover the verb in the namespace."""


class UnauthenticatedError(JobSchedulerError):
    """The call carries no credentials the service accepts (jobscheduler.transport.tokens)."""


class UnavailableError(JobSchedulerError):
    """The Kubernetes API cannot be reached or is overloaded; retrying later may succeed."""


class GoneError(UnavailableError):
    """A watch asked for a resourceVersion the API server no longer has (HTTP 410): relist."""


class NodeUnavailableError(UnavailableError):
    """The API server is fine, but it could not get a pod's log from the pod's node (its kubelet
    did not answer): HTTP 500 from the pods/log proxy. Says nothing about the API server."""


class GatewayConfigError(JobSchedulerError):
    """No usable Kubernetes credentials (in-cluster or kubeconfig): a start-up failure."""


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


class SubscriptionOverflowError(ResourceExhaustedError):
    """A subscriber fell so far behind that even one pending status per job did not fit."""


class RenderError(JobSchedulerError):
    """A job type rendered something the restricted pod does not allow (a bug in the type)."""


class ConfigError(JobSchedulerError):
    """A configuration variable has a value the service cannot use."""


class RegistryError(JobSchedulerError):
    """A job type plugin is broken (fails to load, or two claim one name)."""
