"""The Timer job type's workload: runs inside the Job's container, waits for the configured duration while
logging progress, then reports the outcome to the control plane over HTTP with bounded retries.
Exit codes: 0 outcome reported (completed or cancelled), 1 report not delivered, 2 bad configuration,
143 aborted by a second SIGTERM/SIGINT; docs/timer-report.md describes the environment and the report."""

from __future__ import annotations

import enum
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import SplitResult, urlsplit

from jobscheduler.timestamps import format_rfc3339
from jobscheduler.workloads._common import (
    DEFAULT_MAX_BACKOFF_SECONDS,
    LOG_LEVELS,
    ExitCode,
    WorkloadConfigError,
    package_version,
)
from jobscheduler.workloads._env import (
    URL_WITH_CREDENTIALS,
    choice,
    http_url_problem,
    positive_int,
    read,
    required,
    seconds,
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

PROG = "jobscheduler-timer"
USER_AGENT = f"{PROG}/{package_version()}"
REPORT_SCHEMA = "jobscheduler.timer.report/v1"
# The statuses that count as delivered.
DELIVERED = StatusSet(((200, 299),))
RESPONSE_EXCERPT_BYTES = 300

USAGE = f"""\
usage: python -m jobscheduler.workloads.timer

Waits TIMER_DURATION_SECONDS, then POSTs a {REPORT_SCHEMA} document to CONTROL_PLANE_ENDPOINT.
Configured by environment variables only:

  TIMER_NAME                          required; the timer's name
  TIMER_DURATION_SECONDS              required; whole seconds to wait, > 0
  CONTROL_PLANE_ENDPOINT              required; http:// or https:// URL the report is POSTed to
  JOB_ID, JOB_NAMESPACE, POD_NAME     optional; the Job, namespace and pod, copied into the report
  LOG_LEVEL                           trace | debug | info | warn | error (default info)
  TIMER_PROGRESS_INTERVAL_SECONDS     seconds between progress lines (default 10)
  TIMER_REPORT_ATTEMPTS               report attempts in all, the first included (default 8)
  TIMER_REPORT_BACKOFF_SECONDS        pause before the first retry, doubled each retry, at most 30 (default 1)
  TIMER_REPORT_TIMEOUT_SECONDS        timeout of one report request (default 10)
  TIMER_CANCEL_REPORT_BUDGET_SECONDS  reporting time left once SIGTERM/SIGINT arrives (default 20)

Exit codes: 0 reported, 1 report not delivered, 2 bad configuration, 143 aborted by a second signal.
"""


# ExitCode (_common): 0 outcome reported (OK), 1 report not delivered (FAILED), 2 bad configuration,
# 143 aborted by a second signal.


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """The workload's configuration, read once from the environment by `load_settings` (defaults there)."""

    timer_name: str
    duration_seconds: int
    endpoint: str  # an http(s) URL without credentials
    job_id: str  # the Kubernetes Job's name; "" when the manifest does not inject it
    namespace: str  # "" when not injected
    pod: str  # "" when not injected
    log_level: str  # a key of LOG_LEVELS
    progress_interval_seconds: float
    report_attempts: int  # in all, the first attempt included
    report_backoff_seconds: float  # before the first retry; doubled for each further one
    report_timeout_seconds: float  # one request: connecting, sending and reading the response
    # Kubernetes sends SIGKILL terminationGracePeriodSeconds (default 30) after SIGTERM; giving up before
    # then means the pod still logs why the report was lost and exits with its own code.
    cancel_report_budget_seconds: float


def load_settings(environ: Mapping[str, str]) -> TimerSettings:
    """Reads every variable, raising WorkloadConfigError for the first bad one; blank means unset."""
    return TimerSettings(
        timer_name=required(environ, "TIMER_NAME", expected="the timer's name"),
        duration_seconds=positive_int(environ, "TIMER_DURATION_SECONDS", default=None),
        endpoint=_endpoint(environ, "CONTROL_PLANE_ENDPOINT"),
        job_id=read(environ, "JOB_ID") or "",
        namespace=read(environ, "JOB_NAMESPACE") or "",
        pod=read(environ, "POD_NAME") or "",
        log_level=choice(environ, "LOG_LEVEL", LOG_LEVELS, default="info"),
        progress_interval_seconds=seconds(environ, "TIMER_PROGRESS_INTERVAL_SECONDS", default=10.0),
        report_attempts=positive_int(environ, "TIMER_REPORT_ATTEMPTS", default=8),
        report_backoff_seconds=seconds(environ, "TIMER_REPORT_BACKOFF_SECONDS", default=1.0, allow_zero=True),
        report_timeout_seconds=seconds(environ, "TIMER_REPORT_TIMEOUT_SECONDS", default=10.0),
        cancel_report_budget_seconds=seconds(environ, "TIMER_CANCEL_REPORT_BUDGET_SECONDS", default=20.0),
    )


def _endpoint(environ: Mapping[str, str], name: str) -> str:
    # Unlike the other workloads' URLs, the endpoint is no secret: its messages quote it, bar a password.
    expected = "an http:// or https:// URL with a host, such as http://jobscheduler.ns.svc:8080/reports"
    raw = required(environ, name, expected=expected)
    problem = http_url_problem(raw)
    if problem == URL_WITH_CREDENTIALS:
        raise WorkloadConfigError.invalid(
            name, _redact(urlsplit(raw)), expected="a URL without user or password"
        )
    if problem is not None:
        raise WorkloadConfigError.invalid(name, raw, expected=expected)
    return raw


def _redact(parts: SplitResult) -> str:
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def wait_out(settings: TimerSettings, *, start: float, signals: SignalWatch, log: JsonLogger) -> Outcome:
    """Waits until duration_seconds after start (time.monotonic()) or the first signal, logging progress."""
    end = start + settings.duration_seconds
    interval = settings.progress_interval_seconds
    next_progress = start + interval
    while signals.first_signal is None:
        now = time.monotonic()
        if now >= end:
            return Outcome.COMPLETED
        if now >= next_progress:
            elapsed = now - start
            log.info(
                "timer.progress",
                elapsed_seconds=round(elapsed, 3),
                remaining_seconds=round(end - now, 3),
                percent=round(100 * elapsed / settings.duration_seconds, 1),
            )
            # Stay on the start-aligned grid and skip ticks missed by a late wake-up rather than burst.
            next_progress += interval * (1 + (now - next_progress) // interval)
        signals.wait(min(end, next_progress) - now)
    return Outcome.CANCELLED


def build_report(
    settings: TimerSettings,
    *,
    outcome: Outcome,
    started_at: datetime,
    finished_at: datetime,
    elapsed_seconds: float,
) -> dict[str, object]:
    """The report document, schema jobscheduler.timer.report/v1 (docs/timer-report.md)."""
    return {
        "schema": REPORT_SCHEMA,
        "timer_name": settings.timer_name,
        "job_id": settings.job_id or None,
        "namespace": settings.namespace or None,
        "pod": settings.pod or None,
        "duration_seconds": settings.duration_seconds,
        "started_at": format_rfc3339(started_at, precision="milliseconds"),
        "finished_at": format_rfc3339(finished_at, precision="milliseconds"),
        "elapsed_seconds": round(elapsed_seconds, 3),
        "outcome": outcome.value,
    }


def idempotency_key(settings: TimerSettings, *, started_at: datetime) -> str:
    # Same for every retry of this run, different for the pod a Job retry starts: the receiver dedupes on it.
    started = format_rfc3339(started_at, precision="milliseconds")
    return f"{settings.job_id or settings.timer_name}-{started}"


def send_report(
    opener: urllib.request.OpenerDirector,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> AttemptResult:
    """Makes one POST and classifies what came back; never raises for network or HTTP failures."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    return send_request(
        opener, request, timeout=timeout, excerpt_bytes=RESPONSE_EXCERPT_BYTES, error_text=_error_text
    )


def _error_text(error: Exception) -> str:
    # Terser than the other workloads' request_error_text, and part of the timer's log: kept as it was.
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}"


_HINTS = {
    "rejected": "the control plane refused the report and retrying will not change that: check that "
    "CONTROL_PLANE_ENDPOINT is the control plane's report URL and that it accepts " + REPORT_SCHEMA,
    "attempts_exhausted": "check that CONTROL_PLANE_ENDPOINT is reachable from this pod (Service name and "
    "port, NetworkPolicy egress) and that the control plane is running; raise TIMER_REPORT_ATTEMPTS or "
    "TIMER_REPORT_BACKOFF_SECONDS to wait longer for it",
    "shutdown_budget_exhausted": "the pod is being stopped and the report did not get through within "
    "TIMER_CANCEL_REPORT_BUDGET_SECONDS: check that CONTROL_PLANE_ENDPOINT is reachable from this pod and "
    "that the control plane is running",
}


def deliver_report(
    report: Mapping[str, object],
    *,
    idempotency_key: str,
    settings: TimerSettings,
    signals: SignalWatch,
    log: JsonLogger,
    opener: urllib.request.OpenerDirector | None = None,
) -> bool:
    """POSTs the report until it is accepted, refused for good, out of attempts or out of shutdown time."""
    # urllib re-sends a POST answered by 301/302/303 as a GET without a body, so the report would vanish
    # while looking delivered; a redirect is treated as a misconfigured endpoint instead.
    opener = opener or urllib.request.build_opener(RefuseRedirects())
    body = json.dumps(report, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key,
    }
    log.debug("report.prepared", endpoint=settings.endpoint, idempotency_key=idempotency_key, bytes=len(body))
    log.trace("report.body", report=report)
    endpoint_fields = {"endpoint": settings.endpoint, "max_attempts": settings.report_attempts}

    def give_up(reason: str, attempts: int, last: AttemptResult) -> bool:
        log.error(
            "report.undelivered",
            **endpoint_fields,
            reason=reason,
            attempts=attempts,
            status=last.status,
            last_error=last.error,
            response=last.response_excerpt or None,
            hint=_HINTS[reason],
        )
        return False

    last = AttemptResult(status=None, error="no attempt was made")
    for attempt in range(1, settings.report_attempts + 1):
        timeout = settings.report_timeout_seconds
        deadline = signals.shutdown_deadline(settings.cancel_report_budget_seconds)
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                return give_up("shutdown_budget_exhausted", attempt - 1, last)
        log.info("report.attempt", **endpoint_fields, attempt=attempt, timeout_seconds=round(timeout, 3))
        sent_at = time.monotonic()
        last = send_report(opener, settings.endpoint, body=body, headers=headers, timeout=timeout)
        took = round(time.monotonic() - sent_at, 3)
        if last.status in DELIVERED:
            log.info("report.delivered", attempt=attempt, status=last.status, took_seconds=took)
            return True
        if not is_retryable(last.status):
            return give_up("rejected", attempt, last)
        retry_in = None
        if attempt < settings.report_attempts:
            retry_in = backoff_seconds(
                attempt,
                initial=settings.report_backoff_seconds,
                cap=DEFAULT_MAX_BACKOFF_SECONDS,  # fixed for the timer: TIMER_REPORT_BACKOFF_SECONDS says so
                retry_after=last.retry_after_seconds,
            )
        log.warn(
            "report.attempt_failed",
            attempt=attempt,
            status=last.status,
            error=last.error,
            took_seconds=took,
            retry_in_seconds=None if retry_in is None else round(retry_in, 3),
        )
        if retry_in is not None and not _pause(retry_in, settings=settings, signals=signals):
            return give_up("shutdown_budget_exhausted", attempt, last)
    return give_up("attempts_exhausted", settings.report_attempts, last)


def _pause(duration: float, *, settings: TimerSettings, signals: SignalWatch) -> bool:
    """Sleeps between attempts; False, at once, when a shutdown deadline falls before the pause ends.

    Unlike SignalWatch.pause, a first signal does not end the pause while the report budget outlasts it.
    """
    end = time.monotonic() + duration
    while (now := time.monotonic()) < end:
        deadline = signals.shutdown_deadline(settings.cancel_report_budget_seconds)
        if deadline is not None and deadline <= end:
            return False
        # Wakes on the first signal too, which is what makes the deadline above apply mid-pause.
        signals.wait(end - now)
    return True


def run(settings: TimerSettings, *, signals: SignalWatch, log: JsonLogger) -> ExitCode:
    """Waits, reports the outcome and returns the exit code; SecondSignalError escapes from here."""
    started_at, start = datetime.now(UTC), time.monotonic()
    log.info(
        "timer.started",
        duration_seconds=settings.duration_seconds,
        endpoint=settings.endpoint,
        namespace=settings.namespace or None,
        pod=settings.pod or None,
        progress_interval_seconds=settings.progress_interval_seconds,
    )
    outcome = wait_out(settings, start=start, signals=signals, log=log)
    elapsed, finished_at = time.monotonic() - start, datetime.now(UTC)
    if outcome is Outcome.CANCELLED:
        log.warn(
            "timer.cancelled",
            signal=signals.first_signal_name,
            elapsed_seconds=round(elapsed, 3),
            remaining_seconds=round(max(settings.duration_seconds - elapsed, 0.0), 3),
        )
    else:
        log.info("timer.completed", elapsed_seconds=round(elapsed, 3))
    report = build_report(
        settings, outcome=outcome, started_at=started_at, finished_at=finished_at, elapsed_seconds=elapsed
    )
    delivered = deliver_report(
        report,
        idempotency_key=idempotency_key(settings, started_at=started_at),
        settings=settings,
        signals=signals,
        log=log,
    )
    code = ExitCode.OK if delivered else ExitCode.FAILED
    log.info("timer.exiting", outcome=outcome.value, delivered=delivered, exit_code=int(code))
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point; must run on the main thread, which is where Python delivers signals."""
    return run_main(
        argv,
        prog=PROG,
        usage=USAGE,
        load_settings=load_settings,
        log_context=lambda settings: {"timer_name": settings.timer_name, "job_id": settings.job_id or None},
        run=run,
        aborted_event="timer.aborted",
        aborted_hint="a second signal ends the workload at once; the outcome was not reported",
    )


if __name__ == "__main__":
    sys.exit(main())
