"""What every workload's process shares: one-JSON-object-per-line logs, SIGTERM/SIGINT handling
(a first signal asks to stop, a second aborts) and the entry point's boilerplate. Standard
library only."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol, TextIO, TypeVar

from jobscheduler.timestamps import format_rfc3339
from jobscheduler.workloads._common import HANDLED_SIGNALS, LOG_LEVELS, ExitCode, WorkloadConfigError

# Logs


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
        now = format_rfc3339(datetime.now(UTC), precision="milliseconds")
        record: dict[str, object] = {"ts": now, "level": level, "event": event}
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
    on_config_error: Callable[[WorkloadConfigError], None] | None = None,
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
    except WorkloadConfigError as e:
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
