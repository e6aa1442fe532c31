"""Inverted indexes over the watch cache's jobs, so that a filtered ListJobs page, and the leader's
search for its few candidates, cost in proportion to what they return, not to the namespace.

Per namespace, every job has one entry: a bytes string that orders jobs exactly as ListJobs pages
through them (newest first, ties broken by name), kept in sorted lists: one of every job, and one
per state, per status reason and per label key=value. A query walks the smallest of the lists
its filter allows, newest first from its cursor, and the cache then checks the whole filter on
each candidate, so an index only ever narrows the search and never decides what matches.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from jobscheduler.domain.models import JobState, JobStatus
from jobscheduler.domain.selector import Requirement

__all__ = ["JobFilter", "JobIndex", "entry_of", "entry_of_sort_key"]

_DOUBLE = struct.Struct(">d")
_WORD = struct.Struct(">Q")
_SIGN = 1 << 63
_ALL_BITS = (1 << 64) - 1
_TIME_BYTES = _WORD.size
# UTF-8 never holds this byte: ending every name with it sorts a name after each longer name it
# begins, which makes ascending entries exactly the reverse of ListJobs' order (see entry_of).
_END = b"\xff"


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What ListJobs, WatchJobs and the leader's reconcilers select jobs by, in a form the cache's
    indexes can answer. Also the (labels, status) predicate a subscription takes."""

    states: frozenset[JobState] = frozenset()  # empty: any state
    reasons: frozenset[str] = frozenset()  # the status reason is one of these; empty: any
    requirements: tuple[Requirement, ...] = ()  # label requirements, all of which must hold

    def __call__(self, labels: Mapping[str, str], status: JobStatus) -> bool:
        return (
            (not self.states or status.state in self.states)
            and (not self.reasons or status.reason in self.reasons)
            and all(r.matches(labels) for r in self.requirements)
        )


def _time_bytes(created: float) -> bytes:
    """8 bytes that order as the float does (IEEE 754 with the sign bit flipped, and all bits
    flipped for negatives); -0.0 is taken as 0.0, as float comparison does."""
    (bits,) = _WORD.unpack(_DOUBLE.pack(created + 0.0))
    return _WORD.pack(bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN)


def entry_of(status: JobStatus) -> bytes:
    """The job's entry: its creation time, then its name. Ascending entries are the exact reverse
    of cache.sort_key's order (which sorts by -created, then by each character inverted), at one
    byte per character of the name instead of a tuple holding a four-byte-per-character string."""
    created = status.created_at.timestamp() if status.created_at else 0.0
    return _time_bytes(created) + status.job_id.encode("utf-8", "surrogatepass") + _END


def entry_of_sort_key(key: tuple[float, str]) -> bytes:
    """The entry of the job cache.sort_key gave `key` (a page cursor)."""
    name = "".join(chr(0x10FFFF - ord(c)) for c in key[1])
    return _time_bytes(-key[0]) + name.encode("utf-8", "surrogatepass") + _END


def name_of(entry: bytes) -> str:
    return entry[_TIME_BYTES:-1].decode("utf-8", "surrogatepass")


Postings = list[bytes]  # entries, ascending: oldest first
K = TypeVar("K")


class _Namespace:
    __slots__ = ("labels", "order", "reasons", "states")

    def __init__(self) -> None:
        self.order: Postings = []
        self.states: dict[JobState, Postings] = {}
        self.reasons: dict[str, Postings] = {}
        self.labels: dict[str, dict[str, Postings]] = {}


class JobIndex:
    """The indexes of the cache's jobs; the cache calls it with its lock held."""

    def __init__(self) -> None:
        self._spaces: dict[str, _Namespace] = {}
        # While a relist is applied: per touched list, its entries to add (True) or drop (False),
        # applied by one sort at the end instead of one insertion (a memmove) per job.
        self._pending: dict[int, tuple[Postings, dict[bytes, bool]]] | None = None

    # -- writes --------------------------------------------------------------------------------

    def update(
        self,
        namespace: str,
        old: tuple[Mapping[str, str], JobStatus] | None,
        new: tuple[Mapping[str, str], JobStatus] | None,
    ) -> None:
        """Re-indexes one job from (labels, status) `old` to `new`; None: not indexed / removed."""
        space = self._spaces.get(namespace)
        if space is None:
            if new is None:
                return
            space = self._spaces[namespace] = _Namespace()
        old_entry = entry_of(old[1]) if old is not None else None
        new_entry = entry_of(new[1]) if new is not None else None
        if old_entry != new_entry:
            if old is not None and old_entry is not None:
                self._drop_all(space, old_entry, *old)
            if new is not None and new_entry is not None:
                self._add_all(space, new_entry, *new)
        elif old is not None and new is not None and new_entry is not None:
            self._move(space, new_entry, old, new)
        if not space.order and self._pending is None:
            del self._spaces[namespace]

    def begin_bulk(self) -> None:
        """Defers list changes until end_bulk (a relist touching many jobs at once)."""
        self._pending = {}

    def end_bulk(self) -> None:
        pending, self._pending = self._pending or {}, None
        for postings, changes in pending.values():
            present = set(postings)
            kept = [e for e in postings if changes.get(e, True)]
            kept.extend(e for e, add in changes.items() if add and e not in present)
            kept.sort()
            postings[:] = kept
        for namespace, space in list(self._spaces.items()):
            if not space.order:
                del self._spaces[namespace]
                continue
            _drop_empty(space.states)
            _drop_empty(space.reasons)
            for values in space.labels.values():
                _drop_empty(values)
            _drop_empty(space.labels)

    def _add_all(self, space: _Namespace, entry: bytes, labels: Mapping[str, str], status: JobStatus) -> None:
        self._add(space.order, entry)
        self._add(space.states.setdefault(status.state, []), entry)
        self._add(space.reasons.setdefault(status.reason, []), entry)
        for key, value in labels.items():
            self._add(space.labels.setdefault(key, {}).setdefault(value, []), entry)

    def _drop_all(
        self, space: _Namespace, entry: bytes, labels: Mapping[str, str], status: JobStatus
    ) -> None:
        self._drop(space.order, entry)
        self._drop_from(space.states, status.state, entry)
        self._drop_from(space.reasons, status.reason, entry)
        for key, value in labels.items():
            values = space.labels.get(key)
            if values is not None:
                self._drop_from(values, value, entry)
                if not values and self._pending is None:
                    del space.labels[key]

    def _move(
        self,
        space: _Namespace,
        entry: bytes,
        old: tuple[Mapping[str, str], JobStatus],
        new: tuple[Mapping[str, str], JobStatus],
    ) -> None:
        """Same entry (same job, same creation time): only the lists whose key changed."""
        (old_labels, old_status), (new_labels, new_status) = old, new
        if old_status.state is not new_status.state:
            self._drop_from(space.states, old_status.state, entry)
            self._add(space.states.setdefault(new_status.state, []), entry)
        if old_status.reason != new_status.reason:
            self._drop_from(space.reasons, old_status.reason, entry)
            self._add(space.reasons.setdefault(new_status.reason, []), entry)
        if old_labels is new_labels or old_labels == new_labels:
            return
        for key, value in old_labels.items():
            if new_labels.get(key) != value and (values := space.labels.get(key)) is not None:
                self._drop_from(values, value, entry)
                if not values and self._pending is None:
                    del space.labels[key]
        for key, value in new_labels.items():
            if old_labels.get(key) != value:
                self._add(space.labels.setdefault(key, {}).setdefault(value, []), entry)

    def _add(self, postings: Postings, entry: bytes) -> None:
        if self._pending is not None:
            self._pending.setdefault(id(postings), (postings, {}))[1][entry] = True
        elif not postings or postings[-1] < entry:
            postings.append(entry)  # the common case: a new job is the newest
        else:
            bisect.insort(postings, entry)

    def _drop_from(self, lists: dict[K, Postings], key: K, entry: bytes) -> None:
        postings = lists.get(key)
        if postings is None:
            return
        self._drop(postings, entry)
        if not postings and self._pending is None:
            del lists[key]

    def _drop(self, postings: Postings, entry: bytes) -> None:
        if self._pending is not None:
            self._pending.setdefault(id(postings), (postings, {}))[1][entry] = False
            return
        i = bisect.bisect_left(postings, entry)
        if i < len(postings) and postings[i] == entry:
            del postings[i]

    # -- reads ---------------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return list(self._spaces)

    def size(self, namespace: str) -> int:
        space = self._spaces.get(namespace)
        return len(space.order) if space is not None else 0

    def names(
        self, namespace: str, flt: JobFilter | None = None, *, after: bytes | None = None
    ) -> Iterator[str]:
        """Names of the namespace's jobs newest first, strictly after the entry `after`: every job
        `flt` may match (and others; the caller checks the filter). Holding the cache's lock."""
        space = self._spaces.get(namespace)
        if space is None:
            return iter(())
        sources = _narrowest(space, flt) if flt is not None else [space.order]
        if len(sources) == 1:
            return map(name_of, _newest_first(sources[0], after))
        return map(name_of, heapq.merge(*(_newest_first(s, after) for s in sources), reverse=True))


def _drop_empty(lists: dict[K, Any]) -> None:
    for key in [k for k, v in lists.items() if not v]:
        del lists[key]


def _narrowest(space: _Namespace, flt: JobFilter) -> list[Postings]:
    """The union of lists with the fewest entries that holds every job `flt` can match."""
    best = [space.order]
    best_size = len(space.order)
    options: list[list[Postings]] = []
    if flt.states:
        options.append([p for s in flt.states if (p := space.states.get(s))])
    if flt.reasons:
        options.append([p for r in flt.reasons if (p := space.reasons.get(r))])
    for req in flt.requirements:
        values = space.labels.get(req.key, {})
        if req.op == "in":
            options.append([p for v in req.values if (p := values.get(v))])
        elif req.op == "exists":
            options.append(list(values.values()))
        # "notin" and "!exists" match jobs without the label too: no list holds them all.
    for option in options:
        size = sum(map(len, option))
        if size < best_size:
            best, best_size = option, size
            if not size:
                break
    return best


def _newest_first(postings: Postings, after: bytes | None) -> Iterator[bytes]:
    i = bisect.bisect_left(postings, after) if after is not None else len(postings)
    while i > 0:
        i -= 1
        yield postings[i]
