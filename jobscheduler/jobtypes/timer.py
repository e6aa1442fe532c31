"""The Timer job type: a pod that waits a number of seconds, then reports to a control plane.

The workload itself is jobscheduler.workloads.timer; this handler validates a request's
timer parameters and renders the container that runs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from jobscheduler.domain.config import LOG_LEVELS, Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import Parameter, Workload
from jobscheduler.domain.validation import check_env, check_image, has_control, has_whitespace, shown

# Variables the workload reads; a caller's env may not override them.
RESERVED_ENV = frozenset(
    {
        "TIMER_NAME",
        "TIMER_DURATION_SECONDS",
        "CONTROL_PLANE_ENDPOINT",
        "LOG_LEVEL",
        "JOB_ID",
        "JOB_NAMESPACE",
        "POD_NAME",
    }
)
JOB_NAME_FIELD = "metadata.labels['batch.kubernetes.io/job-name']"
# Longer URLs are refused by many HTTP servers anyway; the endpoint is also stored in the Job's
# annotations, which Kubernetes caps at 256 KiB in all.
MAX_ENDPOINT_LENGTH = 2048
# Kubernetes caps env only through the object's size: past a few MiB the API server answers 413
# and etcd refuses the write. Names and values together, in UTF-8 bytes.
MAX_ENV_BYTES = 64 * 1024


def _text(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgumentError(key, "must be a string")
    if has_control(value):
        raise InvalidArgumentError(key, "must not contain control characters")
    return value.strip()


def _is_http_url(value: str) -> bool:
    """An http(s) URL with a host and, if any, a port in 1-65535, and no whitespace."""
    if has_whitespace(value):
        return False
    try:
        url = urlsplit(value)  # raises ValueError on a bad IPv6 literal ("http://[::1")
        port = url.port  # raises ValueError when out of range or not a number
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.hostname) and port != 0


class TimerJobType:
    name = "timer"
    request_field = "timer_job"
    description = "Waits duration_seconds, then POSTs a completion report to control_plane_endpoint."
    parameters = (
        Parameter(
            "duration_seconds",
            "integer",
            "seconds to wait, 1 … MAX_TIMER_DURATION_SECONDS (server setting, default 86400)",
            required=True,
        ),
        Parameter("timer_name", "string", "the timer's name, in the completion report", required=True),
        Parameter(
            "control_plane_endpoint",
            "string",
            "http:// or https:// URL the completion report is POSTed to "
            f"(at most {MAX_ENDPOINT_LENGTH} characters)",
            required=True,
        ),
        Parameter("image", "string", "container image of the timer workload", default="TIMER_IMAGE"),
        Parameter("log_level", "string", ", ".join(LOG_LEVELS), default="info"),
        Parameter(
            "env",
            "map<string,string>",
            f"extra environment for the container (at most {MAX_ENV_BYTES // 1024} KiB)",
        ),
    )

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:
        duration = params.get("duration_seconds", 0)
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise InvalidArgumentError("duration_seconds", "must be an integer number of seconds")
        if duration <= 0:
            raise InvalidArgumentError("duration_seconds", f"must be greater than 0 (got {duration})")
        if duration > settings.max_timer_duration_seconds:
            raise InvalidArgumentError(
                "duration_seconds",
                f"{duration} exceeds the maximum of {settings.max_timer_duration_seconds} seconds "
                "(MAX_TIMER_DURATION_SECONDS)",
            )
        timer_name = _text(params, "timer_name")
        if not timer_name:
            raise InvalidArgumentError("timer_name", "is required")
        if len(timer_name) > 253:
            raise InvalidArgumentError("timer_name", "must be at most 253 characters")
        endpoint = _text(params, "control_plane_endpoint")
        if not endpoint:
            raise InvalidArgumentError("control_plane_endpoint", "is required (an http:// or https:// URL)")
        if len(endpoint) > MAX_ENDPOINT_LENGTH:
            raise InvalidArgumentError(
                "control_plane_endpoint",
                f"must be at most {MAX_ENDPOINT_LENGTH} characters (got {len(endpoint)})",
            )
        if not _is_http_url(endpoint):
            raise InvalidArgumentError(
                "control_plane_endpoint", f"{shown(endpoint)} is not an http:// or https:// URL with a host"
            )
        image = _text(params, "image") or settings.timer_image
        check_image("image", image)
        log_level = (_text(params, "log_level") or "info").lower()
        if log_level not in LOG_LEVELS:
            raise InvalidArgumentError(
                "log_level", f"{shown(log_level)}: expected one of {', '.join(LOG_LEVELS)}"
            )
        env = params.get("env") or {}
        if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
            raise InvalidArgumentError("env", "must map names to string values")
        check_env("env", env, reserved=RESERVED_ENV)
        env_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
        if env_bytes > MAX_ENV_BYTES:
            raise InvalidArgumentError(
                "env", f"names and values total {env_bytes} bytes; at most {MAX_ENV_BYTES}"
            )
        return {
            "duration_seconds": duration,
            "timer_name": timer_name,
            "control_plane_endpoint": endpoint,
            "image": image,
            "log_level": log_level,
            "env": dict(sorted(env.items())),
        }

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        env: list[dict[str, Any]] = [
            {"name": "TIMER_NAME", "value": params["timer_name"]},
            {"name": "TIMER_DURATION_SECONDS", "value": str(params["duration_seconds"])},
            {"name": "CONTROL_PLANE_ENDPOINT", "value": params["control_plane_endpoint"]},
            {"name": "LOG_LEVEL", "value": params["log_level"]},
            # From the pod's job-name label, not job_id: a schedule's runs share one template
            # and each Job gets its own name.
            {"name": "JOB_ID", "valueFrom": {"fieldRef": {"fieldPath": JOB_NAME_FIELD}}},
            {"name": "JOB_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
        env += [{"name": k, "value": v} for k, v in params["env"].items()]
        container: dict[str, Any] = {"name": "timer", "image": params["image"], "env": env}
        if settings.timer_command:
            container["command"] = list(settings.timer_command)
        # Reported back by GetJobStatus/ListJobs without reading the pod spec. The caller's env
        # is left out on purpose: it may hold secrets.
        reported = {k: params[k] for k in ("timer_name", "duration_seconds", "control_plane_endpoint")}
        return Workload(
            container=container,
            annotations={"jobscheduler.io/parameters": json.dumps(reported, sort_keys=True)},
        )
