"""The indexed batch job type: `completions` pods of one container, each with its index in
JOB_COMPLETION_INDEX (an Indexed Job), `parallelism` at a time, with an optional retry limit
per index and a cap on failed indexes.

Which indexes completed and which failed is reported in the job's status as Kubernetes keeps
it (`completed_indexes`, `failed_indexes`, e.g. "0-2,4").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import Parameter, Workload
from jobscheduler.jobtypes import params as p
from jobscheduler.jobtypes.container import PARAMETERS as CONTAINER_PARAMETERS
from jobscheduler.jobtypes.container import render_container, validate_container

# Kubernetes' own limits for Indexed Jobs (with backoffLimitPerIndex; kept for all of them).
MAX_COMPLETIONS = 100_000
MAX_PARALLELISM = 100_000
# As the request's backoff_limit: retries past this are a mistake.
MAX_BACKOFF_LIMIT_PER_INDEX = 1000
# Set by the Job controller in every pod of an Indexed Job.
RESERVED_ENV = frozenset({"JOB_COMPLETION_INDEX"})


class BatchJobType:
    name = "batch"
    request_field = "batch_job"
    description = (
        "Runs one container per index 0 … completions-1 (an Indexed Job; the index is in "
        "JOB_COMPLETION_INDEX), parallelism at a time; status reports completed and failed indexes."
    )
    parameters = (
        *CONTAINER_PARAMETERS,
        Parameter(
            "completions",
            "integer",
            f"number of indexes, each run until one pod succeeds (1 … {MAX_COMPLETIONS})",
            required=True,
        ),
        Parameter("parallelism", "integer", "pods running at once (at most completions)", default="1"),
        Parameter(
            "backoff_limit_per_index",
            "integer",
            f"retries of each index before that index fails (0 … {MAX_BACKOFF_LIMIT_PER_INDEX}); set, the "
            "other indexes go on after one fails and the request's backoff_limit defaults to unlimited",
            default="none: the request's backoff_limit counts the failures of all indexes",
        ),
        Parameter(
            "max_failed_indexes",
            "integer",
            "the Job fails at once when more indexes than this have failed (0 … completions); needs "
            "backoff_limit_per_index",
            default="none: every index runs",
        ),
    )

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        container = validate_container(params, reserved_env=RESERVED_ENV)
        completions = p.optional_whole_number(params, "completions", low=1, high=MAX_COMPLETIONS)
        if completions is None:
            raise InvalidArgumentError("completions", f"is required (1 … {MAX_COMPLETIONS})")
        parallelism = p.whole_number(params, "parallelism", low=1, high=MAX_PARALLELISM, default=1)
        if parallelism > completions:
            raise InvalidArgumentError(
                "parallelism", f"must be at most completions ({completions}) (got {parallelism})"
            )
        per_index = p.optional_whole_number(
            params, "backoff_limit_per_index", low=0, high=MAX_BACKOFF_LIMIT_PER_INDEX
        )
        max_failed = p.optional_whole_number(params, "max_failed_indexes", low=0, high=completions)
        if max_failed is not None and per_index is None:
            raise InvalidArgumentError(
                "max_failed_indexes", "needs backoff_limit_per_index (Kubernetes' rule)"
            )
        return {
            **container,
            "completions": completions,
            "parallelism": parallelism,
            "backoff_limit_per_index": per_index,
            "max_failed_indexes": max_failed,
        }

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        job_spec: dict[str, Any] = {
            "completionMode": "Indexed",
            "completions": params["completions"],
            "parallelism": params["parallelism"],
        }
        if params["backoff_limit_per_index"] is not None:
            job_spec["backoffLimitPerIndex"] = params["backoff_limit_per_index"]
        if params["max_failed_indexes"] is not None:
            job_spec["maxFailedIndexes"] = params["max_failed_indexes"]
        shown = ("image", "completions", "parallelism", "backoff_limit_per_index", "max_failed_indexes")
        return Workload(
            container=render_container(params),
            annotations=p.reported({k: params[k] for k in shown if params[k] is not None}),
            job_spec=job_spec,
        )
