"""The job RPCs: ScheduleJob, GetJobStatus, ListJobs, CancelJob and ResumeJob, and ListQueues.

Each method reads its request once: authorizes the call in the request's namespace, decodes
the request into domain terms (jobscheduler.transport.convert; a ScheduleJob naming a template
is first laid over the template's stored job, jobscheduler.transport.overlay), runs the use
case (jobscheduler.app.service), and encodes what it returns.
"""

from __future__ import annotations

import grpc
import structlog
import yaml

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.service import JobQuery, JobService
from jobscheduler.app.submit import ScheduleResult
from jobscheduler.app.templates import TemplateService
from jobscheduler.domain.audit import Origin
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.render import JobRequest
from jobscheduler.obs.metrics import JOBS_SCHEDULED, child
from jobscheduler.obs.tracing import current_traceparent
from jobscheduler.transport.call import Call, begin
from jobscheduler.transport.convert import (
    fit_page,
    job_request_from_proto,
    queue_to_proto,
    states_from_proto,
    to_proto_status,
)
from jobscheduler.transport.overlay import from_template, is_templated

log = structlog.get_logger("jobscheduler.rpc")


class JobsServicer:
    def __init__(self, jobs: JobService, registry: Registry, *, templates: TemplateService | None) -> None:
        self.jobs = jobs
        self.registry = registry
        self._templates = templates

    @property
    def templates(self) -> TemplateService:
        if self._templates is None:
            self._templates = TemplateService(self.jobs.gateway, self.jobs)
        return self._templates

    def ScheduleJob(
        self, request: pb.ScheduleJobRequest, context: grpc.ServicerContext
    ) -> pb.ScheduleJobResponse:
        call = begin(namespace=request.namespace, request_id=request.request_id)
        if request.dry_run:
            structlog.contextvars.bind_contextvars(dry_run=True)
        job = self._decode(request, call)
        result = self.jobs.submission.schedule(
            job,
            caller=call.caller,
            dry_run=request.dry_run,
            deadline=call.deadline,
            queues=call.grant.queues if call.grant is not None else None,
            origin=Origin(call.who, traceparent=current_traceparent()),
        )
        return self._report(job, result, dry_run=request.dry_run)

    def _decode(self, request: pb.ScheduleJobRequest, call: Call) -> JobRequest:
        """The request in domain terms; one naming a template is first laid over the template's
        job (the override rules are protobuf's field presence, so the merge happens here)."""
        if not is_templated(request):
            return job_request_from_proto(request, self.registry)
        stored = self.templates.resolve(
            request.namespace, request.template, version=request.template_version, deadline=call.deadline
        )
        return from_template(stored, request, registry=self.registry)

    @staticmethod
    def _report(job: JobRequest, result: ScheduleResult, *, dry_run: bool) -> pb.ScheduleJobResponse:
        structlog.contextvars.bind_contextvars(job_id=result.status.job_id)
        if result.created:
            child(JOBS_SCHEDULED, job.job_type).inc()
        log.info(
            "job scheduled" if result.created else "job request handled",
            created=result.created,
            dry_run=dry_run,
            job_type=job.job_type,
        )
        return pb.ScheduleJobResponse(
            job_id=result.status.job_id,
            namespace=result.status.namespace,
            status=to_proto_status(result.status),
            created=result.created,
            manifest=yaml.safe_dump(result.manifest, sort_keys=False) if result.manifest else "",
            message=_schedule_message(result.created, dry_run),
        )

    def GetJobStatus(
        self, request: pb.GetJobStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetJobStatusResponse:
        call = begin(namespace=request.namespace, job_id=request.job_id)
        status = self.jobs.get_status(request.namespace, request.job_id, deadline=call.deadline)
        return pb.GetJobStatusResponse(status=to_proto_status(status))

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        call = begin(namespace=request.namespace)
        states = states_from_proto(request.states)
        if request.page_size < 0:
            raise InvalidArgumentError("page_size", f"must not be negative (got {request.page_size})")
        page = self.jobs.list_jobs(
            JobQuery(
                namespace=request.namespace,
                states=states,
                job_type=request.job_type,
                label_selector=request.label_selector,
                name=request.name,
                page_size=request.page_size,
                page_token=request.page_token,
                schedule=request.schedule,
                queue=request.queue,
            ),
            deadline=call.deadline,
        )
        return fit_page(page.jobs, page.next_page_token)

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        call = begin(namespace=request.namespace, job_id=request.job_id)
        status = self.jobs.cancel(request.namespace, request.job_id, deadline=call.deadline, by=call.who)
        log.info("job cancelled", state=status.state.value)
        return pb.CancelJobResponse(status=to_proto_status(status))

    def ResumeJob(self, request: pb.ResumeJobRequest, context: grpc.ServicerContext) -> pb.ResumeJobResponse:
        call = begin(namespace=request.namespace, job_id=request.job_id)
        status = self.jobs.resume(request.namespace, request.job_id, deadline=call.deadline, by=call.who)
        log.info("job resumed", state=status.state.value)
        return pb.ResumeJobResponse(status=to_proto_status(status))

    def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.ServicerContext
    ) -> pb.ListQueuesResponse:
        call = begin(namespace=request.namespace)
        namespace = self.jobs.resolve_namespace(request.namespace)
        queues, available = self.jobs.queues.list(namespace, deadline=call.deadline)
        allowed = call.grant.queues if call.grant is not None else None
        return pb.ListQueuesResponse(
            queues=[queue_to_proto(q) for q in queues if allowed is None or q.name in allowed],
            available=available,
        )


def _schedule_message(created: bool, dry_run: bool) -> str:
    if dry_run:
        return "dry run: the manifest was accepted by the API server; nothing was created"
    return "job created" if created else "a job for this request_id already exists; returning it"
