"""GetServiceStatus: the service's conditions beyond SERVING, as this replica sees them."""

from __future__ import annotations

import grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.servicestatus import ServiceHealth
from jobscheduler.domain.errors import UnavailableError
from jobscheduler.domain.servicehealth import ServiceHealthReport
from jobscheduler.obs.metrics import ServiceGauges
from jobscheduler.transport.call import begin
from jobscheduler.transport.convert import timestamp


class ServiceStatusServicer:
    def __init__(self, health: ServiceHealth | None) -> None:
        self.health = health

    def GetServiceStatus(
        self, request: pb.GetServiceStatusRequest, context: grpc.ServicerContext
    ) -> pb.ServiceStatus:
        begin()
        if self.health is None:
            raise UnavailableError("the service status is not wired in this server; retry on another replica")
        return service_status_to_proto(self.health.report())


def service_status_to_proto(report: ServiceHealthReport) -> pb.ServiceStatus:
    api, leader, notify = report.api, report.leader, report.notifications
    return pb.ServiceStatus(
        serving=report.serving,
        degraded=report.degraded,
        conditions=[
            pb.ServiceCondition(
                type=c.type, ok=c.ok, reason=c.reason, message=c.message, since=timestamp(c.since)
            )
            for c in report.conditions
        ],
        replica=report.replica,
        version=report.version,
        started_at=timestamp(report.started_at),
        kubernetes=pb.KubernetesApiStatus(
            reachable=api.reachable,
            version=api.version,
            window_seconds=api.window_seconds,
            requests=api.requests,
            errors=api.errors,
            error_rate=api.error_rate,
        ),
        watches=[
            pb.WatchStream(
                resource=s.resource,
                namespace=s.namespace,
                synced=s.synced,
                healthy=s.healthy,
                lag_seconds=s.lag_seconds,
            )
            for s in report.streams
        ],
        leader=pb.LeaderStatus(
            identity=leader.identity,
            this_replica=leader.this_replica,
            renewed_at=timestamp(leader.renewed_at),
            enabled=leader.enabled,
        ),
        notifications=(
            pb.NotificationBacklog(
                pending=notify.pending,
                failing_sinks=list(notify.failing_sinks),
                oldest_pending_seconds=notify.oldest_pending_seconds,
            )
            if notify is not None
            else None
        ),
    )


def service_gauges(report: ServiceHealthReport) -> ServiceGauges:
    """What the jobscheduler_service_* gauges show, read at scrape time."""
    return ServiceGauges(
        degraded=report.degraded,
        conditions=[(c.type, c.reason, c.ok) for c in report.conditions],
        watch_lag=[
            (s.resource, s.namespace, s.lag_seconds) for s in report.streams if s.lag_seconds is not None
        ],
        kube_error_ratio=report.api.error_rate,
    )
