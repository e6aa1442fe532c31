"""One informer: a thread that lists one resource in one namespace, then watches from the list's
resourceVersion with bookmarks, resumes from the last version it saw when a stream ends, and
relists on 410 Gone, feeding every change into the watch cache."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import structlog

from jobscheduler.domain.errors import GoneError, UnavailableError
from jobscheduler.domain.models import MANAGED_SELECTOR
from jobscheduler.kube.gateway import OPENED
from jobscheduler.kube.slim import slim_job
from jobscheduler.obs.metrics import WATCH_EVENTS, WATCH_RESTARTS, child

if TYPE_CHECKING:
    from jobscheduler.kube.cache import JobCache

Obj = dict[str, Any]
log = structlog.get_logger("jobscheduler.kube.informer")


PAGE_SECONDS = 60.0  # budget of one page of a relist (retries included)
PROGRESS_SECONDS = 10.0


class _ListProgress:
    """Counts the objects of a long relist and says every PROGRESS_SECONDS how far it got."""

    def __init__(self, resource: str, namespace: str) -> None:
        self.resource, self.namespace = resource, namespace
        self.seen = 0
        self.started = self.said = time.monotonic()

    def count(self, obj: Obj) -> Obj:
        self.seen += 1
        if self.seen % 500 == 0 and time.monotonic() - self.said >= PROGRESS_SECONDS:
            self.said = time.monotonic()
            log.info(
                "still listing",
                resource=self.resource,
                namespace=self.namespace or "*",
                objects=self.seen,
                seconds=round(self.said - self.started),
            )
        return obj


class Informer(threading.Thread):
    """List+watch of one resource in one namespace, feeding the cache."""

    def __init__(self, cache: JobCache, resource: str, namespace: str) -> None:
        super().__init__(name=f"informer-{resource}-{namespace or 'all'}", daemon=True)
        self.cache, self.resource, self.namespace = cache, resource, namespace
        self.synced = threading.Event()  # listed at least once
        self.healthy = False  # the last list/watch worked; cleared when the stream breaks
        # The API server accepted the current watch (healthy waits for its first event, so
        # that reads resume from the cache only once the stream has caught up).
        self.connected = False
        self.version = ""
        self.heard_at: float | None = None  # monotonic time of the last list, event or bookmark

    def lag(self) -> float | None:
        """Seconds since the stream last heard from the API server; None before its first list."""
        return None if self.heard_at is None else time.monotonic() - self.heard_at

    def run(self) -> None:
        backoff = 0.2
        while not self.cache.stopping.is_set():
            try:
                if not self.version:
                    self._relist()
                self._watch()
                backoff = 0.2
                WATCH_RESTARTS.labels(self.resource, "expired").inc()
            except GoneError:
                WATCH_RESTARTS.labels(self.resource, "gone").inc()
                log.info(
                    "watch resource version gone; relisting", resource=self.resource, namespace=self.namespace
                )
                self.version = ""
            except UnavailableError as e:
                self.healthy = self.connected = False
                WATCH_RESTARTS.labels(self.resource, "error").inc()
                log.warning(
                    "watch broken; retrying",
                    resource=self.resource,
                    namespace=self.namespace,
                    error=str(e),
                    retry_in=round(backoff, 2),
                )
                self.cache.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                self.healthy = self.connected = False
                WATCH_RESTARTS.labels(self.resource, "error").inc()
                log.exception(
                    "informer crashed; restarting", resource=self.resource, namespace=self.namespace
                )
                self.version = ""
                self.cache.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _relist(self) -> None:
        progress = _ListProgress(self.resource, self.namespace)
        # Jobs are slimmed page by page (replace() keeps slim copies anyway); pods are kept
        # whole until replace() has read their owner and namespace.
        slim = slim_job if self.resource == "jobs" else None
        items, version = self.cache.gateway.list_all(
            self.resource,
            self.namespace,
            label_selector=MANAGED_SELECTOR,
            page_seconds=PAGE_SECONDS,
            each=lambda obj: progress.count(slim(obj) if slim else obj),
        )
        self.cache.replace(self.resource, self.namespace, items)
        self.version = version
        self.healthy = self.connected = True
        self.heard_at = time.monotonic()
        self.synced.set()
        log.debug(
            "listed", resource=self.resource, namespace=self.namespace, objects=len(items), version=version
        )

    def _watch(self) -> None:
        for event in self.cache.gateway.watch(
            self.resource, self.namespace, label_selector=MANAGED_SELECTOR, resource_version=self.version
        ):
            self.heard_at = time.monotonic()
            self.connected = True
            kind = event.get("type", "")
            if kind == OPENED:
                continue
            self.healthy = True
            obj = event.get("object") or {}
            child(WATCH_EVENTS, self.resource, kind).inc()
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.cache.apply(self.resource, kind, obj)
            if version:
                self.version = version  # BOOKMARK events carry only this
            if self.cache.stopping.is_set():
                return
