"""JobCache without a cluster: watch events, relists and the service's own writes go in, statuses,
pages, counts and subscription events come out. The informer threads are never started."""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from jobscheduler.domain.errors import SubscriptionOverflowError
from jobscheduler.domain.models import JobState, JobStatus
from jobscheduler.domain.status import derive_status
from jobscheduler.kube.cache import JobCache, sort_key
from jobscheduler.kube.feed import Event, Subscription, iter_events
from jobscheduler.kube.slim import slim_job, slim_pod

Obj = dict[str, Any]
Match = Callable[[Mapping[str, str], JobStatus], bool]

NS = "team-a"
OTHER_NS = "team-b"
UID_LABEL = "batch.kubernetes.io/controller-uid"
PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
)


def ts(minute: int, second: int = 0) -> str:
    return f"2026-11-27T13:{minute:02d}:{second:02d}Z"


def make_job(
    name: str,
    *,
    namespace: str = NS,
    uid: str = "",
    rv: int = 1,
    created: str | None = ts(0),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    status: Obj | None = None,
) -> Obj:
    metadata: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "resourceVersion": str(rv),
        "labels": {"app.kubernetes.io/managed-by": "jobscheduler", **(labels or {})},
        "annotations": dict(annotations or {}),
    }
    if created is not None:
        metadata["creationTimestamp"] = created
    job: Obj = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata}
    if status is not None:
        job["status"] = status
    return job


def complete(when: str = ts(9)) -> Obj:
    return {
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": when}],
        "completionTime": when,
        "succeeded": 1,
    }


RUNNING_CONTAINER: Obj = {"name": "main", "ready": True, "state": {"running": {"startedAt": ts(2)}}}
DONE_CONTAINER: Obj = {
    "name": "main",
    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts(2), "finishedAt": ts(8)}},
}


def make_pod(
    name: str,
    *,
    owner: str,
    namespace: str = NS,
    rv: int = 1,
    phase: str = "Pending",
    created: str = ts(1),
    containers: Sequence[Obj] = (),
    uid_label: str = UID_LABEL,
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"pod-uid-{name}",
            "resourceVersion": str(rv),
            "creationTimestamp": created,
            "labels": {uid_label: owner, "app.kubernetes.io/managed-by": "jobscheduler"},
        },
        "status": {"phase": phase, "containerStatuses": list(containers)},
    }


def running_pod(name: str, *, owner: str, namespace: str = NS, rv: int = 1) -> Obj:
    return make_pod(
        name, owner=owner, namespace=namespace, rv=rv, phase="Running", containers=[RUNNING_CONTAINER]
    )


def uid_of(job: Obj) -> str:
    return str(job["metadata"]["uid"])


def everything(_labels: Mapping[str, str], _status: JobStatus) -> bool:
    return True


def new_cache(*jobs: Obj, pods: Sequence[Obj] = ()) -> JobCache:
    cache = JobCache(gateway=None, namespaces=())  # type: ignore[arg-type]  # informers never start
    for pod in pods:
        cache.apply("pods", "ADDED", pod)
    for job in jobs:
        cache.apply("jobs", "ADDED", job)
    return cache


def state_of(cache: JobCache, name: str, namespace: str = NS) -> JobState | None:
    status = cache.get(namespace, name)
    return status.state if status is not None else None


def nonzero_states(cache: JobCache) -> dict[str, int]:
    return {state: n for state, n in cache.counts()[1].items() if n}


def drain(sub: Subscription) -> list[tuple[str, str, JobState]]:
    """Every event pending now, without waiting."""
    events = []
    while (event := sub.next(0)) is not None:
        events.append((event.kind, event.status.job_id, event.status.state))
    return events


def names(statuses: Sequence[JobStatus]) -> list[str]:
    return [s.job_id for s in statuses]


# -- lifecycle ---------------------------------------------------------------------------------------

J1 = make_job("j1", rv=1)
U1 = uid_of(J1)
LIFECYCLE: list[tuple[str, str, str, Obj, JobState | None, str, dict[str, int], dict[str, int], str]] = [
    # step, resource, kind, object, state, reason, objects, states, event the subscriber gets
    (
        "job created",
        "jobs",
        "ADDED",
        J1,
        PENDING,
        "Created",
        {"jobs": 1, "pods": 0},
        {"PENDING": 1},
        "UPDATED",
    ),
    (
        "pod created",
        "pods",
        "ADDED",
        make_pod("j1-a", owner=U1, rv=2),
        PENDING,
        "Created",
        {"jobs": 1, "pods": 1},
        {"PENDING": 1},
        "UPDATED",  # the status now names the pod
    ),
    (
        "pod running",
        "pods",
        "MODIFIED",
        running_pod("j1-a", owner=U1, rv=3),
        RUNNING,
        "Running",
        {"jobs": 1, "pods": 1},
        {"RUNNING": 1},
        "UPDATED",
    ),
    (
        "pod succeeded",
        "pods",
        "MODIFIED",
        make_pod("j1-a", owner=U1, rv=4, phase="Succeeded", containers=[DONE_CONTAINER]),
        RUNNING,
        "Completing",
        {"jobs": 1, "pods": 1},
        {"RUNNING": 1},
        "UPDATED",
    ),
    (
        "job complete",
        "jobs",
        "MODIFIED",
        make_job("j1", rv=5, status=complete()),
        SUCCEEDED,
        "Completed",
        {"jobs": 1, "pods": 1},
        {"SUCCEEDED": 1},
        "UPDATED",
    ),
    (
        "job deleted",
        "jobs",
        "DELETED",
        make_job("j1", rv=6, status=complete()),
        None,
        "",
        {"jobs": 0, "pods": 1},  # the pod goes with its own event
        {},
        "DELETED",
    ),
    (
        "pod deleted",
        "pods",
        "DELETED",
        make_pod("j1-a", owner=U1, rv=7, phase="Succeeded"),
        None,
        "",
        {"jobs": 0, "pods": 0},
        {},
        "",
    ),
]


def test_job_lifecycle_is_followed_through_get_counts_and_events() -> None:
    cache = new_cache()
    sub = cache.subscribe(everything, initial=True)
    last_state: JobState | None = None
    for step, resource, kind, obj, state, reason, objects, states, event_kind in LIFECYCLE:
        cache.apply(resource, kind, obj)
        status = cache.get(NS, "j1")
        assert (status.state if status else None) is state, step
        assert (status.reason if status else "") == reason, step
        counted_objects, _, subscribers = cache.counts()
        assert counted_objects == objects, step
        assert nonzero_states(cache) == states, step
        assert subscribers == 1, step
        expected_events = [(event_kind, "j1", state or last_state)] if event_kind else []
        assert drain(sub) == expected_events, step
        last_state = state


def test_deleted_job_is_gone_from_reads() -> None:
    cache = new_cache(make_job("j1", labels={"team": "ml"}))
    cache.apply("jobs", "DELETED", make_job("j1", rv=2))
    assert cache.get(NS, "j1") is None
    assert cache.labels_of(NS, "j1") == {}
    assert cache.query(NS, everything, after=None, limit=10) == ([], False)
    assert cache.counts()[0]["jobs"] == 0


def test_labels_of_returns_the_jobs_labels() -> None:
    cache = new_cache(make_job("j1", labels={"team": "ml"}))
    assert cache.labels_of(NS, "j1") == {"app.kubernetes.io/managed-by": "jobscheduler", "team": "ml"}
    assert cache.labels_of(NS, "missing") == {}
    assert cache.labels_of(OTHER_NS, "j1") == {}


# -- pods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid_label", [UID_LABEL, "controller-uid"])
def test_pods_seen_before_their_job_are_attached_when_it_arrives(uid_label: str) -> None:
    job = make_job("j1")
    cache = new_cache()
    cache.apply("pods", "ADDED", make_pod("j1-a", owner=uid_of(job), phase="Failed", uid_label=uid_label))
    cache.apply("pods", "ADDED", make_pod("j1-b", owner=uid_of(job), created=ts(2), uid_label=uid_label))
    cache.apply(
        "pods",
        "MODIFIED",
        make_pod(
            "j1-b",
            owner=uid_of(job),
            created=ts(2),
            phase="Running",
            containers=[RUNNING_CONTAINER],
            uid_label=uid_label,
        ),
    )
    assert cache.get(NS, "j1") is None

    cache.apply("jobs", "ADDED", job)

    status = cache.get(NS, "j1")
    assert status is not None
    assert (status.state, status.pods, status.attempts) == (RUNNING, ("j1-a", "j1-b"), 1)


@pytest.mark.parametrize(
    "deleted",
    [
        pytest.param(running_pod("j1-a", owner=U1, rv=9), id="full-object"),
        pytest.param({"metadata": {"name": "j1-a", "namespace": NS, "resourceVersion": "9"}}, id="no-labels"),
        pytest.param(
            {"metadata": {"name": "j1-a", "namespace": NS, "labels": {}, "resourceVersion": "9"}},
            id="empty-labels",
        ),
    ],
)
def test_deleted_pod_is_detached_from_its_job(deleted: Obj) -> None:
    cache = new_cache(J1, pods=[running_pod("j1-a", owner=U1), make_pod("j1-b", owner=U1, created=ts(3))])
    assert state_of(cache, "j1") is RUNNING

    cache.apply("pods", "DELETED", deleted)

    status = cache.get(NS, "j1")
    assert status is not None
    assert status.pods == ("j1-b",)
    assert status.state is PENDING
    assert cache.counts()[0]["pods"] == 1


def test_pod_deletion_in_another_namespace_leaves_a_same_named_pod_alone() -> None:
    a, b = make_job("j1"), make_job("j1", namespace=OTHER_NS)
    cache = new_cache(
        a,
        b,
        pods=[running_pod("p", owner=uid_of(a)), running_pod("p", owner=uid_of(b), namespace=OTHER_NS)],
    )
    cache.apply("pods", "DELETED", {"metadata": {"name": "p", "namespace": OTHER_NS}})
    assert state_of(cache, "j1") is RUNNING
    assert state_of(cache, "j1", OTHER_NS) is PENDING


@pytest.mark.parametrize(
    "pod",
    [
        pytest.param(running_pod("stray", owner="uid-nobody"), id="unknown-uid"),
        pytest.param(
            {"metadata": {"name": "stray", "namespace": NS}, "status": {"phase": "Running"}}, id="no-owner"
        ),
    ],
)
def test_pod_without_a_known_job_is_held_and_harmless(pod: Obj) -> None:
    cache = new_cache(J1)
    before = cache.get(NS, "j1")
    sub = cache.subscribe(everything, initial=False)

    cache.apply("pods", "ADDED", pod)
    cache.apply("pods", "MODIFIED", pod)
    assert cache.counts()[0]["pods"] == 1
    cache.apply("pods", "DELETED", pod)

    assert cache.counts()[0]["pods"] == 0
    assert cache.get(NS, "j1") == before
    assert drain(sub) == []


# -- replace (relist) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "fresh", "remaining", "deleted"),
    [
        pytest.param(
            NS, ["a1", "a3"], {(NS, "a1"), (NS, "a3"), (OTHER_NS, "b1")}, {"a2"}, id="one-namespace"
        ),
        pytest.param(OTHER_NS, [], {(NS, "a1"), (NS, "a2"), (NS, "a3")}, {"b1"}, id="other-namespace-empty"),
        pytest.param("", ["a2", "b1"], {(NS, "a2"), (OTHER_NS, "b1")}, {"a1", "a3"}, id="all-namespaces"),
    ],
)
def test_replace_removes_jobs_missing_from_the_list_in_that_namespace_only(
    namespace: str, fresh: list[str], remaining: set[tuple[str, str]], deleted: set[str]
) -> None:
    jobs = {
        "a1": make_job("a1"),
        "a2": make_job("a2"),
        "a3": make_job("a3"),
        "b1": make_job("b1", namespace=OTHER_NS),
    }
    cache = new_cache(*jobs.values())
    sub = cache.subscribe(everything, initial=False)

    cache.replace("jobs", namespace, [copy.deepcopy(jobs[name]) for name in fresh])

    present = {(ns, name) for ns in (NS, OTHER_NS) for name in jobs if cache.get(ns, name) is not None}
    assert present == remaining
    assert cache.counts()[0]["jobs"] == len(remaining)
    assert nonzero_states(cache) == {"PENDING": len(remaining)}
    # Unchanged jobs in the list publish nothing; only the removals reach subscribers.
    assert sorted(drain(sub)) == sorted(("DELETED", name, PENDING) for name in deleted)


def test_replace_applies_changes_in_the_fresh_list() -> None:
    cache = new_cache(make_job("a1"), make_job("a2"))
    sub = cache.subscribe(everything, initial=False)

    cache.replace("jobs", NS, [make_job("a1", rv=5, status=complete()), make_job("a2"), make_job("a4")])

    assert state_of(cache, "a1") is SUCCEEDED
    assert sorted(drain(sub)) == [("UPDATED", "a1", SUCCEEDED), ("UPDATED", "a4", PENDING)]


def test_replace_of_pods_recomputes_statuses_in_that_namespace_only() -> None:
    a, b = make_job("a1"), make_job("b1", namespace=OTHER_NS)
    cache = new_cache(
        a,
        b,
        pods=[running_pod("a1-x", owner=uid_of(a)), running_pod("b1-x", owner=uid_of(b), namespace=OTHER_NS)],
    )
    assert (state_of(cache, "a1"), state_of(cache, "b1", OTHER_NS)) == (RUNNING, RUNNING)

    cache.replace("pods", NS, [])  # the pod went away while the watch was down
    assert state_of(cache, "a1") is PENDING
    assert state_of(cache, "b1", OTHER_NS) is RUNNING
    assert cache.counts()[0]["pods"] == 1

    finished = make_pod("a1-y", owner=uid_of(a), phase="Succeeded", containers=[DONE_CONTAINER])
    cache.replace("pods", NS, [finished])
    status = cache.get(NS, "a1")
    assert status is not None
    assert (status.state, status.reason, status.pods) == (RUNNING, "Completing", ("a1-y",))
    assert cache.counts()[0]["pods"] == 2

    cache.replace("pods", "", [])
    assert (state_of(cache, "a1"), state_of(cache, "b1", OTHER_NS)) == (PENDING, PENDING)
    assert cache.counts()[0]["pods"] == 0


# -- observe_job (the service's own writes) --------------------------------------------------------

CANCEL = {"jobscheduler.io/cancelled-at": ts(5)}


@pytest.mark.parametrize(
    ("cached_rv", "written_rv", "applied"),
    [
        pytest.param(None, 7, True, id="not-cached-yet"),
        pytest.param(5, 6, True, id="newer"),
        pytest.param(9, 10, True, id="newer-compared-as-numbers"),
        pytest.param(5, 5, False, id="same-version"),
        pytest.param(6, 5, False, id="older"),
        pytest.param(10, 9, False, id="older-compared-as-numbers"),
    ],
)
def test_observe_job_applies_only_a_newer_version(
    cached_rv: int | None, written_rv: int, applied: bool
) -> None:
    cache = new_cache() if cached_rv is None else new_cache(make_job("j1", rv=cached_rv))
    sub = cache.subscribe(everything, initial=False)

    cache.observe_job(make_job("j1", rv=written_rv, annotations=CANCEL))

    assert state_of(cache, "j1") is (CANCELLED if applied else PENDING)
    assert drain(sub) == ([("UPDATED", "j1", CANCELLED)] if applied else [])


def test_watch_events_apply_regardless_of_version() -> None:
    # The watch delivers in order; only the service's out-of-band writes need the version guard.
    cache = new_cache(make_job("j1", rv=9, annotations=CANCEL))
    cache.apply("jobs", "MODIFIED", make_job("j1", rv=10))
    assert state_of(cache, "j1") is PENDING


def test_new_job_reusing_a_name_replaces_the_old_one() -> None:
    old = make_job("j1", uid="uid-old", rv=10, labels={"gen": "old"})
    cache = new_cache(old, pods=[running_pod("j1-old", owner="uid-old")])
    assert state_of(cache, "j1") is RUNNING

    new = make_job("j1", uid="uid-new", rv=30, created=ts(20), labels={"gen": "new"})
    cache.observe_job(new)

    status = cache.get(NS, "j1")
    assert status is not None
    assert (status.state, status.pods, status.labels) == (PENDING, (), {"gen": "new"})
    assert cache.labels_of(NS, "j1")["gen"] == "new"
    assert cache.counts()[0]["jobs"] == 1
    assert nonzero_states(cache) == {"PENDING": 1}
    assert names(cache.query(NS, everything, after=None, limit=10)[0]) == ["j1"]

    # The old Job's pods no longer count for the name; the new Job's pods do.
    cache.apply("pods", "MODIFIED", running_pod("j1-old", owner="uid-old", rv=31))
    assert state_of(cache, "j1") is PENDING
    cache.apply("pods", "ADDED", running_pod("j1-new", owner="uid-new", rv=32))
    status = cache.get(NS, "j1")
    assert status is not None
    assert (status.state, status.pods) == (RUNNING, ("j1-new",))

    # Once the new Job is gone too, a late event for the old Job's pod finds nothing to update.
    cache.apply("jobs", "DELETED", new)
    cache.apply("pods", "MODIFIED", make_pod("j1-old", owner="uid-old", rv=33, phase="Failed"))
    assert cache.get(NS, "j1") is None
    assert cache.counts()[0]["jobs"] == 0


# -- query -----------------------------------------------------------------------------------------

# (name, creationTimestamp): ties in time are broken by name, as sort_key defines.
QUERY_JOBS = [
    ("j-old", ts(0)),
    ("j-tie-a", ts(5)),
    ("j-tie-b", ts(5)),
    ("j-tie-c", ts(5)),
    ("j-tie-ab", ts(5)),
    ("j-mid", ts(6)),
    ("j-new", ts(9)),
    ("j-newest", ts(9, 30)),
    ("j-undated", None),
    ("j-x1", ts(3)),
    ("j-x2", ts(3)),
    ("j-x3", ts(4)),
]


def query_cache() -> JobCache:
    jobs = [make_job(name, created=created) for name, created in QUERY_JOBS]
    random.Random(7).shuffle(jobs)
    return new_cache(*jobs, make_job("j-elsewhere", namespace=OTHER_NS, created=ts(59)))


def expected_order(cache: JobCache) -> list[str]:
    statuses = [cache.get(NS, name) for name, _ in QUERY_JOBS]
    return names(sorted((s for s in statuses if s is not None), key=sort_key))


def test_query_lists_newest_first_ties_in_sort_key_order() -> None:
    cache = query_cache()
    found, more = cache.query(NS, everything, after=None, limit=100)
    assert more is False
    assert names(found) == expected_order(cache)
    created = [s.created_at.timestamp() if s.created_at else 0.0 for s in found]
    assert created == sorted(created, reverse=True)
    assert found[0].job_id == "j-newest"
    assert found[-1].job_id == "j-undated"


@pytest.mark.parametrize(
    ("limit", "count", "more"),
    [(1, 1, True), (5, 5, True), (11, 11, True), (12, 12, False), (13, 12, False), (100, 12, False)],
)
def test_query_limit_and_more_flag(limit: int, count: int, more: bool) -> None:
    cache = query_cache()
    found, has_more = cache.query(NS, everything, after=None, limit=limit)
    assert names(found) == expected_order(cache)[:count]
    assert has_more is more


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 11, 12])
def test_query_paging_yields_each_job_exactly_once(limit: int) -> None:
    cache = query_cache()
    seen: list[str] = []
    after = None
    for _ in range(len(QUERY_JOBS) + 1):
        page, more = cache.query(NS, everything, after=after, limit=limit)
        assert len(page) <= limit
        seen += names(page)
        if not more:
            break
        after = sort_key(page[-1])
    assert seen == expected_order(cache)


def test_query_paging_survives_changes_between_pages() -> None:
    cache = query_cache()
    order = expected_order(cache)
    page, more = cache.query(NS, everything, after=None, limit=3)
    assert more
    after = sort_key(page[-1])

    cache.apply("jobs", "DELETED", make_job(page[-1].job_id))  # the cursor's own job
    cache.apply("jobs", "DELETED", make_job(order[5]))  # one not yet returned
    late = order[6]
    cache.apply("pods", "ADDED", running_pod(f"{late}-p", owner=f"uid-{NS}-{late}"))  # one changed
    cache.apply("jobs", "ADDED", make_job("j-brand-new", created=ts(59)))  # sorts before the cursor
    cache.apply("jobs", "ADDED", make_job("j-ancient", created="2020-01-01T00:00:00Z"))  # after it

    rest, more = cache.query(NS, everything, after=after, limit=100)
    expected = [name for name in order[3:] if name != order[5]]
    assert expected[-1] == "j-undated"
    expected.insert(-1, "j-ancient")
    assert (names(rest), more) == (expected, False)
    assert rest[names(rest).index(late)].state is RUNNING


@pytest.mark.parametrize(
    ("limit", "expected", "more"),
    [(1, ["c"], True), (2, ["c", "a"], False), (3, ["c", "a"], False)],
)
def test_query_more_counts_only_matching_jobs(limit: int, expected: list[str], more: bool) -> None:
    cache = new_cache(
        make_job("a", created=ts(1), labels={"team": "ml"}),
        make_job("b", created=ts(2), labels={"team": "web"}),
        make_job("c", created=ts(3), labels={"team": "ml"}),
        make_job("d", created=ts(0), labels={"team": "web"}),  # after the last match, not one itself
    )
    found, has_more = cache.query(NS, _team("ml"), after=None, limit=limit)
    assert (names(found), has_more) == (expected, more)


def _team(team: str) -> Match:
    return lambda labels, _status: labels.get("team") == team


def _state(state: JobState) -> Match:
    return lambda _labels, status: status.state is state


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        pytest.param(everything, ["d", "c", "b", "a"], id="everything"),
        pytest.param(_team("ml"), ["c", "a"], id="label"),
        pytest.param(_state(RUNNING), ["c", "b"], id="status"),
        pytest.param(lambda labels, s: labels.get("team") == "ml" and s.state is RUNNING, ["c"], id="both"),
        pytest.param(_team("none"), [], id="nothing"),
    ],
)
def test_query_filters_by_match_on_labels_and_status(match: Match, expected: list[str]) -> None:
    jobs = {
        "a": make_job("a", created=ts(1), labels={"team": "ml"}),
        "b": make_job("b", created=ts(2), labels={"team": "web"}),
        "c": make_job("c", created=ts(3), labels={"team": "ml"}),
        "d": make_job("d", created=ts(4), labels={"team": "web"}),
    }
    cache = new_cache(
        *jobs.values(),
        pods=[running_pod("b-p", owner=uid_of(jobs["b"])), running_pod("c-p", owner=uid_of(jobs["c"]))],
    )
    found, more = cache.query(NS, match, after=None, limit=10)
    assert (names(found), more) == (expected, False)


def test_query_is_per_namespace() -> None:
    cache = new_cache(make_job("a1"), make_job("b1", namespace=OTHER_NS), make_job("b2", namespace=OTHER_NS))
    assert names(cache.query(NS, everything, after=None, limit=10)[0]) == ["a1"]
    assert sorted(names(cache.query(OTHER_NS, everything, after=None, limit=10)[0])) == ["b1", "b2"]
    assert cache.query("team-c", everything, after=None, limit=10) == ([], False)


# -- subscriptions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "namespace", "expected"),
    [
        pytest.param(True, NS, {"a1"}, id="namespace"),
        pytest.param(True, None, {"a1", "b1"}, id="all-namespaces"),
        pytest.param(True, "team-c", set(), id="empty-namespace"),
        pytest.param(False, NS, set(), id="no-snapshot"),
    ],
)
def test_subscribe_snapshot_has_matching_jobs_of_the_namespace(
    initial: bool, namespace: str | None, expected: set[str]
) -> None:
    cache = new_cache(
        make_job("a1", labels={"team": "ml"}),
        make_job("a2", labels={"team": "web"}),
        make_job("b1", namespace=OTHER_NS, labels={"team": "ml"}),
    )
    sub = cache.subscribe(_team("ml"), initial=initial, namespace=namespace)
    events = drain(sub)
    assert {name for _, name, _ in events} == expected
    assert len(events) == len(expected)
    assert {kind for kind, _, _ in events} <= {"INITIAL"}


def test_snapshot_event_carries_the_cached_status() -> None:
    job = make_job("a1")
    cache = new_cache(job, pods=[running_pod("a1-p", owner=uid_of(job))])
    event = cache.subscribe(everything, initial=True).next(0)
    assert event is not None
    assert (event.kind, event.status) == ("INITIAL", cache.get(NS, "a1"))


BASE = make_job("j1", rv=1, labels={"team": "ml"}, annotations={"jobscheduler.io/request-id": "r-1"})


def _changed(rv: int = 2, **changes: Any) -> Obj:
    job = copy.deepcopy(BASE)
    job["metadata"]["resourceVersion"] = str(rv)
    for path, value in changes.items():
        target = job
        *parents, last = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return job


@pytest.mark.parametrize(
    ("resource", "obj", "event"),
    [
        pytest.param("jobs", _changed(), False, id="only-resource-version"),
        pytest.param("jobs", _changed(spec={"parallelism": 2}), False, id="spec"),
        pytest.param(
            "jobs", _changed(metadata__managedFields=[{"manager": "kubectl"}]), False, id="managed-fields"
        ),
        pytest.param(
            "jobs",
            _changed(metadata__annotations={"jobscheduler.io/request-id": "r-1", "other.io/x": "y"}),
            False,
            id="other-annotation",
        ),
        pytest.param("jobs", _changed(status={"ready": 0}), False, id="status-field-not-reported"),
        pytest.param(
            "jobs",
            _changed(metadata__labels={"app.kubernetes.io/managed-by": "jobscheduler", "team": "web"}),
            True,
            id="label",
        ),
        pytest.param(
            "jobs",
            _changed(metadata__annotations={"jobscheduler.io/request-id": "r-2"}),
            True,
            id="request-id",
        ),
        pytest.param("jobs", _changed(metadata__annotations=CANCEL), True, id="cancelled"),
        pytest.param("jobs", _changed(status={"active": 1}), True, id="active-count"),
        pytest.param("jobs", _changed(status=complete()), True, id="complete"),
        pytest.param("pods", make_pod("j1-p", owner=uid_of(BASE), rv=3), False, id="pod-unchanged"),
        pytest.param("pods", running_pod("j1-p", owner=uid_of(BASE), rv=3), True, id="pod-running"),
    ],
)
def test_updated_event_only_when_the_derived_status_changes(resource: str, obj: Obj, event: bool) -> None:
    cache = new_cache(BASE, pods=[make_pod("j1-p", owner=uid_of(BASE), rv=1)])
    before = cache.get(NS, "j1")
    sub = cache.subscribe(everything, initial=False)

    cache.apply(resource, "MODIFIED", obj)

    after = cache.get(NS, "j1")
    assert (after != before) is event
    assert after is not None
    assert drain(sub) == ([("UPDATED", "j1", after.state)] if event else [])


def test_updates_while_not_reading_leave_one_event_with_the_latest_status() -> None:
    job = make_job("j1")
    cache = new_cache(job)
    sub = cache.subscribe(everything, initial=False)

    for rv in range(2, 12):
        cache.apply("jobs", "MODIFIED", make_job("j1", rv=rv, status={"active": 1, "failed": rv}))
    cache.apply("pods", "ADDED", running_pod("j1-p", owner=uid_of(job), rv=20))

    event = sub.next(0)
    assert event is not None
    assert (event.kind, event.status) == ("UPDATED", cache.get(NS, "j1"))
    assert (event.status.state, event.status.failed) == (RUNNING, 11)
    assert sub.next(0) is None


@pytest.mark.parametrize(
    ("read_snapshot_first", "kind"),
    [
        pytest.param(False, "INITIAL", id="unread-initial-stays-initial"),
        pytest.param(True, "UPDATED", id="read"),
    ],
)
def test_a_change_to_an_unread_snapshot_event_stays_initial(read_snapshot_first: bool, kind: str) -> None:
    cache = new_cache(make_job("j1"))
    sub = cache.subscribe(everything, initial=True)
    if read_snapshot_first:
        assert drain(sub) == [("INITIAL", "j1", PENDING)]

    cache.apply("jobs", "MODIFIED", make_job("j1", rv=2, status=complete()))

    assert drain(sub) == [(kind, "j1", SUCCEEDED)]


def test_deletion_before_the_reader_reads_leaves_one_deleted_event() -> None:
    cache = new_cache(make_job("j1"))
    sub = cache.subscribe(everything, initial=True)
    cache.apply("jobs", "MODIFIED", make_job("j1", rv=2, status=complete()))
    cache.apply("jobs", "DELETED", make_job("j1", rv=3, status=complete()))
    assert drain(sub) == [("DELETED", "j1", SUCCEEDED)]


def test_events_of_distinct_jobs_keep_the_order_of_their_latest_change() -> None:
    cache = new_cache(*(make_job(name) for name in ("a", "b", "c", "d")))
    sub = cache.subscribe(everything, initial=False)

    for name in ("c", "a", "d", "b"):
        cache.apply("jobs", "MODIFIED", make_job(name, rv=2, status={"active": 1}))
    assert [name for _, name, _ in drain(sub)] == ["c", "a", "d", "b"]

    for name in ("c", "a", "d"):
        cache.apply("jobs", "MODIFIED", make_job(name, rv=3, status={"active": 2}))
    cache.apply("jobs", "MODIFIED", make_job("c", rv=4, status=complete()))  # c changes again
    assert drain(sub) == [("UPDATED", "a", PENDING), ("UPDATED", "d", PENDING), ("UPDATED", "c", SUCCEEDED)]


def test_subscription_match_filters_published_events() -> None:
    cache = new_cache(make_job("ml", labels={"team": "ml"}), make_job("web", labels={"team": "web"}))
    sub = cache.subscribe(_team("ml"), initial=False)
    for name in ("ml", "web"):
        cache.apply("jobs", "MODIFIED", make_job(name, rv=2, labels={"team": name}, status={"active": 1}))
    assert drain(sub) == [("UPDATED", "ml", PENDING)]


def _status(name: str, state: JobState = PENDING) -> JobStatus:
    return JobStatus(job_id=name, namespace=NS, name=name, job_type="timer", state=state)


def _event(name: str, state: JobState = PENDING, kind: str = "UPDATED") -> Event:
    return Event(kind, _status(name, state), datetime.now(UTC))


def test_overflow_closes_the_subscription_and_next_raises() -> None:
    sub = Subscription(everything, max_pending=2)
    sub.offer((NS, "a"), _event("a"))
    sub.offer((NS, "b"), _event("b"))
    sub.offer((NS, "a"), _event("a", RUNNING))  # conflated: still two pending
    assert not sub.closed

    sub.offer((NS, "c"), _event("c"))

    assert sub.closed
    assert sub.overflowed
    with pytest.raises(SubscriptionOverflowError):
        sub.next(0)
    sub.offer((NS, "d"), _event("d"))  # a closed mailbox takes nothing more
    with pytest.raises(SubscriptionOverflowError):
        sub.next(0)


def test_pending_within_max_is_not_an_overflow() -> None:
    sub = Subscription(everything, max_pending=3)
    for name in ("a", "b", "c"):
        sub.offer((NS, name), _event(name))
    assert [e.status.job_id for e in iter(lambda: sub.next(0), None)] == ["a", "b", "c"]
    sub.offer((NS, "d"), _event("d"))  # room again once read
    assert not sub.overflowed


def test_cache_subscriber_that_falls_behind_overflows() -> None:
    cache = new_cache()
    sub = cache.subscribe(everything, initial=False)
    sub.max_pending = 2
    for name in ("a", "b", "c"):
        cache.apply("jobs", "ADDED", make_job(name))
    with pytest.raises(SubscriptionOverflowError):
        sub.next(0)
    with pytest.raises(SubscriptionOverflowError):
        list(iter_events(sub, alive=lambda: True, poll=0.01))


def _blocked_reader(sub: Subscription) -> tuple[threading.Thread, list[object]]:
    """A thread blocked in sub.next(10): asserted to be waiting before the caller goes on."""
    result: list[object] = []

    def read() -> None:
        try:
            result.append(sub.next(10))
        except SubscriptionOverflowError as e:
            result.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(0.05)
    assert reader.is_alive(), "next() returned before anything happened"
    return reader, result


def test_close_wakes_a_blocked_next() -> None:
    sub = Subscription(everything)
    reader, result = _blocked_reader(sub)
    started = time.monotonic()
    sub.close()
    reader.join(2)
    assert not reader.is_alive()
    assert result == [None]
    assert time.monotonic() - started < 2


def test_offer_wakes_a_blocked_next() -> None:
    sub = Subscription(everything)
    reader, result = _blocked_reader(sub)
    event = _event("a")
    sub.offer((NS, "a"), event)
    reader.join(2)
    assert result == [event]


def test_overflow_wakes_a_blocked_next_with_the_error() -> None:
    sub = Subscription(everything, max_pending=0)
    reader, result = _blocked_reader(sub)
    sub.offer((NS, "a"), _event("a"))
    reader.join(2)
    assert len(result) == 1
    assert isinstance(result[0], SubscriptionOverflowError)


def test_next_times_out_with_none() -> None:
    sub = Subscription(everything)
    started = time.monotonic()
    assert sub.next(0.02) is None
    assert 0.015 <= time.monotonic() - started < 1


def _alive_for(calls: int) -> tuple[Callable[[], bool], list[int]]:
    """alive() that is true for its first `calls` calls, and how often it was called."""
    counter = [0]

    def alive() -> bool:
        counter[0] += 1
        return counter[0] <= calls

    return alive, counter


@pytest.mark.parametrize(
    ("alive_calls", "yielded"), [(0, []), (1, ["a"]), (2, ["a", "b"]), (5, ["a", "b", "c"])]
)
def test_iter_events_stops_when_alive_turns_false(alive_calls: int, yielded: list[str]) -> None:
    sub = Subscription(everything)
    for name in ("a", "b", "c"):
        sub.offer((NS, name), _event(name))
    alive, counter = _alive_for(alive_calls)
    # A loop that ignored alive() would spin forever; closing the mailbox later ends it, so the
    # test fails instead of hanging.
    backstop = threading.Timer(2, sub.close)
    backstop.start()
    try:
        events = [e.status.job_id for e in iter_events(sub, alive=alive, poll=0.01)]
    finally:
        backstop.cancel()
    assert events == yielded
    assert counter[0] == alive_calls + 1


def test_iter_events_stops_when_the_subscription_is_closed() -> None:
    cache = new_cache(make_job("a"), make_job("b"))
    sub = cache.subscribe(everything, initial=True)
    alive, calls = _alive_for(100)  # bounded, so a loop that ignores the close fails instead of hanging
    got = []
    for event in iter_events(sub, alive=alive, poll=0.01):
        got.append(event.status.job_id)
        cache.unsubscribe(sub)
    assert len(got) == 1
    assert calls[0] <= 2


def test_unsubscribe_stops_delivery() -> None:
    cache = new_cache(make_job("j1"))
    sub = cache.subscribe(everything, initial=False)
    other = cache.subscribe(everything, initial=False)
    assert cache.counts()[2] == 2

    cache.unsubscribe(sub)
    cache.apply("jobs", "MODIFIED", make_job("j1", rv=2, status={"active": 1}))

    assert cache.counts()[2] == 1
    assert sub.next(0) is None
    assert drain(other) == [("UPDATED", "j1", PENDING)]


def test_stop_closes_every_subscription() -> None:
    cache = new_cache()
    subs = [cache.subscribe(everything, initial=False) for _ in range(3)]
    cache.stop()
    assert all(sub.closed for sub in subs)


# -- slim objects ----------------------------------------------------------------------------------

MANAGED_FIELDS = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "batch/v1",
        "time": ts(3),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:active": {}, "f:ready": {}}},
        "subresource": "status",
    }
]


def full_job(*, annotations: Mapping[str, str] | None = None, status: Obj | None = None) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "job-7f3k2m9x1q",
            "namespace": NS,
            "uid": "0b8a7c1e-5d2f-4e3a-9c6b-1f2e3d4c5b6a",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": ts(0),
            "labels": {
                "app.kubernetes.io/managed-by": "jobscheduler",
                "jobscheduler.io/job-type": "timer",
                "jobscheduler.io/name": "nightly",
                "batch.kubernetes.io/controller-uid": "0b8a7c1e-5d2f-4e3a-9c6b-1f2e3d4c5b6a",
                "controller-uid": "0b8a7c1e-5d2f-4e3a-9c6b-1f2e3d4c5b6a",
                "team": "ml",
            },
            "annotations": {
                "jobscheduler.io/request-id": "req-42",
                "jobscheduler.io/parameters": '{"seconds": 30}',
                "batch.kubernetes.io/job-tracking": "",
                "kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"batch/v1"}',
                **(annotations or {}),
            },
            "managedFields": MANAGED_FIELDS,
        },
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 3,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 86400,
            "completionMode": "NonIndexed",
            "suspend": False,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "0b8a7c1e"}},
            "template": {
                "metadata": {"labels": {"jobscheduler.io/job-type": "timer"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "jobscheduler-timer:1.0", "args": ["30"]}],
                },
            },
        },
        "status": status if status is not None else {},
    }


def full_pod(
    name: str,
    *,
    phase: str,
    created: str = ts(1),
    containers: Sequence[Obj] = (),
    init_containers: Sequence[Obj] = (),
    conditions: Sequence[Obj] = (),
    reason: str = "",
    message: str = "",
) -> Obj:
    status: Obj = {
        "phase": phase,
        "conditions": list(conditions),
        "hostIP": "10.0.0.7",
        "podIP": "10.244.1.9",
        "podIPs": [{"ip": "10.244.1.9"}],
        "qosClass": "Burstable",
        "startTime": created,
        "containerStatuses": [
            {"image": "jobscheduler-timer:1.0", "imageID": "sha256:ab12", "restartCount": 0, **c}
            for c in containers
        ],
    }
    if init_containers:
        status["initContainerStatuses"] = list(init_containers)
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"pod-{name}",
            "resourceVersion": "48300",
            "creationTimestamp": created,
            "labels": {UID_LABEL: "0b8a7c1e-5d2f-4e3a-9c6b-1f2e3d4c5b6a", "job-name": "job-7f3k2m9x1q"},
            "annotations": {"kubectl.kubernetes.io/default-container": "main"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "job-7f3k2m9x1q"}],
            "managedFields": MANAGED_FIELDS,
        },
        "spec": {"restartPolicy": "Never", "nodeName": "kwok-node-1", "containers": [{"name": "main"}]},
        "status": status,
    }


def terminated(code: int, reason: str, *, started: str = ts(2), finished: str = ts(4)) -> Obj:
    return {
        "name": "main",
        "ready": False,
        "state": {
            "terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}
        },
    }


def condition(type_: str, reason: str = "", message: str = "", when: str = ts(9)) -> Obj:
    return {"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": when}


SLIM_CASES: list[Any] = [
    pytest.param(
        full_job(status={"active": 1, "ready": 1, "startTime": ts(1)}),
        [
            full_pod(
                "p1",
                phase="Running",
                containers=[
                    {
                        "name": "main",
                        "state": {"running": {"startedAt": ts(2)}},
                        "lastState": {
                            "terminated": {"exitCode": 1, "startedAt": ts(1, 30), "finishedAt": ts(2)}
                        },
                    }
                ],
            )
        ],
        RUNNING,
        id="running-after-restart",
    ),
    pytest.param(
        full_job(
            status={
                "failed": 2,
                "conditions": [
                    condition("Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")
                ],
            }
        ),
        [
            full_pod("p1", phase="Failed", containers=[terminated(1, "Error", finished=ts(3))]),
            full_pod(
                "p2", phase="Failed", created=ts(5), containers=[terminated(137, "OOMKilled", finished=ts(7))]
            ),
        ],
        FAILED,
        id="oom-killed",
    ),
    pytest.param(
        full_job(
            status={
                "active": 0,
                "uncountedTerminatedPods": {"failed": ["pod-p1"]},
                "conditions": [condition("FailureTarget", "BackoffLimitExceeded")],
            }
        ),
        [full_pod("p1", phase="Failed", containers=[terminated(3, "Error")])],
        FAILED,
        id="failure-target-uncounted",
    ),
    pytest.param(
        full_job(
            status={
                "succeeded": 1,
                "completionTime": ts(9),
                "conditions": [condition("SuccessCriteriaMet"), condition("Complete")],
            }
        ),
        [full_pod("p1", phase="Succeeded", containers=[terminated(0, "Completed")])],
        SUCCEEDED,
        id="complete",
    ),
    pytest.param(
        full_job(
            annotations={"jobscheduler.io/cancelled-at": ts(6)},
            status={"failed": 1, "conditions": [condition("Failed", "DeadlineExceeded")]},
        ),
        [full_pod("p1", phase="Failed", reason="DeadlineExceeded", message="Pod was active too long")],
        CANCELLED,
        id="cancelled",
    ),
    pytest.param(
        full_job(status={"active": 1}),
        [
            full_pod(
                "p1",
                phase="Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    }
                ],
            )
        ],
        PENDING,
        id="unschedulable",
    ),
    pytest.param(
        full_job(status={"active": 1}),
        [
            full_pod(
                "p1",
                phase="Pending",
                init_containers=[
                    {
                        "name": "fetch",
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
                        },
                    }
                ],
                containers=[{"name": "main", "state": {"waiting": {"reason": "PodInitializing"}}}],
            )
        ],
        PENDING,
        id="init-image-pull",
    ),
    pytest.param(
        full_job(status={"failed": 1}),
        [full_pod("p1", phase="Failed", reason="Evicted", message="The node was low on resource: memory.")],
        PENDING,
        id="evicted-backoff",
    ),
    pytest.param(
        full_job(status={"conditions": [condition("Suspended", "JobSuspended", "Job suspended")]}),
        [],
        PENDING,
        id="suspended",
    ),
]


@pytest.mark.parametrize(("job", "pods", "state"), SLIM_CASES)
def test_slim_objects_derive_the_same_status_as_full_ones(job: Obj, pods: list[Obj], state: JobState) -> None:
    full = derive_status(job, pods)
    assert full.state is state
    assert derive_status(slim_job(job), [slim_pod(p) for p in pods]) == full


@pytest.mark.parametrize(("job", "pods", "state"), SLIM_CASES)
def test_cache_reports_the_status_derived_from_full_objects(
    job: Obj, pods: list[Obj], state: JobState
) -> None:
    cache = new_cache(job, pods=pods)
    assert cache.get(NS, job["metadata"]["name"]) == derive_status(job, pods)
    assert state_of(cache, job["metadata"]["name"]) is state


def test_slim_job_keeps_only_the_placement_of_the_pod_template() -> None:
    job = full_job(status={"active": 1})
    pod_spec = job.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    pod_spec.update(
        nodeSelector={"accelerator": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        priorityClassName="batch-high",
        containers=[{"name": "main", "image": "busybox"}],
    )
    slim = slim_job(job)
    assert slim["spec"] == {
        "template": {
            "spec": {
                "nodeSelector": {"accelerator": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "priorityClassName": "batch-high",
            }
        }
    }
    assert derive_status(slim, []) == derive_status(job, [])
    assert derive_status(slim, []).placement.priority_class_name == "batch-high"


def test_slim_job_drops_spec_managed_fields_and_foreign_annotations() -> None:
    job = full_job(annotations={"jobscheduler.io/cancelled-at": ts(6)}, status={"active": 1})
    slim = slim_job(job)
    assert set(slim) == {"metadata", "status"}
    assert set(slim["metadata"]) == {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "labels",
        "annotations",
    }
    assert slim["metadata"]["annotations"] == {
        "jobscheduler.io/request-id": "req-42",
        "jobscheduler.io/parameters": '{"seconds": 30}',
        "jobscheduler.io/cancelled-at": ts(6),
    }
    assert slim["metadata"]["labels"] == job["metadata"]["labels"]
    assert slim["status"] == {"active": 1}


def test_slim_pod_keeps_only_status_fields_and_identity() -> None:
    pod = full_pod("p1", phase="Failed", reason="Evicted", containers=[terminated(1, "Error")])
    slim = slim_pod(pod)
    assert slim["metadata"] == {"name": "p1", "creationTimestamp": ts(1)}
    assert set(slim) == {"metadata", "status"}
    assert set(slim["status"]) == {"phase", "reason", "conditions", "containerStatuses", "startTime"}


def test_slim_tolerates_objects_without_metadata_or_status() -> None:
    assert slim_job({})["metadata"]["labels"] == {}
    assert slim_pod({}) == {"metadata": {"name": "", "creationTimestamp": None}, "status": {}}


# -- sort_key --------------------------------------------------------------------------------------


def test_sort_key_puts_newer_jobs_first_and_is_unique_per_name() -> None:
    older = replace(_status("zzz"), created_at=datetime(2026, 1, 1, tzinfo=UTC))
    newer = replace(_status("aaa"), created_at=datetime(2026, 1, 2, tzinfo=UTC))
    undated = _status("mmm")
    assert sorted([undated, older, newer], key=sort_key) == [newer, older, undated]
    same_time = [replace(_status(name), created_at=older.created_at) for name in ("a", "b", "ab", "ba")]
    assert len({sort_key(s) for s in same_time}) == len(same_time)


# --- regressions: late writes and reused names -----------------------------------------------


def test_a_late_write_response_does_not_bring_back_a_deleted_job() -> None:
    cache = new_cache()
    cache.apply("jobs", "ADDED", make_job("a", uid="u1", rv=10))
    cache.apply("jobs", "DELETED", make_job("a", uid="u1", rv=11))
    events = cache.subscribe(lambda _labels, _status: True, initial=False)

    cache.observe_job(make_job("a", uid="u1", rv=10, annotations={"jobscheduler.io/cancelled-at": ts(5)}))

    assert cache.get(NS, "a") is None
    assert events.next(0.01) is None


def test_news_of_an_older_job_with_the_same_name_leaves_the_newer_one() -> None:
    cache = new_cache()
    cache.apply("jobs", "ADDED", make_job("a", uid="u1", rv=10))
    cache.observe_job(make_job("a", uid="u2", rv=25))
    events = cache.subscribe(lambda _labels, _status: True, initial=False)

    cache.apply("jobs", "DELETED", make_job("a", uid="u1", rv=20))

    assert cache.get(NS, "a") is not None
    assert cache.labels_of(NS, "a") == make_job("a", uid="u2")["metadata"]["labels"]
    assert events.next(0.01) is None


def test_a_namespace_scoped_subscription_gets_no_events_from_other_namespaces() -> None:
    cache = new_cache()
    events = cache.subscribe(lambda _labels, _status: True, initial=False, namespace=NS)

    cache.apply("jobs", "ADDED", make_job("x", namespace=OTHER_NS))
    cache.apply("jobs", "ADDED", make_job("y"))

    first = events.next(0.1)
    assert first is not None
    assert (first.status.namespace, first.status.job_id) == (NS, "y")
    assert events.next(0.01) is None


def test_a_version_already_held_is_not_worked_on_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch's ADDED for a Job this replica created (and observed from the create reply) is
    the same version: nothing is slimmed or derived again. A newer version still is."""
    import jobscheduler.kube.cache as cache_module

    cache = new_cache()
    cache.observe_job(make_job("j1", rv=5))
    derived: list[str] = []
    real = cache_module.derive_status

    def counting(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobStatus:
        derived.append(job["metadata"]["resourceVersion"])
        return real(job, pods)

    monkeypatch.setattr(cache_module, "derive_status", counting)
    cache.apply("jobs", "ADDED", make_job("j1", rv=5))
    assert derived == []
    cache.apply("jobs", "MODIFIED", make_job("j1", rv=6, status=complete()))
    assert derived == ["6"]
    assert state_of(cache, "j1") is JobState.SUCCEEDED
    # A new Job under the same name (another uid) at a version string seen before is news.
    cache.apply("jobs", "ADDED", make_job("j1", uid="other", rv=6))
    assert derived == ["6", "6"]


def test_first_list_pending_until_every_informer_of_the_namespace_has_listed() -> None:
    """The leader's pending-timeout check waits for the cache's first list instead of reading
    every Job of the namespace from the API beside it (gigabytes at 100,000 Jobs)."""
    cache = JobCache(gateway=None, namespaces=("ns",))  # type: ignore[arg-type]  # never started
    assert cache.first_list_pending("ns")
    assert not cache.first_list_pending("elsewhere"), "an unwatched namespace has nothing to wait for"
    informers = cache._informers
    informers[0].synced.set()
    assert cache.first_list_pending("ns"), "jobs listed, pods not yet"
    for informer in informers:
        informer.synced.set()
    assert not cache.first_list_pending("ns")


def test_only_callers_watch_streams_count_not_the_services_own_followers() -> None:
    cache = new_cache()
    caller = cache.subscribe(everything, initial=False)
    cache.subscribe(everything, initial=False, internal=True)  # e.g. the notifier
    assert cache.counts()[2] == 1
    cache.unsubscribe(caller)
    assert cache.counts()[2] == 0
