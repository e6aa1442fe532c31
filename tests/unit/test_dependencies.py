"""Job dependencies, the pure parts: the checks at submit (list, ids, unknown jobs, cycles), the
leader's rule (wait, progress, release, fail), the patches it writes, and how a held or
dependency-failed Job reads in derive_status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.dependencies import (
    AFTER_ANNOTATION,
    AFTER_CONDITION_ANNOTATION,
    FAILED_REASON,
    HELD_LABEL,
    HELD_VALUE,
    MAX_DEPENDENCIES,
    SUSPEND_AFTER_ANNOTATION,
    WAITING_FOR_ANNOTATION,
    WAITING_REASON,
    Action,
    Decision,
    cleanup_patch,
    decide,
    fail_patch,
    find_cycle,
    hold_manifest,
    is_held,
    plan,
    progress_patch,
    read_dependencies,
    release_patch,
)
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.models import DependencyCondition, JobState, JobStatus
from jobscheduler.domain.registry import Registry
from jobscheduler.domain.render import JobRequest, request_hash
from jobscheduler.domain.status import derive_status
from jobscheduler.transport.convert import job_request_from_proto, to_proto_status

Obj = dict[str, Any]
SUCCEEDED, FINISHED = DependencyCondition.SUCCEEDED, DependencyCondition.FINISHED
NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


def job(
    name: str, state: JobState = JobState.RUNNING, *, reason: str = "", after: Sequence[str] = ()
) -> JobStatus:
    return JobStatus(
        job_id=name,
        namespace="ns",
        name=name,
        job_type="timer",
        state=state,
        reason=reason,
        after=tuple(after),
    )


def lookup_of(*statuses: JobStatus) -> Any:
    by_id = {s.job_id: s for s in statuses}
    return by_id.get


def rejected(call: Any) -> tuple[str, str]:
    with pytest.raises(InvalidArgumentError) as info:
        call()
    return info.value.field, info.value.detail


# -- at submit -------------------------------------------------------------------------------------


def test_plan_holds_a_job_until_running_dependencies_end() -> None:
    lookup = lookup_of(job("job-a"), job("job-b", JobState.SUCCEEDED), job("job-c", JobState.PENDING))
    decision = plan(["job-a", "job-b", "job-c"], SUCCEEDED, job_id="job-new", namespace="ns", lookup=lookup)
    assert decision == Decision(Action.PROGRESS, ("job-a", "job-c"))


def test_plan_releases_at_once_when_every_dependency_already_succeeded() -> None:
    lookup = lookup_of(job("job-a", JobState.SUCCEEDED))
    decision = plan(["job-a"], SUCCEEDED, job_id="job-new", namespace="ns", lookup=lookup)
    assert decision.action is Action.RELEASE


def test_plan_leaves_a_dependency_that_already_failed_to_the_leader() -> None:
    lookup = lookup_of(job("job-a", JobState.FAILED, reason="BackoffLimitExceeded"))
    decision = plan(["job-a"], SUCCEEDED, job_id="job-new", namespace="ns", lookup=lookup)
    assert decision.action is Action.FAIL
    assert decision.waiting == ("job-a",)  # held waiting for it; the leader records the failure


@pytest.mark.parametrize(
    ("after", "field", "says"),
    [
        (["job-a", "Job_B"], "after[1]", "not a valid job id"),
        ([""], "after[0]", "not a valid job id"),
        (["job-a", "job-b", "job-a"], "after[2]", "already after[0]"),
        (["job-a", "job-new"], "after[1]", "cannot depend on itself"),
        (["job-a", "job-missing"], "after[1]", "no job 'job-missing' in namespace 'ns'"),
        ([f"job-{i}" for i in range(MAX_DEPENDENCIES + 1)], "after", f"at most {MAX_DEPENDENCIES}"),
    ],
)
def test_plan_rejects_naming_the_field(after: list[str], field: str, says: str) -> None:
    lookup = lookup_of(job("job-a"), job("job-b"), *(job(f"job-{i}") for i in range(40)))
    got_field, detail = rejected(
        lambda: plan(after, SUCCEEDED, job_id="job-new", namespace="ns", lookup=lookup)
    )
    assert got_field == field
    assert says in detail


def test_plan_rejects_a_cycle_through_the_new_jobs_deterministic_id() -> None:
    # job-x was scheduled after job-new (an earlier job of that request_id, since deleted);
    # job-y after job-x. Scheduling job-new after job-y again would close the loop.
    lookup = lookup_of(job("job-a"), job("job-x", after=["job-new"]), job("job-y", after=["job-x"]))
    field, detail = rejected(
        lambda: plan(["job-a", "job-y"], SUCCEEDED, job_id="job-new", namespace="ns", lookup=lookup)
    )
    assert field == "after[1]"
    assert "job-new → job-y → job-x → job-new" in detail


def test_find_cycle_is_none_for_a_diamond() -> None:
    lookup = lookup_of(
        job("job-a"),
        job("job-b", after=["job-a"]),
        job("job-c", after=["job-a"]),
        job("job-d", after=["job-b", "job-c"]),
    )
    assert find_cycle("job-new", ["job-d", "job-b"], lookup) is None


def test_find_cycle_refuses_to_walk_a_graph_larger_than_its_limit() -> None:
    chain = [job(f"job-{i}", after=[f"job-{i + 1}"]) for i in range(20)]
    field, detail = rejected(lambda: find_cycle("job-new", ["job-0"], lookup_of(*chain), limit=10))
    assert field == "after"
    assert "more than 10 jobs" in detail


def test_find_cycle_ignores_dependencies_that_are_gone() -> None:
    assert find_cycle("job-new", ["job-a"], lookup_of(job("job-a", after=["job-deleted"]))) is None


def make_manifest() -> Obj:
    return {"metadata": {"name": "job-new", "labels": {}, "annotations": {}}, "spec": {}}


def test_hold_manifest_suspends_labels_and_records_what_it_waits_for() -> None:
    manifest = make_manifest()
    decision = Decision(Action.WAIT, ("job-a", "job-b"))
    hold_manifest(manifest, after=["job-a", "job-b"], condition=FINISHED, decision=decision, suspend=False)
    assert manifest["spec"] == {"suspend": True}
    assert manifest["metadata"]["labels"] == {HELD_LABEL: HELD_VALUE}
    assert manifest["metadata"]["annotations"] == {
        AFTER_ANNOTATION: "job-a,job-b",
        AFTER_CONDITION_ANNOTATION: "FINISHED",
        WAITING_FOR_ANNOTATION: "job-a,job-b",
    }
    assert is_held(manifest)


def test_hold_manifest_remembers_the_callers_own_suspend() -> None:
    manifest = make_manifest()
    hold_manifest(
        manifest,
        after=["job-a"],
        condition=SUCCEEDED,
        decision=Decision(Action.WAIT, ("job-a",)),
        suspend=True,
    )
    assert manifest["metadata"]["annotations"][SUSPEND_AFTER_ANNOTATION] == "true"


def test_hold_manifest_does_not_hold_a_job_whose_dependencies_are_met() -> None:
    manifest = make_manifest()
    hold_manifest(
        manifest, after=["job-a"], condition=SUCCEEDED, decision=Decision(Action.RELEASE, ()), suspend=False
    )
    assert manifest["spec"] == {}
    assert not is_held(manifest)
    assert manifest["metadata"]["annotations"] == {
        AFTER_ANNOTATION: "job-a",
        AFTER_CONDITION_ANNOTATION: "SUCCEEDED",
    }


# -- the leader's rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "states", "expected"),
    [
        (
            SUCCEEDED,
            {"job-a": JobState.RUNNING, "job-b": JobState.PENDING},
            Decision(Action.WAIT, ("job-a", "job-b")),
        ),
        (
            SUCCEEDED,
            {"job-a": JobState.SUCCEEDED, "job-b": JobState.RUNNING},
            Decision(Action.PROGRESS, ("job-b",)),
        ),
        (SUCCEEDED, {"job-a": JobState.SUCCEEDED, "job-b": JobState.SUCCEEDED}, Decision(Action.RELEASE, ())),
        (
            SUCCEEDED,
            {"job-a": JobState.RUNNING, "job-b": JobState.FAILED},
            Decision(Action.FAIL, ("job-a", "job-b"), "dependency job-b FAILED (Oops)"),
        ),
        (
            SUCCEEDED,
            {"job-a": JobState.CANCELLED, "job-b": JobState.RUNNING},
            Decision(Action.FAIL, ("job-a", "job-b"), "dependency job-a CANCELLED"),
        ),
        (
            None,  # a job from before the condition annotation was readable: the stricter rule
            {"job-a": None, "job-b": JobState.RUNNING},
            Decision(
                Action.FAIL, ("job-a", "job-b"), "dependency job-a was deleted before it was seen to succeed"
            ),
        ),
        (
            FINISHED,
            {"job-a": JobState.FAILED, "job-b": JobState.RUNNING},
            Decision(Action.PROGRESS, ("job-b",)),
        ),
        (FINISHED, {"job-a": JobState.FAILED, "job-b": JobState.CANCELLED}, Decision(Action.RELEASE, ())),
        (FINISHED, {"job-a": None, "job-b": JobState.SUCCEEDED}, Decision(Action.RELEASE, ())),
    ],
)
def test_decide(
    condition: DependencyCondition | None, states: Mapping[str, JobState | None], expected: Decision
) -> None:
    statuses = [
        job(name, state, reason="Cancelled" if state is JobState.CANCELLED else "Oops")
        for name, state in states.items()
        if state is not None
    ]
    assert decide(condition, list(states), lookup_of(*statuses)) == expected


def test_decide_with_nothing_left_to_wait_for_releases() -> None:
    assert decide(SUCCEEDED, [], lookup_of()) == Decision(Action.RELEASE, ())


def held_job(**annotations: str) -> Obj:
    return {
        "metadata": {
            "name": "job-new",
            "namespace": "ns",
            "resourceVersion": "42",
            "creationTimestamp": "2026-11-27T12:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "jobscheduler", HELD_LABEL: HELD_VALUE},
            "annotations": {
                AFTER_ANNOTATION: "job-a,job-b",
                AFTER_CONDITION_ANNOTATION: "SUCCEEDED",
                WAITING_FOR_ANNOTATION: "job-b",
                **annotations,
            },
        },
        "spec": {"suspend": True},
        "status": {"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]},
    }


def test_release_patch_resumes_the_job_conditionally_and_drops_the_hold() -> None:
    assert release_patch(held_job()) == {
        "metadata": {
            "resourceVersion": "42",
            "labels": {HELD_LABEL: None},
            "annotations": {WAITING_FOR_ANNOTATION: None, SUSPEND_AFTER_ANNOTATION: None},
        },
        "spec": {"suspend": False},
    }


def test_release_patch_keeps_a_job_the_caller_also_suspended_suspended() -> None:
    assert "spec" not in release_patch(held_job(**{SUSPEND_AFTER_ANNOTATION: "true"}))


def test_fail_patch_fails_the_job_without_ever_starting_a_pod() -> None:
    patch = fail_patch(held_job(), "dependency job-b FAILED", now=NOW)
    assert patch["spec"] == {"suspend": False, "parallelism": 0, "activeDeadlineSeconds": 1}
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["metadata"]["labels"] == {HELD_LABEL: None}


def test_progress_and_cleanup_patches_are_conditional() -> None:
    assert progress_patch(held_job(), ["job-b"]) == {
        "metadata": {"resourceVersion": "42", "annotations": {WAITING_FOR_ANNOTATION: "job-b"}}
    }
    assert cleanup_patch(held_job())["metadata"]["resourceVersion"] == "42"


def test_read_dependencies_tolerates_damage() -> None:
    deps = read_dependencies({AFTER_ANNOTATION: " job-a, ,job-b ", AFTER_CONDITION_ANNOTATION: "SOMETIMES"})
    assert deps.after == ("job-a", "job-b")
    assert deps.condition is SUCCEEDED
    assert deps.waiting is None
    assert read_dependencies({}).condition is None


# -- derive_status ---------------------------------------------------------------------------------


def merged(base: Obj, patch: Obj) -> Obj:
    """A JSON merge patch (RFC 7386) applied, as the API server does."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def test_a_held_job_is_pending_waiting_for_dependencies() -> None:
    status = derive_status(held_job(), [])
    assert (status.state, status.reason) == (JobState.PENDING, WAITING_REASON)
    assert status.message == "waiting for job-b to succeed"
    assert status.waiting_for == ("job-b",)
    assert status.after == ("job-a", "job-b")
    assert status.after_condition is SUCCEEDED


def test_a_held_job_the_caller_suspended_says_resume_follows() -> None:
    held = held_job(**{AFTER_CONDITION_ANNOTATION: "FINISHED", SUSPEND_AFTER_ANNOTATION: "true"})
    assert derive_status(held, []).message == "waiting for job-b to finish; then suspended until ResumeJob"


def test_a_released_job_reports_its_dependencies_but_waits_for_nothing() -> None:
    released = merged(held_job(), release_patch(held_job()))
    released["status"] = {}
    status = derive_status(released, [])
    assert (status.state, status.reason) == (JobState.PENDING, "Created")
    assert status.waiting_for == ()
    assert status.after == ("job-a", "job-b")


@pytest.mark.parametrize("job_condition", [None, "FailureTarget", "Failed"])
def test_a_job_failed_by_a_dependency_reads_failed_dependency_failed(job_condition: str | None) -> None:
    failed = merged(
        held_job(), fail_patch(held_job(), "dependency job-b FAILED (BackoffLimitExceeded)", now=NOW)
    )
    failed["status"] = (
        {"conditions": [{"type": job_condition, "status": "True", "reason": "DeadlineExceeded"}]}
        if job_condition
        else {}
    )
    status = derive_status(failed, [])
    assert (status.state, status.reason) == (JobState.FAILED, FAILED_REASON)
    assert status.message == "dependency job-b FAILED (BackoffLimitExceeded)"
    assert status.finished_at == NOW
    assert status.waiting_for == ()


def test_a_held_job_cancelled_reads_cancelled() -> None:
    cancelled = held_job(**{"jobscheduler.io/cancelled-at": "2026-11-27T13:00:00Z"})
    assert derive_status(cancelled, []).state is JobState.CANCELLED


def test_a_job_without_dependencies_reports_none() -> None:
    status = derive_status({"metadata": {"name": "job-x", "annotations": {}}}, [])
    assert (status.after, status.after_condition, status.waiting_for) == ((), None, ())


# -- the request_id fingerprint --------------------------------------------------------------------


def test_fingerprint_counts_dependencies_and_treats_an_unset_condition_as_succeeded() -> None:
    base = JobRequest(job_type="timer", params={}, after=("job-a",))
    assert request_hash(base, {}) != request_hash(JobRequest(job_type="timer", params={}), {})
    explicit = JobRequest(job_type="timer", params={}, after=("job-a",), after_condition=SUCCEEDED)
    assert request_hash(base, {}) == request_hash(explicit, {})
    finished = JobRequest(job_type="timer", params={}, after=("job-a",), after_condition=FINISHED)
    assert request_hash(base, {}) != request_hash(finished, {})


# -- the gRPC mapping ------------------------------------------------------------------------------


def test_a_status_with_dependencies_maps_to_proto() -> None:
    message = to_proto_status(derive_status(held_job(), []))
    assert list(message.after) == ["job-a", "job-b"]
    assert message.after_condition == pb.DEPENDENCY_CONDITION_SUCCEEDED
    assert list(message.waiting_for) == ["job-b"]
    plain = to_proto_status(job("job-x"))
    assert plain.after_condition == pb.DEPENDENCY_CONDITION_UNSPECIFIED


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, None), (1, SUCCEEDED), (2, FINISHED)],
)
def test_after_condition_from_proto(value: int, expected: DependencyCondition | None) -> None:
    request = pb.ScheduleJobRequest(timer_job=pb.TimerJob(), after=["job-a"], after_condition=value)  # type: ignore[arg-type]
    converted = job_request_from_proto(request, Registry.from_entry_points())
    assert (converted.after, converted.after_condition) == (("job-a",), expected)


def test_an_undefined_after_condition_is_invalid_argument() -> None:
    request = pb.ScheduleJobRequest(timer_job=pb.TimerJob(), after=["job-a"], after_condition=7)  # type: ignore[arg-type]
    assert (
        rejected(lambda: job_request_from_proto(request, Registry.from_entry_points()))[0]
        == "after_condition"
    )
