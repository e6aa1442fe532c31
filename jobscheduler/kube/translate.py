"""Kubernetes API failures as the domain's errors, by HTTP status.

The API's Status body (a JSON `metav1.Status`) adds detail: a 422's `details.causes` become one
field violation each, and a 409's `reason` tells AlreadyExists from a resourceVersion Conflict.
A body that is not a Status (a proxy's HTML page, a truncated reply) adds nothing: the status
code alone decides, so it never becomes an unexpected error. Raw bodies never reach callers;
the Status message, capped, does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    JobSchedulerError,
    NodeUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_MESSAGE_CHARS = 500
MAX_CAUSES = 20


@dataclass(frozen=True, slots=True)
class ApiStatus:
    """What an error body says, when it is a metav1.Status (empty fields when it is not)."""

    message: str = ""
    reason: str = ""
    causes: tuple[FieldViolation, ...] = ()


def api_status(e: ApiException) -> ApiStatus:
    """The parts of the error's Status body the service uses; ApiStatus() for any other body."""
    try:
        body: Any = json.loads(e.body or "")
    except (ValueError, TypeError):
        return ApiStatus()
    if not isinstance(body, dict):
        return ApiStatus()
    details = body.get("details")
    raw_causes = details.get("causes") if isinstance(details, dict) else None
    causes = []
    for cause in raw_causes if isinstance(raw_causes, list) else []:
        if not isinstance(cause, dict):
            continue
        field, message = cause.get("field"), cause.get("message")
        if isinstance(field, str) and isinstance(message, str):
            causes.append(FieldViolation(field, message[:MAX_MESSAGE_CHARS]))
    message, reason = body.get("message"), body.get("reason")
    return ApiStatus(
        message=message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else "",
        reason=reason if isinstance(reason, str) else "",
        causes=tuple(causes[:MAX_CAUSES]),
    )


def translate(e: ApiException, verb: str) -> JobSchedulerError:
    """A domain error for a non-retryable API failure."""
    status = e.status or 0
    body = api_status(e)
    message = body.message
    if status == 403:
        return PermissionDeniedError(
            f"Kubernetes denied {verb} to the service's identity; check its Role/RoleBinding ({message})"
        )
    if status == 404:
        return NotFoundError(message or f"{verb}: not found")
    if status == 409:
        # AlreadyExists on a create; Conflict on a write whose resourceVersion is stale. A body
        # without a reason is judged by the verb: only a create can collide with a name.
        if body.reason == "AlreadyExists" or (not body.reason and verb == "create"):
            return AlreadyExistsError(message or f"{verb}: the object already exists")
        return ConflictError(message or f"{verb}: the object changed since it was read; read it again")
    if status == 413:
        return InvalidArgumentError("", "the request is too large for the Kubernetes API")
    if status == 422 and body.causes:
        # The fields are those of the object sent to Kubernetes (spec.template.spec...), each
        # named with its own reason, as `kubectl apply` shows them.
        listed = "; ".join(f"{c.field}: {c.description}" if c.field else c.description for c in body.causes)
        return InvalidArgumentError(
            "", f"Kubernetes rejected the request: {listed}"[: 2 * MAX_MESSAGE_CHARS], violations=body.causes
        )
    if status in (400, 422):
        return InvalidArgumentError("", f"Kubernetes rejected the request: {message or f'HTTP {status}'}")
    if status == 401:
        return UnavailableError("Kubernetes rejected the service's credentials (401); they may have expired")
    return UnavailableError(f"Kubernetes API error {status} on {verb}")


def pod_log_error(
    e: ApiException, *, pod: str, container: str, fallback: JobSchedulerError
) -> JobSchedulerError:
    """A pods/log failure: the kubelet's answers are more specific than the generic ones."""
    message = api_status(e).message
    if e.status == 404:
        return NotFoundError(f"pod {pod!r} not found (deleted?)")
    if e.status == 400:
        if "container" in message and ("not valid" in message or "must be specified" in message):
            return InvalidArgumentError("container", message)
        # The kubelet's "container X in pod Y is waiting to start: ...", or a node without a log
        # for it (kwok: "no logs found for container ...").
        return FailedPreconditionError(f"no logs for container {container!r} of pod {pod!r}: {message}")
    if e.status == 500:
        return NodeUnavailableError(
            f"the node of pod {pod!r} did not serve its logs ({message or 'HTTP 500'}); retry later"
        )
    return fallback


def retryable(e: ApiException) -> bool:
    if e.status in RETRYABLE_STATUS:
        return True
    # An API server that has just started refuses requests through its admission plugins with
    # 403 "not yet ready to handle request" until their caches have synced: not a denial.
    return e.status == 403 and "not yet ready to handle request" in str(e.body or "")


def retry_after(e: ApiException) -> float | None:
    try:
        return min(float((e.headers or {}).get("Retry-After", "")), 5.0)
    except (ValueError, TypeError):
        return None


def describe(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason}"
    return type(e).__name__
