"""A watch-fed cache of the Jobs and Pods this service manages, and the change feed behind
WatchJob/WatchJobs.

One informer thread per (resource, namespace) lists, then watches from the list's
resourceVersion with bookmarks, resumes from the last version it saw when a stream ends, and
relists on 410 Gone. Objects are kept slim (only what status derivation reads); each Job's
derived status is kept too and recomputed when the Job or one of its pods changes, so reads
cost a dict lookup, and indexed (jobscheduler.kube.index), so a filtered page costs what it
returns. Subscribers get changes through a bounded, conflating mailbox: a slow
reader only ever holds the latest status of each job, and never holds up the informers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from sys import intern
from typing import Any

import structlog

from jobscheduler.domain.models import JobState, JobStatus
from jobscheduler.domain.servicehealth import StreamFacts
from jobscheduler.domain.status import derive_status
from jobscheduler.kube.feed import Event, Key, Subscription
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.kube.index import JobFilter, JobIndex, entry_of_sort_key
from jobscheduler.kube.informer import Informer
from jobscheduler.kube.slim import owner_uid, resource_version, slim_job, slim_pod
from jobscheduler.obs.metrics import QUEUE_ADMISSION_WAIT, child

log = structlog.get_logger("jobscheduler.kube.cache")
Obj = dict[str, Any]
SortKey = tuple[float, str]
# What reads select jobs by: a JobFilter is answered from the indexes; any other predicate on
# (labels, status) walks the namespace's jobs.
Match = Callable[[Mapping[str, str], JobStatus], bool]
MAX_TOMBSTONES = 10_000


def sort_key(status: JobStatus) -> SortKey:
    """Newest first, ties broken by name: the order ListJobs pages through, and its page
    cursor. The cache orders its indexes the same way by a cheaper key (index.entry_of)."""
    created = status.created_at.timestamp() if status.created_at else 0.0
    return (-created, "".join(chr(0x10FFFF - ord(c)) for c in status.job_id))


class JobCache:
    def __init__(self, gateway: KubeGateway, namespaces: Sequence[str]) -> None:
        """namespaces: the namespaces to watch; [""] watches every namespace (needs a ClusterRole)."""
        self.gateway = gateway
        self.namespaces = tuple(namespaces)
        self.stopping = threading.Event()
        self._lock = threading.RLock()
        self._jobs: dict[Key, Obj] = {}
        self._uids: dict[str, Key] = {}
        self._pods: dict[str, dict[str, Obj]] = {}  # controller uid -> pod name -> slim pod
        self._pod_owner: dict[tuple[str, str], str] = {}  # (namespace, pod name) -> controller uid
        self._statuses: dict[Key, JobStatus] = {}
        self._index = JobIndex()
        self._states: Tally[str] = Tally()
        self._queued: Tally[tuple[str, str]] = Tally()  # QUEUED jobs by (namespace, queue)
        self._subscribers: set[Subscription] = set()
        # resourceVersion at deletion of recently deleted Jobs, so a late write response
        # (e.g. a cancel's patch, observed after TTL deleted the Job) cannot bring it back.
        self._tombstones: OrderedDict[Key, int] = OrderedDict()
        self._informers = [Informer(self, r, ns) for ns in self.namespaces for r in ("jobs", "pods")]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            for sub in self._subscribers:
                sub.close()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in self._informers)

    def covers(self, namespace: str) -> bool:
        """Whether reads for this namespace may be served from the cache: it is watched, was
        listed, and its streams are healthy (a broken stream means the data may be stale)."""
        relevant = [i for i in self._informers if i.namespace in ("", namespace)]
        return bool(relevant) and all(i.synced.is_set() and i.healthy for i in relevant)

    def streams(self) -> list[StreamFacts]:
        """Each list+watch stream: synced, healthy, and how long since it heard from the API."""
        return [
            StreamFacts(i.resource, i.namespace, i.synced.is_set(), i.connected, i.lag())
            for i in self._informers
        ]

    def first_list_pending(self, namespace: str) -> bool:
        """Whether the namespace is watched but its first list has not finished yet: its reads
        will be served from the cache in a moment, so a scan of the API now (which, at 100,000
        Jobs, reads them all in full beside the informer's own list) would be wasted."""
        relevant = [i for i in self._informers if i.namespace in ("", namespace)]
        return bool(relevant) and not all(i.synced.is_set() for i in relevant)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> JobStatus | None:
        return self._statuses.get((namespace, name))

    def job(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The slim Job (shared with the cache: read it, never change it)."""
        return self._jobs.get((namespace, name))

    def labels_of(self, namespace: str, name: str) -> Mapping[str, str]:
        job = self._jobs.get((namespace, name))
        return job["metadata"]["labels"] if job else {}

    def jobs_with_pods(self, namespace: str, match: Match) -> list[tuple[Obj, list[Obj]]]:
        """The slim Job and slim pods of each matching job in a namespace ("" = all), for checks
        that need more than a status (annotations, resourceVersion, pod creation times). The
        objects are shared with the cache: read them, never change them."""
        with self._lock:
            if not isinstance(match, JobFilter):
                return [
                    (job, list(self._pods.get(job["metadata"]["uid"], {}).values()))
                    for key, job in self._jobs.items()
                    if namespace in ("", key[0]) and match(job["metadata"]["labels"], self._statuses[key])
                ]
            found = []
            for ns in [namespace] if namespace else self._index.namespaces():
                for name in self._index.names(ns, match):
                    job = self._jobs[ns, name]
                    if match(job["metadata"]["labels"], self._statuses[ns, name]):
                        found.append((job, list(self._pods.get(job["metadata"]["uid"], {}).values())))
            return found

    def query(
        self, namespace: str, match: Match, *, after: SortKey | None, limit: int
    ) -> tuple[list[JobStatus], bool]:
        """Up to `limit` matching jobs, newest first, strictly after `after`; and whether more match.
        A JobFilter walks only the jobs its most selective index holds."""
        with self._lock:
            start = entry_of_sort_key(after) if after else None
            flt = match if isinstance(match, JobFilter) else None
            found: list[JobStatus] = []
            for name in self._index.names(namespace, flt, after=start):
                status = self._statuses[namespace, name]
                if match(self._jobs[namespace, name]["metadata"]["labels"], status):
                    if len(found) == limit:
                        return found, True
                    found.append(status)
            return found, False

    def counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        with self._lock:
            pods = sum(len(p) for p in self._pods.values())
            streams = sum(1 for sub in self._subscribers if not sub.internal)
            return ({"jobs": len(self._jobs), "pods": pods}, dict(self._states), streams)

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(
        self,
        match: Match,
        *,
        initial: bool,
        namespace: str | None = None,
        internal: bool = False,
    ) -> Subscription:
        """A mailbox of the changes to jobs that match (their INITIAL state first, if asked).
        internal: the service's own follower (the notifier), not a caller's watch stream, so
        not counted in jobscheduler_watch_streams."""
        if namespace is not None:
            unscoped = match

            def match(labels: Mapping[str, str], status: JobStatus) -> bool:
                return status.namespace == namespace and unscoped(labels, status)

        sub = Subscription(match, internal=internal)
        now = datetime.now(UTC)
        with self._lock:
            self._subscribers.add(sub)
            if initial:
                for key, job in self._jobs.items():
                    status = self._statuses[key]
                    if match(job["metadata"]["labels"], status):
                        sub.offer(key, Event("INITIAL", status, now))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        with self._lock:
            self._subscribers.discard(sub)

    # -- writes (informers, and the service after its own writes) ------------------------------

    def observe_job(self, job: Mapping[str, Any]) -> None:
        """A Job this replica just wrote: visible at once, unless the watch already has newer."""
        self.apply("jobs", "MODIFIED", job, only_if_newer=True)

    def apply(self, resource: str, kind: str, obj: Mapping[str, Any], *, only_if_newer: bool = False) -> None:
        meta = obj.get("metadata") or {}
        key = (intern(str(meta.get("namespace", ""))), str(meta.get("name", "")))
        # E.g. the watch's ADDED for the Job this replica just created and observed. Read
        # without the lock: a version is immutable, whatever happens to the entry meanwhile.
        if resource == "jobs" and kind != "DELETED" and _same_version(self._jobs.get(key), obj):
            return
        # Slimmed before the lock is taken: readers wait only for the cache's own bookkeeping.
        slim = slim_job(obj) if resource == "jobs" and kind != "DELETED" else None
        with self._lock:
            if resource == "jobs":
                current = self._jobs.get(key)
                version = resource_version(obj)
                if only_if_newer and current is not None and resource_version(current) >= version:
                    return
                if only_if_newer and current is None and self._tombstones.get(key, -1) >= version:
                    return
                if (
                    current is not None
                    and current["metadata"]["uid"] != meta.get("uid", "")
                    and resource_version(obj) < resource_version(current)
                ):
                    return  # news of an older Job that had the same name: the newer one stays
                if kind == "DELETED":
                    self._remove_job(key)
                    self._tombstones[key] = resource_version(obj)
                    self._tombstones.move_to_end(key)
                    while len(self._tombstones) > MAX_TOMBSTONES:
                        self._tombstones.popitem(last=False)
                elif slim is not None:
                    self._put_job(key, slim)
            else:
                pod_key = key
                uid = owner_uid(obj) or self._pod_owner.get(pod_key, "")
                if kind == "DELETED":
                    self._pod_owner.pop(pod_key, None)
                    pods = self._pods.get(uid, {})
                    pods.pop(pod_key[1], None)
                    if not pods:
                        self._pods.pop(uid, None)
                else:
                    self._pod_owner[pod_key] = uid
                    self._pods.setdefault(uid, {})[pod_key[1]] = slim_pod(obj)
                if uid in self._uids:
                    self._refresh(self._uids[uid])

    def replace(self, resource: str, namespace: str, items: Iterable[Obj]) -> None:
        """A fresh list of one resource in one namespace ("" = all): the new truth. Jobs are
        slimmed as `items` yields them, before the lock is taken: given pages as they arrive, a
        relist never holds every full Job at once."""
        if resource == "jobs":
            fresh = {
                (intern(str(i["metadata"].get("namespace", ""))), str(i["metadata"]["name"])): slim_job(i)
                for i in items
            }
        with self._lock:
            if resource == "jobs":
                self._index.begin_bulk()
                try:
                    for key in [k for k in self._jobs if namespace in ("", k[0]) and k not in fresh]:
                        self._remove_job(key)
                    for key, job in fresh.items():
                        if not _same_version(self._jobs.get(key), job):
                            self._put_job(key, job)
                finally:
                    self._index.end_bulk()
            else:
                stale = [k for k in self._pod_owner if namespace in ("", k[0])]
                touched = {self._pod_owner[k] for k in stale}
                for pod_key in stale:
                    uid = self._pod_owner.pop(pod_key)
                    self._pods.get(uid, {}).pop(pod_key[1], None)
                for pod in items:
                    meta = pod["metadata"]
                    uid = owner_uid(pod)
                    self._pod_owner[(meta.get("namespace", ""), meta["name"])] = uid
                    self._pods.setdefault(uid, {})[meta["name"]] = slim_pod(pod)
                    touched.add(uid)
                for uid in [u for u, p in self._pods.items() if not p]:
                    del self._pods[uid]
                for uid in touched:
                    if uid in self._uids:
                        self._refresh(self._uids[uid])

    # -- internals (lock held) -----------------------------------------------------------------

    def _put_job(self, key: Key, job: Obj) -> None:
        old = self._jobs.get(key)
        meta = job["metadata"]
        if old is not None and old["metadata"]["uid"] != meta["uid"]:
            self._uids.pop(old["metadata"]["uid"], None)  # a new Job reusing the name
        elif old is not None:
            # The same Job again: keep the strings and key the cache's dicts already hold, rather
            # than a second copy of each per job from this event's JSON.
            key = self._uids.get(meta["uid"], key)
            for field in ("uid", "name", "namespace", "creationTimestamp"):
                if meta[field] == old["metadata"][field]:
                    meta[field] = old["metadata"][field]
        self._jobs[key] = job
        self._uids[job["metadata"]["uid"]] = key
        self._refresh(key, old_labels=old["metadata"]["labels"] if old is not None else None)

    def _remove_job(self, key: Key) -> None:
        job = self._jobs.pop(key, None)
        if job is None:
            return
        self._uids.pop(job["metadata"]["uid"], None)
        status = self._statuses.pop(key, None)
        if status is not None:
            self._index.update(key[0], (job["metadata"]["labels"], status), None)
            self._states[status.state.value] -= 1
            self._count_queued(key[0], status, None)
            self._publish(key, job, Event("DELETED", status, datetime.now(UTC)))

    def _refresh(self, key: Key, *, old_labels: Mapping[str, str] | None = None) -> None:
        """Derives the job's status again; old_labels: its labels before this change, when the
        Job itself changed (they are indexed)."""
        job = self._jobs[key]
        labels = job["metadata"]["labels"]
        pods = list(self._pods.get(job["metadata"]["uid"], {}).values())
        status = derive_status(job, pods)
        old = self._statuses.get(key)
        if old_labels is None:
            old_labels = labels
        if status == old:
            if old_labels != labels:  # relabelled: indexed anew, reported as before (same status)
                self._index.update(key[0], (old_labels, status), (labels, status))
            return
        self._index.update(key[0], (old_labels, old) if old is not None else None, (labels, status))
        if old is not None:
            self._states[old.state.value] -= 1
        self._statuses[key] = status
        self._states[status.state.value] += 1
        self._count_queued(key[0], old, status)
        self._publish(key, job, Event("UPDATED", status, datetime.now(UTC)))

    def _count_queued(self, namespace: str, old: JobStatus | None, new: JobStatus | None) -> None:
        """Queue depth by queue, and the wait of each job Kueue admits (from its creation)."""
        was = old is not None and old.state is JobState.QUEUED
        now_queued = new is not None and new.state is JobState.QUEUED
        if was and old is not None:
            self._queued[(namespace, old.queueing.queue)] -= 1
        if now_queued and new is not None:
            self._queued[(namespace, new.queueing.queue)] += 1
        if was and new is not None and not now_queued and not new.state.terminal and new.created_at:
            wait = (datetime.now(UTC) - new.created_at).total_seconds()
            child(QUEUE_ADMISSION_WAIT, namespace, new.queueing.queue).observe(max(wait, 0.0))

    def queue_depths(self) -> dict[tuple[str, str], int]:
        """QUEUED jobs by (namespace, queue), for the metrics."""
        with self._lock:
            return {k: n for k, n in self._queued.items() if n > 0}

    def _publish(self, key: Key, job: Obj, event: Event) -> None:
        labels = job["metadata"]["labels"]
        for sub in list(self._subscribers):
            if sub.closed:
                self._subscribers.discard(sub)
            elif sub.match(labels, event.status):
                sub.offer(key, event)


def _same_version(current: Mapping[str, Any] | None, job: Mapping[str, Any]) -> bool:
    """The same Job at the same resourceVersion: nothing in it changed, so neither a watch
    event repeating what the cache holds nor a relist (after a 410 Gone or an API server
    restart) slims or derives anything for it."""
    if current is None:
        return False
    now, then = job.get("metadata") or {}, current["metadata"]
    version = now.get("resourceVersion")
    return bool(version) and version == then["resourceVersion"] and now.get("uid") == then["uid"]
