"""The template RPCs: Create, Update, Get, List and Delete a template."""

from __future__ import annotations

import grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.templates import TemplateService
from jobscheduler.domain.errors import InvalidArgumentError, fields_under
from jobscheduler.domain.registry import Registry
from jobscheduler.transport.call import begin
from jobscheduler.transport.overlay import to_proto_template, to_template_draft


class TemplatesServicer:
    def __init__(self, templates: TemplateService, registry: Registry) -> None:
        self.templates = templates
        self.registry = registry

    def CreateTemplate(self, request: pb.CreateTemplateRequest, context: grpc.ServicerContext) -> pb.Template:
        spec = request.template
        call = begin(namespace=spec.namespace, template=spec.name)
        with fields_under("template"):
            draft = to_template_draft(spec, registry=self.registry)
            stored = self.templates.create(draft, author=call.caller, deadline=call.deadline)
        return to_proto_template(stored)

    def UpdateTemplate(self, request: pb.UpdateTemplateRequest, context: grpc.ServicerContext) -> pb.Template:
        spec = request.template
        call = begin(namespace=spec.namespace, template=spec.name)
        if request.expected_version < 0:
            raise InvalidArgumentError(
                "expected_version", f"must not be negative (got {request.expected_version})"
            )
        with fields_under("template"):
            draft = to_template_draft(spec, registry=self.registry)
            stored = self.templates.update(
                draft, expected_version=request.expected_version, author=call.caller, deadline=call.deadline
            )
        return to_proto_template(stored)

    def GetTemplate(self, request: pb.GetTemplateRequest, context: grpc.ServicerContext) -> pb.Template:
        call = begin(namespace=request.namespace, template=request.name)
        stored = self.templates.get(
            request.namespace, request.name, version=request.version, deadline=call.deadline
        )
        return to_proto_template(stored)

    def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.ServicerContext
    ) -> pb.ListTemplatesResponse:
        call = begin(namespace=request.namespace)
        stored = self.templates.list_templates(request.namespace, deadline=call.deadline)
        return pb.ListTemplatesResponse(templates=[to_proto_template(t, with_job=False) for t in stored])

    def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: grpc.ServicerContext
    ) -> pb.DeleteTemplateResponse:
        call = begin(namespace=request.namespace, template=request.name)
        self.templates.delete(request.namespace, request.name, deadline=call.deadline)
        return pb.DeleteTemplateResponse()
