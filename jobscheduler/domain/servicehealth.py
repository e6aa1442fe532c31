"""The service's own health beyond SERVING / NOT_SERVING: what GetServiceStatus and the
`jobscheduler_service_*` metrics report. Pure: the facts come in (counts, ages, the Lease's
holder), the conditions come out; `ConditionLog` remembers since when each has held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

# The Kubernetes API's error rate is measured over this window, in buckets of one second.
ERROR_WINDOW_SECONDS = 60
# Degraded when at least this share of the window's calls failed, and at least MIN_ERRORS did
# (one failed call out of two is noise, not an outage).
ERROR_RATE_THRESHOLD = 0.2
MIN_ERRORS = 5
# An idle stream may hear nothing (no event, no bookmark: measured up to two minutes) until
# its watch times out after WATCH_TIMEOUT_SECONDS and is opened again, which counts as hearing
# from the API server; a stream silent for longer than that and a margin is stuck, not idle.
WATCH_TIMEOUT_SECONDS = 300
WATCH_LAG_THRESHOLD_SECONDS = WATCH_TIMEOUT_SECONDS + 30.0
# A notification still not delivered after this long is a backlog worth a look.
NOTIFY_BACKLOG_AGE_SECONDS = 300.0


class ErrorWindow:
    """Outcomes of Kubernetes API calls over the last ERROR_WINDOW_SECONDS, in one-second
    buckets: O(1) per call, safe from every thread."""

    def __init__(self, clock: Callable[[], float], window: int = ERROR_WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._lock = threading.Lock()
        self._seconds = [-1] * window  # the second each bucket counts, -1: never used
        self._calls = [0] * window
        self._errors = [0] * window

    @property
    def window(self) -> int:
        return self._window

    def record(self, *, failed: bool) -> None:
        second = int(self._clock())
        slot = second % self._window
        with self._lock:
            if self._seconds[slot] != second:
                self._seconds[slot], self._calls[slot], self._errors[slot] = second, 0, 0
            self._calls[slot] += 1
            self._errors[slot] += failed

    def counts(self) -> tuple[int, int]:
        """(calls, failed calls) in the window ending now."""
        oldest = int(self._clock()) - self._window + 1
        with self._lock:
            live = [i for i, s in enumerate(self._seconds) if s >= oldest]
            return sum(self._calls[i] for i in live), sum(self._errors[i] for i in live)


def failed_status(status: int) -> bool:
    """Whether an API call's HTTP status (0: no answer) counts against the service's health:
    no answer, throttling and server errors do; a 404 or a 409 is the API working."""
    return status == 0 or status == 429 or status >= 500


@dataclass(frozen=True, slots=True)
class ApiFacts:
    reachable: bool
    version: str
    window_seconds: int
    requests: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class StreamFacts:
    resource: str
    namespace: str
    synced: bool
    healthy: bool
    lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class LeaderFacts:
    enabled: bool
    identity: str = ""  # the Lease's holder as last seen, "" when nobody holds a valid Lease
    this_replica: bool = False
    renewed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotifyFacts:
    pending: int
    failing_sinks: tuple[str, ...] = ()
    oldest_pending_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    ok: bool
    reason: str
    message: str
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class ServiceHealthReport:
    serving: bool
    replica: str
    version: str
    started_at: datetime
    api: ApiFacts
    streams: tuple[StreamFacts, ...]
    leader: LeaderFacts
    notifications: NotifyFacts | None
    conditions: tuple[Condition, ...] = field(default=())

    @property
    def degraded(self) -> bool:
        return any(not c.ok for c in self.conditions)


def assess(
    api: ApiFacts,
    streams: Sequence[StreamFacts],
    leader: LeaderFacts,
    notifications: NotifyFacts | None,
) -> list[Condition]:
    """The conditions these facts make, in a fixed order (`since` is ConditionLog's)."""
    conditions = [_api(api), _errors(api)]
    if streams:
        conditions.append(_watch(streams))
    if leader.enabled:
        conditions.append(_leader(leader))
    if notifications is not None:
        conditions.append(_notify(notifications))
    return conditions


def _api(api: ApiFacts) -> Condition:
    if api.reachable:
        return Condition("KubernetesAPI", True, "Reachable", "the Kubernetes API server answers /readyz")
    return Condition(
        "KubernetesAPI",
        False,
        "Unreachable",
        "the Kubernetes API server does not answer /readyz: RPCs that need it fail UNAVAILABLE; "
        "check the API server and the network path to it",
    )


def _errors(api: ApiFacts) -> Condition:
    rate = f"{api.errors} of {api.requests} Kubernetes API calls failed in the last {api.window_seconds} s"
    if api.errors >= MIN_ERRORS and api.error_rate >= ERROR_RATE_THRESHOLD:
        return Condition(
            "APIErrors",
            False,
            "HighErrorRate",
            f"{rate} (no answer, 429 or 5xx); see jobscheduler_kube_requests_total by code and the "
            "API server's logs",
        )
    return Condition("APIErrors", True, "Normal", rate)


def _watch(streams: Sequence[StreamFacts]) -> Condition:
    def name(s: StreamFacts) -> str:
        return f"{s.resource} in {s.namespace or 'every namespace'}"

    if unsynced := [s for s in streams if not s.synced]:
        return Condition(
            "WatchCache",
            False,
            "NotSynced",
            f"not listed yet: {', '.join(map(name, unsynced))}; reads go to the API server meanwhile",
        )
    if broken := [s for s in streams if not s.healthy]:
        return Condition(
            "WatchCache",
            False,
            "StreamBroken",
            f"watch broken, retrying: {', '.join(map(name, broken))}; reads go to the API server "
            "meanwhile (see the informer's warnings in the log)",
        )
    lagging = [s for s in streams if (s.lag_seconds or 0.0) > WATCH_LAG_THRESHOLD_SECONDS]
    if lagging:
        worst = max(s.lag_seconds or 0.0 for s in lagging)
        return Condition(
            "WatchCache",
            False,
            "Lagging",
            f"no event or bookmark for {worst:.0f} s from: {', '.join(map(name, lagging))}; statuses may "
            "be stale; check the API server's watch cache and the network",
        )
    worst_lag = max((s.lag_seconds or 0.0) for s in streams)
    return Condition(
        "WatchCache", True, "Current", f"{len(streams)} streams healthy, longest silence {worst_lag:.0f} s"
    )


def _leader(leader: LeaderFacts) -> Condition:
    if not leader.identity:
        return Condition(
            "Leader",
            False,
            "NoLeader",
            "no replica holds the schedule Lease: interval schedules, catch-up, dependency releases, "
            "pending timeouts and notifications wait; check that a replica runs with SCHEDULE_LOOP on "
            "and can write Leases",
        )
    who = "this replica" if leader.this_replica else leader.identity
    return Condition("Leader", True, "Elected", f"{who} leads")


def _notify(facts: NotifyFacts) -> Condition:
    if facts.failing_sinks:
        return Condition(
            "Notifications",
            False,
            "SinksFailing",
            f"the last delivery to {', '.join(facts.failing_sinks)} failed; {facts.pending} pending; "
            "the job statuses' notifications show the errors",
        )
    oldest = facts.oldest_pending_seconds
    if oldest is not None and oldest > NOTIFY_BACKLOG_AGE_SECONDS:
        return Condition(
            "Notifications",
            False,
            "Backlog",
            f"{facts.pending} pending, the oldest for {oldest:.0f} s: is a leader delivering?",
        )
    return Condition("Notifications", True, "Delivering", f"{facts.pending} pending")


class ConditionLog:
    """Since when each condition has held, as this replica saw it; `changes` are the conditions
    that changed since the last call (for a log line)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[bool, str, datetime]] = {}

    def stamp(
        self, conditions: Sequence[Condition], now: datetime
    ) -> tuple[list[Condition], list[Condition]]:
        stamped: list[Condition] = []
        changes: list[Condition] = []
        with self._lock:
            for c in conditions:
                before = self._seen.get(c.type)
                if before is None or before[:2] != (c.ok, c.reason):
                    self._seen[c.type] = (c.ok, c.reason, now)
                    if before is not None or not c.ok:
                        changes.append(c)
                since = self._seen[c.type][2]
                stamped.append(Condition(c.type, c.ok, c.reason, c.message, since))
        return stamped, changes
