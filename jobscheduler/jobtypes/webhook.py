"""The webhook job type: one HTTP request made from inside the cluster by the project's own
`jobscheduler-webhook` workload (docs/workloads.md), retried with backoff while the failure
looks temporary.

The parameters become the workload's WEBHOOK_* environment, and are checked by the workload's
own configuration reader, so the service accepts exactly what the pod will.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import Parameter, Workload
from jobscheduler.jobtypes import params as p
from jobscheduler.workloads import webhook as workload
from jobscheduler.workloads._common import WorkloadConfigError
from jobscheduler.workloads._env import url_origin

COMMAND = ("jobscheduler-webhook",)
MAX_ATTEMPTS = 100
MAX_SECONDS = 3600.0
MAX_BODY_BYTES = 64 * 1024
# Workload variable -> parameter, for naming the parameter in the workload's own complaints.
VARIABLES = {
    "WEBHOOK_URL": "url",
    "WEBHOOK_METHOD": "method",
    "WEBHOOK_HEADERS": "headers",
    "WEBHOOK_BODY": "body",
    "WEBHOOK_EXPECTED_STATUS": "expected_status",
    "WEBHOOK_TIMEOUT_SECONDS": "timeout_seconds",
    "WEBHOOK_ATTEMPTS": "attempts",
    "WEBHOOK_BACKOFF_SECONDS": "backoff_seconds",
    "WEBHOOK_MAX_BACKOFF_SECONDS": "max_backoff_seconds",
}


def config_error(e: WorkloadConfigError, variables: Mapping[str, str]) -> InvalidArgumentError:
    """A workload's WorkloadConfigError ("WEBHOOK_ATTEMPTS='0' is invalid; ...") as the request field's
    error ("attempts: '0' is invalid; ...")."""
    text = str(e)[len(e.variable) :]
    detail = text[1:] if text.startswith("=") else text.lstrip()
    base, bracket, rest = e.variable.partition("[")
    return InvalidArgumentError(variables.get(base, base.lower()) + bracket + rest, detail)


class WebhookJobType:
    name = "webhook"
    request_field = "webhook_job"
    description = (
        "Makes one HTTP request from inside the cluster (jobscheduler-webhook), retrying with "
        "exponential backoff while the failure looks temporary; fails on any other answer."
    )
    parameters = (
        Parameter(
            "url",
            "string",
            "http:// or https:// URL, without user or password; stored in the Job (only its origin "
            "is reported and logged)",
            required=True,
        ),
        Parameter("method", "string", f"one of {', '.join(workload.METHODS)}", default="POST"),
        Parameter(
            "headers",
            "map<string,string>",
            "request headers; values are stored in the Job: for credentials leave this empty and pass "
            "WEBHOOK_HEADERS (a JSON object) in the request's secret_env",
        ),
        Parameter(
            "body",
            "string",
            f"request body, sent as UTF-8 (at most {MAX_BODY_BYTES // 1024} KiB)",
            default="no body",
        ),
        Parameter(
            "expected_status",
            "string",
            "status codes and ranges that count as success, e.g. 200-299,304",
            default="200-299",
        ),
        Parameter(
            "timeout_seconds", "number", f"timeout of one attempt (at most {MAX_SECONDS:g})", default="10"
        ),
        Parameter(
            "attempts", "integer", f"attempts in all, the first included (1 … {MAX_ATTEMPTS})", default="5"
        ),
        Parameter(
            "backoff_seconds",
            "number",
            "pause before the first retry, doubled for each further one (0 or more)",
            default="1",
        ),
        Parameter(
            "max_backoff_seconds",
            "number",
            "cap on each pause, a server's Retry-After included",
            default="30",
        ),
    )

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        url = p.text(params, "url", required=True)
        method = p.text(params, "method", max_length=16).upper() or "POST"
        headers = params.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
            raise InvalidArgumentError("headers", "must map header names to string values")
        body = params.get("body") or ""
        if not isinstance(body, str):
            raise InvalidArgumentError("body", "must be a string")
        if len(body.encode()) > MAX_BODY_BYTES:
            raise InvalidArgumentError("body", f"must be at most {MAX_BODY_BYTES} bytes")
        expected = p.text(params, "expected_status", max_length=256) or "200-299"
        normalised = {
            "url": url,
            "method": method,
            "headers": dict(sorted(headers.items())),
            "body": body,
            "expected_status": expected,
            "timeout_seconds": p.seconds(
                params, "timeout_seconds", default=10.0, high=MAX_SECONDS, allow_zero=False
            ),
            "attempts": p.whole_number(params, "attempts", low=1, high=MAX_ATTEMPTS, default=5),
            "backoff_seconds": p.seconds(
                params, "backoff_seconds", default=1.0, high=MAX_SECONDS, allow_zero=True
            ),
            "max_backoff_seconds": p.seconds(
                params, "max_backoff_seconds", default=30.0, high=MAX_SECONDS, allow_zero=True
            ),
        }
        env = {item["name"]: item["value"] for item in _env(normalised)}
        if sum(len(k) + len(v.encode()) for k, v in env.items()) > p.MAX_ENV_BYTES:
            raise InvalidArgumentError(
                "headers", f"url, headers and body total more than {p.MAX_ENV_BYTES} bytes"
            )
        try:
            checked = workload.load_settings(env)
        except WorkloadConfigError as e:
            raise config_error(e, VARIABLES) from None
        normalised["expected_status"] = str(checked.expected_status)
        return normalised

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        return Workload(
            container={
                "name": "webhook",
                "image": settings.worker_image,
                "command": list(COMMAND),
                "env": [*_env(params), p.JOB_ID_ENV],
            },
            # The URL's path and query, the headers and the body may hold secrets: origin only.
            annotations=p.reported({"method": params["method"], "target": url_origin(params["url"])}),
        )


def _env(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    env = [
        {"name": "WEBHOOK_URL", "value": params["url"]},
        {"name": "WEBHOOK_METHOD", "value": params["method"]},
        {"name": "WEBHOOK_EXPECTED_STATUS", "value": params["expected_status"]},
        {"name": "WEBHOOK_TIMEOUT_SECONDS", "value": p.number_text(params["timeout_seconds"])},
        {"name": "WEBHOOK_ATTEMPTS", "value": str(params["attempts"])},
        {"name": "WEBHOOK_BACKOFF_SECONDS", "value": p.number_text(params["backoff_seconds"])},
        {"name": "WEBHOOK_MAX_BACKOFF_SECONDS", "value": p.number_text(params["max_backoff_seconds"])},
    ]
    # Left out when empty, so that a caller can pass them through secret_env instead.
    if params["headers"]:
        env.append({"name": "WEBHOOK_HEADERS", "value": json.dumps(params["headers"], sort_keys=True)})
    if params["body"]:
        env.append({"name": "WEBHOOK_BODY", "value": params["body"]})
    return env
