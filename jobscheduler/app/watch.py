"""WatchJob and WatchJobs: a job's status now, then each change, from the watch cache's change
feed (jobscheduler.kube.feed); a namespace the cache does not serve is polled for WatchJob and
refused for WatchJobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobscheduler.domain.errors import FailedPreconditionError, NotFoundError
from jobscheduler.domain.models import JobState, JobStatus
from jobscheduler.kube.feed import Event, iter_events

if TYPE_CHECKING:
    from jobscheduler.app.service import JobService


class JobWatch:
    def __init__(self, service: JobService) -> None:
        self.service = service

    def job(
        self, namespace: str, job_id: str, *, alive: Callable[[], bool], poll_interval: float = 1.0
    ) -> Iterator[Event]:
        """The current status, then every change, until the job ends or disappears."""
        namespace = self.service.resolve_namespace(namespace)
        current = self.service.get_status(namespace, job_id)  # NOT_FOUND before the stream starts
        cache = self.service.cached(namespace)
        if cache is None:
            yield from self._poll_job(namespace, job_id, current, alive=alive, interval=poll_interval)
            return
        sub = cache.subscribe(
            lambda _labels, s: s.job_id == job_id and s.namespace == namespace,
            initial=False,
            namespace=namespace,
        )
        try:
            # Subscribed first, then read: a change between the two is not lost, only repeated.
            current = cache.get(namespace, job_id) or current
            yield Event("INITIAL", current, datetime.now(UTC))
            if current.state.terminal:
                return
            last = current
            for event in iter_events(sub, alive=alive):
                if event.status == last and event.kind != "DELETED":
                    continue
                yield Event(
                    "UPDATED" if event.kind == "INITIAL" else event.kind, event.status, event.observed_at
                )
                last = event.status
                if event.kind == "DELETED" or event.status.state.terminal:
                    return
        finally:
            cache.unsubscribe(sub)

    def _poll_job(
        self, namespace: str, job_id: str, current: JobStatus, *, alive: Callable[[], bool], interval: float
    ) -> Iterator[Event]:
        """WatchJob for a namespace the cache does not serve: one API read per interval."""
        yield Event("INITIAL", current, datetime.now(UTC))
        last = current
        while not last.state.terminal and alive():
            time.sleep(interval)
            try:
                status = self.service.get_status(namespace, job_id)
            except NotFoundError:
                yield Event("DELETED", last, datetime.now(UTC))
                return
            if status != last:
                yield Event("UPDATED", status, datetime.now(UTC))
                last = status

    def jobs(
        self,
        namespace: str,
        *,
        job_type: str,
        label_selector: str,
        states: frozenset[JobState],
        initial: bool,
        alive: Callable[[], bool],
        queue: str = "",
    ) -> Iterator[Event]:
        namespace = self.service.resolve_namespace(namespace)
        match = self.service.matcher(job_type, "", label_selector, states, queue=queue)
        cache = self.service.cached(namespace)
        if cache is None:
            watched = (
                "none"
                if self.service.cache is None
                else ", ".join(n or "*" for n in self.service.cache.namespaces)
            )
            raise FailedPreconditionError(
                f"namespace {namespace!r} is not watched by this service (WATCH_NAMESPACES: {watched}), "
                "or its watch is down; add it to WATCH_NAMESPACES, or poll ListJobs"
            )
        sub = cache.subscribe(match, initial=initial, namespace=namespace)
        try:
            for event in iter_events(sub, alive=alive):
                if event.status.namespace == namespace:
                    yield event
        finally:
            cache.unsubscribe(sub)
