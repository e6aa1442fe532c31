"""Service configuration: one frozen settings object built from the environment at start-up.

Every field documents its variable, unit and default (the defaults are the original Go
service's). A bad value fails start-up with one line naming the variable and the value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobscheduler.domain.errors import JobSchedulerError
from jobscheduler.domain.validation import is_dns1123_label, parse_quantity

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


class ConfigError(JobSchedulerError):
    """A configuration variable has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    grpc_port: int = 50054
    """GRPC_PORT: TCP port of the gRPC API (0 picks a free one, for tests)."""
    grpc_host: str = "[::]"
    """GRPC_HOST: address to bind; `[::]` is every interface."""
    namespace: str = "default"
    """K8S_NAMESPACE: namespace used when a request names none."""
    in_cluster: bool = True
    """IN_CLUSTER: true uses the pod's ServiceAccount; false reads KUBECONFIG or ~/.kube/config."""
    kubeconfig: str | None = None
    """KUBECONFIG: kubeconfig path when IN_CLUSTER=false (default ~/.kube/config)."""
    log_level: str = "info"
    """LOG_LEVEL: trace, debug, info, warn or error."""
    log_format: str = "json"
    """LOG_FORMAT: json (default) or console (readable, for a terminal)."""
    timer_image: str = "timer-service:latest"
    """TIMER_IMAGE: image of the timer workload when a request names none."""
    timer_command: tuple[str, ...] = ("jobscheduler-timer",)
    """TIMER_COMMAND: space-separated container command for timer jobs; empty keeps the image's."""
    worker_image: str = "jobscheduler:latest"
    """WORKER_IMAGE: image of webhook and health-check jobs, which run this project's own
    `jobscheduler-webhook` and `jobscheduler-healthcheck` (the service's image has both)."""
    default_cpu_request: str = "100m"
    """DEFAULT_CPU_REQUEST: CPU request (Kubernetes quantity) when a request sets none."""
    default_memory_request: str = "64Mi"
    """DEFAULT_MEMORY_REQUEST: memory request (Kubernetes quantity) when a request sets none."""
    max_timer_duration_seconds: int = 86400
    """MAX_TIMER_DURATION_SECONDS: longest timer a request may ask for, in seconds."""
    default_ttl_seconds_after_finished: int | None = 86400
    """DEFAULT_TTL_SECONDS_AFTER_FINISHED: seconds a finished Job is kept (retention); empty: forever."""
    metrics_port: int = 8080
    """METRICS_PORT: Prometheus /metrics port (0 disables)."""
    watch_namespaces: tuple[str, ...] | None = ("default",)
    """WATCH_NAMESPACES: comma-separated namespaces the watch cache serves (default: K8S_NAMESPACE;
    `*`: every namespace, which needs a ClusterRole; `-`: no cache, every read goes to the API)."""
    max_watch_streams: int = 128
    """MAX_WATCH_STREAMS: concurrent WatchJob/WatchJobs streams; more get RESOURCE_EXHAUSTED."""
    shutdown_grace_seconds: float = 20.0
    """SHUTDOWN_GRACE_SECONDS: time in-flight calls get to finish after SIGTERM."""
    health_interval_seconds: float = 2.0
    """HEALTH_INTERVAL_SECONDS: how often the Kubernetes API is probed for the health service."""
    kube_timeout_seconds: float = 10.0
    """KUBE_TIMEOUT_SECONDS: budget of one Kubernetes call, retries included, without a caller deadline."""
    allowed_images: tuple[str, ...] = ()
    """ALLOWED_IMAGES: comma-separated image patterns callers' jobs may run (`*` matches anything,
    a trailing `/` is a prefix: `ghcr.io/acme/`, `docker.io/library/busybox:*`); empty: any image.
    The operator's own default images (TIMER_IMAGE, WORKER_IMAGE) are always allowed."""
    allowed_namespaces: tuple[str, ...] = ()
    """ALLOWED_NAMESPACES: comma-separated namespaces (globs: `team-*`) requests may name; others get
    PERMISSION_DENIED. Empty: any namespace the ServiceAccount's RBAC reaches."""
    schedule_rate_per_caller: float = 0.0
    """SCHEDULE_RATE_PER_CALLER: ScheduleJob calls per second one caller may make (token bucket per
    replica); over it: RESOURCE_EXHAUSTED with a retry delay. 0: unlimited."""
    schedule_burst_per_caller: int = 0
    """SCHEDULE_BURST_PER_CALLER: calls a caller may make at once above the rate (default: the rate,
    at least 1)."""
    min_schedule_interval_seconds: int = 60
    """MIN_SCHEDULE_INTERVAL_SECONDS: shortest interval a schedule may have (default one minute)."""
    schedule_loop: bool = True
    """SCHEDULE_LOOP: run the leader-elected loop that starts interval runs and catch-up runs
    (false: this replica never does; keep it on in at least one)."""
    schedule_tick_seconds: float = 1.0
    """SCHEDULE_TICK_SECONDS: how often the leader looks at the schedules."""
    leader_lease_seconds: float = 15.0
    """LEADER_LEASE_SECONDS: a leader silent this long is replaced (coordination.k8s.io Lease
    `jobscheduler-schedules` in K8S_NAMESPACE)."""
    default_pending_timeout_seconds: int = 0
    """DEFAULT_PENDING_TIMEOUT_SECONDS: seconds a job's pod may stay pending with ImagePullBackOff,
    Unschedulable and the like before the leader ends the job as FAILED, for requests that set no
    pending_timeout_seconds. 0 (the default): never, as Kubernetes itself behaves; a pod may
    legitimately wait that way for a node to be added or a Secret to be created."""
    max_active_jobs_per_caller: int = 0
    """MAX_ACTIVE_JOBS_PER_CALLER: unfinished jobs (pending, suspended or running) one caller may have
    in a namespace; more get RESOURCE_EXHAUSTED. 0: unlimited. A caller is its token's name, or
    its address when tokens are off."""
    template_history_limit: int = 20
    """TEMPLATE_HISTORY_LIMIT: versions of a job template kept (the newest; fewer when large ones
    would overflow its 1 MiB ConfigMap); older versions are dropped as new ones are stored."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def get(name: str, default: str) -> str:
            return env.get(name, default).strip()

        def integer(name: str, default: int, *, low: int, high: int) -> int:
            raw = get(name, str(default))
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: not an integer") from None
            if not low <= value <= high:
                raise ConfigError(f"{name}={raw!r}: must be between {low} and {high}")
            return value

        def number(name: str, default: float) -> float:
            raw = get(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: not a number") from None
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name}={raw!r}: must be a positive, finite number")
            return value

        def rate(name: str, default: float) -> float:
            raw = get(name, str(default))
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: not a number") from None
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name}={raw!r}: must be 0 (no limit) or a positive, finite number")
            return value

        def patterns(name: str) -> tuple[str, ...]:
            raw = get(name, "")
            items = tuple(p.strip() for p in raw.split(",") if p.strip())
            if any(any(c.isspace() for c in p) for p in items):
                raise ConfigError(f"{name}={raw!r}: patterns are separated by commas and contain no spaces")
            return items

        def boolean(name: str, default: bool) -> bool:
            raw = get(name, "true" if default else "false").lower()
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}={raw!r}: expected true or false")

        def choice(name: str, default: str, options: tuple[str, ...]) -> str:
            raw = get(name, default).lower()
            if raw == "warning":
                raw = "warn"
            if raw not in options:
                raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(options)}")
            return raw

        def quantity(name: str, default: str) -> str:
            raw = get(name, default)
            try:
                amount = parse_quantity(raw)
            except ValueError as e:
                raise ConfigError(f"{name}={raw!r}: {e}") from None
            if amount <= 0:
                raise ConfigError(f"{name}={raw!r}: must be greater than zero")
            return raw

        namespace = get("K8S_NAMESPACE", d.namespace)
        if not is_dns1123_label(namespace):
            raise ConfigError(f"K8S_NAMESPACE={namespace!r}: not a valid namespace name (DNS-1123 label)")
        ttl_raw = get("DEFAULT_TTL_SECONDS_AFTER_FINISHED", str(d.default_ttl_seconds_after_finished))
        ttl = (
            None
            if ttl_raw == ""
            else integer("DEFAULT_TTL_SECONDS_AFTER_FINISHED", 86400, low=0, high=2**31 - 1)
        )
        watch_raw = get("WATCH_NAMESPACES", namespace)
        watch: tuple[str, ...] | None
        if watch_raw == "-":
            watch = None
        elif watch_raw == "*":
            watch = ("",)
        else:
            watch = tuple(sorted({n.strip() for n in watch_raw.split(",") if n.strip()}))
            bad = [n for n in watch if not is_dns1123_label(n)]
            if bad or not watch:
                raise ConfigError(f"WATCH_NAMESPACES={watch_raw!r}: expected namespace names, '*' or '-'")

        def image(name: str, default: str) -> str:
            raw = get(name, default)
            if not raw or any(c.isspace() for c in raw):
                raise ConfigError(f"{name}={raw!r}: not an image reference")
            return raw

        return cls(
            grpc_port=integer("GRPC_PORT", d.grpc_port, low=0, high=65535),
            grpc_host=get("GRPC_HOST", d.grpc_host),
            namespace=namespace,
            in_cluster=boolean("IN_CLUSTER", d.in_cluster),
            kubeconfig=env.get("KUBECONFIG") or None,
            log_level=choice("LOG_LEVEL", d.log_level, LOG_LEVELS),
            log_format=choice("LOG_FORMAT", d.log_format, ("json", "console")),
            timer_image=image("TIMER_IMAGE", d.timer_image),
            timer_command=tuple(get("TIMER_COMMAND", " ".join(d.timer_command)).split()),
            worker_image=image("WORKER_IMAGE", d.worker_image),
            default_cpu_request=quantity("DEFAULT_CPU_REQUEST", d.default_cpu_request),
            default_memory_request=quantity("DEFAULT_MEMORY_REQUEST", d.default_memory_request),
            max_timer_duration_seconds=integer(
                "MAX_TIMER_DURATION_SECONDS", d.max_timer_duration_seconds, low=1, high=2**31 - 1
            ),
            default_ttl_seconds_after_finished=ttl,
            metrics_port=integer("METRICS_PORT", d.metrics_port, low=0, high=65535),
            watch_namespaces=watch,
            max_watch_streams=integer("MAX_WATCH_STREAMS", d.max_watch_streams, low=0, high=10000),
            shutdown_grace_seconds=number("SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds),
            health_interval_seconds=number("HEALTH_INTERVAL_SECONDS", d.health_interval_seconds),
            kube_timeout_seconds=number("KUBE_TIMEOUT_SECONDS", d.kube_timeout_seconds),
            allowed_images=patterns("ALLOWED_IMAGES"),
            allowed_namespaces=patterns("ALLOWED_NAMESPACES"),
            schedule_rate_per_caller=rate("SCHEDULE_RATE_PER_CALLER", d.schedule_rate_per_caller),
            schedule_burst_per_caller=integer(
                "SCHEDULE_BURST_PER_CALLER", d.schedule_burst_per_caller, low=0, high=1_000_000
            ),
            min_schedule_interval_seconds=integer(
                "MIN_SCHEDULE_INTERVAL_SECONDS", d.min_schedule_interval_seconds, low=1, high=86400
            ),
            schedule_loop=boolean("SCHEDULE_LOOP", d.schedule_loop),
            schedule_tick_seconds=number("SCHEDULE_TICK_SECONDS", d.schedule_tick_seconds),
            leader_lease_seconds=number("LEADER_LEASE_SECONDS", d.leader_lease_seconds),
            default_pending_timeout_seconds=integer(
                "DEFAULT_PENDING_TIMEOUT_SECONDS", d.default_pending_timeout_seconds, low=0, high=2**31 - 1
            ),
            max_active_jobs_per_caller=integer(
                "MAX_ACTIVE_JOBS_PER_CALLER", d.max_active_jobs_per_caller, low=0, high=1_000_000
            ),
            template_history_limit=integer(
                "TEMPLATE_HISTORY_LIMIT", d.template_history_limit, low=1, high=1000
            ),
        )


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Who may reach the gRPC port, and over what (README "Security"). Kept beside Settings, not
    in it: the files named here are loaded and watched by jobscheduler.transport.security."""

    tls_cert_file: Path | None = None
    """TLS_CERT_FILE: PEM certificate chain of the gRPC port; with TLS_KEY_FILE turns TLS on
    (default: unset, plaintext). Re-read when it changes."""
    tls_key_file: Path | None = None
    """TLS_KEY_FILE: PEM private key of TLS_CERT_FILE (both or neither)."""
    tls_client_ca_file: Path | None = None
    """TLS_CLIENT_CA_FILE: PEM CA bundle; set, every client must present a certificate it signed
    (mutual TLS). Needs TLS_CERT_FILE (default: unset, no client certificates)."""
    auth_tokens_file: Path | None = None
    """AUTH_TOKENS_FILE: YAML list of bearer tokens and their scopes; set, every JobScheduler call
    needs `authorization: Bearer <token>` (default: unset, no authentication). Re-read when it
    changes."""
    reflection: bool = True
    """REFLECTION: serve gRPC server reflection (default true; it never asks for a token)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SecuritySettings:
        env = os.environ if env is None else env
        d = cls()

        def path(name: str) -> Path | None:
            raw = env.get(name, "").strip()
            return Path(raw) if raw else None

        cert, key, client_ca = path("TLS_CERT_FILE"), path("TLS_KEY_FILE"), path("TLS_CLIENT_CA_FILE")
        if (cert is None) != (key is None):
            given, missing = ("TLS_CERT_FILE", "TLS_KEY_FILE") if cert else ("TLS_KEY_FILE", "TLS_CERT_FILE")
            raise ConfigError(f"{given} is set but {missing} is not: TLS needs both (or neither)")
        if client_ca is not None and cert is None:
            raise ConfigError(
                f"TLS_CLIENT_CA_FILE={str(client_ca)!r}: mutual TLS needs TLS_CERT_FILE and TLS_KEY_FILE too"
            )
        raw = env.get("REFLECTION", "true" if d.reflection else "false").strip().lower()
        if raw not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError(f"REFLECTION={raw!r}: expected true or false")
        return cls(
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=client_ca,
            auth_tokens_file=path("AUTH_TOKENS_FILE"),
            reflection=raw in ("1", "true", "yes", "on"),
        )
