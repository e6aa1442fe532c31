"""The JobScheduler service: its RPCs by group, each group a servicer of its own, and the
table that answers each method of the .proto with the group that implements it.

| group | module |
|---|---|
| ScheduleJob, GetJobStatus, ListJobs, CancelJob, ResumeJob, ListQueues | jobscheduler.transport.jobs |
| WatchJob, WatchJobs, GetJobLogs | jobscheduler.transport.streams |
| *Schedule | jobscheduler.transport.schedules |
| *Template | jobscheduler.transport.templates |
| ListJobTypes | jobscheduler.transport.jobtypes |
| GetServiceStatus | jobscheduler.transport.servicestatus |

What every RPC shares (logging, metrics, authentication, stream bound, error mapping) is the
interceptor's: jobscheduler.transport.interceptors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from jobscheduler.app.joblogs import JobLogs
from jobscheduler.app.schedules import ScheduleService
from jobscheduler.app.service import JobService
from jobscheduler.app.servicestatus import ServiceHealth
from jobscheduler.app.templates import TemplateService
from jobscheduler.domain.registry import Registry
from jobscheduler.transport.jobs import JobsServicer
from jobscheduler.transport.jobtypes import JobTypesServicer
from jobscheduler.transport.schedules import SchedulesServicer
from jobscheduler.transport.servicestatus import ServiceStatusServicer
from jobscheduler.transport.streams import StreamsServicer
from jobscheduler.transport.templates import TemplatesServicer

# Each group by the attribute of JobSchedulerServicer that holds it.
GROUPS: dict[str, type] = {
    "jobs": JobsServicer,
    "streams": StreamsServicer,
    "schedule_rpcs": SchedulesServicer,
    "template_rpcs": TemplatesServicer,
    "job_types": JobTypesServicer,
    "service_status": ServiceStatusServicer,
}


class JobSchedulerServicer:
    """Every RPC of jobscheduler.JobScheduler. The use cases not given are made from `service`
    when first needed (a stand-in service in tests may lack what they need)."""

    def __init__(
        self,
        service: JobService,
        registry: Registry,
        *,
        schedules: ScheduleService | None = None,
        templates: TemplateService | None = None,
        job_logs: JobLogs | None = None,
        service_health: ServiceHealth | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self._schedules = schedules
        self.jobs = JobsServicer(service, registry, templates=templates)
        self.streams = StreamsServicer(service, job_logs=job_logs)
        self.job_types = JobTypesServicer(registry)
        self.service_status = ServiceStatusServicer(service_health)

    @functools.cached_property
    def schedule_rpcs(self) -> SchedulesServicer:
        schedules = self._schedules or ScheduleService(self.service.gateway, self.service)
        return SchedulesServicer(schedules, self.registry)

    @functools.cached_property
    def template_rpcs(self) -> TemplatesServicer:
        return TemplatesServicer(self.jobs.templates, self.registry)

    def method(self, name: str) -> Callable[..., Any]:
        """The behaviour of one RPC (for jobscheduler.transport.registration.add_service)."""
        [group] = [attr for attr, cls in GROUPS.items() if name in vars(cls)]

        def call(request: Any, context: Any) -> Any:
            return getattr(getattr(self, group), name)(request, context)

        return call
