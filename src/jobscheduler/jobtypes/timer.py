"""The Timer job type: a pod that waits a number of seconds, then reports to a control plane.

The workload itself is jobscheduler.workloads.timer; this handler validates a request's
timer parameters and renders the container that runs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from jobscheduler.config import LOG_LEVELS, Settings
from jobscheduler.errors import InvalidArgumentError
from jobscheduler.registry import Workload
from jobscheduler.validation import check_env

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


def _text(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgumentError(key, "must be a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgumentError(key, "must not contain control characters")
    return value.strip()


class TimerJobType:
    name = "timer"
    request_field = "timer_job"
    description = "Waits duration_seconds, then POSTs a completion report to control_plane_endpoint."

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
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgumentError(
                "control_plane_endpoint", f"{endpoint!r} is not an http:// or https:// URL with a host"
            )
        image = _text(params, "image") or settings.timer_image
        if len(image) > 512 or any(c.isspace() for c in image):
            raise InvalidArgumentError("image", f"{image!r} is not an image reference")
        log_level = (_text(params, "log_level") or "info").lower()
        if log_level not in LOG_LEVELS:
            raise InvalidArgumentError("log_level", f"{log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        env = params.get("env") or {}
        if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
            raise InvalidArgumentError("env", "must map names to string values")
        check_env("env", env, reserved=RESERVED_ENV)
        return {
            "duration_seconds": duration,
            "timer_name": timer_name,
            "control_plane_endpoint": endpoint,
            "image": image,
            "log_level": log_level,
            "env": dict(sorted(env.items())),
        }

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:
        env: list[dict[str, Any]] = [
            {"name": "TIMER_NAME", "value": params["timer_name"]},
            {"name": "TIMER_DURATION_SECONDS", "value": str(params["duration_seconds"])},
            {"name": "CONTROL_PLANE_ENDPOINT", "value": params["control_plane_endpoint"]},
            {"name": "LOG_LEVEL", "value": params["log_level"]},
            {"name": "JOB_ID", "value": job_id},
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
