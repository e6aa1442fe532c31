"""Templates in protobuf terms: how a template's stored job and a ScheduleJob request combine,
what a template's job may not set, and templates between proto and domain.

The override rules, applied to the request the caller sent over the template's job:
- a field the caller did not set keeps the template's value; one it set replaces it (a plain
  proto3 scalar counts as set when it is not zero or empty, an `optional` one when present);
- maps merge key by key, the caller's entry winning; messages merge field by field by these same
  rules; generic_job.params (a Struct) merges its objects key by key;
- repeated fields (lists) are replaced as a whole: a list has no keys to merge by;
- the job type (a oneof): the caller may leave it out or set the template's member, which then
  merges; another member is refused, naming it;
- before all that, the `template_unset` paths are removed from the template's job, for what an
  override cannot express (suspend=false, dropping a label).
A request made from a template is fingerprinted (request_id reuse) as the caller sent it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.templates import TemplateDraft, TemplateVersion
from jobscheduler.domain.errors import FailedPreconditionError, InvalidArgumentError, fields_under
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.render import JobRequest
from jobscheduler.transport.convert import job_request_from_proto, timestamp

# The ScheduleJobRequest fields that pick and adjust a template.
TEMPLATE_FIELDS = ("template", "template_version", "template_unset")
# Fields a template's job may not set, and why.
NOT_IN_TEMPLATE = {
    "request_id": "each job made from a template is a job of its own; give request_id to ScheduleJob",
    "dry_run": "give dry_run to ScheduleJob",
    "secret_env": (
        "a template is stored in a ConfigMap, readable by whoever reads ConfigMaps; give secret_env "
        "to ScheduleJob"
    ),
    **dict.fromkeys(TEMPLATE_FIELDS, "a template cannot start from another template"),
}
STRUCT = Struct.DESCRIPTOR.full_name


def is_templated(request: pb.ScheduleJobRequest) -> bool:
    """Whether a ScheduleJob request names a template (or a template field)."""
    return bool(request.template or request.template_version or request.template_unset)


def _set_fields(message: Message) -> set[str]:
    return {field.name for field, _ in message.ListFields()}


def check_template_job(job: pb.ScheduleJobRequest) -> None:
    """Refuses the fields a template's job may not set (InvalidArgumentError naming the field)."""
    for name in sorted(_set_fields(job) & NOT_IN_TEMPLATE.keys()):
        raise InvalidArgumentError(name, f"is not allowed in a template: {NOT_IN_TEMPLATE[name]}")


def check_not_templated(job: pb.ScheduleJobRequest) -> None:
    """For requests that cannot start from a template (a schedule's job)."""
    for name in TEMPLATE_FIELDS:
        if name in _set_fields(job):
            raise InvalidArgumentError(
                name, "is not supported here: give the whole job (GetTemplate shows a template's job)"
            )


# -- merging ---------------------------------------------------------------------------------------


def apply_template(
    base: pb.ScheduleJobRequest, request: pb.ScheduleJobRequest, *, template: str
) -> pb.ScheduleJobRequest:
    """The request to schedule: `request` over the template's job `base` (neither is changed).
    The job's name defaults to the template's name."""
    merged = pb.ScheduleJobRequest()
    merged.CopyFrom(base)
    unset_paths(merged, request.template_unset)
    overrides = pb.ScheduleJobRequest()
    overrides.CopyFrom(request)
    overrides.ClearField("template")
    overrides.ClearField("template_version")
    overrides.ClearField("template_unset")
    oneof = merged.WhichOneof("job_type")
    wanted = overrides.WhichOneof("job_type")
    if oneof is not None and wanted is not None and wanted != oneof:
        raise InvalidArgumentError(
            wanted,
            f"template {template!r} runs a {oneof}: a request from it may set {oneof} (to override "
            f"its fields) or no job type, not {wanted}",
        )
    if (
        oneof == wanted == "generic_job"
        and overrides.generic_job.type
        and overrides.generic_job.type != merged.generic_job.type
    ):
        raise InvalidArgumentError(
            "generic_job.type",
            f"template {template!r} runs type {merged.generic_job.type!r}: a request from it may leave "
            f"the type out or repeat it, not change it to {overrides.generic_job.type!r}",
        )
    merge_into(merged, overrides)
    if not merged.name:
        merged.name = template
    return merged


def merge_into(base: Message, override: Message) -> None:
    """Merges `override` into `base` in place by the override rules (see the module's doc)."""
    for field, value in override.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(base, field.name)
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, entry in value.items():
                    target[key].CopyFrom(entry)
            else:
                target.update(value)
        elif field.is_repeated:
            base.ClearField(field.name)
            getattr(base, field.name).extend(value)
        elif field.message_type is not None:
            target = getattr(base, field.name)
            target.SetInParent()
            if field.message_type.full_name == STRUCT:
                merge_struct(target, value)
            elif field.message_type.full_name.startswith("google.protobuf."):
                target.CopyFrom(value)  # Timestamp, Duration, wrappers: one value each
            else:
                merge_into(target, value)
        else:
            setattr(base, field.name, value)


def merge_struct(base: Struct, override: Struct) -> None:
    """JSON objects merge key by key, recursively; any other value replaces."""
    for key, value in override.fields.items():
        if (
            key in base.fields
            and base.fields[key].WhichOneof("kind") == "struct_value"
            and value.WhichOneof("kind") == "struct_value"
        ):
            merge_struct(base.fields[key].struct_value, value.struct_value)
        else:
            base.fields[key].CopyFrom(value)


def unset_paths(message: pb.ScheduleJobRequest, paths: Sequence[str]) -> None:
    """Removes each path from the message: a field ("suspend", "timer_job.env"), a map key
    ("labels.team": everything after the map's name is the key, dots included) or a Struct key
    ("generic_job.params.verbose"). A path the message does not set is no error."""
    for i, path in enumerate(paths):
        with fields_under(f"template_unset[{i}]"):
            _unset(message, path)


def _unset(message: Message, path: str) -> None:
    head, _, rest = path.partition(".")
    field = message.DESCRIPTOR.fields_by_name.get(head)
    if field is None:
        known = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
        raise InvalidArgumentError("", f"{path!r}: {message.DESCRIPTOR.name} has no field {head!r} ({known})")
    if head in TEMPLATE_FIELDS or head in NOT_IN_TEMPLATE:
        raise InvalidArgumentError("", f"{path!r}: a template never sets {head}")
    if not rest:
        message.ClearField(head)
        return
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    if is_map:
        container = getattr(message, head)
        if rest in container:
            del container[rest]
    elif field.message_type is not None and field.message_type.full_name == STRUCT:
        if message.HasField(head) and rest in getattr(message, head).fields:
            del getattr(message, head).fields[rest]
    elif field.message_type is not None and not field.is_repeated:
        if message.HasField(head):
            _unset(getattr(message, head), rest)
    else:
        raise InvalidArgumentError("", f"{path!r}: {head} has no fields or keys to go into")


def fingerprint(request: pb.ScheduleJobRequest) -> str:
    """What a request made from a template asks for, as the caller sent it (template name,
    version and overrides): the request_id fingerprint, which must not change when the template
    does. Secret values stay out, as in render.request_hash."""
    sent = pb.ScheduleJobRequest()
    sent.CopyFrom(request)
    sent.ClearField("dry_run")
    for key in list(sent.secret_env):
        sent.secret_env[key] = ""
    return "t" + hashlib.sha256(sent.SerializeToString(deterministic=True)).hexdigest()[:31]


def from_template(
    stored: TemplateVersion, request: pb.ScheduleJobRequest, *, registry: Registry
) -> JobRequest:
    """The domain request a ScheduleJob call naming a template asks for: the request laid over
    the template's job, then decoded."""
    merged = apply_template(job_from_json(stored), request, template=stored.name)
    job = job_request_from_proto(merged, registry)
    return replace(
        job, template=stored.name, template_version=stored.version, fingerprint=fingerprint(request)
    )


# -- proto ⇄ domain --------------------------------------------------------------------------------


def job_to_json(job: pb.ScheduleJobRequest) -> dict[str, Any]:
    return MessageToDict(job, preserving_proto_field_name=True)


def job_from_json(stored: TemplateVersion) -> pb.ScheduleJobRequest:
    job = pb.ScheduleJobRequest()
    try:
        ParseDict(dict(stored.body), job)
    except ParseError as e:
        # Unknown fields are not skipped: a job without them would not be the job stored.
        raise FailedPreconditionError(
            f"version {stored.version} of template {stored.name!r} cannot be read by this replica "
            f"({str(e)[:200]}); was it stored by a newer jobscheduler?"
        ) from None
    return job


def to_template_draft(spec: pb.Template, *, registry: Registry) -> TemplateDraft:
    with fields_under("job"):
        check_template_job(spec.job)
        job = (
            job_request_from_proto(spec.job, registry)
            if spec.HasField("job")
            else JobRequest(job_type="", params={})
        )
    return TemplateDraft(
        name=spec.name,
        namespace=spec.namespace,
        description=spec.description,
        job=job,
        body=job_to_json(spec.job),
    )


def to_proto_template(version: TemplateVersion, *, with_job: bool = True) -> pb.Template:
    out = pb.Template(
        name=version.name,
        namespace=version.namespace,
        description=version.description,
        version=version.version,
        latest_version=version.latest_version,
        versions=list(version.versions),
        updated_by=version.updated_by,
        job_type=version.job_type,
        created_at=timestamp(version.created_at),
        updated_at=timestamp(version.updated_at),
    )
    if with_job:
        out.job.CopyFrom(job_from_json(version))
    return out
