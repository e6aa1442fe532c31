"""The healthcheck workload: runs inside a Job's container, probes HTTP, TCP and gRPC targets in parallel and
fails the Job when any is unhealthy, leaving a one-line summary in the Kubernetes termination message.
Exit codes: 0 all healthy, 1 some unhealthy, 2 bad configuration, 143 aborted by a second SIGTERM/SIGINT;
docs/workloads.md describes the environment. Standard library only, except that gRPC targets import grpcio
when they are checked."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path

from jobscheduler.workloads._common import ExitCode, WorkloadConfigError
from jobscheduler.workloads._runtime import JsonLogger, SecondSignalError, SignalWatch, run_main
from jobscheduler.workloads.health_probes import (
    Verdict,
    probe,
    worst_case_seconds,
)
from jobscheduler.workloads.health_targets import (
    DEFAULT_TERMINATION_LOG,
    PROG,
    HealthcheckSettings,
    Target,
    load_settings,
    termination_log_path,
)

# Kubernetes keeps at most this many bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096
# One target's detail in the termination message, so that one long gRPC error leaves room for the others.
SUMMARY_DETAIL_CHARS = 200
# Added to a check's worst-case duration before the main thread stops waiting for it.
GRACE_SECONDS = 2.0
# After the first SIGTERM/SIGINT, how long checks in flight may still finish: the summary must be written
# well within the pod's terminationGracePeriodSeconds, which a check's own timeout may exceed.
SHUTDOWN_WAIT_SECONDS = 1.0


USAGE = f"""\
usage: python -m jobscheduler.workloads.healthcheck

Checks every target of HEALTHCHECK_TARGETS in parallel; fails when any is unhealthy.
Configured by environment variables only:

  HEALTHCHECK_TARGETS           required; JSON list of targets, each one of
                                  {{"type": "http", "url": "...", "expected_status": "200-399"}}
                                  {{"type": "tcp", "host": "...", "port": 5432}}
                                  {{"type": "grpc", "address": "host:port", "service": ""}}
                                and optionally "name" and "timeout_seconds"
  HEALTHCHECK_ATTEMPTS          attempts per target, the first included (default 1)
  HEALTHCHECK_TIMEOUT_SECONDS   timeout of one attempt, for targets without timeout_seconds (default 5)
  HEALTHCHECK_INTERVAL_SECONDS  pause between two attempts on one target (default 1)
  HEALTHCHECK_TERMINATION_LOG   file the summary is written to (default {DEFAULT_TERMINATION_LOG})
  JOB_ID                        optional; copied into every log line
  LOG_LEVEL                     trace | debug | info | warn | error (default info)

Exit codes: 0 all healthy, 1 some unhealthy, 2 bad configuration, 143 aborted by a second signal.
"""


def run(settings: HealthcheckSettings, *, signals: SignalWatch, log: JsonLogger) -> ExitCode:
    """Probes every target, logs and writes the summary, returns the exit code; SecondSignalError escapes."""
    targets = settings.targets
    log.info(
        "healthcheck.started",
        targets=[t.name for t in targets],
        attempts=settings.attempts,
        interval_seconds=settings.interval_seconds,
    )
    start = time.monotonic()
    stop = threading.Event()
    arrived: queue.SimpleQueue[tuple[int, Verdict]] = queue.SimpleQueue()

    def work(index: int, target: Target) -> None:
        verdict = probe(
            target, attempts=settings.attempts, interval_seconds=settings.interval_seconds, stop=stop, log=log
        )
        arrived.put((index, verdict))
        signals.wake()

    for index, target in enumerate(targets):
        # Daemon threads: a second signal must end the process even while a check is blocked in a socket.
        threading.Thread(target=work, args=(index, target), name=f"check-{index}", daemon=True).start()

    # A bound on the wait, beyond the checks' own timeouts, which urllib applies per read, not per request.
    deadline = (
        start
        + GRACE_SECONDS
        + max(
            worst_case_seconds(t, attempts=settings.attempts, interval_seconds=settings.interval_seconds)
            for t in targets
        )
    )
    verdicts: dict[int, Verdict] = {}
    while True:
        while not arrived.empty():
            index, verdict = arrived.get()
            verdicts[index] = verdict
            _log_verdict(log, verdict, signal_name=signals.first_signal_name)
        if len(verdicts) == len(targets):
            break
        now = time.monotonic()
        if signals.first_signal is not None and not stop.is_set():
            stop.set()  # no retry starts; attempts in flight get SHUTDOWN_WAIT_SECONDS to finish
            deadline = min(deadline, now + SHUTDOWN_WAIT_SECONDS)
        if now >= deadline:
            break
        signals.wait(deadline - now)

    for index, target in enumerate(targets):
        if index not in verdicts:
            if signals.first_signal_name is not None:
                detail = f"still running when {signals.first_signal_name} arrived"
            else:
                detail = f"did not finish within {deadline - start:.3g}s"
            verdicts[index] = Verdict(target, False, detail, None, round(time.monotonic() - start, 3))
            _log_verdict(log, verdicts[index], signal_name=signals.first_signal_name)

    ordered = [verdicts[i] for i in range(len(targets))]
    message = summarize(ordered, signal_name=signals.first_signal_name)
    healthy = sum(v.healthy for v in ordered)
    code = ExitCode.OK if healthy == len(ordered) else ExitCode.FAILED
    log.log(
        "info" if code is ExitCode.OK else "error",
        "healthcheck.summary",
        healthy=healthy,
        total=len(ordered),
        unhealthy=[v.target.name for v in ordered if not v.healthy],
        message=message,
        elapsed_seconds=round(time.monotonic() - start, 3),
        exit_code=int(code),
    )
    _write_termination_message(settings.termination_log, message, log=log)
    return code


def _log_verdict(log: JsonLogger, verdict: Verdict, *, signal_name: str | None) -> None:
    target = verdict.target
    log.log(
        "info" if verdict.healthy else "error",
        "healthcheck.target",
        target=target.name,
        type=target.type.value,
        address=target.address,
        healthy=verdict.healthy,
        detail=_detail(verdict, signal_name=signal_name),
        attempts=verdict.attempts,
        took_seconds=verdict.took_seconds,
    )


def _detail(verdict: Verdict, *, signal_name: str | None) -> str:
    if verdict.interrupted and signal_name is not None:
        return f"{verdict.detail}; retries stopped by {signal_name}"
    return verdict.detail


def summarize(verdicts: list[Verdict], *, signal_name: str | None = None) -> str:
    """The termination message: "2/3 healthy; unhealthy: db (tcp db:5432: connection refused)"."""
    healthy = sum(v.healthy for v in verdicts)
    message = f"{healthy}/{len(verdicts)} healthy"
    unhealthy = []
    for v in verdicts:
        if v.healthy:
            continue
        target = v.target
        # A target named by default is named by its address: saying it twice would only take room.
        where = target.type if target.name == target.address else f"{target.type} {target.address}"
        detail = _shorten(_detail(v, signal_name=signal_name), SUMMARY_DETAIL_CHARS)
        unhealthy.append(f"{target.name} ({where}: {detail})")
    if unhealthy:
        message += "; unhealthy: " + ", ".join(unhealthy)
    return fit_termination_message(message)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())  # the message is one line; gRPC details can span several
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit_termination_message(message: str) -> str:
    """Cut to TERMINATION_MESSAGE_LIMIT bytes of UTF-8, on a character boundary, ending in … when cut."""
    encoded = message.encode()
    if len(encoded) <= TERMINATION_MESSAGE_LIMIT:
        return message
    ellipsis = "…"
    room = TERMINATION_MESSAGE_LIMIT - len(ellipsis.encode())
    return encoded[:room].decode("utf-8", "ignore") + ellipsis


def _write_termination_message(path: str, message: str, *, log: JsonLogger | None) -> None:
    # The kubelet mounts the file, writable, into every container; outside Kubernetes the default path
    # /dev/termination-log usually cannot be created, and that is no reason to fail the check.
    file = Path(path)
    if file.exists():
        writable = os.access(file, os.W_OK)
    else:
        writable = file.parent.is_dir() and os.access(file.parent, os.W_OK)
    if not writable:
        if log is not None:
            log.debug("healthcheck.termination_message_skipped", path=path, reason="not writable")
        return
    try:
        file.write_text(fit_termination_message(message), encoding="utf-8")
    except OSError as e:
        if log is not None:
            log.warn("healthcheck.termination_message_failed", path=path, error=str(e))


def main(argv: list[str] | None = None) -> int:
    """Entry point; must run on the main thread, which is where Python delivers signals."""
    return run_main(
        argv,
        prog=PROG,
        usage=USAGE,
        load_settings=load_settings,
        log_context=lambda settings: {"job_id": settings.job_id or None},
        run=run,
        aborted_event="healthcheck.aborted",
        aborted_hint="a second signal ends the workload at once; the checks' results are unknown",
        on_config_error=_config_error_message,
        on_aborted=_aborted_message,
    )


def _config_error_message(error: WorkloadConfigError) -> None:
    # The Job's status shows the termination message: the reason belongs there too.
    _write_termination_message(termination_log_path(os.environ), f"configuration error: {error}", log=None)


def _aborted_message(settings: HealthcheckSettings, error: SecondSignalError, log: JsonLogger) -> None:
    message = f"aborted by a second {error.signal_name} before the checks finished"
    _write_termination_message(settings.termination_log, message, log=log)


if __name__ == "__main__":
    sys.exit(main())
