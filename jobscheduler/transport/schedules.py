"""The schedule RPCs: Create, Get, List, Update, Delete, Pause, Resume, Trigger and Backfill a
schedule, and schedules between protobuf and domain terms."""

from __future__ import annotations

from datetime import UTC

import grpc
import structlog

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.backfill import backfill_schedule
from jobscheduler.app.schedules import ScheduleService
from jobscheduler.domain.audit import Origin
from jobscheduler.domain.errors import fields_under
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.render import JobRequest
from jobscheduler.domain.schedule import ScheduleSpec, ScheduleView
from jobscheduler.obs.tracing import current_traceparent
from jobscheduler.transport.call import begin
from jobscheduler.transport.convert import (
    CATCH_UP,
    CONCURRENCY,
    enum_value,
    job_request_from_proto,
    job_request_to_proto,
    to_proto_status,
)
from jobscheduler.transport.overlay import check_not_templated


class SchedulesServicer:
    def __init__(self, schedules: ScheduleService, registry: Registry) -> None:
        self.schedules = schedules
        self.registry = registry

    def CreateSchedule(self, request: pb.CreateScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        spec = request.schedule
        call = begin(namespace=spec.namespace, schedule=spec.name)
        with fields_under("schedule"):
            view = self.schedules.create(self._to_schedule_spec(spec), deadline=call.deadline)
        return self._to_proto_schedule(view)

    def GetSchedule(self, request: pb.GetScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        call = begin(namespace=request.namespace, schedule=request.name)
        view = self.schedules.get(
            request.namespace, request.name, next_count=request.next_runs, deadline=call.deadline
        )
        return self._to_proto_schedule(view)

    def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.ServicerContext
    ) -> pb.ListSchedulesResponse:
        call = begin(namespace=request.namespace)
        views = self.schedules.list_schedules(request.namespace, deadline=call.deadline)
        return pb.ListSchedulesResponse(schedules=[self._to_proto_schedule(v) for v in views])

    def UpdateSchedule(self, request: pb.UpdateScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        spec = request.schedule
        call = begin(namespace=spec.namespace, schedule=spec.name)
        with fields_under("schedule"):
            view = self.schedules.update(self._to_schedule_spec(spec), deadline=call.deadline)
        return self._to_proto_schedule(view)

    def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.ServicerContext
    ) -> pb.DeleteScheduleResponse:
        call = begin(namespace=request.namespace, schedule=request.name)
        self.schedules.delete(
            request.namespace, request.name, keep_runs=request.keep_runs, deadline=call.deadline
        )
        return pb.DeleteScheduleResponse()

    def PauseSchedule(self, request: pb.PauseScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        call = begin(namespace=request.namespace, schedule=request.name)
        view = self.schedules.set_paused(request.namespace, request.name, True, deadline=call.deadline)
        return self._to_proto_schedule(view)

    def ResumeSchedule(self, request: pb.ResumeScheduleRequest, context: grpc.ServicerContext) -> pb.Schedule:
        call = begin(namespace=request.namespace, schedule=request.name)
        view = self.schedules.set_paused(request.namespace, request.name, False, deadline=call.deadline)
        return self._to_proto_schedule(view)

    def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: grpc.ServicerContext
    ) -> pb.TriggerScheduleResponse:
        call = begin(namespace=request.namespace, schedule=request.name)
        status, created = self.schedules.trigger(
            request.namespace,
            request.name,
            idempotency_key=request.idempotency_key,
            deadline=call.deadline,
            origin=Origin(call.who, traceparent=current_traceparent()),
        )
        structlog.contextvars.bind_contextvars(job_id=status.job_id)
        return pb.TriggerScheduleResponse(status=to_proto_status(status), created=created)

    def BackfillSchedule(
        self, request: pb.BackfillScheduleRequest, context: grpc.ServicerContext
    ) -> pb.BackfillScheduleResponse:
        call = begin(namespace=request.namespace, schedule=request.name)
        done = backfill_schedule(
            self.schedules,
            request.namespace,
            request.name,
            start=request.start.ToDatetime(tzinfo=UTC) if request.HasField("start") else None,
            end=request.end.ToDatetime(tzinfo=UTC) if request.HasField("end") else None,
            dry_run=request.dry_run,
            deadline=call.deadline,
            origin=Origin(call.who, traceparent=current_traceparent()),
        )
        response = pb.BackfillScheduleResponse(created=done.created, existing=done.existing)
        for at in done.run_times:
            response.run_times.add().FromDatetime(at)
        return response

    def _to_schedule_spec(self, spec: pb.ScheduleSpec) -> ScheduleSpec:
        with fields_under("job"):
            check_not_templated(spec.job)
            job = (
                job_request_from_proto(spec.job, self.registry)
                if spec.HasField("job")
                else JobRequest(job_type="", params={})
            )
        return ScheduleSpec(
            name=spec.name,
            namespace=spec.namespace,
            cron=spec.cron,
            time_zone=spec.time_zone,
            interval=spec.interval,
            start_time=spec.start_time.ToDatetime(tzinfo=UTC) if spec.HasField("start_time") else None,
            concurrency=enum_value("concurrency_policy", CONCURRENCY, spec.concurrency_policy),
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
            catch_up=enum_value("catch_up", CATCH_UP, spec.catch_up),
            catch_up_max_runs=spec.catch_up_max_runs,
            pause_after_failures=spec.pause_after_failures if spec.HasField("pause_after_failures") else None,
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
            "pause_after_failures",
        ):
            if (value := getattr(spec, name)) is not None:
                setattr(out, name, value)
        out.job.CopyFrom(job_request_to_proto(spec.job, self.registry))
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
        status.paused_reason, status.paused_message = view.paused_reason, view.paused_message
        if view.paused_at is not None:
            status.paused_at.FromDatetime(view.paused_at)
        status.consecutive_failures = view.consecutive_failures
        if view.buffered_run is not None:
            status.buffered_run.FromDatetime(view.buffered_run)
        status.backfilled_runs = view.backfilled_runs
        return message
