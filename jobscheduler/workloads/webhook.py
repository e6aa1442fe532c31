"""The webhook workload: runs inside a Job's container and makes one HTTP request, retrying with exponential
backoff while the failure looks temporary. Exit codes: 0 an expected status came back, 1 gave up or got an
unexpected status, 2 bad configuration, 143 aborted by a second SIGTERM/SIGINT; docs/workloads.md describes
the environment. Header values and the body may hold secrets: they never reach the log."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from jobscheduler.workloads._common import (
    DEFAULT_MAX_BACKOFF_SECONDS,
    LOG_LEVELS,
    ExitCode,
    WorkloadConfigError,
    package_version,
)
from jobscheduler.workloads._env import (
    choice,
    http_url_problem,
    positive_int,
    read,
    required,
    seconds,
    url_origin,
)
from jobscheduler.workloads._http import (
    AttemptResult,
    RefuseRedirects,
    StatusSet,
    backoff_seconds,
    is_retryable,
    send_request,
)
from jobscheduler.workloads._runtime import JsonLogger, SignalWatch, run_main

PROG = "jobscheduler-webhook"
USER_AGENT = f"{PROG}/{package_version()}"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
# Set by this program from the body; a value given in WEBHOOK_HEADERS would contradict it.
MANAGED_HEADERS = frozenset({"content-length", "transfer-encoding"})
RESPONSE_EXCERPT_CHARS = 200

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token

USAGE = f"""\
usage: python -m jobscheduler.workloads.webhook

Makes one HTTP request to WEBHOOK_URL, retrying with exponential backoff while the failure looks temporary.
Configured by environment variables only:

  WEBHOOK_URL                  required; http:// or https:// URL
  WEBHOOK_METHOD               {", ".join(METHODS)} (default POST)
  WEBHOOK_HEADERS              JSON object of header name to string value (default {{}})
  WEBHOOK_BODY                 request body, sent as UTF-8 (default none)
  WEBHOOK_EXPECTED_STATUS      codes and ranges that count as success, e.g. 200-299,304 (default 200-299)
  WEBHOOK_TIMEOUT_SECONDS      timeout of one attempt (default 10)
  WEBHOOK_ATTEMPTS             attempts in all, the first included (default 5)
  WEBHOOK_BACKOFF_SECONDS      pause before the first retry, doubled each retry (default 1)
  WEBHOOK_MAX_BACKOFF_SECONDS  cap on a pause, Retry-After included (default 30)
  JOB_ID                       optional; copied into every log line
  LOG_LEVEL                    trace | debug | info | warn | error (default info)

Exit codes: 0 expected status, 1 gave up or unexpected status, 2 bad configuration, 143 second signal.
"""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The workload's configuration, read once from the environment by `load_settings` (defaults there)."""

    url: str  # http(s), no user or password; logged only as its origin, since path and query may be secrets
    method: str  # one of METHODS
    headers: Mapping[str, str]  # as given; values are never logged
    body: bytes | None  # UTF-8; never logged
    expected_status: StatusSet
    timeout_seconds: float  # one attempt: connecting, sending, and each read of the answer's head
    attempts: int  # in all, the first included
    backoff_seconds: float  # before the first retry; doubled for each further one
    max_backoff_seconds: float  # caps every pause, a server's Retry-After included
    job_id: str  # "" when the manifest does not inject it
    log_level: str  # a key of LOG_LEVELS


def load_settings(environ: Mapping[str, str]) -> WebhookSettings:
    """Reads every variable, raising WorkloadConfigError for the first bad one; blank means unset."""
    return WebhookSettings(
        url=_url(environ, "WEBHOOK_URL"),
        method=_method(environ, "WEBHOOK_METHOD"),
        headers=_headers(environ, "WEBHOOK_HEADERS"),
        body=_body(environ, "WEBHOOK_BODY"),
        expected_status=_status_set(environ, "WEBHOOK_EXPECTED_STATUS", default="200-299"),
        timeout_seconds=seconds(environ, "WEBHOOK_TIMEOUT_SECONDS", default=10.0),
        attempts=positive_int(environ, "WEBHOOK_ATTEMPTS", default=5),
        backoff_seconds=seconds(environ, "WEBHOOK_BACKOFF_SECONDS", default=1.0, allow_zero=True),
        max_backoff_seconds=seconds(
            environ, "WEBHOOK_MAX_BACKOFF_SECONDS", default=DEFAULT_MAX_BACKOFF_SECONDS, allow_zero=True
        ),
        job_id=read(environ, "JOB_ID") or "",
        log_level=choice(environ, "LOG_LEVEL", LOG_LEVELS, default="info"),
    )


def _url(environ: Mapping[str, str], name: str) -> str:
    raw = required(environ, name, expected="an http:// or https:// URL")
    problem = http_url_problem(raw)
    if problem is not None:
        raise WorkloadConfigError(name, problem)
    return raw


def _method(environ: Mapping[str, str], name: str) -> str:
    raw = read(environ, name)
    if raw is None:
        return "POST"
    if raw.upper() not in METHODS:
        raise WorkloadConfigError.invalid(name, raw, expected="one of " + ", ".join(METHODS))
    return raw.upper()


def _headers(environ: Mapping[str, str], name: str) -> dict[str, str]:
    # Messages name the offending header but never quote a value: it may be a token.
    raw = read(environ, name)
    if raw is None:
        return {}
    try:
        pairs = json.loads(raw, object_pairs_hook=list)
    except json.JSONDecodeError as e:
        raise WorkloadConfigError(
            name, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        raise WorkloadConfigError(name, 'must be a JSON object such as {"Authorization": "Bearer ..."}')
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in pairs:
        if not _HEADER_NAME.fullmatch(key):
            raise WorkloadConfigError(name, f"has an invalid header name {key!r}")
        if key.lower() in seen:
            raise WorkloadConfigError(name, f"names header {key!r} twice (names are case-insensitive)")
        if key.lower() in MANAGED_HEADERS:
            raise WorkloadConfigError(name, f"must not set {key!r}: it is derived from WEBHOOK_BODY")
        if not isinstance(value, str):
            raise WorkloadConfigError(name, f"has a value for {key!r} that is not a JSON string")
        if any(c in value for c in "\r\n\0"):
            raise WorkloadConfigError(name, f"has a value for {key!r} with a line break or NUL character")
        seen.add(key.lower())
        headers[key] = value
    return headers


def _body(environ: Mapping[str, str], name: str) -> bytes | None:
    raw = environ.get(name, "")
    # Blank means unset, like every other variable; a body that is not blank is sent exactly as given.
    return raw.encode() if raw.strip() else None


def _status_set(environ: Mapping[str, str], name: str, *, default: str) -> StatusSet:
    raw = read(environ, name) or default
    try:
        return StatusSet.parse(raw)
    except ValueError as e:
        raise WorkloadConfigError.invalid(
            name, raw, expected=f"codes and ranges such as 200-299,304: {e}"
        ) from None


def build_headers(settings: WebhookSettings) -> dict[str, str]:
    """The request's headers: WEBHOOK_HEADERS over the defaults, compared case-insensitively."""
    given = {k.lower() for k in settings.headers}
    headers = {}
    if "user-agent" not in given:
        headers["User-Agent"] = USER_AGENT
    if settings.body is not None and "content-type" not in given:
        headers["Content-Type"] = "application/json"
    headers.update(settings.headers)
    return headers


def send_once(
    opener: urllib.request.OpenerDirector, settings: WebhookSettings, *, headers: Mapping[str, str]
) -> AttemptResult:
    """Makes one request and classifies what came back; never raises for network or HTTP failures."""
    request = urllib.request.Request(
        settings.url, data=settings.body, headers=dict(headers), method=settings.method
    )
    return send_request(
        opener, request, timeout=settings.timeout_seconds, excerpt_bytes=RESPONSE_EXCERPT_CHARS
    )


_HINTS = {
    "unexpected_status": "the server answered with a status outside WEBHOOK_EXPECTED_STATUS that retrying "
    "will not change: check WEBHOOK_URL, WEBHOOK_METHOD, WEBHOOK_HEADERS (credentials) and WEBHOOK_BODY",
    "attempts_exhausted": "check that WEBHOOK_URL is reachable from this pod (DNS, NetworkPolicy egress, "
    "proxy) and that the server is up; raise WEBHOOK_ATTEMPTS or WEBHOOK_BACKOFF_SECONDS to wait longer",
    "interrupted": "the pod was asked to stop (SIGTERM/SIGINT) before the request succeeded",
}


def run(settings: WebhookSettings, *, signals: SignalWatch, log: JsonLogger) -> ExitCode:
    """Makes the attempts and returns the exit code; SecondSignalError escapes from here."""
    opener = urllib.request.build_opener(RefuseRedirects())
    headers = build_headers(settings)
    start = time.monotonic()
    log.info(
        "webhook.started",
        method=settings.method,
        target=url_origin(settings.url),
        header_names=sorted(settings.headers),
        body_bytes=None if settings.body is None else len(settings.body),
        expected_status=str(settings.expected_status),
        max_attempts=settings.attempts,
        timeout_seconds=settings.timeout_seconds,
    )

    def elapsed() -> float:
        return round(time.monotonic() - start, 3)

    def give_up(reason: str, attempts: int, last: AttemptResult) -> ExitCode:
        log.error(
            "webhook.failed",
            reason=reason,
            attempts=attempts,
            status=last.status,
            error=last.error or None,
            elapsed_seconds=elapsed(),
            hint=_HINTS[reason],
            exit_code=int(ExitCode.FAILED),
        )
        return ExitCode.FAILED

    last = AttemptResult(status=None, error="no attempt was made")
    for attempt in range(1, settings.attempts + 1):
        if signals.first_signal is not None:
            return give_up("interrupted", attempt - 1, last)
        log.debug("webhook.attempt", attempt=attempt, max_attempts=settings.attempts)
        sent_at = time.monotonic()
        last = send_once(opener, settings, headers=headers)
        took = round(time.monotonic() - sent_at, 3)
        if last.status in settings.expected_status:
            log.info(
                "webhook.succeeded",
                attempt=attempt,
                status=last.status,
                took_seconds=took,
                elapsed_seconds=elapsed(),
                exit_code=int(ExitCode.OK),
            )
            return ExitCode.OK
        if last.status is not None:
            # The answer's body can echo the request, hence only on request and only its start.
            log.debug("webhook.response", attempt=attempt, status=last.status, excerpt=last.response_excerpt)
            if not last.error:  # a 2xx that WEBHOOK_EXPECTED_STATUS leaves out
                last = AttemptResult(status=last.status, error=f"HTTP {last.status}")
        retryable = is_retryable(last.status)
        retry_in = None
        if retryable and attempt < settings.attempts:
            retry_in = backoff_seconds(
                attempt,
                initial=settings.backoff_seconds,
                cap=settings.max_backoff_seconds,
                retry_after=last.retry_after_seconds,
            )
        log.warn(
            "webhook.attempt_failed",
            attempt=attempt,
            status=last.status,
            error=last.error,
            took_seconds=took,
            elapsed_seconds=elapsed(),
            retry_in_seconds=None if retry_in is None else round(retry_in, 3),
        )
        if not retryable:
            return give_up("unexpected_status", attempt, last)
        if retry_in is not None and not signals.pause(retry_in):
            return give_up("interrupted", attempt, last)
    return give_up("attempts_exhausted", settings.attempts, last)


def main(argv: list[str] | None = None) -> int:
    """Entry point; must run on the main thread, which is where Python delivers signals."""
    return run_main(
        argv,
        prog=PROG,
        usage=USAGE,
        load_settings=load_settings,
        log_context=lambda settings: {"job_id": settings.job_id or None},
        run=run,
        aborted_event="webhook.aborted",
        aborted_hint="a second signal ends the workload at once; whether the request took effect is unknown",
    )


if __name__ == "__main__":
    sys.exit(main())
