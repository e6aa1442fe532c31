"""The healthcheck workload: runs inside a Job's container, probes HTTP, TCP and gRPC targets in parallel and
fails the Job when any is unhealthy, leaving a one-line summary in the Kubernetes termination message.
Exit codes: 0 all healthy, 1 some unhealthy, 2 bad configuration, 143 aborted by a second SIGTERM/SIGINT;
docs/workloads.md describes the environment. Standard library only, except that gRPC targets import grpcio
when they are checked."""

from __future__ import annotations

import enum
import http.client
import importlib.util
import ipaddress
import json
import os
import queue
import re
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobscheduler.workloads._common import (
    LOG_LEVELS,
    ConfigError,
    ExitCode,
    JsonLogger,
    RefuseRedirects,
    SecondSignalError,
    SignalWatch,
    StatusSet,
    choice,
    http_url_problem,
    os_error_text,
    package_version,
    parse_seconds,
    positive_int,
    read,
    request_error_text,
    required,
    run_main,
    seconds,
)

PROG = "jobscheduler-healthcheck"
USER_AGENT = f"{PROG}/{package_version()}"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most this many bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096
# One target's detail in the termination message, so that one long gRPC error leaves room for the others.
SUMMARY_DETAIL_CHARS = 200
# Added to a check's worst-case duration before the main thread stops waiting for it.
GRACE_SECONDS = 2.0
# After the first SIGTERM/SIGINT, how long checks in flight may still finish: the summary must be written
# well within the pod's terminationGracePeriodSeconds, which a check's own timeout may exceed.
SHUTDOWN_WAIT_SECONDS = 1.0

_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")

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


class TargetType(enum.StrEnum):
    HTTP = "http"
    TCP = "tcp"
    GRPC = "grpc"


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """GET url; healthy when the status is in expected_status. Redirects are not followed."""

    name: str
    url: str  # http(s), no user or password
    expected_status: StatusSet
    timeout_seconds: float

    @property
    def type(self) -> TargetType:
        return TargetType.HTTP

    @property
    def address(self) -> str:
        return _without_query(self.url)


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """Healthy when a TCP connection to host:port is accepted."""

    name: str
    host: str  # a name or an IP address, IPv6 without brackets
    port: int
    timeout_seconds: float

    @property
    def type(self) -> TargetType:
        return TargetType.TCP

    @property
    def address(self) -> str:
        return _host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """grpc.health.v1.Health/Check over plaintext HTTP/2; healthy when the answer is SERVING."""

    name: str
    target: str  # host:port
    service: str  # "" asks about the server as a whole
    timeout_seconds: float

    @property
    def type(self) -> TargetType:
        return TargetType.GRPC

    @property
    def address(self) -> str:
        return f"{self.target} service {self.service!r}" if self.service else self.target


Target = HttpTarget | TcpTarget | GrpcTarget

_KEYS = {
    TargetType.HTTP: ("name", "type", "url", "expected_status", "timeout_seconds"),
    TargetType.TCP: ("name", "type", "host", "port", "timeout_seconds"),
    TargetType.GRPC: ("name", "type", "address", "service", "timeout_seconds"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """The workload's configuration, read once from the environment by `load_settings` (defaults there)."""

    targets: tuple[Target, ...]  # at least one; names unique
    attempts: int  # per target, the first included
    interval_seconds: float  # pause between two attempts on one target
    termination_log: str  # where the summary goes; skipped when it cannot be written
    job_id: str  # "" when the manifest does not inject it
    log_level: str  # a key of LOG_LEVELS


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Reads and checks every variable; raises ConfigError naming the first bad one. Blank means unset."""
    default_timeout = seconds(environ, "HEALTHCHECK_TIMEOUT_SECONDS", default=5.0)
    return Settings(
        targets=_targets(environ, "HEALTHCHECK_TARGETS", default_timeout=default_timeout),
        attempts=positive_int(environ, "HEALTHCHECK_ATTEMPTS", default=1),
        interval_seconds=seconds(environ, "HEALTHCHECK_INTERVAL_SECONDS", default=1.0, allow_zero=True),
        termination_log=termination_log_path(environ),
        job_id=read(environ, "JOB_ID") or "",
        log_level=choice(environ, "LOG_LEVEL", LOG_LEVELS, default="info"),
    )


def termination_log_path(environ: Mapping[str, str]) -> str:
    return read(environ, "HEALTHCHECK_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG


def _targets(environ: Mapping[str, str], name: str, *, default_timeout: float) -> tuple[Target, ...]:
    raw = required(environ, name, expected='a JSON list of targets such as [{"type": "tcp", ...}]')
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(name, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(items, list):
        raise ConfigError(name, "must be a JSON list of target objects")
    if not items:
        raise ConfigError(name, "is an empty list; expected at least one target")
    targets: list[Target] = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        target = _target(item, where=where, default_timeout=default_timeout)
        if any(t.name == target.name for t in targets):
            raise ConfigError(where, f'repeats the name {target.name!r}; give each target its own "name"')
        targets.append(target)
    return tuple(targets)


def _target(item: object, *, where: str, default_timeout: float) -> Target:
    if not isinstance(item, dict):
        raise ConfigError(where, 'must be a JSON object with a "type"')
    kinds = ", ".join(repr(t.value) for t in TargetType)
    if "type" not in item:
        raise ConfigError(where, f'has no "type"; expected one of {kinds}')
    if item["type"] not in {t.value for t in TargetType}:
        raise ConfigError(where, f'has "type" {item["type"]!r}; expected one of {kinds}')
    kind = TargetType(item["type"])
    unknown = sorted(set(item) - set(_KEYS[kind]))
    if unknown:
        allowed = ", ".join(_KEYS[kind])
        names = ", ".join(map(repr, unknown))
        raise ConfigError(where, f"has unknown key(s) {names}; a {kind} target takes {allowed}")
    timeout = default_timeout
    if "timeout_seconds" in item:
        parsed = parse_seconds(item["timeout_seconds"])
        if parsed is None:
            value = item["timeout_seconds"]
            raise ConfigError(where, f'has "timeout_seconds" {value!r}; expected a number greater than 0')
        timeout = parsed
    name = item.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or not name.isprintable()):
        raise ConfigError(where, f'has "name" {name!r}; expected a non-blank string')
    name = name.strip() if name is not None else None
    if kind is TargetType.HTTP:
        return _http_target(item, name=name, where=where, timeout=timeout)
    if kind is TargetType.TCP:
        return _tcp_target(item, name=name, where=where, timeout=timeout)
    return _grpc_target(item, name=name, where=where, timeout=timeout)


def _http_target(item: dict[str, Any], *, name: str | None, where: str, timeout: float) -> HttpTarget:
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(where, 'has no "url"; expected an http:// or https:// URL')
    problem = http_url_problem(url)
    if problem is not None:
        raise ConfigError(where, f'"url" {problem}')
    expected = item.get("expected_status", "200-399")
    if isinstance(expected, int) and not isinstance(expected, bool):
        expected = str(expected)
    if not isinstance(expected, str):
        raise ConfigError(where, f'has "expected_status" {expected!r}; expected a string such as "200-399"')
    try:
        statuses = StatusSet.parse(expected)
    except ValueError as e:
        raise ConfigError(where, f'has "expected_status" {expected!r}: {e}') from None
    return HttpTarget(name or _without_query(url), url, statuses, timeout)


def _tcp_target(item: dict[str, Any], *, name: str | None, where: str, timeout: float) -> TcpTarget:
    host = item.get("host")
    if not isinstance(host, str) or not (_HOST_NAME.fullmatch(host) or _is_ip_address(host.strip("[]"))):
        raise ConfigError(where, f'has "host" {host!r}; expected a host name or IP address, without port')
    port = _port(item.get("port"), where=where, key="port")
    host = host.strip("[]")
    return TcpTarget(name or _host_port(host, port), host, port, timeout)


def _grpc_target(item: dict[str, Any], *, name: str | None, where: str, timeout: float) -> GrpcTarget:
    address = item.get("address")
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None:
        expected = "host:port, such as api.team-a.svc:50051"
        raise ConfigError(where, f'has "address" {address!r}; expected {expected}')
    _port(int(match["port"]), where=where, key="address's port")
    service = item.get("service", "")
    if not isinstance(service, str):
        raise ConfigError(where, f'has "service" {service!r}; expected a string ("" for the whole server)')
    if importlib.util.find_spec("grpc") is None or importlib.util.find_spec("grpc_health") is None:
        raise ConfigError(
            where, "is a grpc target, which needs the grpcio and grpcio-health-checking packages installed"
        )
    default_name = f"{address}/{service}" if service else str(address)
    return GrpcTarget(name or default_name, str(address), service, timeout)


def _without_query(url: str) -> str:
    # Query and fragment are the likeliest place for a token, and a probe's name does not need them.
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port(value: object, *, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(where, f"has {key} {value!r}; expected a whole number from 1 to 65535")
    return value


# Checks: one attempt each, never raising for the target's failures.


@dataclass(frozen=True, slots=True)
class CheckResult:
    healthy: bool
    detail: str  # what was seen: "status 200", "connection refused", "NOT_SERVING", ...


def check(target: Target) -> CheckResult:
    if isinstance(target, HttpTarget):
        return check_http(target)
    if isinstance(target, TcpTarget):
        return check_tcp(target)
    return check_grpc(target)


def check_tcp(target: TcpTarget) -> CheckResult:
    try:
        with socket.create_connection((target.host, target.port), timeout=target.timeout_seconds):
            return CheckResult(healthy=True, detail="connected")
    except OSError as e:
        return CheckResult(healthy=False, detail=os_error_text(e, timeout=target.timeout_seconds))


def check_http(target: HttpTarget) -> CheckResult:
    opener = urllib.request.build_opener(RefuseRedirects())
    request = urllib.request.Request(target.url, headers={"User-Agent": USER_AGENT}, method="GET")
    try:
        with opener.open(request, timeout=target.timeout_seconds) as response:
            status: int = response.status
    except urllib.error.HTTPError as e:  # any status urllib does not call success, 3xx included
        with e:
            status = e.code
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
        return CheckResult(healthy=False, detail=request_error_text(e, timeout=target.timeout_seconds))
    if status in target.expected_status:
        return CheckResult(healthy=True, detail=f"status {status}")
    return CheckResult(healthy=False, detail=f"status {status}, expected {target.expected_status}")


def check_grpc(target: GrpcTarget) -> CheckResult:
    # Imported here, not at the top, so that the rest of the workload stays standard-library only and a
    # module import never fails where no gRPC target is configured (load_settings checks they exist).
    import grpc
    from grpc_health.v1 import health_pb2

    request = health_pb2.HealthCheckRequest(service=target.service)
    with grpc.insecure_channel(target.target) as channel:
        # The multicallable rather than HealthStub, whose type stubs lack its methods.
        health_check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = health_check(request, timeout=target.timeout_seconds)
        except grpc.RpcError as e:
            if not isinstance(e, grpc.Call):
                return CheckResult(healthy=False, detail=f"RPC failed: {e}")
            code = e.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return CheckResult(healthy=False, detail=f"no answer within {target.timeout_seconds:g}s")
            if code is grpc.StatusCode.UNIMPLEMENTED:
                detail = "UNIMPLEMENTED: the server offers no grpc.health.v1.Health service"
                return CheckResult(healthy=False, detail=detail)
            return CheckResult(healthy=False, detail=f"{code.name}: {e.details()}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return CheckResult(healthy=response.status == health_pb2.HealthCheckResponse.SERVING, detail=status)


# Probing: one thread per target, so a slow target does not delay the verdict on the others.


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    healthy: bool
    detail: str
    attempts: int | None  # None when the check had not finished
    took_seconds: float
    interrupted: bool = False  # a signal stopped the retries


def probe(
    target: Target,
    *,
    attempts: int,
    interval_seconds: float,
    stop: threading.Event,
    log: JsonLogger,
) -> Verdict:
    """Checks the target until healthy, out of attempts, or stopped; runs in its own thread."""
    start = time.monotonic()
    result = CheckResult(healthy=False, detail="not checked")
    for attempt in range(1, attempts + 1):
        try:
            result = check(target)
        except Exception as e:  # a bug in a check must not leave the main thread waiting for it
            log.error("healthcheck.check_crashed", target=target.name, traceback=traceback.format_exc())
            took = round(time.monotonic() - start, 3)
            return Verdict(target, False, f"check crashed: {type(e).__name__}: {e}", attempt, took)
        took = round(time.monotonic() - start, 3)
        if result.healthy:
            return Verdict(target, healthy=True, detail=result.detail, attempts=attempt, took_seconds=took)
        log.debug("healthcheck.attempt_failed", target=target.name, attempt=attempt, detail=result.detail)
        if attempt < attempts and stop.wait(interval_seconds):
            return Verdict(target, False, result.detail, attempt, took, interrupted=True)
    return Verdict(target, False, result.detail, attempts, round(time.monotonic() - start, 3))


def worst_case_seconds(target: Target, *, attempts: int, interval_seconds: float) -> float:
    return attempts * target.timeout_seconds + (attempts - 1) * interval_seconds


def run(settings: Settings, *, signals: SignalWatch, log: JsonLogger) -> ExitCode:
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


def _config_error_message(error: ConfigError) -> None:
    # The Job's status shows the termination message: the reason belongs there too.
    _write_termination_message(termination_log_path(os.environ), f"configuration error: {error}", log=None)


def _aborted_message(settings: Settings, error: SecondSignalError, log: JsonLogger) -> None:
    message = f"aborted by a second {error.signal_name} before the checks finished"
    _write_termination_message(settings.termination_log, message, log=log)


if __name__ == "__main__":
    sys.exit(main())
