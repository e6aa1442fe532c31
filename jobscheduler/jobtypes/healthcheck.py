"""The health-check job type: probes HTTP, TCP and gRPC health endpoints from inside the
cluster with the project's own `jobscheduler-healthcheck` workload (docs/workloads.md).

The job fails when any target is unhealthy; the workload writes which target and why as the
container's termination message, which the job's status message then carries. Targets are
checked by the workload's own configuration reader, so the service accepts exactly what the
pod will.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import Parameter, Workload
from jobscheduler.jobtypes import params as p
from jobscheduler.jobtypes.webhook import config_error
from jobscheduler.workloads import health_targets as workload
from jobscheduler.workloads._common import WorkloadConfigError

COMMAND = ("jobscheduler-healthcheck",)
# The summary of every target must fit Kubernetes' 4 KiB termination message.
MAX_TARGETS = 50
MAX_ATTEMPTS = 100
MAX_SECONDS = 3600.0
VARIABLES = {
    "HEALTHCHECK_TARGETS": "targets",
    "HEALTHCHECK_ATTEMPTS": "attempts",
    "HEALTHCHECK_TIMEOUT_SECONDS": "timeout_seconds",
    "HEALTHCHECK_INTERVAL_SECONDS": "interval_seconds",
}


class HealthCheckJobType:
    name = "health-check"
    request_field = "health_check_job"
    description = (
        "Probes HTTP, TCP and gRPC health endpoints in parallel (jobscheduler-healthcheck); fails "
        "when any is unhealthy, naming each unhealthy target and why in the job's status message."
    )
    parameters = (
        Parameter("targets", "list<object>", f"what to probe, 1 … {MAX_TARGETS} targets", required=True),
        Parameter("targets[].type", "string", "http, tcp or grpc", required=True),
        Parameter(
            "targets[].name", "string", "what the status message calls it; unique", default="its address"
        ),
        Parameter("targets[].url", "string", "http: URL to GET (http:// or https://)"),
        Parameter(
            "targets[].expected_status", "string", "http: healthy status codes and ranges", default="200-399"
        ),
        Parameter("targets[].host", "string", "tcp: host name or IP address"),
        Parameter("targets[].port", "integer", "tcp: port, 1 … 65535"),
        Parameter("targets[].address", "string", "grpc: host:port of a grpc.health.v1 server (plaintext)"),
        Parameter("targets[].service", "string", "grpc: service asked about", default="the whole server"),
        Parameter("targets[].timeout_seconds", "number", "timeout of one attempt", default="timeout_seconds"),
        Parameter(
            "attempts",
            "integer",
            f"attempts per target; healthy as soon as one is (1 … {MAX_ATTEMPTS})",
            default="1",
        ),
        Parameter("timeout_seconds", "number", "timeout of one attempt", default="5"),
        Parameter("interval_seconds", "number", "pause between two attempts on one target", default="1"),
    )

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        targets = params.get("targets")
        if not targets:
            raise InvalidArgumentError("targets", "is required: at least one http, tcp or grpc target")
        if not isinstance(targets, list) or not all(isinstance(t, Mapping) for t in targets):
            raise InvalidArgumentError("targets", "must be a list of target objects")
        if len(targets) > MAX_TARGETS:
            raise InvalidArgumentError("targets", f"at most {MAX_TARGETS} targets (got {len(targets)})")
        normalised = {
            # Empty proto fields are absent already; a generic request's nulls are dropped too.
            "targets": [{k: v for k, v in t.items() if v is not None} for t in targets],
            "attempts": p.whole_number(params, "attempts", low=1, high=MAX_ATTEMPTS, default=1),
            "timeout_seconds": p.seconds(
                params, "timeout_seconds", default=5.0, high=MAX_SECONDS, allow_zero=False
            ),
            "interval_seconds": p.seconds(
                params, "interval_seconds", default=1.0, high=MAX_SECONDS, allow_zero=True
            ),
        }
        env = {item["name"]: item["value"] for item in _env(normalised)}
        if len(env["HEALTHCHECK_TARGETS"].encode()) > p.MAX_ENV_BYTES:
            raise InvalidArgumentError("targets", f"total more than {p.MAX_ENV_BYTES} bytes as JSON")
        try:
            workload.load_settings(env)
        except WorkloadConfigError as e:
            raise config_error(e, VARIABLES) from None
        return normalised

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        checked = workload.load_settings({item["name"]: item["value"] for item in _env(params)})
        return Workload(
            container={
                "name": "healthcheck",
                "image": settings.worker_image,
                "command": list(COMMAND),
                "env": [*_env(params), p.JOB_ID_ENV],
            },
            annotations=p.reported({"targets": [f"{t.name} ({t.type})" for t in checked.targets]}),
        )


def _env(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": "HEALTHCHECK_TARGETS", "value": json.dumps(params["targets"], separators=(",", ":"))},
        {"name": "HEALTHCHECK_ATTEMPTS", "value": str(params["attempts"])},
        {"name": "HEALTHCHECK_TIMEOUT_SECONDS", "value": p.number_text(params["timeout_seconds"])},
        {"name": "HEALTHCHECK_INTERVAL_SECONDS", "value": p.number_text(params["interval_seconds"])},
    ]
