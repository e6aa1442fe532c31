"""Reading the workloads' environment: every variable checked, and a blank value counts as unset;
URLs checked for what would fail later or leak a credential. Standard library only."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from jobscheduler.workloads._common import WHOLE_NUMBER, WorkloadConfigError

# Environment variables. A variable set to an empty or blank value counts as unset.


def read(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name, "").strip() or None


def required(environ: Mapping[str, str], name: str, *, expected: str) -> str:
    value = read(environ, name)
    if value is None:
        raise WorkloadConfigError.unset(name, expected=expected)
    return value


def positive_int(environ: Mapping[str, str], name: str, *, default: int | None) -> int:
    """default None makes the variable required."""
    expected = "a whole number greater than 0"
    raw = read(environ, name)
    if raw is None:
        if default is None:
            raise WorkloadConfigError.unset(name, expected=expected)
        return default
    # Stricter than int(): "1.5", "+3", "1_000" and non-ASCII digits are refused, not reinterpreted.
    if not WHOLE_NUMBER.fullmatch(raw) or int(raw) == 0:
        raise WorkloadConfigError.invalid(name, raw, expected=expected)
    return int(raw)


def seconds(environ: Mapping[str, str], name: str, *, default: float, allow_zero: bool = False) -> float:
    raw = read(environ, name)
    if raw is None:
        return default
    value = parse_seconds(raw, allow_zero=allow_zero)
    if value is None:
        expected = f"a number of seconds {'0 or more' if allow_zero else 'greater than 0'}"
        raise WorkloadConfigError.invalid(name, raw, expected=expected)
    return value


def parse_seconds(raw: object, *, allow_zero: bool = False) -> float | None:
    """A finite number of seconds from a string or a JSON number, or None when it is not one."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        return None
    return value


def choice(environ: Mapping[str, str], name: str, choices: Iterable[str], *, default: str) -> str:
    raw = read(environ, name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise WorkloadConfigError.invalid(name, raw, expected="one of " + ", ".join(choices))
    return raw.lower()


# What http_url_problem says of a URL whose only fault is a user or password, which must not be logged.
URL_WITH_CREDENTIALS = "must not hold a user or password; send credentials in a header instead"


def http_url_problem(raw: str) -> str | None:
    """Why raw is not a usable http(s) URL, without quoting it (its path or query may hold a token)."""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
    except ValueError as e:
        return f"is not a valid URL ({e})"
    # http.client refuses such URLs only at request time, where it would look like a failed request.
    if any(c.isspace() or not c.isprintable() for c in raw):
        return "contains whitespace or control characters"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        # urllib would not send them, and the secret must not end up in the pod's log.
        return URL_WITH_CREDENTIALS
    return None


def url_origin(url: str) -> str:
    """scheme://host[:port] of a checked URL: what logs show of it, since path and query may be secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
