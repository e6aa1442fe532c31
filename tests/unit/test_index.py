"""The watch cache's indexes (jobscheduler.kube.index): a JobFilter answered from them selects,
orders and pages exactly as the same filter checked on every job does, through adds, state
changes, relabels, deletions and relists; and it reads only the candidates its most selective
index holds."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobscheduler.app.service import JobService
from jobscheduler.control.pending import CANDIDATES, is_candidate
from jobscheduler.control.release import HELD
from jobscheduler.domain.config import Settings
from jobscheduler.domain.dependencies import HELD_LABEL, HELD_VALUE
from jobscheduler.domain.models import JobState, JobStatus
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.selector import Requirement, parse_selector
from jobscheduler.kube.cache import JobCache, sort_key
from jobscheduler.kube.index import JobFilter, JobIndex, entry_of, entry_of_sort_key

Obj = dict[str, Any]
NS = "team-a"
OTHER_NS = "team-b"
UID_LABEL = "batch.kubernetes.io/controller-uid"
START = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)
T_DONE = "2026-11-27T14:00:00Z"

# What a job's Kubernetes status and pods look like in each state the cache tells apart.
KINDS: dict[str, tuple[Obj, str]] = {
    "created": ({}, ""),
    "suspended": ({"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]}, ""),
    "succeeded": (
        {
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": T_DONE}],
            "completionTime": T_DONE,
            "succeeded": 1,
        },
        "",
    ),
    "failed": (
        {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "lastTransitionTime": T_DONE,
                }
            ],
            "failed": 1,
        },
        "",
    ),
    "running": ({"active": 1}, "Running"),
    "image-pull": ({"active": 1}, "ImagePullBackOff"),
    "unschedulable": ({"active": 1}, "Unschedulable"),
}


def created(second: int | None) -> str | None:
    if second is None:
        return None
    return (START + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_job(
    name: str,
    *,
    namespace: str = NS,
    second: int | None = 0,
    labels: Mapping[str, str] | None = None,
    kind: str = "created",
    rv: int = 1,
    uid: str = "",
) -> Obj:
    metadata: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "resourceVersion": str(rv),
        "labels": {"app.kubernetes.io/managed-by": "jobscheduler", **(labels or {})},
    }
    if (when := created(second)) is not None:
        metadata["creationTimestamp"] = when
    return {"metadata": metadata, "status": dict(KINDS[kind][0])}


def make_pod(job: Obj, kind: str) -> Obj | None:
    _, pod_state = KINDS[kind]
    if not pod_state:
        return None
    meta = job["metadata"]
    status: Obj
    if pod_state == "Running":
        container = {"name": "main", "ready": True, "state": {"running": {"startedAt": created(1)}}}
        status = {"phase": "Running", "containerStatuses": [container]}
    elif pod_state == "Unschedulable":
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no"}
        status = {"phase": "Pending", "conditions": [condition]}
    else:
        waiting = {"name": "main", "state": {"waiting": {"reason": pod_state, "message": "Back-off"}}}
        status = {"phase": "Pending", "containerStatuses": [waiting]}
    return {
        "metadata": {
            "name": f"{meta['name']}-pod",
            "namespace": meta["namespace"],
            "creationTimestamp": created(1),
            "labels": {UID_LABEL: meta["uid"]},
        },
        "status": status,
    }


def add(cache: JobCache, job: Obj, kind: str = "created") -> None:
    """The Job, then its pod (if its kind has one), as the informers deliver them."""
    cache.apply("jobs", "ADDED", job)
    if (pod := make_pod(job, kind)) is not None:
        cache.apply("pods", "ADDED", pod)


def new_cache() -> JobCache:
    return JobCache(gateway=None, namespaces=())  # type: ignore[arg-type]  # informers never start


LABEL_VALUES = {"team": ["ml", "web", "data"], "tier": ["gold", "silver"], "env": ["prod", "dev"]}
NAMES = ["a", "ab", "abc", "b", "ba", "job-1", "job-10", "job-2", "x.y", "z"]


def random_cache(rng: random.Random, count: int) -> tuple[JobCache, dict[str, Obj], list[Obj]]:
    """A cache of `count` jobs over two namespaces: names that are prefixes of each other,
    shared creation seconds, some without a creation time, random labels and states; with
    the Jobs and pods it was fed."""
    cache, jobs, pods = new_cache(), {}, []
    for i in range(count):
        name = f"{rng.choice(NAMES)}-{i}" if i % 3 else rng.choice(NAMES) + str(i)
        labels = {k: rng.choice(v) for k, v in LABEL_VALUES.items() if rng.random() < 0.7}
        if rng.random() < 0.2:
            labels[HELD_LABEL] = HELD_VALUE
        kind = rng.choice(list(KINDS))
        second = None if rng.random() < 0.05 else rng.randrange(0, 30)
        job = make_job(
            name, namespace=rng.choice([NS, NS, OTHER_NS]), second=second, labels=labels, kind=kind
        )
        add(cache, job, kind)
        jobs[name] = job
        if (pod := make_pod(job, kind)) is not None:
            pods.append(pod)
    return cache, jobs, pods


def every_status(cache: JobCache, namespace: str) -> list[tuple[Mapping[str, str], JobStatus]]:
    found = []
    for name in {s.job_id for s in _all(cache, namespace)}:
        status = cache.get(namespace, name)
        assert status is not None
        found.append((cache.labels_of(namespace, name), status))
    return found


def _all(cache: JobCache, namespace: str) -> list[JobStatus]:
    everything, _ = cache.query(namespace, lambda _labels, _status: True, after=None, limit=1_000_000)
    return everything


def expected(cache: JobCache, namespace: str, flt: JobFilter) -> list[str]:
    """What the filter selects, checked on every job, in ListJobs order."""
    statuses = [s for labels, s in every_status(cache, namespace) if flt(labels, s)]
    return [s.job_id for s in sorted(statuses, key=sort_key)]


def pages(cache: JobCache, namespace: str, flt: JobFilter, size: int) -> list[str]:
    """Every page in turn, each continuing from the last job of the one before."""
    seen: list[str] = []
    after = None
    for _ in range(1000):
        page, more = cache.query(namespace, flt, after=after, limit=size)
        seen += [s.job_id for s in page]
        if not more:
            return seen
        assert len(page) == size
        after = sort_key(page[-1])
    raise AssertionError(f"paging never ended: {seen[:20]}...")


FILTERS = [
    JobFilter(),
    JobFilter(requirements=parse_selector("team=ml")),
    JobFilter(requirements=parse_selector("team in (ml,web)")),
    JobFilter(requirements=parse_selector("team=ml,tier=gold")),
    JobFilter(requirements=parse_selector("team notin (ml)")),
    JobFilter(requirements=parse_selector("team!=web,env")),
    JobFilter(requirements=parse_selector("!tier")),
    JobFilter(requirements=parse_selector("tier")),
    JobFilter(requirements=parse_selector("team=nobody")),
    JobFilter(states=frozenset({JobState.SUCCEEDED})),
    JobFilter(
        states=frozenset({JobState.PENDING, JobState.RUNNING}), requirements=parse_selector("env=prod")
    ),
    JobFilter(states=frozenset({JobState.CANCELLED})),
    JobFilter(reasons=frozenset({"ImagePullBackOff", "Unschedulable"})),
    CANDIDATES,
    HELD,
]


# -- the order -------------------------------------------------------------------------------------


def _status(name: str, when: datetime | None) -> JobStatus:
    return JobStatus(
        job_id=name, namespace=NS, name=name, job_type="t", state=JobState.PENDING, created_at=when
    )


@pytest.mark.parametrize("seed", range(5))
def test_entries_order_jobs_in_reverse_of_sort_key(seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "ab", "a-b", "a.b", "b", "ba", "job-9", "job-10", "é", "ü-x", "日本"]
    times = [
        None,
        START,
        START + timedelta(seconds=1),
        START + timedelta(microseconds=500),
        START - timedelta(days=1),
    ]
    statuses = [_status(rng.choice(names) + rng.choice(["", "0", "-"]), rng.choice(times)) for _ in range(60)]
    unique = list({(s.job_id, s.created_at): s for s in statuses}.values())
    by_sort_key = [(s.job_id, s.created_at) for s in sorted(unique, key=sort_key)]
    by_entry = [(s.job_id, s.created_at) for s in sorted(unique, key=entry_of, reverse=True)]
    assert by_entry == by_sort_key


def test_a_page_cursor_maps_to_the_entry_of_its_job() -> None:
    for status in (_status("job-1", START), _status("ab", None), _status("日本", START - timedelta(days=3))):
        assert entry_of_sort_key(sort_key(status)) == entry_of(status)


def test_an_entry_costs_a_byte_per_name_character() -> None:
    assert len(entry_of(_status("job-00ab9mywxf", START))) == 8 + len("job-00ab9mywxf") + 1


# -- selection, intersection, ordering, paging -------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("flt", FILTERS)
def test_an_indexed_query_pages_as_the_filter_checked_on_every_job(seed: int, flt: JobFilter) -> None:
    cache, _, _ = random_cache(random.Random(seed), 120)
    for namespace in (NS, OTHER_NS):
        want = expected(cache, namespace, flt)
        for size in (1, 3, 7, 1000):
            assert pages(cache, namespace, flt, size) == want
        # The same filter as an opaque predicate walks every job: the same answer.
        assert [
            s.job_id for s in cache.query(namespace, lambda la, st: flt(la, st), after=None, limit=1000)[0]
        ] == want


def test_a_query_reports_more_only_when_another_job_matches() -> None:
    cache = new_cache()
    for i in range(5):
        add(cache, make_job(f"j{i}", second=i, labels={"team": "ml" if i % 2 else "web"}))
    ml = JobFilter(requirements=parse_selector("team=ml"))
    assert [s.job_id for s in cache.query(NS, ml, after=None, limit=2)[0]] == ["j3", "j1"]
    assert cache.query(NS, ml, after=None, limit=2)[1] is False
    assert cache.query(NS, ml, after=None, limit=1)[1] is True


def test_a_query_of_an_unknown_namespace_or_the_empty_one_finds_nothing() -> None:
    cache, _, _ = random_cache(random.Random(1), 20)
    assert cache.query("elsewhere", JobFilter(), after=None, limit=10) == ([], False)
    assert cache.query("", JobFilter(), after=None, limit=10) == ([], False)


def test_the_index_walks_only_the_most_selective_list() -> None:
    cache = new_cache()
    for i in range(200):
        labels = {"team": "ml" if i % 50 == 0 else "web", "env": "prod"}
        add(cache, make_job(f"j{i:03d}", second=i, labels=labels), "running" if i % 2 else "created")
    index: JobIndex = cache._index  # what the index offers, not only what matches
    rare = JobFilter(states=frozenset({JobState.RUNNING}), requirements=parse_selector("env=prod,team=ml"))
    assert list(index.names(NS, rare)) == ["j150", "j100", "j050", "j000"]
    assert list(index.names(NS, JobFilter(requirements=parse_selector("team in (ml,nobody)")))) == [
        "j150",
        "j100",
        "j050",
        "j000",
    ]
    # Nothing holds the jobs without a label: notin walks the namespace.
    assert len(list(index.names(NS, JobFilter(requirements=parse_selector("team notin (web)"))))) == 200
    assert list(index.names(NS, JobFilter(states=frozenset({JobState.CANCELLED})))) == []


def test_a_cursor_past_the_last_job_or_before_the_first_pages_from_there() -> None:
    cache = new_cache()
    for i in range(4):
        add(cache, make_job(f"j{i}", second=i))
    newest = cache.get(NS, "j3")
    oldest = cache.get(NS, "j0")
    assert newest is not None
    assert oldest is not None
    every = JobFilter()
    assert cache.query(NS, every, after=sort_key(oldest), limit=10) == ([], False)
    later = replace(newest, created_at=START + timedelta(days=1))
    assert [s.job_id for s in cache.query(NS, every, after=sort_key(later), limit=10)[0]] == [
        "j3",
        "j2",
        "j1",
        "j0",
    ]


# -- upkeep: state changes, relabels, deletions, relists -------------------------------------------


def test_a_state_change_moves_the_job_between_state_lists() -> None:
    cache = new_cache()
    job = make_job("j1", labels={"team": "ml"})
    add(cache, job, "image-pull")
    assert [j["metadata"]["name"] for j, _ in cache.jobs_with_pods(NS, CANDIDATES)] == ["j1"]
    done = make_job("j1", labels={"team": "ml"}, kind="succeeded", rv=2)
    cache.apply("jobs", "MODIFIED", done)
    assert cache.jobs_with_pods(NS, CANDIDATES) == []
    succeeded = JobFilter(states=frozenset({JobState.SUCCEEDED}), requirements=parse_selector("team=ml"))
    assert [s.job_id for s in cache.query(NS, succeeded, after=None, limit=10)[0]] == ["j1"]
    pending = JobFilter(states=frozenset({JobState.PENDING}))
    assert cache.query(NS, pending, after=None, limit=10) == ([], False)
    index: JobIndex = cache._index  # not even a candidate any more
    assert list(index.names(NS, pending)) == []
    assert list(index.names(NS, CANDIDATES)) == []


def test_a_relabel_that_leaves_the_status_alone_is_indexed_and_not_reported() -> None:
    cache = new_cache()
    add(cache, make_job("j1", labels={HELD_LABEL: HELD_VALUE}))
    events = cache.subscribe(lambda _labels, _status: True, initial=False)
    assert [s.job_id for s in cache.query(NS, HELD, after=None, limit=10)[0]] == ["j1"]
    # Labels of the service's own, which the status does not report.
    cache.apply("jobs", "MODIFIED", make_job("j1", labels={"jobscheduler.io/caller": "x"}, rv=2))
    assert cache.query(NS, HELD, after=None, limit=10) == ([], False)
    by_caller = JobFilter(requirements=parse_selector("jobscheduler.io/caller=x"))
    assert [s.job_id for s in cache.query(NS, by_caller, after=None, limit=10)[0]] == ["j1"]
    assert events.next(0) is None  # the same status: nothing to tell watchers


def test_a_deleted_job_leaves_every_list_and_empty_lists_go() -> None:
    cache = new_cache()
    add(cache, make_job("j1", labels={"run": "unique-1"}), "running")
    add(cache, make_job("j2", second=1, labels={"run": "unique-2"}))
    cache.apply("jobs", "DELETED", make_job("j1", labels={"run": "unique-1"}, rv=2))
    for flt in (
        JobFilter(requirements=parse_selector("run")),
        JobFilter(states=frozenset({JobState.RUNNING})),
    ):
        assert "j1" not in [s.job_id for s in cache.query(NS, flt, after=None, limit=10)[0]]
    cache.apply("jobs", "DELETED", make_job("j2", second=1, labels={"run": "unique-2"}, rv=3))
    index: JobIndex = cache._index  # its memory must not grow with jobs long gone
    assert index.namespaces() == []
    assert index.size(NS) == 0


def test_a_new_job_reusing_a_name_replaces_the_old_one_in_the_index() -> None:
    cache = new_cache()
    add(cache, make_job("j1", second=1, labels={"team": "ml"}, uid="first"))
    cache.apply("jobs", "ADDED", make_job("j1", second=5, labels={"team": "web"}, uid="second", rv=2))
    assert [
        s.job_id
        for s in cache.query(NS, JobFilter(requirements=parse_selector("team=ml")), after=None, limit=9)[0]
    ] == []
    web, _ = cache.query(NS, JobFilter(requirements=parse_selector("team=web")), after=None, limit=9)
    assert [(s.job_id, s.created_at) for s in web] == [("j1", START + timedelta(seconds=5))]
    assert len(_all(cache, NS)) == 1


@pytest.mark.parametrize("seed", range(4))
def test_a_relist_leaves_the_index_as_incremental_updates_would(seed: int) -> None:
    rng = random.Random(seed)
    cache, jobs, pods = random_cache(rng, 80)
    # The new truth: a third of the jobs gone, some changed (state, labels), some new.
    fresh = [job for job in jobs.values() if rng.random() > 0.33]
    for job in fresh:
        if rng.random() < 0.3:
            job["status"] = dict(KINDS["succeeded"][0])
            job["metadata"]["resourceVersion"] = "2"
        if rng.random() < 0.3:
            job["metadata"]["labels"] = {"team": "data", HELD_LABEL: HELD_VALUE}
            job["metadata"]["resourceVersion"] = "3"
    fresh += [make_job(f"new-{i}", second=40 + i, labels={"team": "ml"}) for i in range(10)]
    cache.replace("jobs", "", fresh)
    rebuilt = new_cache()
    for pod in pods:
        rebuilt.apply("pods", "ADDED", pod)
    for job in fresh:
        rebuilt.apply("jobs", "ADDED", job)
    for namespace in (NS, OTHER_NS):
        for flt in FILTERS:
            assert (
                pages(cache, namespace, flt, 5)
                == expected(rebuilt, namespace, flt)
                == expected(cache, namespace, flt)
            )
            # The lists themselves, not only what the filter then keeps of them.
            assert list(cache._index.names(namespace, flt)) == list(rebuilt._index.names(namespace, flt))


def test_a_relist_of_one_namespace_leaves_the_others_indexed() -> None:
    cache = new_cache()
    add(cache, make_job("a1", labels={"team": "ml"}))
    add(cache, make_job("b1", namespace=OTHER_NS, labels={"team": "ml"}))
    cache.replace("jobs", NS, [])
    ml = JobFilter(requirements=parse_selector("team=ml"))
    assert cache.query(NS, ml, after=None, limit=10) == ([], False)
    assert [s.job_id for s in cache.query(OTHER_NS, ml, after=None, limit=10)[0]] == ["b1"]


def test_a_relist_takes_jobs_as_an_iterator_yields_them() -> None:
    cache = new_cache()
    cache.replace("jobs", NS, (make_job(f"j{i}", second=i) for i in range(3)))
    assert [s.job_id for s in _all(cache, NS)] == ["j2", "j1", "j0"]


# -- the leader's reconcilers and the service's filters ---------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_pending_candidates_are_the_jobs_is_candidate_accepts_in_every_namespace(seed: int) -> None:
    cache, _, _ = random_cache(random.Random(seed), 150)
    found = sorted(j["metadata"]["name"] for j, _ in cache.jobs_with_pods("", CANDIDATES))
    want = sorted(s.job_id for ns in (NS, OTHER_NS) for _, s in every_status(cache, ns) if is_candidate(s))
    assert found == want
    assert want, "the random cache should hold some candidates"
    for job, pods in cache.jobs_with_pods(NS, CANDIDATES):
        assert job["metadata"]["namespace"] == NS
        assert [p["metadata"]["name"] for p in pods] == [job["metadata"]["name"] + "-pod"]


def test_held_jobs_are_those_labelled_held() -> None:
    cache = new_cache()
    add(cache, make_job("held", labels={HELD_LABEL: HELD_VALUE}))
    add(cache, make_job("other", labels={HELD_LABEL: "something-else"}))
    add(cache, make_job("free"))
    assert [s.job_id for s in cache.query(NS, HELD, after=None, limit=10)[0]] == ["held"]


def _service() -> JobService:
    return JobService(None, Registry([]), Settings())  # type: ignore[arg-type]  # no API calls


@pytest.mark.parametrize(
    ("args", "labels", "state", "selected"),
    [
        (("timer", "", "", frozenset(), ""), {"jobscheduler.io/job-type": "timer"}, JobState.PENDING, True),
        (("timer", "", "", frozenset(), ""), {"jobscheduler.io/job-type": "echo"}, JobState.PENDING, False),
        (("", "Nightly", "", frozenset(), ""), {"jobscheduler.io/name": "nightly"}, JobState.PENDING, True),
        (("", "", "", frozenset(), "daily"), {"jobscheduler.io/schedule": "daily"}, JobState.PENDING, True),
        (("", "", "", frozenset(), "daily"), {}, JobState.PENDING, False),
        (("", "", "team in (ml,web),!gpu", frozenset(), ""), {"team": "web"}, JobState.PENDING, True),
        (
            ("", "", "team in (ml,web),!gpu", frozenset(), ""),
            {"team": "web", "gpu": "1"},
            JobState.PENDING,
            False,
        ),
        (("", "", "", frozenset({JobState.RUNNING}), ""), {}, JobState.RUNNING, True),
        (("", "", "", frozenset({JobState.RUNNING}), ""), {}, JobState.FAILED, False),
    ],
)
def test_the_service_filter_selects_by_type_name_schedule_selector_and_state(
    args: tuple[str, str, str, frozenset[JobState], str],
    labels: dict[str, str],
    state: JobState,
    selected: bool,
) -> None:
    flt = _service().matcher(*args)
    status = JobStatus(job_id="j", namespace=NS, name="j", job_type="", state=state)
    assert flt(labels, status) is selected
    cache = new_cache()
    kind = {JobState.PENDING: "created", JobState.RUNNING: "running", JobState.FAILED: "failed"}[state]
    add(cache, make_job("j", labels=labels), kind)
    assert [s.job_id for s in cache.query(NS, flt, after=None, limit=5)[0]] == (["j"] if selected else [])


def test_the_service_filter_is_indexable_requirements() -> None:
    flt = _service().matcher("timer", "", "team=ml", frozenset({JobState.PENDING}))
    assert flt.states == frozenset({JobState.PENDING})
    assert flt.requirements == (
        Requirement("jobscheduler.io/job-type", "in", frozenset({"timer"})),
        Requirement("team", "in", frozenset({"ml"})),
    )


def test_a_relist_re_derives_nothing_for_a_job_at_the_same_version() -> None:
    cache = new_cache()
    add(cache, make_job("same", rv=7))
    add(cache, make_job("changed", rv=7))
    same, changed = cache.get(NS, "same"), cache.get(NS, "changed")
    cache.replace("jobs", NS, [make_job("same", rv=7), make_job("changed", rv=8, kind="succeeded")])
    assert cache.get(NS, "same") is same
    after = cache.get(NS, "changed")
    assert after is not None
    assert changed is not None
    assert (changed.state, after.state) == (JobState.PENDING, JobState.SUCCEEDED)
