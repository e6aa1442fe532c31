"""ListJobTypes: the registered job types, with their request field and parameters."""

from __future__ import annotations

import grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.errors import NotFoundError
from jobscheduler.domain.registry import Registry
from jobscheduler.transport.call import begin
from jobscheduler.transport.convert import job_type_to_proto


class JobTypesServicer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def ListJobTypes(
        self, request: pb.ListJobTypesRequest, context: grpc.ServicerContext
    ) -> pb.ListJobTypesResponse:
        begin()
        types = self.registry.types()
        if request.name:
            types = [t for t in types if t.name == request.name]
            if not types:
                raise NotFoundError(
                    f"no job type {request.name!r}; registered: {', '.join(self.registry.names())}"
                )
        return pb.ListJobTypesResponse(job_types=[job_type_to_proto(t) for t in types])
