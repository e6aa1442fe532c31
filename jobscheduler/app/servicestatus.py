"""GetServiceStatus: this replica's view of the service's health, from facts it already holds
(the health probe's answer, the gateway's last minute of calls, the watch streams, the schedule
Lease as last seen, the notification backlog). No Kubernetes call: it answers while the API
server is down, which is when it matters most.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from jobscheduler import __version__
from jobscheduler.domain.servicehealth import (
    ApiFacts,
    ConditionLog,
    LeaderFacts,
    NotifyFacts,
    ServiceHealthReport,
    assess,
)
from jobscheduler.kube.cache import JobCache
from jobscheduler.kube.gateway import KubeGateway

log = structlog.get_logger("jobscheduler.app.servicestatus")


class ServiceHealth:
    def __init__(
        self,
        gateway: KubeGateway,
        *,
        serving: Callable[[], bool],
        replica: str,
        kubernetes_version: str = "",
        cache: JobCache | None = None,
        leader: Callable[[], LeaderFacts] | None = None,
        notifications: Callable[[], NotifyFacts] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.gateway = gateway
        self.serving = serving
        self.replica = replica
        self.kubernetes_version = kubernetes_version
        self.cache = cache
        self.leader = leader
        self.notifications = notifications
        self._now = now
        self.started_at = now()
        self._log = ConditionLog()

    def report(self) -> ServiceHealthReport:
        """The facts and the conditions they make; a condition that changed is logged (a
        warning when it goes wrong, info when it recovers)."""
        requests, errors = self.gateway.outcomes.counts()
        api = ApiFacts(
            reachable=self.serving(),
            version=self.kubernetes_version,
            window_seconds=self.gateway.outcomes.window,
            requests=requests,
            errors=errors,
        )
        streams = tuple(self.cache.streams()) if self.cache is not None else ()
        leader = self.leader() if self.leader is not None else LeaderFacts(enabled=False)
        notifications = self.notifications() if self.notifications is not None else None
        conditions, changes = self._log.stamp(assess(api, streams, leader, notifications), self._now())
        for c in changes:
            say = log.info if c.ok else log.warning
            say("service condition changed", condition=c.type, ok=c.ok, reason=c.reason, detail=c.message)
        return ServiceHealthReport(
            serving=api.reachable,
            replica=self.replica,
            version=__version__,
            started_at=self.started_at,
            api=api,
            streams=streams,
            leader=leader,
            notifications=notifications,
            conditions=tuple(conditions),
        )
