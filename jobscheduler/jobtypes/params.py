"""Parameter checks the built-in job types share: strings, images, argument lists, environment,
counts and durations, each raising InvalidArgumentError that names the parameter."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import check_env, check_image, has_control, shown

# Kubernetes caps env and arguments only through the object's size: past a few MiB the API
# server answers 413 and etcd refuses the write. Names and values together, in UTF-8 bytes.
MAX_ENV_BYTES = 64 * 1024
MAX_ARGV_BYTES = 64 * 1024
MAX_IMAGE_LENGTH = 512
MAX_PATH_LENGTH = 4096
PARAMETERS_ANNOTATION = "jobscheduler.io/parameters"
# The Job's name, from the pod's job-name label rather than the job id: a schedule's runs share
# one template and each Job gets its own name.
JOB_ID_ENV = {
    "name": "JOB_ID",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
}


def text(params: Mapping[str, Any], key: str, *, max_length: int = 2048, required: bool = False) -> str:
    """A one-line string parameter, stripped; "" when absent."""
    value = params.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgumentError(key, "must be a string")
    if has_control(value):
        raise InvalidArgumentError(key, "must not contain control characters")
    value = value.strip()
    if required and not value:
        raise InvalidArgumentError(key, "is required")
    if len(value) > max_length:
        raise InvalidArgumentError(key, f"must be at most {max_length} characters (got {len(value)})")
    return value


def image(params: Mapping[str, Any], key: str = "image", *, default: str = "") -> str:
    """A container image reference; required when there is no default."""
    value = text(params, key, max_length=MAX_IMAGE_LENGTH) or default
    if not value:
        raise InvalidArgumentError(key, "is required (an image reference such as ghcr.io/acme/tool:1.2)")
    check_image(key, value)
    return value


def string_list(params: Mapping[str, Any], key: str) -> list[str]:
    """A list of strings (command, args); any characters but NUL, which exec cannot pass."""
    value = params.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(key, "must be a list of strings")
    for i, item in enumerate(value):
        if "\0" in item:
            raise InvalidArgumentError(f"{key}[{i}]", "must not contain a NUL character")
    size = sum(len(v.encode()) for v in value)
    if size > MAX_ARGV_BYTES:
        raise InvalidArgumentError(key, f"totals {size} bytes; at most {MAX_ARGV_BYTES}")
    return list(value)


def absolute_path(params: Mapping[str, Any], key: str) -> str:
    value = text(params, key, max_length=MAX_PATH_LENGTH)
    if value and not value.startswith("/"):
        raise InvalidArgumentError(key, f"{shown(value)} must be an absolute path (starting with /)")
    return value


def env(
    params: Mapping[str, Any], key: str = "env", *, reserved: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Extra environment for the container, sorted by name."""
    value = params.get(key) or {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgumentError(key, "must map names to string values")
    check_env(key, value, reserved=reserved)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
    if size > MAX_ENV_BYTES:
        raise InvalidArgumentError(key, f"names and values total {size} bytes; at most {MAX_ENV_BYTES}")
    return dict(sorted(value.items()))


def optional_whole_number(params: Mapping[str, Any], key: str, *, low: int, high: int) -> int | None:
    """An integer parameter in [low, high]; None when absent."""
    value: object = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(key, f"must be a whole number (got {value!r})")
    if not low <= value <= high:
        raise InvalidArgumentError(key, f"must be between {low} and {high} (got {value})")
    return value


def whole_number(params: Mapping[str, Any], key: str, *, low: int, high: int, default: int) -> int:
    """An integer parameter in [low, high]; default when absent."""
    value = optional_whole_number(params, key, low=low, high=high)
    return default if value is None else value


def seconds(params: Mapping[str, Any], key: str, *, default: float, high: float, allow_zero: bool) -> float:
    """A duration in seconds, greater than 0 (or 0 too, with allow_zero), at most high."""
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        raise InvalidArgumentError(key, f"must be a number of seconds (got {value!r})")
    low = "0 or more" if allow_zero else "greater than 0"
    if value < 0 or (value == 0 and not allow_zero) or value > high:
        raise InvalidArgumentError(key, f"must be {low} and at most {high:g} (got {value:g})")
    return float(value)


def number_text(value: float) -> str:
    """A number as an environment variable holds it: 10, not 10.0."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def reported(values: Mapping[str, Any]) -> dict[str, str]:
    """The parameters annotation, reported by GetJobStatus/ListJobs without reading the pod."""
    return {PARAMETERS_ANNOTATION: json.dumps(dict(values), sort_keys=True)}
