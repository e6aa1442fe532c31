"""Leader election over a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it, and
the schedule loop the leader runs.

One replica holds the Lease and renews it every tick; the others watch the record and take it
over only after it has not changed for a whole lease duration, measured on their own monotonic
clock (so clock skew between nodes does not matter). Every write is conditional on the Lease's
resourceVersion, so of two replicas racing for it exactly one wins. A leader that cannot renew
for two thirds of the duration stops acting before anyone may take over; on shutdown it
releases the Lease so that another replica takes over at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from jobscheduler.app.schedules import ScheduleService
from jobscheduler.control.schedule_runs import SchedulePausedHook, ScheduleRunner
from jobscheduler.domain.errors import AlreadyExistsError, ConflictError, JobSchedulerError, NotFoundError
from jobscheduler.domain.servicehealth import LeaderFacts
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.obs.metrics import LEADER
from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

log = structlog.get_logger("jobscheduler.control.leader")
Obj = dict[str, Any]
LEASE_NAME = "jobscheduler-schedules"
# A leader-only task: called with a namespace ("" = every namespace) on each tick.
Reconciler = Callable[[str], None]


class LeaseElector:
    def __init__(
        self,
        gateway: KubeGateway,
        *,
        namespace: str,
        identity: str,
        lease_seconds: float = 15.0,
        name: str = LEASE_NAME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.name = name
        self._clock = clock
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # our last successful write, while leading
        self._duration = lease_seconds  # the observed Lease's duration

    @property
    def leading(self) -> bool:
        """Whether this replica may act as leader now: it renewed recently enough that nobody
        else can have taken the Lease over."""
        return self._renewed_at is not None and self._clock() - self._renewed_at < self.lease_seconds * 2 / 3

    def facts(self) -> LeaderFacts:
        """Who leads as this replica last saw the Lease: nobody once the holder let it lapse."""
        if self.leading:
            return LeaderFacts(True, self.identity, True, _parse_time(self._observed))
        if self._observed is None or not self._observed[0]:
            return LeaderFacts(True)
        if self._clock() - self._observed_at >= self._duration:
            return LeaderFacts(True)
        return LeaderFacts(True, self._observed[0], False, _parse_time(self._observed))

    def tick(self) -> bool:
        """Tries to acquire or renew the Lease; returns whether this replica leads."""
        try:
            self._try()
        except JobSchedulerError as e:
            log.warning("leader election failed this round", error=str(e))
        leading = self.leading
        LEADER.set(1 if leading else 0)
        return leading

    def _try(self) -> None:
        now = datetime.now(UTC)
        try:
            lease = self.gateway.get("leases", self.namespace, self.name)
        except NotFoundError:
            self._create(now)
            return
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        self._duration = duration
        if holder and holder != self.identity and self._clock() - self._observed_at < duration:
            self._renewed_at = None
            return
        taking_over = holder != self.identity
        new_spec: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_seconds)),
            "renewTime": format_rfc3339(now, precision="microseconds"),
        }
        if taking_over:
            new_spec["acquireTime"] = format_rfc3339(now, precision="microseconds")
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        patch = {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]}, "spec": new_spec}
        try:
            updated = self.gateway.patch("leases", self.namespace, self.name, patch)
        except ConflictError:
            return  # someone else wrote first; look again next tick
        self._renewed_at = self._clock()
        self._observed = (self.identity, str(updated["spec"].get("renewTime") or ""))
        self._observed_at = self._renewed_at
        if taking_over:
            log.info("became the schedule leader", identity=self.identity, previous=holder or None)

    def _create(self, now: datetime) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_seconds)),
                "acquireTime": format_rfc3339(now, precision="microseconds"),
                "renewTime": format_rfc3339(now, precision="microseconds"),
                "leaseTransitions": 0,
            },
        }
        try:
            self.gateway.create("leases", self.namespace, lease)
        except AlreadyExistsError:
            return
        self._renewed_at = self._clock()
        log.info("became the schedule leader", identity=self.identity, previous=None)

    def release(self) -> None:
        """Gives the Lease up (if held), so another replica takes over without waiting it out."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        LEADER.set(0)
        try:
            lease = self.gateway.get("leases", self.namespace, self.name, deadline=time.monotonic() + 2)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            patch = {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": format_rfc3339(datetime.now(UTC), precision="microseconds"),
                },
            }
            self.gateway.patch("leases", self.namespace, self.name, patch, deadline=time.monotonic() + 2)
            log.info("released the schedule leadership", identity=self.identity)
        except JobSchedulerError as e:
            log.warning("could not release the schedule lease; it expires by itself", error=str(e))


def _parse_time(observed: tuple[str, str] | None) -> datetime | None:
    return parse_rfc3339(observed[1]) if observed else None


class ScheduleLoop:
    """The leader's work, on its own thread: every tick, renew the Lease and, while leading,
    reconcile every schedule in the namespaces it serves."""

    def __init__(
        self,
        schedules: ScheduleService,
        elector: LeaseElector,
        *,
        namespaces: Sequence[str],
        tick_seconds: float = 1.0,
        reconcilers: Sequence[Reconciler] = (),
        on_schedule_paused: SchedulePausedHook | None = None,
    ) -> None:
        # on_schedule_paused: called once per pause the leader makes by itself
        # (pause_after_failures), with the paused schedule and the reason.
        self.runner = ScheduleRunner(schedules, on_schedule_paused=on_schedule_paused)
        self.elector = elector
        self.namespaces = tuple(namespaces)
        self.tick_seconds = tick_seconds
        # Other leader-only work (e.g. releasing jobs whose dependencies ended), called once per
        # namespace ("" = all) on every tick while this replica leads.
        self.reconcilers = tuple(reconcilers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedule-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.elector.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            if self.elector.tick():
                self.reconcile_all()
            self._stop.wait(max(0.0, self.tick_seconds - (time.monotonic() - started)))

    def reconcile_all(self) -> None:
        for namespace in self.namespaces:
            for reconciler in self.reconcilers:
                if self._stop.is_set() or not self.elector.leading:
                    return
                try:
                    reconciler(namespace)
                except JobSchedulerError as e:
                    log.warning(
                        "leader task failed; retried next tick", namespace=namespace or "*", error=str(e)
                    )
                except Exception:
                    log.exception("leader task crashed", namespace=namespace or "*")
            try:
                cronjobs = self.runner.managed_cronjobs(namespace)
            except JobSchedulerError as e:
                log.warning("could not list schedules", namespace=namespace or "*", error=str(e))
                continue
            for cronjob in cronjobs:
                if self._stop.is_set() or not self.elector.leading:
                    return
                try:
                    self.runner.reconcile(cronjob, datetime.now(UTC))
                except JobSchedulerError as e:
                    log.warning(
                        "schedule tick failed; retried next tick",
                        schedule=cronjob["metadata"]["name"],
                        namespace=cronjob["metadata"]["namespace"],
                        error=str(e),
                    )
                except Exception:
                    log.exception("schedule tick crashed", schedule=cronjob["metadata"]["name"])
