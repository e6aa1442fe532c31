"""Queueing through Kueue in domain terms: names checked, the queue written on the Job (a label
for Kueue, or the service's label only while the service holds the Job), the release into the
queue, the QUEUED state, and what Kueue's Workload and LocalQueue objects say."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from jobscheduler.app.submit import check_queue_scope
from jobscheduler.domain.dependencies import release_patch as dependencies_release_patch
from jobscheduler.domain.errors import InvalidArgumentError, TokenScopeError
from jobscheduler.domain.models import JobState
from jobscheduler.domain.queueing import (
    PRIORITY_LABEL,
    QUEUE_LABEL,
    SERVICE_QUEUE_LABEL,
    Queueing,
    check_queueing,
    find_pending,
    in_queue,
    queue_info_of,
    queue_status_of,
    release_patch,
    render_queueing,
    waiting_for_admission,
)
from jobscheduler.domain.status import derive_status
from jobscheduler.transport.tokens import parse_tokens

Obj = dict[str, Any]
TOKEN = "a-token-long-enough-0123"


def manifest(*, suspend: bool = False) -> Obj:
    spec: Obj = {"template": {"spec": {}}}
    if suspend:
        spec["suspend"] = True
    return {"metadata": {"name": "job-a", "namespace": "ns", "labels": {}, "annotations": {}}, "spec": spec}


def test_the_default_queue_applies_and_a_priority_needs_a_queue() -> None:
    assert check_queueing(Queueing(), default_queue="") == Queueing()
    assert check_queueing(Queueing(), default_queue="team-a") == Queueing("team-a")
    assert check_queueing(Queueing("mine", "high"), default_queue="team-a") == Queueing("mine", "high")
    with pytest.raises(InvalidArgumentError) as caught:
        check_queueing(Queueing(priority="high"), default_queue="")
    assert caught.value.field == "priority"


@pytest.mark.parametrize(
    ("queueing", "field"),
    [
        (Queueing("Team_A"), "queue"),
        (Queueing("a" * 64), "queue"),
        (Queueing("team-a", "High!"), "priority"),
        (Queueing("team-a", "-high"), "priority"),
    ],
)
def test_names_kueue_would_refuse_are_refused_naming_the_field(queueing: Queueing, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_queueing(queueing, default_queue="")
    assert caught.value.field == field
    assert "kubectl get" in caught.value.detail


def test_a_job_not_held_joins_its_queue_suspended_for_kueue_to_admit() -> None:
    job = manifest()
    render_queueing(job, Queueing("team-a", "high"))
    labels = job["metadata"]["labels"]
    assert labels[QUEUE_LABEL] == "team-a"
    assert labels[SERVICE_QUEUE_LABEL] == "team-a"
    assert labels[PRIORITY_LABEL] == "high"
    assert job["spec"]["suspend"] is True
    assert in_queue(job)
    assert waiting_for_admission(job)


def test_a_held_job_keeps_its_queue_out_of_kueues_sight_until_released() -> None:
    job = manifest(suspend=True)  # the caller's suspend, dependencies or a pending secret_env
    render_queueing(job, Queueing("team-a"))
    assert QUEUE_LABEL not in job["metadata"]["labels"]
    assert job["metadata"]["labels"][SERVICE_QUEUE_LABEL] == "team-a"
    assert not in_queue(job)
    # Released: into the queue (Kueue unsuspends it on admission), never straight to running.
    assert release_patch(job) == {"metadata": {"labels": {QUEUE_LABEL: "team-a"}}}


def test_a_job_without_a_queue_is_untouched_and_released_to_run() -> None:
    job = manifest(suspend=True)
    before = copy.deepcopy(job)
    render_queueing(job, Queueing())
    assert job == before
    assert release_patch(job) == {"spec": {"suspend": False}}


def test_dependencies_release_a_queued_job_into_its_queue() -> None:
    job = manifest(suspend=True)
    render_queueing(job, Queueing("team-a"))
    job["metadata"]["resourceVersion"] = "7"
    patch = dependencies_release_patch(job)
    assert patch["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert "spec" not in patch  # stays suspended: Kueue's to admit
    job["metadata"]["labels"].pop(SERVICE_QUEUE_LABEL)
    assert dependencies_release_patch(job)["spec"] == {"suspend": False}


def test_a_suspended_job_in_its_queue_is_queued_and_an_admitted_one_is_not() -> None:
    job = manifest()
    render_queueing(job, Queueing("team-a", "low"))
    job["metadata"]["creationTimestamp"] = "2026-12-07T10:00:00Z"
    status = derive_status(job, [])
    assert status.state is JobState.QUEUED
    assert status.reason == "WaitingForAdmission"
    assert "team-a" in status.message
    assert status.queueing == Queueing("team-a", "low")
    assert status.labels == {}  # Kueue's and the service's labels are not the caller's
    job["spec"]["suspend"] = False  # admitted
    assert derive_status(job, []).state is JobState.PENDING


def test_a_cancelled_or_finished_queued_job_is_not_queued() -> None:
    job = manifest()
    render_queueing(job, Queueing("team-a"))
    job["metadata"]["annotations"]["jobscheduler.io/cancelled-at"] = "2026-12-07T10:00:00Z"
    assert derive_status(job, []).state is JobState.CANCELLED


def workload(**status: Any) -> Obj:
    return {"metadata": {"name": "job-job-a-1a2b3"}, "spec": {"priority": 1000}, "status": status}


def condition(kind: str, status: str, reason: str = "", message: str = "", at: str = "") -> Obj:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": at or "2026-12-07T10:00:05Z",
    }


def test_a_pending_workload_gives_kueues_reason_and_positions_counted_from_one() -> None:
    pending = workload(
        conditions=[
            condition(
                "QuotaReserved", "False", "Pending", "insufficient unused quota for cpu in flavor default"
            )
        ]
    )
    entry = {"metadata": {"name": "job-job-a-1a2b3"}, "positionInLocalQueue": 0, "positionInClusterQueue": 2}
    found = queue_status_of(
        pending, find_pending([{"metadata": {"name": "other"}}, entry], "job-job-a-1a2b3")
    )
    assert found.workload == "job-job-a-1a2b3"
    assert not found.admitted
    assert (found.position_in_queue, found.position_in_cluster_queue) == (1, 3)
    assert found.pending_reason == "insufficient unused quota for cpu in flavor default"
    assert found.priority_value == 1000
    assert queue_status_of(pending).position_in_queue is None  # no visibility API: no position


def test_an_admitted_workload_and_a_preempted_one() -> None:
    admitted = workload(
        admission={"clusterQueue": "team-a-cq"},
        conditions=[
            condition("QuotaReserved", "True"),
            condition("Admitted", "True", at="2026-12-07T10:00:09Z"),
        ],
    )
    found = queue_status_of(admitted)
    assert (found.admitted, found.cluster_queue, found.pending_reason) == (True, "team-a-cq", "")
    assert found.admitted_at == datetime(2026, 12, 7, 10, 0, 9, tzinfo=UTC)
    assert found.eviction_reason == ""
    preempted = workload(
        conditions=[
            condition("QuotaReserved", "False", "Pending", "waiting"),
            condition("Evicted", "True", "Preempted", "Preempted to accommodate a workload"),
            condition("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: u1)"),
        ]
    )
    found = queue_status_of(preempted)
    assert found.eviction_reason == "InClusterQueue"
    assert found.eviction_message == "Preempted to accommodate a workload (UID: u1)"
    assert found.evicted_at is not None
    deactivated = workload(
        conditions=[condition("Evicted", "True", "Deactivated", "deactivated by the user")]
    )
    assert queue_status_of(deactivated).eviction_reason == "Deactivated"
    # Kueue marks every admission Evicted=False/QuotaReserved: no eviction. After a preemption
    # and re-admission, the Preempted condition keeps the last one.
    first = workload(
        conditions=[condition("Admitted", "True"), condition("Evicted", "False", "QuotaReserved")]
    )
    assert queue_status_of(first).eviction_reason == ""
    readmitted = workload(
        conditions=[
            condition("Admitted", "True"),
            condition("Evicted", "False", "QuotaReserved"),
            condition("Preempted", "False", "InCohortReclamation", "Preempted to reclaim quota"),
        ]
    )
    assert queue_status_of(readmitted).eviction_reason == "InCohortReclamation"
    counted = workload(
        conditions=[condition("Admitted", "True"), condition("Evicted", "False", "QuotaReserved")],
        schedulingStats={
            "evictions": [{"reason": "Preempted", "underlyingCause": "InCohortReclamation", "count": 1}]
        },
    )
    assert queue_status_of(counted).eviction_reason == "InCohortReclamation"
    assert queue_status_of(counted).eviction_message == "evicted 1 time (Preempted)"


def test_a_local_queue_with_its_cluster_queues_quotas_and_usage() -> None:
    local = {
        "metadata": {"name": "team-a", "namespace": "team-a"},
        "spec": {"clusterQueue": "team-a"},
        "status": {
            "pendingWorkloads": 3,
            "admittedWorkloads": 2,
            "conditions": [{"type": "Active", "status": "True"}],
            "flavorsReservation": [{"name": "default-flavor", "resources": [{"name": "cpu", "total": "2"}]}],
            "flavorsUsage": [{"name": "default-flavor", "resources": [{"name": "cpu", "total": "1500m"}]}],
            "fairSharing": {"weightedShare": 250},
        },
    }
    cluster = {
        "spec": {
            "cohortName": "tenants",
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [
                        {
                            "name": "default-flavor",
                            "resources": [
                                {"name": "cpu", "nominalQuota": "2", "borrowingLimit": "1"},
                                {"name": "memory", "nominalQuota": "4Gi"},
                            ],
                        }
                    ],
                }
            ],
        }
    }
    info = queue_info_of(local, cluster)
    assert (info.name, info.namespace, info.cluster_queue, info.cohort) == (
        "team-a",
        "team-a",
        "team-a",
        "tenants",
    )
    assert (info.pending, info.admitted, info.active, info.weighted_share) == (3, 2, True, 250)
    cpu, memory = info.resources
    assert (cpu.resource, cpu.nominal, cpu.borrowing_limit, cpu.reserved, cpu.in_use) == (
        "cpu",
        "2",
        "1",
        "2",
        "1500m",
    )
    assert (memory.resource, memory.nominal, memory.reserved) == ("memory", "4Gi", "")
    # The ClusterQueue not readable (RBAC): usage still shown, quotas empty.
    alone = queue_info_of(local, None)
    assert [(r.resource, r.nominal, r.reserved) for r in alone.resources] == [("cpu", "", "2")]
    inactive = dict(
        local, status={"conditions": [{"type": "Active", "status": "False", "message": "CQ missing"}]}
    )
    assert not queue_info_of(inactive, None).active
    assert queue_info_of(inactive, None).message == "CQ missing"


def test_a_token_may_be_pinned_to_queues() -> None:
    [pinned, free] = parse_tokens(
        f"""
- name: team-a
  token: {TOKEN}
  namespaces: [team-a]
  verbs: [schedule, read]
  queues: [team-a, team-a-batch]
- name: ops
  token: {TOKEN}-ops
  namespaces: ["*"]
  verbs: [schedule]
"""
    )
    assert pinned.queues == frozenset({"team-a", "team-a-batch"})
    assert free.queues is None
    check_queue_scope("team-a", pinned.queues, caller="team-a")
    check_queue_scope("", free.queues, caller="ops")
    for queue in ("team-b", ""):
        with pytest.raises(TokenScopeError, match="queue: token 'team-a' may only submit to the queues"):
            check_queue_scope(queue, pinned.queues, caller="team-a")


@pytest.mark.parametrize("queues", ["[]", "team-a", "[Team_A]"])
def test_a_bad_queues_entry_is_refused_naming_it(queues: str) -> None:
    with pytest.raises(ValueError, match=r"entry 0 \(a\): queues"):
        parse_tokens(f"- name: a\n  token: {TOKEN}\n  namespaces: [x]\n  verbs: [read]\n  queues: {queues}\n")
