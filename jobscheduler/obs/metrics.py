"""The service's Prometheus metrics, defined once; served on METRICS_PORT at /metrics.

Names follow Prometheus conventions: `jobscheduler_` prefix, `_total` counters, `_seconds`
histograms. Gauges that mirror the watch cache are computed at scrape time, not pushed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Fine at the low end: the service adds well under a millisecond to most calls.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_REQUESTS = Counter(
    "jobscheduler_rpc_requests_total", "gRPC calls handled, by method and status code", ["method", "code"]
)
RPC_DURATION = Histogram(
    "jobscheduler_rpc_duration_seconds",
    "Time to handle a unary gRPC call",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
JOBS_SCHEDULED = Counter(
    "jobscheduler_jobs_scheduled_total", "Jobs created by ScheduleJob, by job type", ["job_type"]
)
SCHEDULE_RUNS = Counter(
    "jobscheduler_schedule_runs_total",
    "Schedule runs the service started (scheduled: by its loop; manual: TriggerSchedule; backfill: "
    "BackfillSchedule) or that were missed and not caught up (missed; skipped by BUFFER_ONE too)",
    ["kind"],
)
LEADER = Gauge("jobscheduler_schedule_leader", "1 while this replica leads the schedule loop, else 0")
KUBE_REQUESTS = Counter(
    "jobscheduler_kube_requests_total",
    "Kubernetes API calls (each attempt), by verb and HTTP status code (0: no answer)",
    ["verb", "code"],
)
KUBE_DURATION = Histogram(
    "jobscheduler_kube_request_duration_seconds",
    "Time of one Kubernetes API call",
    ["verb"],
    buckets=LATENCY_BUCKETS,
)
WATCH_RESTARTS = Counter(
    "jobscheduler_watch_restarts_total",
    "Watch streams restarted, by resource and reason (expired, gone, error)",
    ["resource", "reason"],
)
WATCH_EVENTS = Counter(
    "jobscheduler_watch_events_total", "Watch events received, by resource and type", ["resource", "type"]
)


# From seconds (an empty queue) to hours (a saturated one).
QUEUE_WAIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
QUEUE_ADMISSION_WAIT = Histogram(
    "jobscheduler_queue_admission_wait_seconds",
    "Time from a queued job's creation to Kueue admitting it, by namespace and LocalQueue",
    ["namespace", "queue"],
    buckets=QUEUE_WAIT_BUCKETS,
)


class CacheCollector(Collector):
    """Reads object and state counts from the watch cache when Prometheus scrapes."""

    def __init__(self, counts: Callable[[], tuple[Mapping[str, int], Mapping[str, int], int]]) -> None:
        self.counts = counts
        self.queue_depths: Callable[[], Mapping[tuple[str, str], int]] = dict

    def collect(self) -> Iterable[GaugeMetricFamily]:
        objects, states, streams = self.counts()
        cached = GaugeMetricFamily(
            "jobscheduler_cache_objects", "Objects held by the watch cache", labels=["resource"]
        )
        for resource, n in sorted(objects.items()):
            cached.add_metric([resource], n)
        jobs = GaugeMetricFamily("jobscheduler_jobs", "Jobs in the watch cache, by state", labels=["state"])
        for state, n in sorted(states.items()):
            jobs.add_metric([state], n)
        watchers = GaugeMetricFamily("jobscheduler_watch_streams", "Open WatchJob/WatchJobs streams")
        watchers.add_metric([], streams)
        depth = GaugeMetricFamily(
            "jobscheduler_queue_pending_jobs",
            "Jobs waiting in a Kueue LocalQueue for admission (QUEUED), by namespace and queue",
            labels=["namespace", "queue"],
        )
        for (namespace, queue), n in sorted(self.queue_depths().items()):
            depth.add_metric([namespace, queue], n)
        yield cached
        yield jobs
        yield watchers
        yield depth


NOTIFY_DELIVERIES = Counter(
    "jobscheduler_notify_deliveries_total",
    "Notification attempts by outcome: delivered (2xx), retry (failed, tried again later), "
    "given_up (failed for NOTIFY_GIVE_UP_SECONDS)",
    ["outcome"],
)
NOTIFY_LATENCY = Histogram(
    "jobscheduler_notify_delivery_latency_seconds",
    "From a job reaching a notified state (its end, or its start) to the sink's 2xx",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
NOTIFY_BACKLOG = Gauge(
    "jobscheduler_notify_backlog",
    "Due notifications not yet delivered or given up, as the leader last counted them",
)


class ServiceGauges(NamedTuple):
    degraded: bool
    conditions: Sequence[tuple[str, str, bool]]  # (condition, reason, ok)
    watch_lag: Sequence[tuple[str, str, float]]  # (resource, namespace, seconds)
    kube_error_ratio: float


class ServiceHealthCollector(Collector):
    """The service's conditions (GetServiceStatus), evaluated when Prometheus scrapes."""

    def __init__(self, gauges: Callable[[], ServiceGauges]) -> None:
        self.gauges = gauges

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Without it, registering would call collect(): the conditions, evaluated (and logged)
        # before the server has even probed the API.
        return ()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = self.gauges()
        yield GaugeMetricFamily(
            "jobscheduler_service_degraded",
            "1 while some condition of GetServiceStatus is not ok on this replica, else 0",
            value=1 if now.degraded else 0,
        )
        conditions = GaugeMetricFamily(
            "jobscheduler_service_condition",
            "Each condition of GetServiceStatus: 1 ok, 0 not, with its reason",
            labels=["condition", "reason"],
        )
        for condition, reason, ok in now.conditions:
            conditions.add_metric([condition, reason], 1 if ok else 0)
        yield conditions
        lag = GaugeMetricFamily(
            "jobscheduler_watch_lag_seconds",
            "Seconds since each watch stream last heard from the API server (an event or a bookmark)",
            labels=["resource", "namespace"],
        )
        for resource, namespace, seconds in now.watch_lag:
            lag.add_metric([resource, namespace or "*"], seconds)
        yield lag
        yield GaugeMetricFamily(
            "jobscheduler_kube_error_ratio",
            "Share of the last minute's Kubernetes API calls that failed (no answer, 429, 5xx)",
            value=now.kube_error_ratio,
        )


_health_collector: ServiceHealthCollector | None = None


def register_service_health(gauges: Callable[[], ServiceGauges]) -> None:
    """Points the service-health gauges at a server (the latest one wins)."""
    global _health_collector
    if _health_collector is None:
        _health_collector = ServiceHealthCollector(gauges)
        REGISTRY.register(_health_collector)
    _health_collector.gauges = gauges


M = TypeVar("M", Counter, Histogram, Gauge)


@functools.cache
def child(metric: M, *values: str) -> Any:
    """metric.labels(*values), looked up once per label set: the hot paths (every RPC, every
    Kubernetes call, every watch event) would otherwise pay prometheus_client's lock and
    label validation on each use. Series are never removed, so a child stays valid."""
    return metric.labels(*values)


_collector: CacheCollector | None = None


def register_cache(
    counts: Callable[[], tuple[Mapping[str, int], Mapping[str, int], int]],
    queue_depths: Callable[[], Mapping[tuple[str, str], int]] = dict,
) -> Collector:
    """Points the cache gauges at a cache (the latest one wins: one server per process)."""
    global _collector
    if _collector is None:
        _collector = CacheCollector(counts)
        REGISTRY.register(_collector)
    _collector.counts = counts
    _collector.queue_depths = queue_depths
    return _collector


def serve_metrics(port: int, host: str = "") -> None:
    """Prometheus text format at http://host:port/metrics, from a daemon thread."""
    start_http_server(port, addr=host or "0.0.0.0")  # noqa: S104 - scraped from other pods
