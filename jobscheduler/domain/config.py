"""Service configuration: one frozen settings object built from the environment at start-up.

Every field's docstring names its variable, says what it does, in what unit, and ends with its
default; hack/configdoc.py turns them into docs/configuration.md. A bad value fails start-up
with one line naming the variable and the value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from jobscheduler.domain.errors import ConfigError
from jobscheduler.domain.validation import (
    has_whitespace,
    is_dns1123_label,
    is_dns1123_subdomain,
    parse_quantity,
)

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
# AUDIT_LOG's words; anything else is a file path.
AUDIT_STREAMS = ("stdout", "stderr", "off")
TRACES_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

Number = TypeVar("Number", int, float)


def parse_bool(name: str, raw: str) -> bool:
    """`raw`, the value of variable `name`, as a boolean: 1/true/yes/on or 0/false/no/off, in any case."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={word!r}: expected true or false")


def parse_number(
    name: str,
    raw: str,
    kind: type[Number],
    *,
    low: Number,
    high: Number | None = None,
    above_low: bool = False,
) -> Number:
    """`raw`, the value of variable `name`, as a finite int or float from `low` (exclusive with
    `above_low`) to `high`."""
    text = raw.strip()
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: not {'an integer' if kind is int else 'a number'}") from None
    too_low = value <= low if above_low else value < low
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        if high is not None:
            wanted = f"between {low} and {high}"
        else:
            wanted = f"a finite number {'greater than' if above_low else 'of at least'} {low:g}"
        raise ConfigError(f"{name}={text!r}: must be {wanted}")
    return value


def queue_name(variable: str, value: str) -> str:
    """A Kueue LocalQueue name (a DNS subdomain that fits a label value), or empty."""
    if value and (len(value) > 63 or not is_dns1123_subdomain(value)):
        raise ConfigError(
            f"{variable}={value!r}: not a LocalQueue name (lower-case letters, digits, '-' and '.', "
            "at most 63 characters; `kubectl get localqueues` lists them)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """What the service is and does: ports, the cluster, defaults of the jobs it renders, its
    limits and its schedule loop."""

    grpc_port: int = 50054
    """GRPC_PORT: TCP port of the gRPC API; 0 picks a free one (for tests). Default: `50054`."""
    grpc_host: str = "[::]"
    """GRPC_HOST: address the gRPC API binds to; `[::]` is every interface, `127.0.0.1` this host
    only. Default: `[::]`."""
    namespace: str = "default"
    """K8S_NAMESPACE: namespace of a request that names none, of the schedule Lease and of the
    watch cache unless WATCH_NAMESPACES says otherwise. Default: `default`."""
    in_cluster: bool = True
    """IN_CLUSTER: true uses the pod's ServiceAccount; false reads KUBECONFIG. Default: `true`."""
    kubeconfig: str | None = None
    """KUBECONFIG: path of the kubeconfig file read when IN_CLUSTER is false. Default: unset,
    `~/.kube/config`."""
    pod_name: str | None = None
    """POD_NAME: this replica's name in the schedule Lease `jobscheduler-schedules` (with the
    process id); k8s/deployment.yaml sets it from the pod's name. Default: unset, the host name."""
    log_level: str = "info"
    """LOG_LEVEL: trace, debug, info, warn (or warning) or error, in any case. Default: `info`."""
    log_format: str = "json"
    """LOG_FORMAT: json (one object per line) or console (readable, for a terminal). Default:
    `json`."""
    timer_image: str = "timer-service:latest"
    """TIMER_IMAGE: image of timer jobs whose request names none. Default: `timer-service:latest`."""
    timer_command: tuple[str, ...] = ("jobscheduler-timer",)
    """TIMER_COMMAND: container command of timer jobs, words separated by spaces; empty keeps the
    image's entrypoint. Default: `jobscheduler-timer`."""
    worker_image: str = "jobscheduler:latest"
    """WORKER_IMAGE: image of webhook and health-check jobs, which run this project's own
    `jobscheduler-webhook` and `jobscheduler-healthcheck` (the service's image has both); always
    allowed by ALLOWED_IMAGES. Default: `jobscheduler:latest`."""
    default_cpu_request: str = "100m"
    """DEFAULT_CPU_REQUEST: CPU request (a Kubernetes quantity, greater than 0) of a job whose
    request sets none. Default: `100m`."""
    default_memory_request: str = "64Mi"
    """DEFAULT_MEMORY_REQUEST: memory request (a Kubernetes quantity, greater than 0) of a job
    whose request sets none. Default: `64Mi`."""
    max_timer_duration_seconds: int = 86400
    """MAX_TIMER_DURATION_SECONDS: longest timer a request may ask for, in seconds (1 to
    2147483647). Default: `86400`."""
    default_ttl_seconds_after_finished: int | None = 86400
    """DEFAULT_TTL_SECONDS_AFTER_FINISHED: seconds a finished Job is kept before Kubernetes deletes
    it, for requests that set no ttl_seconds_after_finished; empty: kept forever. Default:
    `86400`."""
    metrics_port: int = 8080
    """METRICS_PORT: TCP port of the Prometheus text format at /metrics; 0 turns it off. Default:
    `8080`."""
    watch_namespaces: tuple[str, ...] | None = ("default",)
    """WATCH_NAMESPACES: namespaces the watch cache serves, comma-separated; `*`: every namespace
    (needs a ClusterRole); `-`: no cache, every read goes to the API. WatchJobs needs its namespace
    here. Default: K8S_NAMESPACE."""
    max_watch_streams: int = 128
    """MAX_WATCH_STREAMS: open WatchJob, WatchJobs and GetJobLogs streams per replica; more get
    RESOURCE_EXHAUSTED. Default: `128`."""
    shutdown_grace_seconds: float = 20.0
    """SHUTDOWN_GRACE_SECONDS: seconds in-flight calls get to finish after SIGTERM. Default:
    `20`."""
    health_interval_seconds: float = 2.0
    """HEALTH_INTERVAL_SECONDS: seconds between probes of the Kubernetes API's /readyz for the
    health service. Default: `2`."""
    kube_timeout_seconds: float = 10.0
    """KUBE_TIMEOUT_SECONDS: budget in seconds of one Kubernetes call, retries included, when the
    caller sets no deadline. Default: `10`."""
    kube_startup_wait_seconds: float = 60.0
    """KUBE_STARTUP_WAIT_SECONDS: seconds start-up waits for the Kubernetes API to answer, then
    checks that it serves every resource and Job field the service uses; when it does not answer
    in time, or lacks one, the process exits 1 naming what is missing (a Deployment restarts it,
    as it restarts Kubernetes' own controllers). Default: `60`."""
    allowed_images: tuple[str, ...] = ()
    """ALLOWED_IMAGES: comma-separated image patterns callers' jobs may run: globs
    (`docker.io/library/busybox:*`) or prefixes ending in `/` (`ghcr.io/acme/`), matched against
    the image as written and fully qualified (`busybox` is `docker.io/library/busybox`); others
    get INVALID_ARGUMENT. TIMER_IMAGE and WORKER_IMAGE are always allowed. Default: unset, any
    image."""
    allowed_notify_urls: tuple[str, ...] = ()
    """ALLOWED_NOTIFY_URLS: comma-separated URL patterns job notifications (ScheduleJob `notify`)
    may be sent to: prefixes ending in `/` (`https://hooks.example.com/`) or globs of the whole
    URL (`http://*.svc.cluster.local:8080/*`); others get INVALID_ARGUMENT. Default: unset, no
    notifications (a request with `notify` gets FAILED_PRECONDITION)."""
    notify_give_up_seconds: float = 3600.0
    """NOTIFY_GIVE_UP_SECONDS: seconds after a notification became due that the leader stops
    retrying it and marks it FAILED with the last error. Default: `3600`."""
    default_queue: str = ""
    """DEFAULT_QUEUE: the Kueue LocalQueue of a job whose ScheduleJob names no queue (it must
    exist in the job's namespace); such jobs wait there for Kueue to admit them
    (docs/queueing.md). Default: ``, no queue: jobs are queued only when they ask for one."""
    allowed_namespaces: tuple[str, ...] = ()
    """ALLOWED_NAMESPACES: comma-separated namespaces (globs: `team-*`) requests may name; any
    other gets PERMISSION_DENIED for every RPC. Default: unset, any namespace the ServiceAccount's
    RBAC reaches."""
    schedule_rate_per_caller: float = 0.0
    """SCHEDULE_RATE_PER_CALLER: ScheduleJob calls per second one caller may make (a token bucket
    per replica); over it: RESOURCE_EXHAUSTED with the delay to retry after; 0: no limit.
    Default: `0`."""
    schedule_burst_per_caller: int = 0
    """SCHEDULE_BURST_PER_CALLER: calls a caller may make at once above the rate; 0: the rate,
    at least 1. Default: `0`."""
    min_schedule_interval_seconds: int = 60
    """MIN_SCHEDULE_INTERVAL_SECONDS: shortest interval a schedule may have, in seconds (1 to
    86400). Default: `60`."""
    schedule_loop: bool = True
    """SCHEDULE_LOOP: take part in the leader election and, as leader, start interval runs and
    catch-up runs, release held jobs and end overdue pending ones (false: this replica never
    does; keep it on in at least one). Default: `true`."""
    schedule_tick_seconds: float = 1.0
    """SCHEDULE_TICK_SECONDS: seconds between two looks of the leader at schedules, held jobs and
    pending ones. Default: `1`."""
    backfill_max_runs: int = 100
    """BACKFILL_MAX_RUNS: most runs one BackfillSchedule call may create (1 to 10000); a range with
    more run times is refused, to be split. Default: `100`."""
    leader_lease_seconds: float = 15.0
    """LEADER_LEASE_SECONDS: seconds after which a silent leader is replaced (coordination.k8s.io
    Lease `jobscheduler-schedules` in K8S_NAMESPACE). Default: `15`."""
    default_pending_timeout_seconds: int = 0
    """DEFAULT_PENDING_TIMEOUT_SECONDS: seconds a job's pod may stay pending with ImagePullBackOff,
    Unschedulable and the like before the leader ends the job as FAILED, for requests that set no
    pending_timeout_seconds; 0: never, as Kubernetes itself behaves (a pod may legitimately wait
    that way for a node to be added or a Secret to be created). Default: `0`."""
    max_active_jobs_per_caller: int = 0
    """MAX_ACTIVE_JOBS_PER_CALLER: unfinished jobs (pending, suspended or running) one caller may
    have in a namespace, counted on the cluster; more get RESOURCE_EXHAUSTED; 0: no limit. A
    caller is its token's name, or its address when tokens are off. Default: `0`."""
    template_history_limit: int = 20
    """TEMPLATE_HISTORY_LIMIT: versions of a job template kept, the newest (1 to 1000; fewer when
    large ones would overflow its 1 MiB ConfigMap). Default: `20`."""
    audit_log: str = "stdout"
    """AUDIT_LOG: where the audit log goes (one JSON line per mutating RPC, logger
    `jobscheduler.audit`, whatever LOG_LEVEL is; docs/observability.md): `stdout`, `stderr`, `off`,
    or the path of a file it is appended to. Default: `stdout`."""
    otel_exporter_otlp_endpoint: str | None = None
    """OTEL_EXPORTER_OTLP_ENDPOINT: OTLP/gRPC endpoint the RPCs' trace spans are exported to
    (`http://jaeger:4317`; `https://` for TLS); set, jobs get the traceparent of the call that
    created them. Default: unset, tracing off (no spans, no traceparent on jobs)."""
    otel_service_name: str = "jobscheduler"
    """OTEL_SERVICE_NAME: the service.name of the exported spans. Default: `jobscheduler`."""
    otel_traces_sampler: str = "parentbased_always_on"
    """OTEL_TRACES_SAMPLER: which traces are recorded: always_on, always_off, traceidratio, or
    parentbased_ one of them (the caller's sampled flag decides when it sends a traceparent).
    Default: `parentbased_always_on`."""
    otel_traces_sampler_arg: float = 1.0
    """OTEL_TRACES_SAMPLER_ARG: the ratio of traces kept by the traceidratio samplers, 0 to 1.
    Default: `1`."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def get(name: str, default: str) -> str:
            return env.get(name, default).strip()

        def integer(name: str, default: int, *, low: int, high: int) -> int:
            return parse_number(name, get(name, str(default)), int, low=low, high=high)

        def real(name: str, default: float, *, above_zero: bool = True) -> float:
            return parse_number(name, get(name, str(default)), float, low=0.0, above_low=above_zero)

        def patterns(name: str) -> tuple[str, ...]:
            raw = get(name, "")
            items = tuple(p.strip() for p in raw.split(",") if p.strip())
            if any(has_whitespace(p) for p in items):
                raise ConfigError(f"{name}={raw!r}: patterns are separated by commas and contain no spaces")
            return items

        def boolean(name: str, default: bool) -> bool:
            return parse_bool(name, env.get(name, "true" if default else "false"))

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
            else parse_number("DEFAULT_TTL_SECONDS_AFTER_FINISHED", ttl_raw, int, low=0, high=2**31 - 1)
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
            if not raw or has_whitespace(raw):
                raise ConfigError(f"{name}={raw!r}: not an image reference")
            return raw

        return cls(
            grpc_port=integer("GRPC_PORT", d.grpc_port, low=0, high=65535),
            grpc_host=get("GRPC_HOST", d.grpc_host),
            namespace=namespace,
            in_cluster=boolean("IN_CLUSTER", d.in_cluster),
            kubeconfig=env.get("KUBECONFIG") or None,
            pod_name=get("POD_NAME", "") or None,
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
            shutdown_grace_seconds=real("SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds),
            health_interval_seconds=real("HEALTH_INTERVAL_SECONDS", d.health_interval_seconds),
            kube_timeout_seconds=real("KUBE_TIMEOUT_SECONDS", d.kube_timeout_seconds),
            kube_startup_wait_seconds=real("KUBE_STARTUP_WAIT_SECONDS", d.kube_startup_wait_seconds),
            allowed_images=patterns("ALLOWED_IMAGES"),
            allowed_notify_urls=patterns("ALLOWED_NOTIFY_URLS"),
            notify_give_up_seconds=real("NOTIFY_GIVE_UP_SECONDS", d.notify_give_up_seconds),
            allowed_namespaces=patterns("ALLOWED_NAMESPACES"),
            default_queue=queue_name("DEFAULT_QUEUE", get("DEFAULT_QUEUE", d.default_queue)),
            schedule_rate_per_caller=real(
                "SCHEDULE_RATE_PER_CALLER", d.schedule_rate_per_caller, above_zero=False
            ),
            schedule_burst_per_caller=integer(
                "SCHEDULE_BURST_PER_CALLER", d.schedule_burst_per_caller, low=0, high=1_000_000
            ),
            min_schedule_interval_seconds=integer(
                "MIN_SCHEDULE_INTERVAL_SECONDS", d.min_schedule_interval_seconds, low=1, high=86400
            ),
            schedule_loop=boolean("SCHEDULE_LOOP", d.schedule_loop),
            schedule_tick_seconds=real("SCHEDULE_TICK_SECONDS", d.schedule_tick_seconds),
            backfill_max_runs=integer("BACKFILL_MAX_RUNS", d.backfill_max_runs, low=1, high=10_000),
            leader_lease_seconds=real("LEADER_LEASE_SECONDS", d.leader_lease_seconds),
            default_pending_timeout_seconds=integer(
                "DEFAULT_PENDING_TIMEOUT_SECONDS", d.default_pending_timeout_seconds, low=0, high=2**31 - 1
            ),
            max_active_jobs_per_caller=integer(
                "MAX_ACTIVE_JOBS_PER_CALLER", d.max_active_jobs_per_caller, low=0, high=1_000_000
            ),
            template_history_limit=integer(
                "TEMPLATE_HISTORY_LIMIT", d.template_history_limit, low=1, high=1000
            ),
            audit_log=audit_destination(get("AUDIT_LOG", d.audit_log)),
            otel_exporter_otlp_endpoint=otlp_endpoint(get("OTEL_EXPORTER_OTLP_ENDPOINT", "")),
            otel_service_name=get("OTEL_SERVICE_NAME", d.otel_service_name) or d.otel_service_name,
            otel_traces_sampler=choice("OTEL_TRACES_SAMPLER", d.otel_traces_sampler, TRACES_SAMPLERS),
            otel_traces_sampler_arg=parse_number(
                "OTEL_TRACES_SAMPLER_ARG",
                get("OTEL_TRACES_SAMPLER_ARG", str(d.otel_traces_sampler_arg)),
                float,
                low=0.0,
                high=1.0,
            ),
        )


def audit_destination(raw: str) -> str:
    if raw.lower() in AUDIT_STREAMS:
        return raw.lower()
    if not raw or has_whitespace(raw.strip()) or not raw.startswith("/"):
        raise ConfigError(f"AUDIT_LOG={raw!r}: expected stdout, stderr, off or an absolute file path")
    return raw


def otlp_endpoint(raw: str) -> str | None:
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")) or has_whitespace(raw):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={raw!r}: expected an http:// or https:// URL (http://jaeger:4317)"
        )
    return raw


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Who may reach the gRPC port, and over what (docs/security.md). Kept beside Settings, not
    in it: the files named here are loaded and watched by jobscheduler.transport.tls and
    jobscheduler.transport.tokens."""

    tls_cert_file: Path | None = None
    """TLS_CERT_FILE: PEM certificate chain of the gRPC port; with TLS_KEY_FILE turns TLS on.
    Re-read when it changes. Default: unset, plaintext."""
    tls_key_file: Path | None = None
    """TLS_KEY_FILE: PEM private key of TLS_CERT_FILE (both or neither). Default: unset."""
    tls_client_ca_file: Path | None = None
    """TLS_CLIENT_CA_FILE: PEM CA bundle; set, every client must present a certificate it signed
    (mutual TLS). Needs TLS_CERT_FILE. Default: unset, no client certificates."""
    auth_tokens_file: Path | None = None
    """AUTH_TOKENS_FILE: YAML list of bearer tokens and their scopes; set, every JobScheduler call
    needs `authorization: Bearer <token>`. Re-read when it changes. Default: unset, no
    authentication."""
    reflection: bool = True
    """REFLECTION: serve gRPC server reflection (it never asks for a token); false turns it off.
    Default: `true`."""

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
        return cls(
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=client_ca,
            auth_tokens_file=path("AUTH_TOKENS_FILE"),
            reflection=parse_bool("REFLECTION", env.get("REFLECTION", "true" if d.reflection else "false")),
        )
