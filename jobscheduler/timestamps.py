"""RFC 3339 timestamps, written and read one way everywhere: UTC with a `Z`, in whole seconds
(what Kubernetes writes in annotations and metav1.Time), milliseconds (the workloads' logs and
reports) or microseconds (metav1.MicroTime, as in a Lease).

Standard library only and importing nothing of the project, so the service and the pod-side
workloads share it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Precision = Literal["seconds", "milliseconds", "microseconds"]


def format_rfc3339(moment: datetime, *, precision: Precision = "seconds") -> str:
    """`moment` in UTC as `2026-01-02T03:04:05Z` (or `.123Z`, `.123456Z`); a naive value is UTC."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    timespec = "seconds" if precision == "seconds" else precision
    return aware.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse_rfc3339(value: object) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime; None when absent or malformed.

    Accepts what RFC 3339 allows and `datetime.fromisoformat` alone does not: a lower-case `t`
    and `z`. A value without an offset is read as UTC, as the API server always writes UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
