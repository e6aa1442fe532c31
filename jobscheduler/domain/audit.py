"""Who acted on a job and in which trace: the caller's identity as the transport authenticated
it, the annotations that record it on the Job, the job's audit as JobStatus reports it, and
the W3C trace context handed to the job's pods.

Pure: identities and trace contexts are plain values; the transport makes them from the call
(jobscheduler.transport.call), the use cases write them (jobscheduler.app), status derivation
reads them back (jobscheduler.domain.status).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobscheduler.timestamps import parse_rfc3339

SCHEDULED_BY_ANNOTATION = "jobscheduler.io/scheduled-by"
CANCELLED_BY_ANNOTATION = "jobscheduler.io/cancelled-by"
RESUMED_BY_ANNOTATION = "jobscheduler.io/resumed-by"
RESUMED_AT_ANNOTATION = "jobscheduler.io/resumed-at"
TRIGGERED_BY_ANNOTATION = "jobscheduler.io/triggered-by"
TRACEPARENT_ANNOTATION = "jobscheduler.io/traceparent"
# Written by CancelJob before audits existed (jobscheduler.app.service); kept under its name.
CANCELLED_AT_ANNOTATION = "jobscheduler.io/cancelled-at"
# The env var W3C trace context is passed in (the OpenTelemetry SDKs' convention for processes).
TRACEPARENT_ENV = "TRACEPARENT"
# version 00: 32 hex trace id, 16 hex parent id, 2 hex flags; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
MAX_IDENTITY_CHARS = 256


class IdentityKind(enum.Enum):
    TOKEN = "token"  # noqa: S105 - a bearer token's name (AUTH_TOKENS_FILE), no secret
    MTLS = "mtls"  # a client certificate's subject (TLS_CLIENT_CA_FILE, without tokens)
    PEER = "peer"  # the caller's address: neither tokens nor client certificates


@dataclass(frozen=True, slots=True)
class Identity:
    """Who makes a call, as the auth layer knows it: never a credential, only its name."""

    kind: IdentityKind
    name: str

    def __str__(self) -> str:
        # Printable and bounded: a certificate subject is the caller's text.
        name = "".join(c if c.isprintable() else "?" for c in self.name)[:MAX_IDENTITY_CHARS]
        return f"{self.kind.value}:{name}"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a new job comes from: who asked for it, and the trace context of that request
    (empty: the service exports no traces)."""

    identity: Identity
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class JobAudit:
    """The audit fields of JobStatus; empty strings and None where nobody acted."""

    scheduled_by: str = ""
    cancelled_by: str = ""
    cancelled_at: datetime | None = None
    resumed_by: str = ""
    resumed_at: datetime | None = None
    triggered_by: str = ""


def is_traceparent(value: str) -> bool:
    return _TRACEPARENT.fullmatch(value) is not None


def stamp_origin(manifest: dict[str, Any], origin: Origin, *, triggered: bool = False) -> None:
    """Writes who created the Job (scheduled-by, or triggered-by for a schedule's run started by
    TriggerSchedule) and its trace context on a rendered Job manifest: the traceparent
    annotation, and TRACEPARENT in the env of every container of its pods, unless the caller
    set TRACEPARENT there itself (its own trace context wins)."""
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[TRIGGERED_BY_ANNOTATION if triggered else SCHEDULED_BY_ANNOTATION] = str(origin.identity)
    if not is_traceparent(origin.traceparent):
        return
    annotations[TRACEPARENT_ANNOTATION] = origin.traceparent
    pod = manifest["spec"]["template"]["spec"]
    for container in [*pod.get("initContainers", ()), *pod.get("containers", ())]:
        env = container.setdefault("env", [])
        if not any(e.get("name") == TRACEPARENT_ENV for e in env):
            env.append({"name": TRACEPARENT_ENV, "value": origin.traceparent})


def audit_of(annotations: Mapping[str, Any]) -> JobAudit:
    """A Job's audit, from its annotations (absent ones: empty)."""

    def text(key: str) -> str:
        value = annotations.get(key)
        return value if isinstance(value, str) else ""

    return JobAudit(
        scheduled_by=text(SCHEDULED_BY_ANNOTATION),
        cancelled_by=text(CANCELLED_BY_ANNOTATION),
        cancelled_at=parse_rfc3339(annotations.get(CANCELLED_AT_ANNOTATION)),
        resumed_by=text(RESUMED_BY_ANNOTATION),
        resumed_at=parse_rfc3339(annotations.get(RESUMED_AT_ANNOTATION)),
        triggered_by=text(TRIGGERED_BY_ANNOTATION),
    )


def traceparent_of(annotations: Mapping[str, Any]) -> str:
    value = annotations.get(TRACEPARENT_ANNOTATION)
    return value if isinstance(value, str) and is_traceparent(value) else ""
