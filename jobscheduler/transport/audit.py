"""Which RPCs change something, and the audit record each of them leaves (jobscheduler.obs.audit),
written by the interceptor for every one of them, whatever its outcome.

Read RPCs (Get*, List*, Watch*) leave none. A new RPC of the service must be named in
MUTATING_METHODS or READ_METHODS: tests/unit/test_audit.py fails until it is, so a new mutating
RPC is audited by construction.
"""

from __future__ import annotations

import grpc
import structlog

from jobscheduler.domain.audit import Identity
from jobscheduler.obs.audit import AuditLog
from jobscheduler.obs.tracing import current_trace_id

MUTATING_METHODS = frozenset(
    {
        "ScheduleJob",
        "CancelJob",
        "ResumeJob",
        "CreateSchedule",
        "UpdateSchedule",
        "DeleteSchedule",
        "PauseSchedule",
        "ResumeSchedule",
        "TriggerSchedule",
        "BackfillSchedule",
        "CreateTemplate",
        "UpdateTemplate",
        "DeleteTemplate",
    }
)
# What the call bound to its log context (jobscheduler.transport.call.begin, the servicers) that
# says which object it acted on; nothing else of that context is copied.
_OBJECT_FIELDS = ("namespace", "job_id", "schedule", "template", "request_id", "dry_run")


def record_call(audit: AuditLog, *, method: str, who: Identity, code: grpc.StatusCode) -> None:
    """The audit record of one mutating call, from the log context it bound."""
    bound = structlog.contextvars.get_contextvars()
    audit.record(
        who=str(who),
        method=method,
        outcome=code.name,
        trace_id=current_trace_id(),
        **{key: bound[key] for key in _OBJECT_FIELDS if key in bound},
    )
