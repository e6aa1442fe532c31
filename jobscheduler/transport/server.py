"""Wiring: the gRPC server with the JobScheduler, health and reflection services, the
interceptor every JobScheduler RPC passes (jobscheduler.transport.interceptors), the health
monitor that tracks the Kubernetes API, TLS and bearer tokens (jobscheduler.transport.tls,
jobscheduler.transport.tokens), and graceful shutdown.

Concurrency model: a synchronous grpc server whose thread pool runs each RPC to completion
on one thread, calling the (thread-safe, pooled) Kubernetes client directly; one background
thread probes the API server for the health service. No asyncio anywhere.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from jobscheduler.app.schedules import ScheduleService
from jobscheduler.app.service import JobService
from jobscheduler.app.servicestatus import ServiceHealth
from jobscheduler.app.templates import TemplateService
from jobscheduler.control.leader import LeaseElector, Reconciler, ScheduleLoop
from jobscheduler.control.notify import Notifier
from jobscheduler.control.pending import PendingTimeouts
from jobscheduler.control.release import DependencyReleaser
from jobscheduler.domain.config import SecuritySettings, Settings
from jobscheduler.domain.errors import ConfigError, GatewayConfigError, JobSchedulerError, RegistryError
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.servicehealth import NotifyFacts
from jobscheduler.kube.cache import JobCache
from jobscheduler.kube.compat import OLDEST_TESTED, check_server
from jobscheduler.kube.connection import BackoffPolicy, load_api_client
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.obs.audit import AuditLog
from jobscheduler.obs.logs import configure_logging
from jobscheduler.obs.metrics import register_cache, register_service_health, serve_metrics
from jobscheduler.obs.tracing import tracer_provider
from jobscheduler.transport.convert import status_json
from jobscheduler.transport.interceptors import RpcInterceptor
from jobscheduler.transport.reflection import enable_reflection
from jobscheduler.transport.registration import SERVICE_NAME, add_service
from jobscheduler.transport.rpcs import JobSchedulerServicer
from jobscheduler.transport.servicestatus import service_gauges
from jobscheduler.transport.tls import Security
from jobscheduler.transport.tokens import Authorizer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger("jobscheduler.transport.server")
# SERVING while the process answers at all, whatever the Kubernetes API does: for liveness
# probes, so an API server outage makes replicas unready instead of restarting them.
LIVENESS_NAME = "liveness"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Threads kept for unary calls, whatever the streams do: each open stream holds one more, and
# there are at most MAX_WATCH_STREAMS of those (rpc_server sizes the pool from both).
UNARY_WORKERS = 32


class HealthMonitor:
    """SERVING only while the Kubernetes API answers /readyz; probed in the background and
    flipped at once when an RPC finds the API unavailable."""

    def __init__(self, gateway: KubeGateway, servicer: health.HealthServicer, *, interval: float) -> None:
        self.gateway = gateway
        self.servicer = servicer
        self.interval = interval
        self._stop = threading.Event()
        self._serving: bool | None = None
        # Called after each background probe (the service's conditions, so their `since` and
        # their log lines follow the clock rather than the next GetServiceStatus).
        self.after_probe: Callable[[], object] | None = None
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)

    def start(self) -> None:
        self.probe()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def probe(self) -> bool:
        ok = self.gateway.ready(timeout=min(2.0, self.interval))
        self._set(ok)
        return ok

    def serving(self) -> bool:
        return bool(self._serving)

    def report_unavailable(self) -> None:
        self._set(False)

    def _set(self, serving: bool) -> None:
        if self._stop.is_set() or serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.servicer.set(name, status)
        if serving:
            log.info("kubernetes api reachable: SERVING")
        else:
            log.warning("kubernetes api unreachable: NOT_SERVING")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.probe()
            if self.after_probe is not None:
                self.after_probe()


@dataclass
class App:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    monitor: HealthMonitor
    cache: JobCache | None
    schedule_loop: ScheduleLoop | None = None
    service: JobService | None = None
    # The leader's notifier; notifier.health(namespaces) is GetServiceStatus's view of it.
    notifier: Notifier | None = None
    tracing: TracerProvider | None = None

    def start(self) -> None:
        self.monitor.start()
        if self.cache is not None:
            self.cache.start()
        self.server.start()
        if self.schedule_loop is not None:
            self.schedule_loop.start()
        if self.notifier is not None:
            self.notifier.start()

    def stop(self, grace: float) -> threading.Event:
        """NOT_SERVING first (so load balancers drain), then refuse new calls and give
        in-flight ones `grace` seconds. Open watch streams end with the cache."""
        self.monitor.stop()
        self.health.enter_graceful_shutdown()
        if self.schedule_loop is not None:
            self.schedule_loop.stop()  # releases the Lease: another replica leads at once
        if self.notifier is not None:
            self.notifier.stop()
        if self.cache is not None:
            self.cache.stop()
        stopped = self.server.stop(grace)
        if self.tracing is not None:
            # Once the calls have ended: the spans still in the batch are exported, not lost.
            tracing = self.tracing

            def flush() -> None:
                stopped.wait()
                tracing.shutdown()

            threading.Thread(target=flush, name="tracing-flush", daemon=True).start()
        return stopped


def rpc_server(
    servicer: JobSchedulerServicer,
    *,
    max_streams: int,
    authorizer: Authorizer | None = None,
    on_unavailable: Callable[[], None] | None = None,
    audit: AuditLog | None = None,
    tracing: TracerProvider | None = None,
) -> grpc.Server:
    """A grpc server (not bound, not started) serving the JobScheduler RPCs through the
    interceptor. Its pool and the stream bound come from the one number, `max_streams`: every
    allowed stream has a thread of its own, and UNARY_WORKERS threads stay for unary calls.
    With `tracing`, OpenTelemetry's gRPC instrumentation runs first (outermost), so the server
    span is current while the interceptor and the servicer run."""
    interceptors: list[Any] = [] if tracing is None else [tracing_interceptor(tracing)]
    interceptors.append(
        RpcInterceptor(
            SERVICE_NAME,
            authorizer=authorizer,
            on_unavailable=on_unavailable,
            max_streams=max_streams,
            audit=audit,
        )
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=UNARY_WORKERS + max_streams, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_service(servicer.method, server)
    return server


def tracing_interceptor(provider: TracerProvider) -> grpc.ServerInterceptor:
    """OpenTelemetry's gRPC server instrumentation: a server span per RPC, the child of the
    caller's `traceparent` metadata when it sends one, else the root of a new trace."""
    from opentelemetry.instrumentation.grpc import server_interceptor

    interceptor: grpc.ServerInterceptor = server_interceptor(tracer_provider=provider)  # type: ignore[no-untyped-call]
    return interceptor


def build_server(
    settings: Settings,
    gateway: KubeGateway,
    registry: Registry,
    *,
    security: Security | None = None,
    kubernetes: str = "",
) -> App:
    """The wired server, bound (port 0 picks a free one) but not started. Without `security`:
    plaintext, no tokens, reflection on."""
    security = security or Security()
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_servicer.set(LIVENESS_NAME, health_pb2.HealthCheckResponse.SERVING)
    monitor = HealthMonitor(gateway, health_servicer, interval=settings.health_interval_seconds)
    cache = JobCache(gateway, settings.watch_namespaces) if settings.watch_namespaces else None
    if cache is not None:
        register_cache(cache.counts, cache.queue_depths)
    service = JobService(gateway, registry, settings, cache=cache, api_reachable=monitor.serving)
    schedules = ScheduleService(gateway, service)
    # Leader-only tasks besides the schedules, run on every tick by the elected replica.
    reconcilers: list[Reconciler] = []
    reconcilers.append(PendingTimeouts(service))  # fail jobs stuck pending past their timeout
    reconcilers.append(DependencyReleaser(service))  # release or fail jobs held by `after`
    loop = None
    elector = None
    notifier = None
    identity = replica_identity(settings.pod_name)
    if settings.schedule_loop:
        elector = LeaseElector(
            gateway,
            namespace=settings.namespace,
            identity=identity,
            lease_seconds=settings.leader_lease_seconds,
        )
        # Delivers jobs' notifications (ScheduleJob `notify`): fed by the cache, swept each tick.
        notifier = Notifier(
            service,
            serialize=status_json,
            give_up_seconds=settings.notify_give_up_seconds,
            identity=identity,
            leading=lambda: elector.leading,
        )
        reconcilers.append(notifier)
        loop = ScheduleLoop(
            schedules,
            elector,
            namespaces=settings.watch_namespaces or (settings.namespace,),
            tick_seconds=settings.schedule_tick_seconds,
            reconcilers=reconcilers,
            on_schedule_paused=notifier.schedule_paused,
        )
    service_health = ServiceHealth(
        gateway,
        serving=monitor.serving,
        replica=identity,
        kubernetes_version=kubernetes,
        cache=cache,
        leader=elector.facts if elector is not None else None,
        notifications=notify_facts(notifier, settings.watch_namespaces or (settings.namespace,)),
    )
    monitor.after_probe = service_health.report
    register_service_health(lambda: service_gauges(service_health.report()))
    servicer = JobSchedulerServicer(
        service,
        registry,
        schedules=schedules,
        templates=TemplateService(gateway, service),
        service_health=service_health,
    )
    tracing = tracer_provider(
        settings.otel_exporter_otlp_endpoint,
        service_name=settings.otel_service_name,
        sampler=settings.otel_traces_sampler,
        sampler_arg=settings.otel_traces_sampler_arg,
    )
    server = rpc_server(
        servicer,
        max_streams=settings.max_watch_streams,
        audit=AuditLog(settings.audit_log),
        tracing=tracing,
        # Only the JobScheduler RPCs ask for a token: health and reflection stay open.
        authorizer=security.authorizer(default_namespace=settings.namespace),
        on_unavailable=monitor.report_unavailable,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if security.reflection:
        enable_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    credentials = security.server_credentials()
    port = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    return App(
        server=server,
        port=port,
        health=health_servicer,
        monitor=monitor,
        cache=cache,
        schedule_loop=loop,
        service=service,
        notifier=notifier,
        tracing=tracing,
    )


def notify_facts(notifier: Notifier | None, namespaces: Sequence[str]) -> Callable[[], NotifyFacts] | None:
    """The notification backlog for GetServiceStatus (None on a replica that cannot deliver)."""
    if notifier is None:
        return None

    def facts() -> NotifyFacts:
        health = notifier.health(namespaces)
        return NotifyFacts(health.backlog, health.failing_sinks, health.oldest_pending_seconds)

    return facts


def replica_identity(pod_name: str | None) -> str:
    """Who holds the schedule Lease: the pod's name (POD_NAME, from the downward API) or the
    host's, with the process id and a random suffix so two processes never share one."""
    base = pod_name or socket.gethostname()
    return f"{base}_{os.getpid()}_{secrets.token_hex(3)}"


def load_security() -> Security:
    """SecuritySettings from the environment, their files loaded; a bad one ends the process
    with exit code 2 and one line naming the variable, as a bad Settings value does."""
    try:
        return Security.load(SecuritySettings.from_env())
    except ConfigError as e:
        print(f"jobscheduler: bad configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(
    settings: Settings,
    gateway: KubeGateway,
    registry: Registry,
    *,
    security: Security | None = None,
    kubernetes: str | None = None,
) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully. Without `security`, it comes
    from the environment (TLS_*, AUTH_TOKENS_FILE, REFLECTION); `kubernetes` is the API
    server's version, for the start-up log line."""
    security = security or load_security()
    app = build_server(settings, gateway, registry, security=security, kubernetes=kubernetes or "")
    # Handlers go in before the port opens: a SIGTERM that arrives as soon as the port accepts
    # connections (a pod deleted while starting) must still shut down gracefully. Python runs
    # them on this thread, between start-up steps, so the flags need no lock.
    stopping = threading.Event()
    started = False

    def shut_down() -> None:
        threading.Thread(target=lambda: app.stop(settings.shutdown_grace_seconds).wait(), daemon=True).start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info(
            "shutting down", signal=signal.Signals(signum).name, grace_seconds=settings.shutdown_grace_seconds
        )
        if started:
            shut_down()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    app.start()
    started = True
    if stopping.is_set():  # the signal came while starting: stop now that there is something to stop
        shut_down()
    log.info(
        "serving",
        port=app.port,
        kubernetes=kubernetes,
        queueing=app.service.queues.describe() if app.service is not None else None,
        namespace=settings.namespace,
        job_types=registry.names(),
        metrics_port=settings.metrics_port or None,
        watch_namespaces=[n or "*" for n in settings.watch_namespaces or ()],
        tls=security.tls,
        auth_tokens_file=str(security.tokens.path) if security.tokens else None,
        reflection=security.reflection,
        audit_log=settings.audit_log,
        otlp_endpoint=settings.otel_exporter_otlp_endpoint,
    )
    if security.tokens is not None and security.certificates is None:
        log.warning(
            "AUTH_TOKENS_FILE without TLS: tokens travel in plaintext; set TLS_CERT_FILE and TLS_KEY_FILE "
            "unless the network between callers and this port is encrypted"
        )
    app.server.wait_for_termination()
    log.info("stopped")


def serve_from_env() -> int:
    """`jobscheduler serve`: settings from the environment, the gateway, the registry, then serve.

    Returns the process's exit code: 2 with one line on stderr for bad configuration."""
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"jobscheduler: bad configuration: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        registry = Registry.from_entry_points()
        api = load_api_client(in_cluster=settings.in_cluster, kubeconfig=settings.kubeconfig)
    except (GatewayConfigError, RegistryError) as e:
        print(f"jobscheduler: {e}", file=sys.stderr)
        return 2
    gateway = KubeGateway(api, backoff=BackoffPolicy(default_timeout=settings.kube_timeout_seconds))
    try:
        server = check_server(gateway, wait_seconds=settings.kube_startup_wait_seconds, progress=log.warning)
    except JobSchedulerError as e:  # an old server, no answer, discovery refused
        print(f"jobscheduler: {e}", file=sys.stderr)
        return 1
    if server.untested:
        log.warning(
            "the Kubernetes API server is older than any version the project tests",
            kubernetes=server.version,
            oldest_tested=OLDEST_TESTED,
        )
    serve(settings, gateway, registry, kubernetes=server.version)
    return 0
