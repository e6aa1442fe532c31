"""The streaming RPCs: WatchJob, WatchJobs and GetJobLogs. Each open stream holds a server
thread; the interceptor bounds how many are open at once (MAX_WATCH_STREAMS)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.joblogs import JobLogs, LogQuery
from jobscheduler.app.service import JobService
from jobscheduler.transport.call import begin
from jobscheduler.transport.convert import states_from_proto, to_proto_event


class StreamsServicer:
    def __init__(self, jobs: JobService, *, job_logs: JobLogs | None = None) -> None:
        self.jobs = jobs
        self._job_logs = job_logs

    @property
    def job_logs(self) -> JobLogs:
        if self._job_logs is None:
            self._job_logs = JobLogs(self.jobs.gateway, self.jobs)
        return self._job_logs

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        begin(namespace=request.namespace, job_id=request.job_id)
        for event in self.jobs.watch.job(request.namespace, request.job_id, alive=context.is_active):
            yield to_proto_event(event)

    def WatchJobs(self, request: pb.WatchJobsRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        begin(namespace=request.namespace)
        events = self.jobs.watch.jobs(
            request.namespace,
            job_type=request.job_type,
            label_selector=request.label_selector,
            states=states_from_proto(request.states),
            initial=not request.skip_initial,
            alive=context.is_active,
            queue=request.queue,
        )
        for event in events:
            yield to_proto_event(event)

    def GetJobLogs(
        self, request: pb.GetJobLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.LogChunk]:
        call = begin(namespace=request.namespace, job_id=request.job_id)
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
        for chunk in self.job_logs.stream(query, alive=context.is_active, deadline=call.deadline):
            yield pb.LogChunk(pod=chunk.pod, container=chunk.container, lines=chunk.lines)
