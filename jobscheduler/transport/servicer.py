"""The gRPC face of JobService: proto ⇄ domain, and domain errors ⇄ gRPC status codes.

Thin on purpose: every decision lives in the domain. One table maps error classes to codes;
anything unexpected is logged with its traceback and returned as a generic INTERNAL.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import grpc
import structlog
import yaml
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.app.joblogs import JobLogs, LogQuery
from jobscheduler.app.schedules import ScheduleService
from jobscheduler.app.service import JobQuery, JobService, encode_page_token
from jobscheduler.app.templates import TemplateService
from jobscheduler.domain.catchup import CatchUp, Concurrency
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
    fields_under,
)
from jobscheduler.domain.models import DependencyCondition, JobState, JobStatus
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
from jobscheduler.domain.schedule import ScheduleSpec, ScheduleView
from jobscheduler.kube.feed import Event
from jobscheduler.kube.gateway import NodeUnavailableError
from jobscheduler.obs.metrics import JOBS_SCHEDULED, RPC_DURATION, RPC_REQUESTS
from jobscheduler.transport.overlay import (
    check_not_templated,
    from_template,
    is_templated,
    to_proto_template,
    to_template_draft,
)

log = structlog.get_logger("jobscheduler.rpc")
T = TypeVar("T")


class UnauthenticatedError(JobSchedulerError):
    """The call carries no credentials the service accepts (jobscheduler.transport.security)."""


# (context, rpc name, request namespace): returns the caller's name when it may make the call
# (binding it to the log context), else raises UnauthenticatedError or PermissionDeniedError.
# Supplied by jobscheduler.transport.security when bearer tokens are on.
Authorize = Callable[[grpc.ServicerContext, str, str], str]
# Who makes the current call: its token's name, or its address when tokens are off.
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")

STATUS_CODES: dict[type[JobSchedulerError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

STATE_TO_PROTO = {
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}
CONCURRENCY: dict[int, Concurrency] = {
    pb.CONCURRENCY_POLICY_UNSPECIFIED: Concurrency.ALLOW,
    pb.CONCURRENCY_POLICY_ALLOW: Concurrency.ALLOW,
    pb.CONCURRENCY_POLICY_FORBID: Concurrency.FORBID,
    pb.CONCURRENCY_POLICY_REPLACE: Concurrency.REPLACE,
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


def _enum_value(field: str, table: Mapping[int, E], value: int) -> E:
    if value not in table:
        raise InvalidArgumentError(field, f"{value} is not one of the defined values")
    return table[value]


def status_code_for(error: JobSchedulerError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


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
            action=_enum_value(f"retry.rules[{i}].action", RETRY_ACTIONS, rule.action),
            exit_codes=tuple(rule.exit_codes),
            operator=_enum_value(f"retry.rules[{i}].operator", RETRY_OPERATORS, rule.operator),
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


class JobSchedulerServicer(pb_grpc.JobSchedulerServicer):
    def __init__(
        self,
        service: JobService,
        registry: Registry,
        *,
        on_unavailable: Callable[[], None] | None = None,
        max_streams: int = 128,
        authorize: Authorize | None = None,
        schedules: ScheduleService | None = None,
    ) -> None:
        self.service = service
        self._schedules = schedules
        self._templates: TemplateService | None = None
        self._job_logs: JobLogs | None = None
        self.registry = registry
        self.on_unavailable = on_unavailable or (lambda: None)
        self.authorize = authorize
        # Each open stream holds a server thread; bounding them keeps threads for unary calls.
        self._streams = threading.BoundedSemaphore(max_streams) if max_streams else None

    @property
    def job_logs(self) -> JobLogs:
        if self._job_logs is None:
            self._job_logs = JobLogs(self.service.gateway, self.service)
        return self._job_logs

    @property
    def schedules(self) -> ScheduleService:
        if self._schedules is None:
            self._schedules = ScheduleService(self.service.gateway, self.service)
        return self._schedules

    @property
    def templates(self) -> TemplateService:
        if self._templates is None:
            self._templates = TemplateService(self.service.gateway, self.service)
        return self._templates

    def ScheduleJob(
        self, request: pb.ScheduleJobRequest, context: grpc.ServicerContext
    ) -> pb.ScheduleJobResponse:
        with self._rpc("ScheduleJob", context, namespace=request.namespace) as deadline:
            if is_templated(request):
                stored = self.templates.resolve(
                    request.namespace, request.template, version=request.template_version, deadline=deadline
                )
                job_request = from_template(stored, request, to_job_request=self._to_job_request)
            else:
                job_request = self._to_job_request(request)
            result = self.service.schedule(
                job_request, caller=_CALLER.get(), dry_run=request.dry_run, deadline=deadline
            )
            structlog.contextvars.bind_contextvars(job_id=result.status.job_id)
            if result.created:
                JOBS_SCHEDULED.labels(job_request.job_type).inc()
            log.info(
                "job scheduled" if result.created else "job request handled",
                created=result.created,
                dry_run=request.dry_run,
                job_type=job_request.job_type,
            )
            return pb.ScheduleJobResponse(
                job_id=result.status.job_id,
                namespace=result.status.namespace,
                status=to_proto_status(result.status),
                created=result.created,
                manifest=yaml.safe_dump(result.manifest, sort_keys=False) if result.manifest else "",
                message=_schedule_message(result.created, request.dry_run),
            )

    def GetJobStatus(
        self, request: pb.GetJobStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetJobStatusResponse:
        with self._rpc(
            "GetJobStatus", context, namespace=request.namespace, job_id=request.job_id
        ) as deadline:
            status = self.service.get_status(request.namespace, request.job_id, deadline=deadline)
            return pb.GetJobStatusResponse(status=to_proto_status(status))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        with self._rpc("ListJobs", context, namespace=request.namespace) as deadline:
            states = self._states(request.states)
            if request.page_size < 0:
                raise InvalidArgumentError("page_size", f"must not be negative (got {request.page_size})")
            page = self.service.list_jobs(
                JobQuery(
                    namespace=request.namespace,
                    states=frozenset(states),
                    job_type=request.job_type,
                    label_selector=request.label_selector,
                    name=request.name,
                    page_size=request.page_size,
                    page_token=request.page_token,
                    schedule=request.schedule,
                ),
                deadline=deadline,
            )
            return fit_page(page.jobs, page.next_page_token)

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        with self._rpc("CancelJob", context, namespace=request.namespace, job_id=request.job_id) as deadline:
            status = self.service.cancel(request.namespace, request.job_id, deadline=deadline)
            log.info("job cancelled", state=status.state.value)
            return pb.CancelJobResponse(status=to_proto_status(status))

    def ResumeJob(self, request: pb.ResumeJobRequest, context: grpc.ServicerContext) -> pb.ResumeJobResponse:
        with self._rpc("ResumeJob", context, namespace=request.namespace, job_id=request.job_id) as deadline:
            status = self.service.resume(request.namespace, request.job_id, deadline=deadline)
            log.info("job resumed", state=status.state.value)
            return pb.ResumeJobResponse(status=to_proto_status(status))

    def ListJobTypes(
        self, request: pb.ListJobTypesRequest, context: grpc.ServicerContext
    ) -> pb.ListJobTypesResponse:
        with self._rpc("ListJobTypes", context):
            types = self.registry.types()
            if request.name:
                types = [t for t in types if t.name == request.name]
                if not types:
                    raise NotFoundError(
                        f"no job type {request.name!r}; registered: {', '.join(self.registry.names())}"
                    )
            return pb.ListJobTypesResponse(job_types=[self._to_proto_job_type(t) for t in types])

    def _to_proto_job_type(self, job_type: JobType) -> pb.JobTypeInfo:
        own_field = job_type.request_field in self._request_fields()
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

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        with self._stream("WatchJob", context, namespace=request.namespace, job_id=request.job_id):
            for event in self.service.watch_job(request.namespace, request.job_id, alive=context.is_active):
                yield to_proto_event(event)

    def WatchJobs(self, request: pb.WatchJobsRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        with self._stream("WatchJobs", context, namespace=request.namespace):
            states = self._states(request.states)
            events = self.service.watch_jobs(
                request.namespace,
                job_type=request.job_type,
                label_selector=request.label_selector,
                states=frozenset(states),
                initial=not request.skip_initial,
                alive=context.is_active,
            )
            for event in events:
                yield to_proto_event(event)

    def GetJobLogs(
        self, request: pb.GetJobLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.LogChunk]:
        with self._stream(
            "GetJobLogs", context, namespace=request.namespace, job_id=request.job_id
        ) as deadline:
            query = LogQuery(
                namespace=request.namespace,
                job_id=request.job_id,
                pod=request.pod,
                container=request.container,
                follow=request.follow,
                tail_lines=request.tail_lines if request.HasField("tail_lines") else None,
                since_seconds=request.since_seconds if request.HasField("since_seconds") else None,
                timestamps=request.timestamps,
            )
            for chunk in self.job_logs.stream(query, alive=context.is_active, deadline=deadline):
                yield pb.LogChunk(pod=chunk.pod, container=chunk.container, lines=chunk.lines)

    # -- schedules -----------------------------------------------------------------------------

    def CreateSchedule(self, request: pb.CreateScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        spec = request.schedule
        with self._rpc("CreateSchedule", context, namespace=spec.namespace, schedule=spec.name) as deadline:
            with fields_under("schedule"):
                view = self.schedules.create(self._to_schedule_spec(spec), deadline=deadline)
            return self._to_proto_schedule(view)

    def GetSchedule(self, request: pb.GetScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        with self._rpc(
            "GetSchedule", context, namespace=request.namespace, schedule=request.name
        ) as deadline:
            view = self.schedules.get(
                request.namespace, request.name, next_count=request.next_runs, deadline=deadline
            )
            return self._to_proto_schedule(view)

    def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.ServicerContext
    ) -> pb.ListSchedulesResponse:
        with self._rpc("ListSchedules", context, namespace=request.namespace) as deadline:
            views = self.schedules.list_schedules(request.namespace, deadline=deadline)
            return pb.ListSchedulesResponse(schedules=[self._to_proto_schedule(v) for v in views])

    def UpdateSchedule(self, request: pb.UpdateScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        spec = request.schedule
        with self._rpc("UpdateSchedule", context, namespace=spec.namespace, schedule=spec.name) as deadline:
            with fields_under("schedule"):
                view = self.schedules.update(self._to_schedule_spec(spec), deadline=deadline)
            return self._to_proto_schedule(view)

    def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.ServicerContext
    ) -> pb.DeleteScheduleResponse:
        with self._rpc(
            "DeleteSchedule", context, namespace=request.namespace, schedule=request.name
        ) as deadline:
            self.schedules.delete(
                request.namespace, request.name, keep_runs=request.keep_runs, deadline=deadline
            )
            return pb.DeleteScheduleResponse()

    def PauseSchedule(self, request: pb.PauseScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        with self._rpc(
            "PauseSchedule", context, namespace=request.namespace, schedule=request.name
        ) as deadline:
            view = self.schedules.set_paused(request.namespace, request.name, True, deadline=deadline)
            return self._to_proto_schedule(view)

    def ResumeSchedule(self, request: pb.ResumeScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        with self._rpc(
            "ResumeSchedule", context, namespace=request.namespace, schedule=request.name
        ) as deadline:
            view = self.schedules.set_paused(request.namespace, request.name, False, deadline=deadline)
            return self._to_proto_schedule(view)

    def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: grpc.ServicerContext
    ) -> pb.TriggerScheduleResponse:
        with self._rpc(
            "TriggerSchedule", context, namespace=request.namespace, schedule=request.name
        ) as deadline:
            status, created = self.schedules.trigger(
                request.namespace, request.name, idempotency_key=request.idempotency_key, deadline=deadline
            )
            return pb.TriggerScheduleResponse(status=to_proto_status(status), created=created)

    # -- templates -----------------------------------------------------------------------------

    def CreateTemplate(self, request: pb.CreateTemplateRequest, context: grpc.ServicerContext) -> pb.Template:
        spec = request.template
        with self._rpc("CreateTemplate", context, namespace=spec.namespace, template=spec.name) as deadline:
            with fields_under("template"):
                draft = to_template_draft(spec, to_job_request=self._to_job_request)
                stored = self.templates.create(draft, author=_CALLER.get(), deadline=deadline)
            return to_proto_template(stored)

    def UpdateTemplate(self, request: pb.UpdateTemplateRequest, context: grpc.ServicerContext) -> pb.Template:
        spec = request.template
        with self._rpc("UpdateTemplate", context, namespace=spec.namespace, template=spec.name) as deadline:
            if request.expected_version < 0:
                raise InvalidArgumentError(
                    "expected_version", f"must not be negative (got {request.expected_version})"
                )
            with fields_under("template"):
                draft = to_template_draft(spec, to_job_request=self._to_job_request)
                stored = self.templates.update(
                    draft, expected_version=request.expected_version, author=_CALLER.get(), deadline=deadline
                )
            return to_proto_template(stored)

    def GetTemplate(self, request: pb.GetTemplateRequest, context: grpc.ServicerContext) -> pb.Template:
        with self._rpc(
            "GetTemplate", context, namespace=request.namespace, template=request.name
        ) as deadline:
            stored = self.templates.get(
                request.namespace, request.name, version=request.version, deadline=deadline
            )
            return to_proto_template(stored)

    def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.ServicerContext
    ) -> pb.ListTemplatesResponse:
        with self._rpc("ListTemplates", context, namespace=request.namespace) as deadline:
            stored = self.templates.list_templates(request.namespace, deadline=deadline)
            return pb.ListTemplatesResponse(templates=[to_proto_template(t, with_job=False) for t in stored])

    def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: grpc.ServicerContext
    ) -> pb.DeleteTemplateResponse:
        with self._rpc(
            "DeleteTemplate", context, namespace=request.namespace, template=request.name
        ) as deadline:
            self.templates.delete(request.namespace, request.name, deadline=deadline)
            return pb.DeleteTemplateResponse()

    def _to_schedule_spec(self, spec: pb.ScheduleSpec) -> ScheduleSpec:
        with fields_under("job"):
            check_not_templated(spec.job)
            job = (
                self._to_job_request(spec.job) if spec.HasField("job") else JobRequest(job_type="", params={})
            )
        return ScheduleSpec(
            name=spec.name,
            namespace=spec.namespace,
            cron=spec.cron,
            time_zone=spec.time_zone,
            interval=spec.interval,
            start_time=spec.start_time.ToDatetime(tzinfo=UTC) if spec.HasField("start_time") else None,
            concurrency=_enum_value("concurrency_policy", CONCURRENCY, spec.concurrency_policy),
            starting_deadline_seconds=(
                spec.starting_deadline_seconds if spec.HasField("starting_deadline_seconds") else None
            ),
            successful_runs_history_limit=(
                spec.successful_runs_history_limit if spec.HasField("successful_runs_history_limit") else None
            ),
            failed_runs_history_limit=(
                spec.failed_runs_history_limit if spec.HasField("failed_runs_history_limit") else None
            ),
            paused=spec.paused,
            catch_up=_enum_value("catch_up", CATCH_UP, spec.catch_up),
            catch_up_max_runs=spec.catch_up_max_runs,
            job=job,
        )

    def _to_proto_schedule(self, view: ScheduleView) -> pb.Schedule:
        spec = view.spec
        message = pb.Schedule()
        out = message.spec
        out.name, out.namespace, out.cron, out.time_zone, out.interval = (
            spec.name,
            spec.namespace,
            spec.cron,
            spec.time_zone,
            spec.interval,
        )
        if spec.start_time is not None:
            out.start_time.FromDatetime(spec.start_time)
        out.concurrency_policy = {v: k for k, v in CONCURRENCY.items() if k}[spec.concurrency]  # type: ignore[assignment]
        out.catch_up = {v: k for k, v in CATCH_UP.items() if k}[spec.catch_up]  # type: ignore[assignment]
        out.catch_up_max_runs = spec.catch_up_max_runs
        out.paused = spec.paused
        for name in (
            "starting_deadline_seconds",
            "successful_runs_history_limit",
            "failed_runs_history_limit",
        ):
            if (value := getattr(spec, name)) is not None:
                setattr(out, name, value)
        out.job.CopyFrom(self._to_proto_job_request(spec.job))
        status = message.status
        status.executor, status.cron = view.executor, view.cronjob_schedule
        for upcoming in view.next_runs:
            status.next_runs.add().FromDatetime(upcoming)
        if view.last_run is not None:
            status.last_run.CopyFrom(to_proto_status(view.last_run))
        status.active_runs.extend(view.active_runs)
        stats = view.stats
        status.stats.runs, status.stats.active = stats.total, stats.active
        status.stats.succeeded, status.stats.failed, status.stats.cancelled = (
            stats.succeeded,
            stats.failed,
            stats.cancelled,
        )
        for name in ("success_rate", "mean_duration_seconds", "p95_duration_seconds"):
            if (value := getattr(stats, name)) is not None:
                setattr(status.stats, name, value)
        if view.created_at is not None:
            status.created_at.FromDatetime(view.created_at)
        if view.last_schedule_time is not None:
            status.last_schedule_time.FromDatetime(view.last_schedule_time)
        return message

    def _to_proto_job_request(self, job: JobRequest) -> pb.ScheduleJobRequest:
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
        if job.job_type:
            request_field = self.registry.get(job.job_type).request_field
            if job.params_field or request_field not in self._request_fields():
                out.generic_job.type = job.job_type
                ParseDict(dict(job.params), out.generic_job.params)
            else:
                ParseDict(dict(job.params), getattr(out, request_field))
        return out

    # -- plumbing ------------------------------------------------------------------------------

    def _states(self, values: Iterable[pb.JobState.ValueType]) -> set[JobState]:
        states = set()
        for i, value in enumerate(values):
            if value not in PROTO_TO_STATE:
                raise InvalidArgumentError(f"states[{i}]", f"{value} is not a job state")
            states.add(PROTO_TO_STATE[value])
        return states

    @contextmanager
    def _stream(self, method: str, context: grpc.ServicerContext, **fields: Any) -> Iterator[float | None]:
        if self._streams is not None and not self._streams.acquire(blocking=False):
            RPC_REQUESTS.labels(method, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            _abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many open watch streams on this replica (MAX_WATCH_STREAMS); retry later or elsewhere",
            )
        try:
            with self._rpc(method, context, observe_latency=False, **fields) as deadline:
                yield deadline
        finally:
            if self._streams is not None:
                self._streams.release()

    def _to_job_request(self, request: pb.ScheduleJobRequest) -> JobRequest:
        which = request.WhichOneof("job_type")
        if which is None:
            raise InvalidArgumentError(
                "job_type", f"no job type set; set one of: {', '.join(self._request_fields())}"
            )
        params_field = ""
        if which == GENERIC_FIELD:
            # Resolved and checked against the type's parameters by the service, which names
            # generic_job.type and generic_job.params in its errors.
            type_name = request.generic_job.type
            params = MessageToDict(request.generic_job.params, preserving_proto_field_name=True)
            params_field = GENERIC_PARAMS_FIELD
        else:
            type_name = self.registry.for_request_field(which).name
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
            after_condition=_enum_value("after_condition", DEPENDENCY_CONDITIONS, request.after_condition),
            retry=retry_from_proto(request.retry) if request.HasField("retry") else None,
            pending_timeout_seconds=(
                request.pending_timeout_seconds if request.HasField("pending_timeout_seconds") else None
            ),
        )

    def _request_fields(self) -> list[str]:
        return [f.name for f in pb.ScheduleJobRequest.DESCRIPTOR.oneofs_by_name["job_type"].fields]

    @contextmanager
    def _rpc(
        self, method: str, context: grpc.ServicerContext, *, observe_latency: bool = True, **fields: Any
    ) -> Iterator[float | None]:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method, **{k: v for k, v in fields.items() if v})
        remaining = context.time_remaining()
        # grpc reports "no deadline" as a very large number.
        deadline = time.monotonic() + remaining if remaining is not None and remaining < 1e8 else None
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if self.authorize is not None:
                _CALLER.set(self.authorize(context, method, fields.get("namespace") or ""))
            else:
                _CALLER.set(peer_host(context.peer()))
            yield deadline
            log.debug("rpc ok", duration_ms=round((time.perf_counter() - started) * 1000, 2))
        except JobSchedulerError as e:
            code = status_code_for(e)
            # A node that does not serve a pod's log says nothing about the API server.
            if code is grpc.StatusCode.UNAVAILABLE and not isinstance(e, NodeUnavailableError):
                self.on_unavailable()
            log.info("rpc failed", code=code.name, error=str(e))
            _abort(context, code, str(e), retry_after=getattr(e, "retry_after", None))
        except Exception:
            code = grpc.StatusCode.INTERNAL
            incident = uuid.uuid4().hex[:12]
            log.exception("rpc crashed", incident=incident)
            _abort(context, code, f"internal error (incident {incident}); see the service logs")
        finally:
            RPC_REQUESTS.labels(method, code.name).inc()
            if observe_latency:
                RPC_DURATION.labels(method).observe(time.perf_counter() - started)
            structlog.contextvars.clear_contextvars()


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, *, retry_after: float | None = None
) -> NoReturn:
    # gRPC drops a status whose message is over 16 KiB (the caller would see RESOURCE_EXHAUSTED).
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "… (message cut)"
    if retry_after is not None:
        # The standard retry hint (google.rpc.RetryInfo in grpc-status-details-bin), which
        # gRPC clients and proxies understand, besides the delay in the message.
        delay = Duration()
        delay.FromNanoseconds(max(1_000_000, round(retry_after * 1e9)))
        detail = AnyProto()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
        context.abort_with_status(rpc_status.to_status(status))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer ("ipv4:10.0.0.7:5123" → "10.0.0.7", "ipv6:[::1]:5123" →
    "::1"): a caller's identity when tokens are off, stable across its connections."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or "unknown"


def _schedule_message(created: bool, dry_run: bool) -> str:
    if dry_run:
        return "dry run: the manifest was accepted by the API server; nothing was created"
    return "job created" if created else "a job for this request_id already exists; returning it"


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


MAX_ERROR_CHARS = 2000
# A reply must fit in one gRPC message (4 MiB); a page of jobs with many large labels could
# not, so a page ends early, with a token for the rest, once it nears this size.
MAX_PAGE_BYTES = 3 * 1024 * 1024


def fit_page(jobs: Sequence[JobStatus], next_page_token: str) -> pb.ListJobsResponse:
    response = pb.ListJobsResponse()
    size = 0
    for i, status in enumerate(jobs):
        message = to_proto_status(status)
        size += message.ByteSize() + 8
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
        observed_at=_timestamp(event.observed_at),
    )


def to_proto_status(status: JobStatus) -> pb.JobStatus:
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
        created_at=_timestamp(status.created_at),
        started_at=_timestamp(status.started_at),
        finished_at=_timestamp(status.finished_at),
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
    )
