"""The healthcheck workload's configuration: the targets of HEALTHCHECK_TARGETS (HTTP, TCP, gRPC),
checked as the service checks a health-check job's parameters, and the settings read from the
environment. Standard library only."""

from __future__ import annotations

import enum
import importlib.util
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jobscheduler.workloads._common import LOG_LEVELS, WorkloadConfigError
from jobscheduler.workloads._env import (
    choice,
    http_url_problem,
    parse_seconds,
    positive_int,
    read,
    required,
    seconds,
)
from jobscheduler.workloads._http import StatusSet

PROG = "jobscheduler-healthcheck"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")


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
class HealthcheckSettings:
    """The workload's configuration, read once from the environment by `load_settings` (defaults there)."""

    targets: tuple[Target, ...]  # at least one; names unique
    attempts: int  # per target, the first included
    interval_seconds: float  # pause between two attempts on one target
    termination_log: str  # where the summary goes; skipped when it cannot be written
    job_id: str  # "" when the manifest does not inject it
    log_level: str  # a key of LOG_LEVELS


def load_settings(environ: Mapping[str, str]) -> HealthcheckSettings:
    """Reads every variable, raising WorkloadConfigError for the first bad one; blank means unset."""
    default_timeout = seconds(environ, "HEALTHCHECK_TIMEOUT_SECONDS", default=5.0)
    return HealthcheckSettings(
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
        raise WorkloadConfigError(
            name, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(items, list):
        raise WorkloadConfigError(name, "must be a JSON list of target objects")
    if not items:
        raise WorkloadConfigError(name, "is an empty list; expected at least one target")
    targets: list[Target] = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        target = _target(item, where=where, default_timeout=default_timeout)
        if any(t.name == target.name for t in targets):
            raise WorkloadConfigError(
                where, f'repeats the name {target.name!r}; give each target its own "name"'
            )
        targets.append(target)
    return tuple(targets)


def _target(item: object, *, where: str, default_timeout: float) -> Target:
    if not isinstance(item, dict):
        raise WorkloadConfigError(where, 'must be a JSON object with a "type"')
    kinds = ", ".join(repr(t.value) for t in TargetType)
    if "type" not in item:
        raise WorkloadConfigError(where, f'has no "type"; expected one of {kinds}')
    if item["type"] not in {t.value for t in TargetType}:
        raise WorkloadConfigError(where, f'has "type" {item["type"]!r}; expected one of {kinds}')
    kind = TargetType(item["type"])
    unknown = sorted(set(item) - set(_KEYS[kind]))
    if unknown:
        allowed = ", ".join(_KEYS[kind])
        names = ", ".join(map(repr, unknown))
        raise WorkloadConfigError(where, f"has unknown key(s) {names}; a {kind} target takes {allowed}")
    timeout = default_timeout
    if "timeout_seconds" in item:
        parsed = parse_seconds(item["timeout_seconds"])
        if parsed is None:
            value = item["timeout_seconds"]
            raise WorkloadConfigError(
                where, f'has "timeout_seconds" {value!r}; expected a number greater than 0'
            )
        timeout = parsed
    name = item.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or not name.isprintable()):
        raise WorkloadConfigError(where, f'has "name" {name!r}; expected a non-blank string')
    name = name.strip() if name is not None else None
    if kind is TargetType.HTTP:
        return _http_target(item, name=name, where=where, timeout=timeout)
    if kind is TargetType.TCP:
        return _tcp_target(item, name=name, where=where, timeout=timeout)
    return _grpc_target(item, name=name, where=where, timeout=timeout)


def _http_target(item: dict[str, Any], *, name: str | None, where: str, timeout: float) -> HttpTarget:
    url = item.get("url")
    if not isinstance(url, str) or not url.strip():
        raise WorkloadConfigError(where, 'has no "url"; expected an http:// or https:// URL')
    problem = http_url_problem(url)
    if problem is not None:
        raise WorkloadConfigError(where, f'"url" {problem}')
    expected = item.get("expected_status", "200-399")
    if isinstance(expected, int) and not isinstance(expected, bool):
        expected = str(expected)
    if not isinstance(expected, str):
        raise WorkloadConfigError(
            where, f'has "expected_status" {expected!r}; expected a string such as "200-399"'
        )
    try:
        statuses = StatusSet.parse(expected)
    except ValueError as e:
        raise WorkloadConfigError(where, f'has "expected_status" {expected!r}: {e}') from None
    return HttpTarget(name or _without_query(url), url, statuses, timeout)


def _tcp_target(item: dict[str, Any], *, name: str | None, where: str, timeout: float) -> TcpTarget:
    host = item.get("host")
    if not isinstance(host, str) or not (_HOST_NAME.fullmatch(host) or _is_ip_address(host.strip("[]"))):
        raise WorkloadConfigError(
            where, f'has "host" {host!r}; expected a host name or IP address, without port'
        )
    port = _port(item.get("port"), where=where, key="port")
    host = host.strip("[]")
    return TcpTarget(name or _host_port(host, port), host, port, timeout)


def _grpc_target(item: dict[str, Any], *, name: str | None, where: str, timeout: float) -> GrpcTarget:
    address = item.get("address")
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None:
        expected = "host:port, such as api.team-a.svc:50051"
        raise WorkloadConfigError(where, f'has "address" {address!r}; expected {expected}')
    _port(int(match["port"]), where=where, key="address's port")
    service = item.get("service", "")
    if not isinstance(service, str):
        raise WorkloadConfigError(
            where, f'has "service" {service!r}; expected a string ("" for the whole server)'
        )
    if importlib.util.find_spec("grpc") is None or importlib.util.find_spec("grpc_health") is None:
        raise WorkloadConfigError(
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
        raise WorkloadConfigError(where, f"has {key} {value!r}; expected a whole number from 1 to 65535")
    return value
