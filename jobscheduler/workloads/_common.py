"""What the timer, webhook and healthcheck workloads share: exit codes, reading and checking environment
variables, HTTP requests and status sets, retry pauses, one-JSON-object-per-line logs, SIGTERM/SIGINT handling
and the entry point's boilerplate. Standard library only, like the workloads themselves."""

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
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from types import FrameType
from typing import IO, Any, Protocol, TextIO, TypeVar
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, OpenerDirector, Request

LOG_LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "error": 40}
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Caps the exponential backoff and a server's Retry-After by default, so no answer can park the pod for long.
DEFAULT_MAX_BACKOFF_SECONDS = 30.0

_WHOLE_NUMBER = re.compile(r"[0-9]+")
_STATUS_ITEM = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")


def package_version() -> str:
    try:
        from jobscheduler import __version__
    except ImportError:  # run from a copy of the workloads package
        return "unknown"
    return __version__


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    BAD_CONFIGURATION = 2
    # 128 + SIGTERM: what the kubelet would have recorded had the signal's default action killed us.
    ABORTED = 143


class WorkloadError(Exception):
    """Root of the errors these workloads raise."""


class ConfigError(WorkloadError):
    """An environment variable is missing or holds a value the workload cannot use.

    The message starts with the variable's name; it quotes the value only where that cannot leak a secret.
    """

    def __init__(self, variable: str, problem: str) -> None:
        # "X is not set; ...", "X has no host", but "X='1.5' is invalid; ..."
        super().__init__(f"{variable}{'' if problem.startswith('=') else ' '}{problem}")
        self.variable = variable

    @classmethod
    def unset(cls, variable: str, *, expected: str) -> ConfigError:
        return cls(variable, f"is not set; expected {expected}")

    @classmethod
    def invalid(cls, variable: str, value: str, *, expected: str) -> ConfigError:
        return cls(variable, f"={value!r} is invalid; expected {expected}")


# Environment variables. A variable set to an empty or blank value counts as unset.


def read(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name, "").strip() or None


def required(environ: Mapping[str, str], name: str, *, expected: str) -> str:
    value = read(environ, name)
    if value is None:
        raise ConfigError.unset(name, expected=expected)
    return value


def positive_int(environ: Mapping[str, str], name: str, *, default: int | None) -> int:
    """default None makes the variable required."""
    expected = "a whole number greater than 0"
    raw = read(environ, name)
    if raw is None:
        if default is None:
            raise ConfigError.unset(name, expected=expected)
        return default
    # Stricter than int(): "1.5", "+3", "1_000" and non-ASCII digits are refused, not reinterpreted.
    if not _WHOLE_NUMBER.fullmatch(raw) or int(raw) == 0:
        raise ConfigError.invalid(name, raw, expected=expected)
    return int(raw)


def seconds(environ: Mapping[str, str], name: str, *, default: float, allow_zero: bool = False) -> float:
    raw = read(environ, name)
    if raw is None:
        return default
    value = parse_seconds(raw, allow_zero=allow_zero)
    if value is None:
        expected = f"a number of seconds {'0 or more' if allow_zero else 'greater than 0'}"
        raise ConfigError.invalid(name, raw, expected=expected)
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
        raise ConfigError.invalid(name, raw, expected="one of " + ", ".join(choices))
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


# HTTP


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
    if value is None or not _WHOLE_NUMBER.fullmatch(value.strip()):
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


# Logs


def format_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLogger:
    """Writes one JSON object per line: ts, level and event, then the bound context and the call's fields."""

    def __init__(self, stream: TextIO, *, level: str, **context: object) -> None:
        self._stream = stream
        self._threshold = LOG_LEVELS[level]
        self._context = context
        self._lock = threading.Lock()  # worker threads log too: one line must not interleave with another

    def enabled(self, level: str) -> bool:
        return LOG_LEVELS[level] >= self._threshold

    def log(self, level: str, event: str, **fields: object) -> None:
        if not self.enabled(level):
            return
        record: dict[str, object] = {"ts": format_rfc3339(datetime.now(UTC)), "level": level, "event": event}
        record.update(self._context)
        record.update(fields)
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        # One write per line, flushed: the pod's log must hold everything up to a SIGKILL.
        with self._lock:
            self._stream.write(line)
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


# Signals


class SecondSignalError(BaseException):
    """Raised by the signal handler on the second SIGTERM/SIGINT to end the workload at once.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in urllib or http.client
    between the handler and `main` can swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalWatch:
    """Turns SIGTERM and SIGINT into something the main thread can wait on, for the `with` block.

    The first signal is recorded and wakes `wait`. The second raises SecondSignalError wherever the main
    thread is, which is the only way to cut a blocking HTTP request short. Waiting is on a wakeup fd, not a
    threading.Event: a handler calling Event.set() deadlocks if the signal lands while the main thread holds
    that Event's lock inside Event.wait(), whereas the interpreter writes the wakeup fd from C, lock-free.
    Worker threads wake the same wait through `wake`.
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

    @property
    def first_signal_name(self) -> str | None:
        return None if self.first_signal is None else signal.Signals(self.first_signal).name

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self._count += 1
        if self._count == 1:
            self.first_signal, self.first_signal_at = signum, time.monotonic()
        elif self._count == 2:  # later ones arrive while we are already unwinding: ignore them
            raise SecondSignalError(signum)

    def wait(self, timeout: float) -> None:
        """Blocks for up to timeout seconds; returns early when a signal arrives or `wake` is called."""
        readable, _, _ = select.select([self._reader], [], [], max(timeout, 0.0))
        if readable:
            with contextlib.suppress(BlockingIOError):
                while self._reader.recv(512):
                    pass

    def shutdown_deadline(self, budget_seconds: float) -> float | None:
        """When work must stop (time.monotonic()): budget_seconds after the first signal, None before it."""
        return None if self.first_signal_at is None else self.first_signal_at + budget_seconds

    def wake(self) -> None:
        """Ends a `wait` in progress, or the next one; safe from any thread, also after the block ended."""
        # A full buffer already holds a wake-up; a closed socket means nobody waits any more.
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def pause(self, seconds: float) -> bool:
        """Sleeps up to seconds; False, at once, when a signal has arrived or arrives meanwhile."""
        end = time.monotonic() + seconds
        while self.first_signal is None:
            now = time.monotonic()
            if now >= end:
                return True
            self.wait(end - now)
        return False


# Entry point


class _Settings(Protocol):
    @property
    def log_level(self) -> str: ...  # a key of LOG_LEVELS


SettingsT = TypeVar("SettingsT", bound=_Settings)
_SettingsT_contra = TypeVar("_SettingsT_contra", bound=_Settings, contravariant=True)


class Run(Protocol[_SettingsT_contra]):
    def __call__(self, settings: _SettingsT_contra, *, signals: SignalWatch, log: JsonLogger) -> ExitCode: ...


def run_main(
    argv: list[str] | None,
    *,
    prog: str,
    usage: str,
    load_settings: Callable[[Mapping[str, str]], SettingsT],
    log_context: Callable[[SettingsT], Mapping[str, object]],
    run: Run[SettingsT],
    aborted_event: str,
    aborted_hint: str,
    on_config_error: Callable[[ConfigError], None] | None = None,
    on_aborted: Callable[[SettingsT, SecondSignalError, JsonLogger], None] | None = None,
) -> int:
    """A workload's `main`: --help, no arguments, settings from the environment (exit code 2 and one line on
    stderr when they are bad), a JSON log on stdout bound to log_context, then `run` under a SignalWatch,
    and the aborted_event line and exit code 143 on a second signal. The hooks run after those lines.
    Must run on the main thread, which is where Python delivers signals."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        sys.stdout.write(usage)
        return 0
    if args:
        print(f"{prog}: takes no arguments, only environment variables (see --help)", file=sys.stderr)
        return int(ExitCode.BAD_CONFIGURATION)
    try:
        settings = load_settings(os.environ)
    except ConfigError as e:
        print(f"{prog}: configuration error: {e}", file=sys.stderr)
        if on_config_error is not None:
            on_config_error(e)
        return int(ExitCode.BAD_CONFIGURATION)
    log = JsonLogger(sys.stdout, level=settings.log_level, **log_context(settings))
    try:
        with SignalWatch() as signals:
            return int(run(settings, signals=signals, log=log))
    except SecondSignalError as e:
        log.error(aborted_event, signal=e.signal_name, exit_code=int(ExitCode.ABORTED), hint=aborted_hint)
        if on_aborted is not None:
            on_aborted(settings, e, log)
        return int(ExitCode.ABORTED)
