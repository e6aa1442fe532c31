"""Protobuf ⇄ domain: ScheduleJob requests decoded into JobRequests (and back, for the jobs a
schedule or template holds), job statuses, events, pages and job types encoded as messages.

Pure functions of their input (and the job-type registry); an undefined enum value or a
missing job type is an InvalidArgumentError naming the field.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.service import encode_page_token
from jobscheduler.domain.audit import JobAudit
from jobscheduler.domain.catchup import CatchUp, Concurrency
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.models import Delivery, DependencyCondition, JobState, JobStatus, NotificationStatus
from jobscheduler.domain.notify import NotifySink
from jobscheduler.domain.placement import Placement, Toleration
from jobscheduler.domain.queueing import QueueInfo, Queueing, QueueStatus
from jobscheduler.domain.registry import (
    GENERIC_FIELD,
    GENERIC_PARAMS_FIELD,
    JobType,
    Registry,
    description_of,
    parameters_of,
)
from jobscheduler.domain.render import JobRequest, Resources
from jobscheduler.domain.retry import RetryPolicy, RetryRule
from jobscheduler.kube.feed import Event

STATE_TO_PROTO = {
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}
CONCURRENCY: dict[int, Concurrency] = {
    pb.CONCURRENCY_POLICY_UNSPECIFIED: Concurrency.ALLOW,
    pb.CONCURRENCY_POLICY_ALLOW: Concurrency.ALLOW,
    pb.CONCURRENCY_POLICY_FORBID: Concurrency.FORBID,
    pb.CONCURRENCY_POLICY_REPLACE: Concurrency.REPLACE,
    pb.CONCURRENCY_POLICY_BUFFER_ONE: Concurrency.BUFFER_ONE,
}
CATCH_UP: dict[int, CatchUp] = {
    pb.CATCH_UP_POLICY_UNSPECIFIED: CatchUp.SKIP,
    pb.CATCH_UP_POLICY_SKIP: CatchUp.SKIP,
    pb.CATCH_UP_POLICY_LATEST: CatchUp.LATEST,
    pb.CATCH_UP_POLICY_ALL: CatchUp.ALL,
}
# UNSPECIFIED is "not given": SUCCEEDED with `after`, and the only value allowed without it.
DEPENDENCY_CONDITIONS: dict[int, DependencyCondition | None] = {
    pb.DEPENDENCY_CONDITION_UNSPECIFIED: None,
    pb.DEPENDENCY_CONDITION_SUCCEEDED: DependencyCondition.SUCCEEDED,
    pb.DEPENDENCY_CONDITION_FINISHED: DependencyCondition.FINISHED,
}
CONDITION_TO_PROTO = {v: k for k, v in DEPENDENCY_CONDITIONS.items()}
E = TypeVar("E")


def enum_value(field: str, table: Mapping[int, E], value: int) -> E:
    if value not in table:
        raise InvalidArgumentError(field, f"{value} is not one of the defined values")
    return table[value]


RETRY_ACTIONS: dict[int, str] = {
    pb.RETRY_ACTION_UNSPECIFIED: "",  # refused by check_retry, naming the field
    pb.RETRY_ACTION_FAIL_JOB: "FailJob",
    pb.RETRY_ACTION_FAIL_INDEX: "FailIndex",
    pb.RETRY_ACTION_IGNORE: "Ignore",
    pb.RETRY_ACTION_COUNT: "Count",
}
RETRY_OPERATORS: dict[int, str] = {
    pb.RETRY_OPERATOR_UNSPECIFIED: "In",
    pb.RETRY_OPERATOR_IN: "In",
    pb.RETRY_OPERATOR_NOT_IN: "NotIn",
}


def retry_from_proto(message: pb.RetryPolicy) -> RetryPolicy:
    rules = tuple(
        RetryRule(
            action=enum_value(f"retry.rules[{i}].action", RETRY_ACTIONS, rule.action),
            exit_codes=tuple(rule.exit_codes),
            operator=enum_value(f"retry.rules[{i}].operator", RETRY_OPERATORS, rule.operator),
            container_name=rule.container_name,
            pod_conditions=tuple(rule.pod_conditions),
        )
        for i, rule in enumerate(message.rules)
    )
    return RetryPolicy(
        fail_on_exit_codes=tuple(message.fail_on_exit_codes),
        retry_on_exit_codes=tuple(message.retry_on_exit_codes),
        ignore_disruptions=message.ignore_disruptions,
        count_oom=message.count_oom,
        rules=rules,
    )


def retry_to_proto(policy: RetryPolicy) -> pb.RetryPolicy:
    actions = {v: k for k, v in RETRY_ACTIONS.items()}
    return pb.RetryPolicy(
        fail_on_exit_codes=policy.fail_on_exit_codes,
        retry_on_exit_codes=policy.retry_on_exit_codes,
        ignore_disruptions=policy.ignore_disruptions,
        count_oom=policy.count_oom,
        rules=[
            pb.RetryRule(
                action=actions.get(rule.action, pb.RETRY_ACTION_UNSPECIFIED),  # type: ignore[arg-type]
                exit_codes=rule.exit_codes,
                operator=pb.RETRY_OPERATOR_NOT_IN if rule.operator == "NotIn" else pb.RETRY_OPERATOR_IN,
                container_name=rule.container_name,
                pod_conditions=rule.pod_conditions,
            )
            for rule in policy.rules
        ],
    )


def request_fields() -> list[str]:
    """The ScheduleJobRequest fields that pick a job type (the `job_type` oneof)."""
    return [f.name for f in pb.ScheduleJobRequest.DESCRIPTOR.oneofs_by_name["job_type"].fields]


def states_from_proto(values: Iterable[pb.JobState.ValueType]) -> frozenset[JobState]:
    states = set()
    for i, value in enumerate(values):
        if value not in PROTO_TO_STATE:
            raise InvalidArgumentError(f"states[{i}]", f"{value} is not a job state")
        states.add(PROTO_TO_STATE[value])
    return frozenset(states)


def job_request_from_proto(request: pb.ScheduleJobRequest, registry: Registry) -> JobRequest:
    """A ScheduleJob request (or the job a schedule or template holds) in domain terms."""
    which = request.WhichOneof("job_type")
    if which is None:
        raise InvalidArgumentError("job_type", f"no job type set; set one of: {', '.join(request_fields())}")
    params_field = ""
    if which == GENERIC_FIELD:
        # Resolved and checked against the type's parameters by the service, which names
        # generic_job.type and generic_job.params in its errors.
        type_name = request.generic_job.type
        params = MessageToDict(request.generic_job.params, preserving_proto_field_name=True)
        params_field = GENERIC_PARAMS_FIELD
    else:
        type_name = registry.for_request_field(which).name
        params = MessageToDict(getattr(request, which), preserving_proto_field_name=True)
    res = request.resources
    return JobRequest(
        job_type=type_name,
        params=params,
        params_field=params_field,
        name=request.name,
        namespace=request.namespace,
        labels=dict(request.labels),
        annotations=dict(request.annotations),
        resources=Resources(
            cpu_request=res.cpu_request,
            memory_request=res.memory_request,
            cpu_limit=res.cpu_limit,
            memory_limit=res.memory_limit,
        ),
        backoff_limit=request.backoff_limit if request.HasField("backoff_limit") else None,
        active_deadline_seconds=(
            request.active_deadline_seconds if request.HasField("active_deadline_seconds") else None
        ),
        ttl_seconds_after_finished=(
            request.ttl_seconds_after_finished if request.HasField("ttl_seconds_after_finished") else None
        ),
        request_id=request.request_id,
        suspend=request.suspend,
        secret_env=dict(request.secret_env),
        after=tuple(request.after),
        after_condition=enum_value("after_condition", DEPENDENCY_CONDITIONS, request.after_condition),
        retry=retry_from_proto(request.retry) if request.HasField("retry") else None,
        pending_timeout_seconds=(
            request.pending_timeout_seconds if request.HasField("pending_timeout_seconds") else None
        ),
        placement=Placement(
            node_selector=dict(request.node_selector),
            tolerations=tuple(toleration_from_proto(t) for t in request.tolerations),
            priority_class_name=request.priority_class_name,
        ),
        queueing=Queueing(queue=request.queue, priority=request.priority),
        notify=tuple(notify_sink_from_proto(i, sink) for i, sink in enumerate(request.notify)),
    )


def notify_sink_from_proto(index: int, message: pb.NotifySink) -> NotifySink:
    states = []
    for j, value in enumerate(message.states):
        state = PROTO_TO_STATE.get(value)
        if state is None:
            raise InvalidArgumentError(
                f"notify[{index}].states[{j}]",
                f"{value} is not a job state; use SUCCEEDED, FAILED, CANCELLED or RUNNING",
            )
        states.append(state)
    return NotifySink(
        url=message.url,
        states=tuple(states),
        secret=message.secret,
        secret_key=message.secret_key,
        timeout_seconds=message.timeout_seconds if message.HasField("timeout_seconds") else None,
    )


def notify_sink_to_proto(sink: NotifySink) -> pb.NotifySink:
    return pb.NotifySink(
        url=sink.url,
        states=[STATE_TO_PROTO[s] for s in sink.states],
        secret=sink.secret,
        secret_key=sink.secret_key,
        timeout_seconds=sink.timeout_seconds,
    )


DELIVERY_TO_PROTO = {
    Delivery.PENDING: pb.NotificationStatus.DELIVERY_PENDING,
    Delivery.DELIVERING: pb.NotificationStatus.DELIVERY_DELIVERING,
    Delivery.DELIVERED: pb.NotificationStatus.DELIVERY_DELIVERED,
    Delivery.FAILED: pb.NotificationStatus.DELIVERY_FAILED,
}


def notification_to_proto(n: NotificationStatus) -> pb.NotificationStatus:
    return pb.NotificationStatus(
        url=n.url,
        state=STATE_TO_PROTO[n.state],
        delivery=DELIVERY_TO_PROTO[n.delivery],
        attempts=n.attempts,
        last_error=n.last_error,
        last_attempt_at=timestamp(n.last_attempt_at),
        delivered_at=timestamp(n.delivered_at),
    )


def status_json(status: JobStatus) -> dict[str, Any]:
    """A JobStatus in protobuf's JSON mapping with the .proto's field names, as grpcurl shows it
    (and any protobuf JSON parser reads): the data of a notification
    (jobscheduler.domain.notify.Serializer, given to the leader's notifier at wiring time)."""
    return dict(MessageToDict(to_proto_status(status), preserving_proto_field_name=True))


def toleration_from_proto(message: pb.Toleration) -> Toleration:
    return Toleration(
        key=message.key,
        operator=message.operator,
        value=message.value,
        effect=message.effect,
        toleration_seconds=(message.toleration_seconds if message.HasField("toleration_seconds") else None),
    )


def toleration_to_proto(toleration: Toleration) -> pb.Toleration:
    return pb.Toleration(
        key=toleration.key,
        operator=toleration.operator,
        value=toleration.value,
        effect=toleration.effect,
        toleration_seconds=toleration.toleration_seconds,
    )


def job_request_to_proto(job: JobRequest, registry: Registry) -> pb.ScheduleJobRequest:
    """The job a schedule holds, as the ScheduleJobRequest it was given as."""
    out = pb.ScheduleJobRequest(
        name=job.name,
        labels=dict(job.labels),
        annotations=dict(job.annotations),
        resources=pb.Resources(
            cpu_request=job.resources.cpu_request,
            memory_request=job.resources.memory_request,
            cpu_limit=job.resources.cpu_limit,
            memory_limit=job.resources.memory_limit,
        ),
    )
    for name in ("backoff_limit", "active_deadline_seconds", "ttl_seconds_after_finished"):
        if (value := getattr(job, name)) is not None:
            setattr(out, name, value)
    if job.pending_timeout_seconds is not None:
        out.pending_timeout_seconds = job.pending_timeout_seconds
    if job.retry is not None:
        out.retry.CopyFrom(retry_to_proto(job.retry))
    out.node_selector.update(job.placement.node_selector)
    out.tolerations.extend(toleration_to_proto(t) for t in job.placement.tolerations)
    out.priority_class_name = job.placement.priority_class_name
    out.queue = job.queueing.queue
    out.priority = job.queueing.priority
    out.notify.extend(notify_sink_to_proto(s) for s in job.notify)
    if job.job_type:
        request_field = registry.get(job.job_type).request_field
        if job.params_field or request_field not in request_fields():
            out.generic_job.type = job.job_type
            ParseDict(dict(job.params), out.generic_job.params)
        else:
            ParseDict(dict(job.params), getattr(out, request_field))
    return out


def job_type_to_proto(job_type: JobType) -> pb.JobTypeInfo:
    own_field = job_type.request_field in request_fields()
    return pb.JobTypeInfo(
        name=job_type.name,
        request_field=job_type.request_field if own_field else GENERIC_FIELD,
        description=description_of(job_type),
        parameters=[
            pb.JobTypeParameter(
                name=p.name,
                type=p.type,
                required=p.required,
                default=p.default,
                description=p.description,
            )
            for p in parameters_of(job_type)
        ],
    )


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


# A reply must fit in one gRPC message (4 MiB); a page of jobs with many large labels could
# not, so a page ends early, with a token for the rest, once it nears this size.
MAX_PAGE_BYTES = 3 * 1024 * 1024


def fit_page(jobs: Sequence[JobStatus], next_page_token: str) -> pb.ListJobsResponse:
    response = pb.ListJobsResponse()
    size = 0
    for i, status in enumerate(jobs):
        message, message_size = _MEMO.get(status)
        size += message_size + 8
        if i and size > MAX_PAGE_BYTES:
            return pb.ListJobsResponse(jobs=response.jobs, next_page_token=encode_page_token(jobs[i - 1]))
        response.jobs.append(message)
    response.next_page_token = next_page_token
    return response


EVENT_TYPES = {
    "INITIAL": pb.JOB_EVENT_TYPE_INITIAL,
    "UPDATED": pb.JOB_EVENT_TYPE_UPDATED,
    "DELETED": pb.JOB_EVENT_TYPE_DELETED,
}


def to_proto_event(event: Event) -> pb.JobEvent:
    return pb.JobEvent(
        type=EVENT_TYPES[event.kind],
        status=to_proto_status(event.status),
        observed_at=timestamp(event.observed_at),
    )


class _StatusMemo:
    """The message (and its size) of the statuses converted lately. A JobStatus is immutable and
    the watch cache hands out the same object until the job changes, so pages read again and
    again (a dashboard's first page, a poller's job) are converted once: conversion was most
    of a ListJobs page's CPU. Bounded; a status is known by identity, never by value. The
    messages are shared: callers copy them into their responses and never change them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[int, tuple[JobStatus, pb.JobStatus, int]] = {}
        self._lock = threading.Lock()

    def get(self, status: JobStatus) -> tuple[pb.JobStatus, int]:
        entry = self._entries.get(id(status))
        if entry is not None and entry[0] is status:
            return entry[1], entry[2]
        message = _convert_status(status)
        size = message.ByteSize()
        with self._lock:
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]  # the oldest: dicts keep insertion order
            self._entries[id(status)] = (status, message, size)
        return message, size


def to_proto_status(status: JobStatus) -> pb.JobStatus:
    """The JobStatus message of a status (shared: copy it into a response, never change it)."""
    return _MEMO.get(status)[0]


def _convert_status(status: JobStatus) -> pb.JobStatus:
    return pb.JobStatus(
        job_id=status.job_id,
        namespace=status.namespace,
        name=status.name,
        job_type=status.job_type,
        state=STATE_TO_PROTO[status.state],
        reason=status.reason,
        message=status.message,
        attempts=status.attempts,
        active=status.active,
        succeeded=status.succeeded,
        failed=status.failed,
        created_at=timestamp(status.created_at),
        started_at=timestamp(status.started_at),
        finished_at=timestamp(status.finished_at),
        pods=list(status.pods),
        labels=dict(status.labels),
        exit_code=status.exit_code,
        request_id=status.request_id,
        schedule=status.schedule,
        completed_indexes=status.completed_indexes,
        failed_indexes=status.failed_indexes,
        template=status.template,
        template_version=status.template_version,
        waiting_for=list(status.waiting_for),
        after=list(status.after),
        after_condition=CONDITION_TO_PROTO[status.after_condition],  # type: ignore[arg-type]
        node_selector=dict(status.placement.node_selector),
        tolerations=[toleration_to_proto(t) for t in status.placement.tolerations],
        priority_class_name=status.placement.priority_class_name,
        queue=status.queueing.queue,
        priority=status.queueing.priority,
        queue_status=queue_status_to_proto(status.queue_status) if status.queue_status else None,
        notifications=[notification_to_proto(n) for n in status.notifications],
        audit=_audit_to_proto(status.audit) if status.audit != NO_AUDIT else None,
        traceparent=status.traceparent,
    )


NO_AUDIT = JobAudit()


def _audit_to_proto(audit: JobAudit) -> pb.JobAudit:
    return pb.JobAudit(
        scheduled_by=audit.scheduled_by,
        cancelled_by=audit.cancelled_by,
        cancelled_at=timestamp(audit.cancelled_at),
        resumed_by=audit.resumed_by,
        resumed_at=timestamp(audit.resumed_at),
        triggered_by=audit.triggered_by,
    )


def queue_to_proto(q: QueueInfo) -> pb.Queue:
    return pb.Queue(
        name=q.name,
        namespace=q.namespace,
        cluster_queue=q.cluster_queue,
        cohort=q.cohort,
        pending=q.pending,
        admitted=q.admitted,
        resources=[
            pb.ResourceQuota(
                flavor=r.flavor,
                resource=r.resource,
                nominal=r.nominal,
                borrowing_limit=r.borrowing_limit,
                reserved=r.reserved,
                in_use=r.in_use,
            )
            for r in q.resources
        ],
        active=q.active,
        message=q.message,
        weighted_share=q.weighted_share,
    )


def queue_status_to_proto(q: QueueStatus) -> pb.QueueStatus:
    return pb.QueueStatus(
        cluster_queue=q.cluster_queue,
        workload=q.workload,
        admitted=q.admitted,
        admitted_at=timestamp(q.admitted_at),
        position_in_queue=q.position_in_queue,
        position_in_cluster_queue=q.position_in_cluster_queue,
        pending_reason=q.pending_reason,
        eviction_reason=q.eviction_reason,
        eviction_message=q.eviction_message,
        evicted_at=timestamp(q.evicted_at),
        priority_value=q.priority_value,
    )


_MEMO = _StatusMemo(4096)  # a few pages of 100 for many callers; ~1.5 KB each
