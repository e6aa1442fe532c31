"""HTTP for the workloads: expected status sets, requests that never follow redirects, Retry-After,
capped exponential backoff, and error texts that say what happened. Standard library only."""

from __future__ import annotations

import http.client
import re
import socket
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import IO
from urllib.request import HTTPRedirectHandler, OpenerDirector, Request

from jobscheduler.workloads._common import WHOLE_NUMBER

_STATUS_ITEM = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")


@dataclass(frozen=True, slots=True)
class StatusSet:
    """HTTP status codes written as a comma list of codes and inclusive ranges, e.g. "200-299,304"."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> StatusSet:
        """Raises ValueError saying what is wrong."""
        ranges = []
        for item in text.split(","):
            item = item.strip()
            match = _STATUS_ITEM.fullmatch(item)
            if match is None:
                raise ValueError(f"{item!r} is not a status code from 100 to 599 or a range like 200-299")
            low = int(match[1])
            high = int(match[2] or low)
            if high < low:
                raise ValueError(f"range {item!r} ends before it starts")
            ranges.append((low, high))
        return cls(tuple(ranges))

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and any(low <= status <= high for low, high in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges)


class RefuseRedirects(HTTPRedirectHandler):
    # A 3xx is an answer like any other for these workloads: urllib would re-send a POST as a body-less GET,
    # and a probe must judge what the target itself says. HTTPErrorProcessor then raises it as HTTPError.
    def redirect_request(
        self,
        req: Request,  # noqa: ARG002
        fp: IO[bytes],  # noqa: ARG002
        code: int,  # noqa: ARG002
        msg: str,  # noqa: ARG002
        headers: Message,  # noqa: ARG002
        newurl: str,  # noqa: ARG002
    ) -> None:
        return None


def parse_retry_after(value: str | None) -> float | None:
    # Only the delay-seconds form: the HTTP-date form needs a clock in sync with the server's.
    if value is None or not WHOLE_NUMBER.fullmatch(value.strip()):
        return None
    return float(value.strip())


def backoff_seconds(retry: int, *, initial: float, cap: float, retry_after: float | None) -> float:
    """The pause before retry number `retry` (1 is the pause after the first attempt)."""
    if retry_after is not None:
        return min(retry_after, cap)
    # The exponent's bound only keeps 2**n from overflowing a float; the cap applies long before.
    return min(initial * 2.0 ** min(retry - 1, 64), cap)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status: int | None  # None when no HTTP answer arrived: refused, reset, timed out, DNS failure
    error: str = ""
    retry_after_seconds: float | None = None
    response_excerpt: str = ""


def is_retryable(status: int | None) -> bool:
    """Whether a failed attempt may succeed later without anyone changing the request."""
    # 408 is the server's own "try again"; any other 4xx says the request is wrong and will stay wrong.
    return status is None or status in (408, 429) or 500 <= status <= 599


def send_request(
    opener: OpenerDirector,
    request: Request,
    *,
    timeout: float,
    excerpt_bytes: int,
    error_text: Callable[[Exception], str] | None = None,
) -> AttemptResult:
    """Makes one request and classifies what came back; never raises for network or HTTP failures.

    error_text describes a failure without an HTTP status (default: request_error_text).
    """
    try:
        with opener.open(request, timeout=timeout) as response:
            return AttemptResult(status=response.status)
    except urllib.error.HTTPError as e:  # any status urllib does not call success, 3xx included
        with e:
            excerpt = _read_excerpt(e, excerpt_bytes)
        return AttemptResult(
            status=e.code,
            error=f"HTTP {e.code} {e.reason}",
            retry_after_seconds=parse_retry_after(e.headers.get("Retry-After")),
            response_excerpt=excerpt,
        )
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
        text = request_error_text(e, timeout=timeout) if error_text is None else error_text(e)
        return AttemptResult(status=None, error=text)


def _read_excerpt(response: urllib.error.HTTPError, limit: int) -> str:
    try:
        return response.read(limit).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


def request_error_text(error: Exception, *, timeout: float) -> str:
    """A short description of a urllib request that got no HTTP status (HTTPError is handled before)."""
    if isinstance(error, urllib.error.URLError):
        if isinstance(error.reason, OSError):
            return os_error_text(error.reason, timeout=timeout)
        return str(error.reason)
    if isinstance(error, OSError):  # a timeout while reading the answer is not wrapped in URLError
        return os_error_text(error, timeout=timeout)
    return f"bad HTTP answer: {type(error).__name__}: {error}".rstrip(": ")


def os_error_text(error: OSError, *, timeout: float) -> str:
    """A short, stable description of a network failure, such as "connection refused"."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host: {error.strerror}"
    return (error.strerror or str(error) or type(error).__name__).lower()
