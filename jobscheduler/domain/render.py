"""Turns a validated request into a complete batch/v1 Job manifest (a plain dict).

Pure: the same request, job id and settings always render the same manifest. Every pod it
renders satisfies PodSecurity `restricted`, whatever the job type contributes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError, RenderError
from jobscheduler.domain.models import (
    JOB_TYPE_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    NAME_LABEL,
    PENDING_TIMEOUT_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    SECRET_ENV_PENDING_ANNOTATION,
    TEMPLATE_LABEL,
    TEMPLATE_VERSION_LABEL,
    DependencyCondition,
)
from jobscheduler.domain.notify import (
    NOTIFY_ANNOTATION,
    NOTIFY_FINALIZER,
    NOTIFY_LABEL,
    NOTIFY_LABEL_VALUE,
    NotifySink,
    check_notify,
    encode_sinks,
)
from jobscheduler.domain.placement import Placement, check_placement, render_placement
from jobscheduler.domain.queueing import Queueing, check_queueing
from jobscheduler.domain.registry import JobType
from jobscheduler.domain.retry import RetryPolicy, check_retry, render_pod_failure_policy
from jobscheduler.domain.validation import (
    check_annotations,
    check_dns_label,
    check_env,
    check_labels,
    has_control,
    parse_quantity,
    shown,
)

REQUEST_HASH_ANNOTATION = "jobscheduler.io/request-hash"
# The UID the project's image runs as; restricted PodSecurity wants a non-root user.
WORKLOAD_UID = 10001
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 10
_ID_SPACE = len(_ID_ALPHABET) ** _ID_LENGTH
MAX_REQUEST_ID = 256
MAX_SECRET_ENV_BYTES = 64 * 1024  # a Secret may hold 1 MiB; env this large is a mistake
# What a job type may put in its container. Everything that touches the node or privileges
# (securityContext, ports with hostPort, volume mounts, ...) is the renderer's alone.
ALLOWED_CONTAINER_KEYS = frozenset(
    {"name", "image", "imagePullPolicy", "command", "args", "env", "workingDir"}
)
# What a job type may put in the Job's spec beside the pod: how many pods, and indexed
# completion. Retries, deadlines, retention and suspension stay the request's and the
# renderer's, whatever the type.
_JOB_SPEC_COUNTS = ("parallelism", "completions", "backoffLimitPerIndex", "maxFailedIndexes")
ALLOWED_JOB_SPEC_KEYS = frozenset({*_JOB_SPEC_COUNTS, "completionMode"})
COMPLETION_MODES = ("NonIndexed", "Indexed")


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A ScheduleJob request in domain terms; params are the job type's own parameters."""

    job_type: str
    params: Mapping[str, Any]
    name: str = ""
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    backoff_limit: int | None = None
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    request_id: str = ""
    suspend: bool = False
    secret_env: Mapping[str, str] = field(default_factory=dict)
    """Environment stored in a Secret owned by the Job and referenced by name: the values never
    appear in the Job, its annotations, a status or a log line."""
    params_field: str = ""
    """Where params came from when not the type's own request field (`generic_job.params`):
    errors about them name it."""
    after: tuple[str, ...] = ()
    """Job ids in the same namespace this job waits for (jobscheduler.domain.dependencies)."""
    after_condition: DependencyCondition | None = None
    """When it is released: None (not given) is SUCCEEDED."""
    retry: RetryPolicy | None = None
    """Retry rules, rendered as the Job's podFailurePolicy (jobscheduler.domain.retry); None: every pod
    failure counts towards backoff_limit."""
    pending_timeout_seconds: int | None = None
    """How long a pod may stay stuck pending before the service fails the job (jobscheduler.control.pending);
    None: DEFAULT_PENDING_TIMEOUT_SECONDS, 0: never."""
    template: str = ""
    """The template the request was made from (jobscheduler.app.templates), and its version: labels
    on the Job and its pods."""
    template_version: int = 0
    placement: Placement = field(default_factory=Placement)
    """Which nodes its pods may run on and their priority class (jobscheduler.domain.placement)."""
    queueing: Queueing = field(default_factory=Queueing)
    """The Kueue LocalQueue it waits in and its WorkloadPriorityClass (jobscheduler.domain.queueing);
    written on the manifest by render_queueing, once every hold is on it."""
    notify: tuple[NotifySink, ...] = ()
    """Completion notifications (jobscheduler.domain.notify): the sinks and the states each reports."""
    fingerprint: str = ""
    """When set, the request_id fingerprint (request_hash) to use instead of one of this request:
    a request made from a template is fingerprinted as the caller sent it, so a retry still
    finds its job after the template has changed."""


def new_job_id() -> str:
    """A fresh Job name: `job-` and ten random lower-case letters and digits, uniformly drawn
    (one draw from the OS's random source, not one per character)."""
    number = secrets.randbelow(_ID_SPACE)
    letters = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[digit])
    return "job-" + "".join(letters)


def job_id_for_request(namespace: str, request_id: str) -> str:
    """The Job name a request_id always maps to, so retries on any replica meet one Job."""
    digest = hashlib.sha256(f"{namespace}\n{request_id}".encode()).digest()
    return "job-" + base64.b32encode(digest).decode().lower()[:16]


def request_hash(request: JobRequest, params: Mapping[str, Any]) -> str:
    """Fingerprint of what a request asks for; a reused request_id must ask for the same."""
    if request.fingerprint:
        return request.fingerprint
    # Secret values stay out: this hash is stored on the Job, readable by anyone who reads Jobs.
    body = _plain(request) | {"params": params, "secret_env": sorted(request.secret_env)}
    # The same job asked for through its own field or through generic_job is the same job.
    del body["params_field"]
    if not request.after and request.after_condition is None:
        del body["after"], body["after_condition"]  # as before dependencies existed: fingerprints still match
    else:
        body["after_condition"] = (request.after_condition or DependencyCondition.SUCCEEDED).value
    for key in ("retry", "pending_timeout_seconds"):
        if body[key] is None:
            del body[key]  # unset, as before these fields existed: earlier fingerprints still match
    if request.placement.is_empty():
        del body["placement"]  # likewise
    if request.queueing.is_empty():
        del body["queueing"]  # likewise
    if not request.notify:
        del body["notify"]  # likewise
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """What dataclasses.asdict makes of a request, for JSON, without its deep copies (they cost
    most of a ScheduleJob's hashing): dataclasses as dicts, all the way down. The hash must
    not change: it is stored on Jobs and compared when a request_id is reused."""
    if type(value) in _SCALARS:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def check_request(request: JobRequest, settings: Settings) -> JobRequest:
    """Validates the fields every job type shares; returns the request with defaults applied."""
    namespace = request.namespace or settings.namespace
    check_dns_label("namespace", namespace, what="namespace name")
    name = (request.name or request.job_type).strip().lower()
    check_dns_label("name", name, what="job name (it must become a DNS-1123 label)")
    check_labels("labels", request.labels)
    check_annotations("annotations", request.annotations)
    if len(request.request_id) > MAX_REQUEST_ID or has_control(request.request_id, c1=True):
        raise InvalidArgumentError("request_id", f"must be at most {MAX_REQUEST_ID} printable characters")
    for field_name, value, low in (
        ("backoff_limit", request.backoff_limit, 0),
        ("active_deadline_seconds", request.active_deadline_seconds, 1),
        ("ttl_seconds_after_finished", request.ttl_seconds_after_finished, 0),
        ("pending_timeout_seconds", request.pending_timeout_seconds, 0),
    ):
        if value is not None and not low <= value <= 2**31 - 1:
            raise InvalidArgumentError(field_name, f"must be between {low} and {2**31 - 1} (got {value})")
    check_env("secret_env", request.secret_env)
    secret_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in request.secret_env.items())
    if secret_bytes > MAX_SECRET_ENV_BYTES:
        raise InvalidArgumentError(
            "secret_env", f"names and values total {secret_bytes} bytes; at most {MAX_SECRET_ENV_BYTES}"
        )
    if request.backoff_limit is not None and request.backoff_limit > 1000:
        raise InvalidArgumentError("backoff_limit", f"must be at most 1000 (got {request.backoff_limit})")
    return JobRequest(
        job_type=request.job_type,
        params=request.params,
        name=name,
        namespace=namespace,
        labels=dict(request.labels),
        annotations=dict(request.annotations),
        resources=_resources(request.resources, settings),
        backoff_limit=request.backoff_limit,
        active_deadline_seconds=request.active_deadline_seconds,
        ttl_seconds_after_finished=(
            request.ttl_seconds_after_finished
            if request.ttl_seconds_after_finished is not None
            else settings.default_ttl_seconds_after_finished
        ),
        request_id=request.request_id,
        suspend=request.suspend,
        secret_env=dict(sorted(request.secret_env.items())),
        params_field=request.params_field,
        after=tuple(request.after),
        after_condition=request.after_condition,
        retry=check_retry(request.retry) if request.retry is not None else None,
        pending_timeout_seconds=request.pending_timeout_seconds,
        template=request.template,
        template_version=request.template_version,
        placement=check_placement(request.placement),
        queueing=check_queueing(request.queueing, default_queue=settings.default_queue),
        notify=check_notify(request.notify, allowed=settings.allowed_notify_urls),
        fingerprint=request.fingerprint,
    )


def secret_env_name(job_id: str) -> str:
    """The Secret holding a job's secret_env."""
    return f"{job_id}-env"


def render_secret_env(request: JobRequest, job: Mapping[str, Any]) -> dict[str, Any]:
    """The Secret with the request's secret_env, owned by the created Job so that Kubernetes
    garbage-collects it with the Job (TTL retention included)."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_env_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": dict(request.secret_env),
    }


def _resources(res: Resources, settings: Settings) -> Resources:
    def quantity(field_name: str, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        try:
            amount = parse_quantity(value)
        except ValueError as e:
            raise InvalidArgumentError(f"resources.{field_name}", str(e)) from None
        if amount <= 0:
            raise InvalidArgumentError(f"resources.{field_name}", f"{shown(value)} must be greater than zero")
        return value

    out = {}
    for kind, default in (("cpu", settings.default_cpu_request), ("memory", settings.default_memory_request)):
        request = quantity(f"{kind}_request", getattr(res, f"{kind}_request"))
        limit = quantity(f"{kind}_limit", getattr(res, f"{kind}_limit"))
        if not request:
            # As Kubernetes does, a lone limit also serves as the request when it is the smaller.
            request = limit if limit and parse_quantity(limit) < parse_quantity(default) else default
        if limit and parse_quantity(limit) < parse_quantity(request):
            raise InvalidArgumentError(
                f"resources.{kind}_limit", f"limit {shown(limit)} is less than the request {shown(request)}"
            )
        out[f"{kind}_request"], out[f"{kind}_limit"] = request, limit
    return Resources(**out)


def _checked_job_spec(type_name: str, job_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The type's Job spec fields, refused unless allowed and well-typed (a bug in the type)."""
    extra = set(job_spec) - ALLOWED_JOB_SPEC_KEYS
    if extra:
        raise RenderError(f"job type {type_name!r} rendered Job spec fields it may not set: {sorted(extra)}")
    for key in _JOB_SPEC_COUNTS:
        value = job_spec.get(key)
        if key in job_spec and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1
        ):
            raise RenderError(f"job type {type_name!r} rendered {key}={value!r}; expected a count")
    mode = job_spec.get("completionMode", "NonIndexed")
    if mode not in COMPLETION_MODES:
        raise RenderError(f"job type {type_name!r} rendered completionMode={mode!r}")
    return {key: job_spec[key] for key in sorted(job_spec)}


def render_job(
    request: JobRequest,
    *,
    job_type: JobType,
    params: Mapping[str, Any],
    job_id: str,
    settings: Settings,
) -> dict[str, Any]:
    """The Job manifest for a request already passed through check_request and the type's validate."""
    workload = job_type.render(params, job_id=job_id, settings=settings)
    extra = set(workload.container) - ALLOWED_CONTAINER_KEYS
    if extra:
        raise RenderError(
            f"job type {job_type.name!r} rendered container fields it may not set: {sorted(extra)}"
        )
    job_spec = _checked_job_spec(job_type.name, workload.job_spec)
    labels = {
        **request.labels,
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        JOB_TYPE_LABEL: job_type.name,
        NAME_LABEL: request.name,
    }
    if request.template:
        labels[TEMPLATE_LABEL] = request.template
        labels[TEMPLATE_VERSION_LABEL] = str(request.template_version)
    annotations = {**workload.annotations, REQUEST_HASH_ANNOTATION: request_hash(request, params)}
    if request.request_id:
        annotations[REQUEST_ID_ANNOTATION] = request.request_id
    res = request.resources
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
    }
    limits = {k: v for k, v in (("cpu", res.cpu_limit), ("memory", res.memory_limit)) if v}
    if limits:
        resources["limits"] = limits
    container_env = list(workload.container.get("env", []))
    taken = {e["name"] for e in container_env}
    for name in request.secret_env:
        if name in taken:
            raise InvalidArgumentError(
                "secret_env", f"{name!r} is already set by the job type or its env; use another name"
            )
        ref = {"name": secret_env_name(job_id), "key": name}
        container_env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    container = {
        **workload.container,
        **({"env": container_env} if container_env else {}),
        "resources": resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    spec: dict[str, Any] = {}
    if request.backoff_limit is not None:
        spec["backoffLimit"] = request.backoff_limit
    elif "backoffLimitPerIndex" not in job_spec:
        spec["backoffLimit"] = 0
    # else: left to Kubernetes, which then defaults it to the largest int32, so that only the
    # per-index limit fails indexes; a 0 here would fail the whole Job at its first failure.
    spec.update(job_spec)
    spec["template"] = {
        "metadata": {"labels": dict(labels), "annotations": dict(request.annotations)},
        "spec": {
            "restartPolicy": "Never",
            # Workloads never call the Kubernetes API: no token in the pod.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": WORKLOAD_UID,
                "runAsGroup": WORKLOAD_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            **render_placement(request.placement),
        },
    }
    if request.suspend or request.secret_env:
        # With secret_env the Job waits, suspended, until its Secret is stored (JobService).
        spec["suspend"] = True
    if request.secret_env:
        annotations[SECRET_ENV_PENDING_ANNOTATION] = "true"
    if request.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = request.active_deadline_seconds
    if request.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = request.ttl_seconds_after_finished
    if request.retry is not None:
        policy = render_pod_failure_policy(
            request.retry,
            container_names=[c["name"] for c in spec["template"]["spec"]["containers"]],
            per_index="backoffLimitPerIndex" in job_spec,
        )
        if policy is not None:
            spec["podFailurePolicy"] = policy
    pending_timeout = (
        request.pending_timeout_seconds
        if request.pending_timeout_seconds is not None
        else settings.default_pending_timeout_seconds
    )
    if pending_timeout:
        annotations[PENDING_TIMEOUT_ANNOTATION] = str(pending_timeout)
    metadata: dict[str, Any] = {
        "name": job_id,
        "namespace": request.namespace,
        "labels": labels,
        "annotations": annotations,
    }
    if request.notify:
        # The leader's sweep selects on the label; the finalizer keeps the Job (TTL, a delete)
        # until every due notification is delivered or given up (jobscheduler.control.notify).
        annotations[NOTIFY_ANNOTATION] = encode_sinks(request.notify)
        labels[NOTIFY_LABEL] = NOTIFY_LABEL_VALUE
        metadata["finalizers"] = [NOTIFY_FINALIZER]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
