"""The change feed behind WatchJob/WatchJobs: a subscriber's bounded, conflating mailbox of job
changes. A slow reader only ever holds the latest status of each job it watches, so it costs
memory bounded by those jobs, never by the rate of change, and never holds up the informers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from jobscheduler.domain.errors import SubscriptionOverflowError
from jobscheduler.domain.models import JobStatus

Key = tuple[str, str]  # (namespace, job name)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "INITIAL", "UPDATED", "DELETED"
    status: JobStatus
    observed_at: datetime


@dataclass(eq=False)
class Subscription:
    """A mailbox of job changes. Holds at most one pending event per job (the latest), so a
    slow reader costs memory bounded by the jobs it watches, never by the rate of change."""

    match: Callable[[Mapping[str, str], JobStatus], bool]
    max_pending: int = 100_000
    internal: bool = False  # the service's own follower, not a caller's stream
    _pending: OrderedDict[Key, Event] = field(default_factory=OrderedDict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False
    overflowed: bool = False

    def offer(self, key: Key, event: Event) -> None:
        with self._cond:
            if self.closed:
                return
            if key in self._pending:
                previous = self._pending.pop(key)
                # An INITIAL not yet read stays INITIAL: the reader has not seen this job at all.
                if previous.kind == "INITIAL" and event.kind == "UPDATED":
                    event = Event("INITIAL", event.status, event.observed_at)
            elif len(self._pending) >= self.max_pending:
                self.overflowed, self.closed = True, True
                self._cond.notify_all()
                return
            self._pending[key] = event
            self._cond.notify_all()

    def next(self, timeout: float) -> Event | None:
        """The oldest pending event, waiting up to timeout; None on timeout or when closed."""
        with self._cond:
            if not self._pending and not self.closed:
                self._cond.wait(timeout)
            if self.overflowed:
                raise SubscriptionOverflowError(
                    f"watch fell behind by more than {self.max_pending} jobs; "
                    "watch again with a narrower filter"
                )
            if not self._pending:
                return None
            _, event = self._pending.popitem(last=False)
            return event

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def iter_events(sub: Subscription, *, alive: Callable[[], bool], poll: float = 0.5) -> Iterator[Event]:
    """Events from a subscription while `alive()` (e.g. the gRPC client is still there)."""
    while alive() and not sub.closed:
        event = sub.next(poll)
        if event is not None:
            yield event
    if sub.overflowed:
        sub.next(0)  # raises SubscriptionOverflowError
