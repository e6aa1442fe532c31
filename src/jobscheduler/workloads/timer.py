"""The Timer job type's workload: runs inside the Job's container, waits for the configured duration while
logging progress, then reports the outcome to the control plane over HTTP with bounded retries.
Exit codes: 0 outcome reported (completed or cancelled), 1 report not delivered, 2 bad configuration,
143 aborted by a second SIGTERM/SIGINT; docs/timer-report.md describes the environment and the report."""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import math
import os
import re
import select
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from types import FrameType
from typing import IO, Any, TextIO
from urllib.parse import SplitResult, urlsplit

PROG = "jobscheduler-timer"
REPORT_SCHEMA = "jobscheduler.timer.report/v1"
# Caps both the exponential backoff and a server's Retry-After, so no answer can park the pod for long.
MAX_BACKOFF_SECONDS = 30.0
LOG_LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "error": 40}
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_WHOLE_NUMBER = re.compile(r"[0-9]+")

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


def _package_version() -> str:
    try:
        from jobscheduler import __version__
    except ImportError:  # the file was copied out of the package and run on its own
        return "unknown"
    return __version__


USER_AGENT = f"{PROG}/{_package_version()}"


class ExitCode(enum.IntEnum):
    REPORTED = 0
    UNDELIVERED = 1
    BAD_CONFIGURATION = 2
    # 128 + SIGTERM: what the kubelet would have recorded had the signal's default action killed us.
    ABORTED = 143


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class TimerError(Exception):
    """Root of the errors this workload raises."""


class ConfigError(TimerError):
    """An environment variable is missing or holds a value the workload cannot use."""

    def __init__(self, variable: str, value: str | None, expected: str) -> None:
        problem = " is not set" if value is None else f"={value!r} is invalid"
        super().__init__(f"{variable}{problem}; expected {expected}")
        self.variable = variable


class SecondSignalError(BaseException):
    """Raised by the signal handler on the second SIGTERM/SIGINT to end the workload at once.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in urllib or http.client
    between the handler and `main` can swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


@dataclass(frozen=True, slots=True)
class Settings:
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


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Reads and checks every variable; raises ConfigError naming the first bad one. Blank means unset."""
    return Settings(
        timer_name=_required(environ, "TIMER_NAME", expected="the timer's name"),
        duration_seconds=_positive_int(environ, "TIMER_DURATION_SECONDS", default=None),
        endpoint=_endpoint(environ, "CONTROL_PLANE_ENDPOINT"),
        job_id=_read(environ, "JOB_ID") or "",
        namespace=_read(environ, "JOB_NAMESPACE") or "",
        pod=_read(environ, "POD_NAME") or "",
        log_level=_choice(environ, "LOG_LEVEL", LOG_LEVELS, default="info"),
        progress_interval_seconds=_seconds(environ, "TIMER_PROGRESS_INTERVAL_SECONDS", default=10.0),
        report_attempts=_positive_int(environ, "TIMER_REPORT_ATTEMPTS", default=8),
        report_backoff_seconds=_seconds(
            environ, "TIMER_REPORT_BACKOFF_SECONDS", default=1.0, allow_zero=True
        ),
        report_timeout_seconds=_seconds(environ, "TIMER_REPORT_TIMEOUT_SECONDS", default=10.0),
        cancel_report_budget_seconds=_seconds(environ, "TIMER_CANCEL_REPORT_BUDGET_SECONDS", default=20.0),
    )


def _read(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name, "").strip() or None


def _required(environ: Mapping[str, str], name: str, *, expected: str) -> str:
    value = _read(environ, name)
    if value is None:
        raise ConfigError(name, None, expected)
    return value


def _positive_int(environ: Mapping[str, str], name: str, *, default: int | None) -> int:
    expected = "a whole number greater than 0"
    raw = _read(environ, name)
    if raw is None:
        if default is None:
            raise ConfigError(name, None, expected)
        return default
    # Stricter than int(): "1.5", "+3", "1_000" and non-ASCII digits are refused, not reinterpreted.
    if not _WHOLE_NUMBER.fullmatch(raw) or int(raw) == 0:
        raise ConfigError(name, raw, expected)
    return int(raw)


def _seconds(environ: Mapping[str, str], name: str, *, default: float, allow_zero: bool = False) -> float:
    raw = _read(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(name, raw, f"a number of seconds {'0 or more' if allow_zero else 'greater than 0'}")
    return value


def _choice(environ: Mapping[str, str], name: str, choices: Iterable[str], *, default: str) -> str:
    raw = _read(environ, name)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise ConfigError(name, raw, "one of " + ", ".join(choices))
    return raw.lower()


def _endpoint(environ: Mapping[str, str], name: str) -> str:
    expected = "an http:// or https:// URL with a host, such as http://jobscheduler.ns.svc:8080/reports"
    raw = _required(environ, name, expected=expected)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- urlsplit checks the port only when it is read
    except ValueError:
        raise ConfigError(name, raw, expected) from None
    # http.client refuses such URLs only at request time, where it would look like a failed delivery.
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(name, raw, expected)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, raw, expected)
    if parts.username is not None or parts.password is not None:
        # urllib would not send them anyway, and the secret must not end up in the pod's log.
        raise ConfigError(name, _redact(parts), "a URL without user or password")
    return raw


def _redact(parts: SplitResult) -> str:
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def format_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLogger:
    """Writes one JSON object per line: ts, level and event, then the bound context and the call's fields."""

    def __init__(self, stream: TextIO, *, level: str, **context: object) -> None:
        self._stream = stream
        self._threshold = LOG_LEVELS[level]
        self._context = context

    def log(self, level: str, event: str, **fields: object) -> None:
        if LOG_LEVELS[level] < self._threshold:
            return
        record: dict[str, object] = {"ts": format_rfc3339(datetime.now(UTC)), "level": level, "event": event}
        record.update(self._context)
        record.update(fields)
        # One write per line, flushed: the pod's log must hold everything up to a SIGKILL.
        self._stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        self._stream.flush()

    def trace(self, event: str, **fields: object) -> None:
        self.log("trace", event, **fields)

    def debug(self, event: str, **fields: object) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields: object) -> None:
        self.log("info", event, **fields)

    def warn(self, event: str, **fields: object) -> None:
        self.log("warn", event, **fields)

    def error(self, event: str, **fields: object) -> None:
        self.log("error", event, **fields)


_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalWatch:
    """Turns SIGTERM and SIGINT into something the main thread can wait on, for the `with` block.

    The first signal is recorded and wakes `wait`. The second raises SecondSignalError wherever the main
    thread is, which is the only way to cut a blocking HTTP request short. Waiting is on a wakeup fd, not a
    threading.Event: a handler calling Event.set() deadlocks if the signal lands while the main thread holds
    that Event's lock inside Event.wait(), whereas the interpreter writes the wakeup fd from C, lock-free.
    """

    def __init__(self) -> None:
        self.first_signal: int | None = None
        self.first_signal_at: float | None = None  # time.monotonic()
        self._count = 0
        self._reader, self._writer = socket.socketpair()
        self._previous_handlers: dict[int, _SignalHandler] = {}
        self._previous_wakeup_fd = -1

    def __enter__(self) -> SignalWatch:
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc_info: object) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._reader.close()
        self._writer.close()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self._count += 1
        if self._count == 1:
            self.first_signal, self.first_signal_at = signum, time.monotonic()
        elif self._count == 2:  # later ones arrive while we are already unwinding: ignore them
            raise SecondSignalError(signum)

    def wait(self, timeout: float) -> None:
        """Blocks for up to timeout seconds; returns early when a signal arrives."""
        readable, _, _ = select.select([self._reader], [], [], max(timeout, 0.0))
        if readable:
            with contextlib.suppress(BlockingIOError):
                while self._reader.recv(512):
                    pass

    def shutdown_deadline(self, budget_seconds: float) -> float | None:
        """When reporting must stop (time.monotonic()), or None while no signal has arrived."""
        return None if self.first_signal_at is None else self.first_signal_at + budget_seconds


def wait_out(settings: Settings, *, start: float, signals: SignalWatch, log: JsonLogger) -> Outcome:
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
    settings: Settings,
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
        "started_at": format_rfc3339(started_at),
        "finished_at": format_rfc3339(finished_at),
        "elapsed_seconds": round(elapsed_seconds, 3),
        "outcome": outcome.value,
    }


def idempotency_key(settings: Settings, *, started_at: datetime) -> str:
    # Same for every retry of this run, different for the pod a Job retry starts: the receiver dedupes on it.
    return f"{settings.job_id or settings.timer_name}-{format_rfc3339(started_at)}"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status: int | None  # None when no HTTP response arrived: refused, reset, timed out, DNS failure
    error: str = ""
    retry_after_seconds: float | None = None
    response_excerpt: str = ""

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def is_retryable(status: int | None) -> bool:
    """Whether a failed attempt may succeed later without anyone changing anything."""
    return status is None or status in (408, 429) or 500 <= status <= 599


def backoff_seconds(retry: int, *, initial: float, retry_after: float | None) -> float:
    """The pause before retry number `retry` (1 is the pause after the first attempt)."""
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF_SECONDS)
    # The exponent's bound only keeps 2**n from overflowing a float; the cap applies long before.
    return min(initial * 2.0 ** min(retry - 1, 64), MAX_BACKOFF_SECONDS)


def parse_retry_after(value: str | None) -> float | None:
    # Only the delay-seconds form: the HTTP-date form needs a clock in sync with the server's.
    if value is None or not _WHOLE_NUMBER.fullmatch(value.strip()):
        return None
    return float(value.strip())


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    # urllib re-sends a POST answered by 301/302/303 as a GET without a body, so the report would vanish
    # while looking delivered; a redirect is treated as a misconfigured endpoint instead.
    def redirect_request(
        self,
        req: urllib.request.Request,  # noqa: ARG002
        fp: IO[bytes],  # noqa: ARG002
        code: int,  # noqa: ARG002
        msg: str,  # noqa: ARG002
        headers: Message,  # noqa: ARG002
        newurl: str,  # noqa: ARG002
    ) -> None:
        return None


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
    try:
        with opener.open(request, timeout=timeout) as response:
            return AttemptResult(status=response.status)
    except urllib.error.HTTPError as e:
        with e:
            excerpt = _read_excerpt(e)
        return AttemptResult(
            status=e.code,
            error=f"HTTP {e.code} {e.reason}",
            retry_after_seconds=parse_retry_after(e.headers.get("Retry-After")),
            response_excerpt=excerpt,
        )
    except urllib.error.URLError as e:
        return AttemptResult(status=None, error=str(e.reason))
    except (OSError, http.client.HTTPException) as e:
        return AttemptResult(status=None, error=f"{type(e).__name__}: {e}")


def _read_excerpt(response: urllib.error.HTTPError) -> str:
    try:
        return response.read(300).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


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
    settings: Settings,
    signals: SignalWatch,
    log: JsonLogger,
    opener: urllib.request.OpenerDirector | None = None,
) -> bool:
    """POSTs the report until it is accepted, refused for good, out of attempts or out of shutdown time."""
    opener = opener or urllib.request.build_opener(_RefuseRedirects())
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
        if last.delivered:
            log.info("report.delivered", attempt=attempt, status=last.status, took_seconds=took)
            return True
        if not is_retryable(last.status):
            return give_up("rejected", attempt, last)
        retry_in = None
        if attempt < settings.report_attempts:
            retry_in = backoff_seconds(
                attempt, initial=settings.report_backoff_seconds, retry_after=last.retry_after_seconds
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


def _pause(seconds: float, *, settings: Settings, signals: SignalWatch) -> bool:
    """Sleeps between attempts; False, at once, when a shutdown deadline falls before the pause ends."""
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        deadline = signals.shutdown_deadline(settings.cancel_report_budget_seconds)
        if deadline is not None and deadline <= end:
            return False
        # Wakes on the first signal too, which is what makes the deadline above apply mid-pause.
        signals.wait(end - now)
    return True


def run(settings: Settings, *, signals: SignalWatch, log: JsonLogger) -> ExitCode:
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
        assert signals.first_signal is not None
        log.warn(
            "timer.cancelled",
            signal=signal.Signals(signals.first_signal).name,
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
    code = ExitCode.REPORTED if delivered else ExitCode.UNDELIVERED
    log.info("timer.exiting", outcome=outcome.value, delivered=delivered, exit_code=int(code))
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point; must run on the main thread, which is where Python delivers signals."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if args:
        print(f"{PROG}: takes no arguments, only environment variables (see --help)", file=sys.stderr)
        return int(ExitCode.BAD_CONFIGURATION)
    try:
        settings = load_settings(os.environ)
    except ConfigError as e:
        print(f"{PROG}: configuration error: {e}", file=sys.stderr)
        return int(ExitCode.BAD_CONFIGURATION)
    log = JsonLogger(
        sys.stdout, level=settings.log_level, timer_name=settings.timer_name, job_id=settings.job_id or None
    )
    try:
        with SignalWatch() as signals:
            return int(run(settings, signals=signals, log=log))
    except SecondSignalError as e:
        log.error(
            "timer.aborted",
            signal=e.signal_name,
            exit_code=int(ExitCode.ABORTED),
            hint="a second signal ends the workload at once; the outcome was not reported",
        )
        return int(ExitCode.ABORTED)


if __name__ == "__main__":
    sys.exit(main())
