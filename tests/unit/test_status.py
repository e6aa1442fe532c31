"""derive_status: what a Job and its pods, as the API server's JSON, mean to a caller."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from jobscheduler.domain.models import JobState
from jobscheduler.domain.pods import exit_detail
from jobscheduler.domain.status import derive_status

Obj = dict[str, Any]


def ts(minute: int, second: int = 0) -> str:
    return f"2026-11-27T13:{minute:02d}:{second:02d}Z"


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 27, 13, minute, second, tzinfo=UTC)


def make_job(
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    status: Obj | None = None,
) -> Obj:
    job: Obj = {
        "metadata": {
            "name": "job-7f3k2m9x1q",
            "namespace": "team-a",
            "creationTimestamp": ts(0),
            "labels": {"app.kubernetes.io/managed-by": "jobscheduler", **(labels or {})},
            "annotations": dict(annotations or {}),
        }
    }
    if status is not None:
        job["status"] = status
    return job


def cond(type_: str, *, status: str = "True", reason: str = "", message: str = "", when: str = ts(9)) -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": when}


def make_pod(
    name: str,
    *,
    created: str = ts(1),
    phase: str = "Pending",
    containers: Sequence[Obj] = (),
    init_containers: Sequence[Obj] = (),
    conditions: Sequence[Obj] = (),
    reason: str = "",
    message: str = "",
) -> Obj:
    status: Obj = {"phase": phase, "conditions": list(conditions), "containerStatuses": list(containers)}
    if init_containers:
        status["initContainerStatuses"] = list(init_containers)
    if reason:
        status["reason"] = reason
        status["message"] = message
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def running(*, name: str = "main", started: str = ts(2)) -> Obj:
    return {"name": name, "state": {"running": {"startedAt": started}}}


def waiting(reason: str, message: str = "", *, name: str = "main") -> Obj:
    state: Obj = {"reason": reason}
    if message:
        state["message"] = message
    return {"name": name, "state": {"waiting": state}}


def terminated(
    code: int, reason: str = "Error", *, name: str = "main", started: str = ts(2), finished: str = ts(3)
) -> Obj:
    return {
        "name": name,
        "state": {
            "terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}
        },
    }


def failed_pod(name: str, code: int, reason: str = "Error", *, created: str, finished: str) -> Obj:
    return make_pod(
        name,
        created=created,
        phase="Failed",
        containers=[terminated(code, reason, started=created, finished=finished)],
    )


def assert_fields(job: Obj, pods: Sequence[Obj], expected: Mapping[str, Any]) -> None:
    status = derive_status(job, pods)
    assert {key: getattr(status, key) for key in expected} == expected


UNSCHEDULABLE = cond(
    "PodScheduled",
    status="False",
    reason="Unschedulable",
    message="0/2 nodes are available: 2 Insufficient cpu.",
)
BACKOFF_LIMIT = cond(
    "Failed", reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit"
)
CANCEL = {"jobscheduler.io/cancelled-at": ts(5)}


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        pytest.param(
            make_job(),
            [],
            {
                "state": JobState.PENDING,
                "reason": "Created",
                "message": "waiting for a pod to start",
                "active": 0,
                "succeeded": 0,
                "failed": 0,
                "attempts": 0,
                "started_at": None,
                "finished_at": None,
                "exit_code": None,
                "pods": (),
            },
            id="brand-new-job-without-status",
        ),
        pytest.param(
            make_job(status={"startTime": ts(0), "active": 1}),
            [make_pod("p1", containers=[waiting("ContainerCreating")])],
            {"state": JobState.PENDING, "reason": "Created", "started_at": None, "pods": ("p1",)},
            id="pod-creating-is-ordinary-startup",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [make_pod("p1", conditions=[UNSCHEDULABLE])],
            {
                "state": JobState.PENDING,
                "reason": "Unschedulable",
                "message": "pod p1: 0/2 nodes are available: 2 Insufficient cpu.",
            },
            id="unschedulable",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [
                make_pod(
                    "p1",
                    conditions=[cond("PodScheduled", status="True")],
                    containers=[waiting("ContainerCreating")],
                )
            ],
            {"state": JobState.PENDING, "reason": "Created"},
            id="scheduled-pod-is-not-unschedulable",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [make_pod("p1", containers=[waiting("ImagePullBackOff")])],
            {"state": JobState.PENDING, "reason": "ImagePullBackOff", "message": "pod p1: container main"},
            id="waiting-reason-without-message",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [
                make_pod(
                    "p1",
                    init_containers=[waiting("ErrImagePull", "not found", name="setup")],
                    containers=[waiting("PodInitializing")],
                )
            ],
            {
                "state": JobState.PENDING,
                "reason": "ErrImagePull",
                "message": "pod p1: container setup: not found",
            },
            id="init-container-stuck",
        ),
        pytest.param(
            make_job(status={"active": 2}),
            [
                make_pod("p1", conditions=[UNSCHEDULABLE]),
                make_pod("p2", containers=[waiting("ImagePullBackOff", "Back-off pulling image")]),
            ],
            {"state": JobState.PENDING, "reason": "ImagePullBackOff"},
            id="waiting-reason-beats-unschedulable",
        ),
        pytest.param(
            make_job(status={"active": 2}),
            [
                make_pod("old", created=ts(1), containers=[waiting("CrashLoopBackOff")]),
                make_pod(
                    "new",
                    created=ts(2),
                    containers=[waiting("CreateContainerConfigError", "secret not found")],
                ),
            ],
            {
                "state": JobState.PENDING,
                "reason": "CreateContainerConfigError",
                "message": "pod new: container main: secret not found",
            },
            id="newest-stuck-pod-is-reported",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [make_pod("p1", phase="Running", containers=[running()])],
            {"state": JobState.RUNNING, "reason": "Running", "message": "1 pod running", "active": 1},
            id="running",
        ),
        pytest.param(
            make_job(status={"active": 3}),
            [
                make_pod("p1", phase="Running", containers=[running()]),
                make_pod("p2", phase="Running", containers=[running()]),
                make_pod("p3", containers=[waiting("ImagePullBackOff")]),
            ],
            {"state": JobState.RUNNING, "reason": "Running", "message": "2 pods running"},
            id="running-pod-beats-another-pods-stuck-container",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [
                make_pod(
                    "p1",
                    phase="Running",
                    containers=[waiting("CrashLoopBackOff", "back-off 40s"), running(name="proxy")],
                )
            ],
            {
                "state": JobState.PENDING,
                "reason": "CrashLoopBackOff",
                "message": "pod p1: container main: back-off 40s",
            },
            id="stuck-container-beats-running-sidecar-in-same-pod",
        ),
        pytest.param(
            make_job(status={"active": 1}),
            [make_pod("p1", phase="Running", containers=[waiting("PodInitializing")])],
            {"state": JobState.PENDING, "reason": "Created"},
            id="running-phase-without-running-container-is-pending",
        ),
        pytest.param(
            make_job(
                status={"conditions": [cond("Suspended", reason="JobSuspended", message="Job suspended")]}
            ),
            [make_pod("p1", phase="Running", containers=[running()])],
            {"state": JobState.PENDING, "reason": "Suspended", "message": "Job suspended"},
            id="suspended-beats-running",
        ),
        pytest.param(
            make_job(status={"conditions": [cond("Suspended", reason="JobSuspended")]}),
            [make_pod("p1", containers=[waiting("ImagePullBackOff")])],
            {"state": JobState.PENDING, "reason": "Suspended"},
            id="suspended-beats-waiting-reason",
        ),
        pytest.param(
            make_job(
                status={"active": 1, "conditions": [cond("Suspended", status="False", reason="JobResumed")]}
            ),
            [make_pod("p1", phase="Running", containers=[running()])],
            {"state": JobState.RUNNING, "reason": "Running"},
            id="resumed-job-runs",
        ),
        pytest.param(
            make_job(status={"failed": 2}),
            [
                failed_pod("p1", 1, created=ts(1), finished=ts(2)),
                failed_pod("p2", 3, created=ts(3), finished=ts(4)),
            ],
            {
                "state": JobState.PENDING,
                "reason": "BackOff",
                "message": "waiting to retry after 2 failed attempts; "
                "last attempt: container main exited with code 3 (Error)",
                "attempts": 2,
                "failed": 2,
                "exit_code": None,
                "finished_at": None,
            },
            id="backoff-between-retries",
        ),
        pytest.param(
            make_job(status={"failed": 1, "active": 1}),
            [
                failed_pod("p1", 1, created=ts(1), finished=ts(2)),
                make_pod("p2", created=ts(3), containers=[waiting("ContainerCreating")]),
            ],
            {
                "state": JobState.PENDING,
                "reason": "Created",
                "message": "waiting for a pod to start after 1 failed attempt",
            },
            id="retry-pod-created-is-not-backoff",
        ),
    ],
)
def test_unfinished_job(job: Obj, pods: list[Obj], expected: dict[str, Any]) -> None:
    assert_fields(job, pods, expected)


@pytest.mark.parametrize(
    "reason",
    [
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    ],
)
def test_stuck_container_reports_its_waiting_reason(reason: str) -> None:
    pod = make_pod("p1", phase="Running", containers=[waiting(reason, "it went wrong")])
    assert_fields(
        make_job(status={"active": 1}),
        [pod],
        {"state": JobState.PENDING, "reason": reason, "message": "pod p1: container main: it went wrong"},
    )


THREE_FAILED_ATTEMPTS = [
    # Names deliberately out of finish order: the last attempt is the one that finished last.
    failed_pod("job-c", 1, created=ts(1), finished=ts(2)),
    failed_pod("job-a", 3, created=ts(5), finished=ts(6)),
    failed_pod("job-b", 2, created=ts(3), finished=ts(4)),
]


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        pytest.param(
            make_job(
                status={"succeeded": 1, "completionTime": ts(7), "conditions": [cond("Complete", when=ts(8))]}
            ),
            [make_pod("p1", phase="Succeeded", containers=[terminated(0, "Completed")])],
            {
                "state": JobState.SUCCEEDED,
                "reason": "Completed",
                "finished_at": at(7),
                "exit_code": 0,
                "succeeded": 1,
            },
            id="succeeded-with-completion-time",
        ),
        pytest.param(
            make_job(status={"succeeded": 1, "conditions": [cond("SuccessCriteriaMet", when=ts(8))]}),
            [],
            {"state": JobState.SUCCEEDED, "reason": "Completed", "finished_at": at(8), "exit_code": 0},
            id="success-criteria-met-falls-back-to-transition-time",
        ),
        pytest.param(
            make_job(status={"active": 1, "conditions": [cond("Complete", status="False")]}),
            [make_pod("p1", phase="Running", containers=[running()])],
            {"state": JobState.RUNNING, "finished_at": None, "exit_code": None},
            id="false-complete-condition-is-not-success",
        ),
        pytest.param(
            make_job(status={"failed": 3, "conditions": [BACKOFF_LIMIT]}),
            THREE_FAILED_ATTEMPTS,
            {
                "state": JobState.FAILED,
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit; "
                "last attempt: container main exited with code 3 (Error)",
                "exit_code": 3,
                "attempts": 3,
                "failed": 3,
                "finished_at": at(9),
                "pods": ("job-c", "job-b", "job-a"),
            },
            id="failed-backoff-limit-exit-3",
        ),
        pytest.param(
            make_job(status={"failed": 2, "conditions": [BACKOFF_LIMIT]}),
            [
                failed_pod("p1", 1, created=ts(1), finished=ts(2)),
                failed_pod("p2", 137, "OOMKilled", created=ts(3), finished=ts(4)),
            ],
            {
                "state": JobState.FAILED,
                "reason": "OOMKilled",
                "message": "Job has reached the specified backoff limit; "
                "last attempt: container main exited with code 137 (OOMKilled)",
                "exit_code": 137,
            },
            id="oomkilled-overrides-reason",
        ),
        pytest.param(
            make_job(status={"failed": 2, "conditions": [BACKOFF_LIMIT]}),
            [
                failed_pod("p1", 137, "OOMKilled", created=ts(1), finished=ts(2)),
                failed_pod("p2", 1, created=ts(3), finished=ts(4)),
            ],
            {"state": JobState.FAILED, "reason": "BackoffLimitExceeded", "exit_code": 1},
            id="oomkilled-on-an-earlier-attempt-only-keeps-reason",
        ),
        pytest.param(
            make_job(
                status={
                    "conditions": [
                        cond(
                            "Failed",
                            reason="DeadlineExceeded",
                            message="Job was active longer than specified deadline",
                        )
                    ]
                }
            ),
            [],
            {
                "state": JobState.FAILED,
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
                "exit_code": None,
                "finished_at": at(9),
            },
            id="deadline-exceeded-pods-gone",
        ),
        pytest.param(
            make_job(
                status={
                    "failed": 1,
                    "conditions": [cond("FailureTarget", reason="PodFailurePolicy", when=ts(6))],
                }
            ),
            [failed_pod("p1", 42, created=ts(1), finished=ts(5))],
            {
                "state": JobState.FAILED,
                "reason": "PodFailurePolicy",
                "message": "failed at once by a retry rule; "
                "last attempt: container main exited with code 42 (Error)",
                "exit_code": 42,
                "finished_at": at(6),
            },
            id="failure-target-only",
        ),
        pytest.param(
            make_job(
                status={
                    "conditions": [
                        cond("FailureTarget", reason="BackoffLimitExceeded", when=ts(6)),
                        cond("Failed", reason="BackoffLimitExceeded", when=ts(7)),
                    ]
                }
            ),
            [],
            {"state": JobState.FAILED, "reason": "BackoffLimitExceeded", "finished_at": at(7)},
            id="failed-after-failure-target-finishes-at-failed",
        ),
        pytest.param(
            make_job(status={"failed": 1, "conditions": [BACKOFF_LIMIT]}),
            [
                make_pod(
                    "p1",
                    phase="Failed",
                    reason="Evicted",
                    message="The node was low on resource: memory.",
                    containers=[{"name": "main", "state": {}}],
                )
            ],
            {
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit; "
                "last attempt: pod failed (Evicted): The node was low on resource: memory.",
                "exit_code": None,
            },
            id="evicted-pod-has-no-exit-code",
        ),
        pytest.param(
            make_job(status={"failed": 1, "conditions": [BACKOFF_LIMIT]}),
            [
                make_pod(
                    "p1",
                    phase="Failed",
                    containers=[
                        terminated(143, name="proxy", finished=ts(4)),
                        terminated(7, name="main", finished=ts(3)),
                    ],
                )
            ],
            {"exit_code": 7, "reason": "BackoffLimitExceeded"},
            id="first-failed-container-caused-the-pod-failure",
        ),
    ],
)
def test_finished_job(job: Obj, pods: list[Obj], expected: dict[str, Any]) -> None:
    assert_fields(job, pods, expected)


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        pytest.param(
            make_job(annotations=CANCEL, status={"active": 1}),
            [make_pod("p1", phase="Running", containers=[running()])],
            {
                "state": JobState.CANCELLED,
                "reason": "Cancelled",
                "message": "cancelled at 2026-11-27T13:05:00Z",
                "finished_at": at(5),
                "exit_code": None,
            },
            id="cancelled-while-running",
        ),
        pytest.param(
            make_job(
                annotations=CANCEL,
                status={"failed": 1, "conditions": [cond("Failed", reason="DeadlineExceeded", when=ts(6))]},
            ),
            [failed_pod("p1", 137, created=ts(1), finished=ts(6))],
            {"state": JobState.CANCELLED, "reason": "Cancelled", "finished_at": at(5), "exit_code": None},
            id="cancelled-then-deadline-exceeded-stays-cancelled",
        ),
        pytest.param(
            make_job(
                annotations=CANCEL, status={"conditions": [cond("FailureTarget", reason="DeadlineExceeded")]}
            ),
            [],
            {"state": JobState.CANCELLED, "reason": "Cancelled"},
            id="cancelled-then-failure-target-stays-cancelled",
        ),
        pytest.param(
            make_job(
                annotations=CANCEL,
                status={"completionTime": ts(4), "conditions": [cond("Complete", when=ts(4))]},
            ),
            [],
            {"state": JobState.SUCCEEDED, "reason": "Completed", "finished_at": at(4), "exit_code": 0},
            id="cancel-after-complete-is-succeeded",
        ),
        pytest.param(
            make_job(annotations=CANCEL, status={"conditions": [cond("SuccessCriteriaMet", when=ts(4))]}),
            [],
            {"state": JobState.SUCCEEDED, "finished_at": at(4)},
            id="cancel-after-success-criteria-met-is-succeeded",
        ),
        pytest.param(
            make_job(annotations={"jobscheduler.io/cancelled-at": "yesterday"}),
            [],
            {"state": JobState.CANCELLED, "message": "cancelled at yesterday", "finished_at": None},
            id="cancelled-with-unreadable-time",
        ),
    ],
)
def test_cancelled_job(job: Obj, pods: list[Obj], expected: dict[str, Any]) -> None:
    assert_fields(job, pods, expected)


def test_identity_comes_from_metadata_labels_and_annotations() -> None:
    job = make_job(
        labels={"jobscheduler.io/name": "nightly-report", "jobscheduler.io/job-type": "timer"},
        annotations={"jobscheduler.io/request-id": "req-42"},
    )
    assert_fields(
        job,
        [],
        {
            "job_id": "job-7f3k2m9x1q",
            "namespace": "team-a",
            "name": "nightly-report",
            "job_type": "timer",
            "request_id": "req-42",
            "created_at": at(0),
        },
    )


def test_identity_falls_back_when_labels_are_missing() -> None:
    job = {"metadata": {"name": "job-x", "namespace": "ns"}}
    assert_fields(
        job, [], {"job_id": "job-x", "name": "job-x", "job_type": "", "request_id": "", "created_at": None}
    )


def test_labels_keep_only_the_callers_own() -> None:
    job = make_job(
        labels={
            "jobscheduler.io/name": "n",
            "jobscheduler.io/job-type": "timer",
            "batch.kubernetes.io/controller-uid": "uid",
            "batch.kubernetes.io/job-name": "job-7f3k2m9x1q",
            "controller-uid": "uid",
            "job-name": "job-7f3k2m9x1q",
            "team": "payments",
            "app.kubernetes.io/part-of": "billing",
        }
    )
    assert derive_status(job, []).labels == {"team": "payments", "app.kubernetes.io/part-of": "billing"}


def test_counts_come_from_job_status() -> None:
    job = make_job(status={"active": 2, "succeeded": 5, "failed": 1})
    assert_fields(job, [], {"active": 2, "succeeded": 5, "failed": 1, "attempts": 1})


def test_pods_sorted_by_creation_then_name() -> None:
    pods = [
        make_pod("zeta", created=ts(1)),
        make_pod("beta", created=ts(2)),
        make_pod("alpha", created=ts(2)),
        make_pod("omega", created=ts(0)),
    ]
    assert derive_status(make_job(), pods).pods == ("omega", "zeta", "alpha", "beta")


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        pytest.param(
            [
                make_pod("p1", created=ts(1), phase="Running", containers=[running(started=ts(4))]),
                make_pod("p2", created=ts(2), phase="Running", containers=[running(started=ts(3))]),
            ],
            at(3),
            id="earliest-running-across-pods",
        ),
        pytest.param(
            [
                failed_pod("p1", 1, created=ts(2), finished=ts(3)),
                make_pod("p2", created=ts(4), phase="Running", containers=[running(started=ts(5))]),
            ],
            at(2),
            id="terminated-container-counts",
        ),
        pytest.param(
            [
                make_pod(
                    "p1",
                    phase="Running",
                    containers=[
                        {
                            "name": "main",
                            "state": {"running": {"startedAt": ts(6)}},
                            "lastState": {
                                "terminated": {"exitCode": 1, "startedAt": ts(2), "finishedAt": ts(3)}
                            },
                        }
                    ],
                )
            ],
            at(2),
            id="restarted-container-counts-its-first-start",
        ),
        pytest.param(
            [
                make_pod(
                    "p1",
                    phase="Pending",
                    init_containers=[running(name="setup", started=ts(1, 30))],
                    containers=[waiting("PodInitializing")],
                )
            ],
            at(1, 30),
            id="init-container-counts",
        ),
        pytest.param(
            [
                make_pod("p1", containers=[waiting("ContainerCreating")]),
                make_pod("p2", conditions=[UNSCHEDULABLE]),
            ],
            None,
            id="never-started",
        ),
    ],
)
def test_started_at_is_the_first_container_start(pods: list[Obj], expected: datetime | None) -> None:
    assert derive_status(make_job(status={"active": 1}), pods).started_at == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-11-27T13:14:15Z", datetime(2026, 11, 27, 13, 14, 15, tzinfo=UTC), id="zulu"),
        pytest.param(
            "2026-11-27T13:14:15.123456Z",
            datetime(2026, 11, 27, 13, 14, 15, 123456, tzinfo=UTC),
            id="micro-time",
        ),
        pytest.param(
            "2026-11-27T14:14:15+01:00", datetime(2026, 11, 27, 13, 14, 15, tzinfo=UTC), id="offset"
        ),
        pytest.param("2026-11-27t13:14:15z", datetime(2026, 11, 27, 13, 14, 15, tzinfo=UTC), id="lower-case"),
        pytest.param("not a time", None, id="malformed"),
    ],
)
def test_timestamps_parse_to_utc(raw: str, expected: datetime | None) -> None:
    job = make_job()
    job["metadata"]["creationTimestamp"] = raw
    created = derive_status(job, []).created_at
    assert created == expected
    if created is not None:
        assert created.tzinfo is UTC


@pytest.mark.parametrize(
    ("job", "pods", "attempts"),
    [
        pytest.param({}, [], 0, id="empty-job"),
        pytest.param({"metadata": None, "status": None}, [{}], 0, id="nulls-and-empty-pod"),
        pytest.param(
            {"metadata": {"name": "j"}, "status": {"conditions": None, "failed": None}},
            [{"metadata": {}, "status": {"phase": "Failed", "containerStatuses": None}}],
            1,  # the failed pod is an attempt even though the Job has not counted it
            id="null-lists-and-counts",
        ),
    ],
)
def test_missing_fields_are_tolerated(job: Obj, pods: list[Obj], attempts: int) -> None:
    assert_fields(
        job, pods, {"state": JobState.PENDING, "reason": "Created", "pods": (), "attempts": attempts}
    )


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(
            failed_pod("p1", 3, created=ts(1), finished=ts(2)),
            (3, "container main exited with code 3 (Error)"),
            id="container-exit",
        ),
        pytest.param(
            make_pod(
                "p1",
                phase="Failed",
                containers=[{"name": "main", "state": {"terminated": {"reason": "Unknown"}}}],
            ),
            (None, "container main terminated (Unknown)"),
            id="terminated-without-exit-code",
        ),
        pytest.param(make_pod("p1", phase="Failed"), (None, ""), id="nothing-known"),
    ],
)
def test_exit_detail(pod: Obj, expected: tuple[int | None, str]) -> None:
    assert exit_detail(pod) == expected


def test_a_succeeded_pod_of_a_job_not_yet_complete_keeps_it_running() -> None:
    """Between the pod finishing and the Job controller's Complete condition, the job must not
    look PENDING again (it would seem to start over)."""
    job = {
        "metadata": {"name": "job-a", "namespace": "ns", "creationTimestamp": "2026-11-27T10:00:00Z"},
        "status": {"active": 0, "startTime": "2026-11-27T10:00:00Z"},
    }
    pod = {
        "metadata": {"name": "job-a-x", "creationTimestamp": "2026-11-27T10:00:00Z"},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": "2026-11-27T10:00:01Z",
                            "finishedAt": "2026-11-27T10:00:02Z",
                        }
                    },
                }
            ],
        },
    }
    status = derive_status(job, [pod])
    assert (status.state, status.reason) == (JobState.RUNNING, "Completing")


@pytest.mark.parametrize(
    ("job_status", "pod_phases", "attempts"),
    [
        pytest.param({"failed": 2}, [], 2, id="counted"),
        pytest.param(
            {"failed": 1, "uncountedTerminatedPods": {"failed": ["u2"]}}, [], 2, id="uncounted-added"
        ),
        pytest.param({}, ["Failed", "Failed", "Running"], 2, id="failed-pods-before-any-count"),
    ],
)
def test_attempts_count_failed_pods_the_job_controller_has_not_counted_yet(
    job_status: dict[str, object], pod_phases: list[str], attempts: int
) -> None:
    job = {"metadata": {"name": "job-a", "namespace": "ns"}, "status": job_status}
    pods = [{"metadata": {"name": f"p{i}"}, "status": {"phase": phase}} for i, phase in enumerate(pod_phases)]
    assert derive_status(job, pods).attempts == attempts


@pytest.mark.parametrize(
    ("job_status", "pod_phases", "succeeded"),
    [
        pytest.param({"succeeded": 1}, [], 1, id="counted"),
        pytest.param({"uncountedTerminatedPods": {"succeeded": ["u1"]}}, [], 1, id="uncounted"),
        pytest.param({}, ["Succeeded"], 1, id="succeeded-pod-before-any-count"),
    ],
)
def test_succeeded_counts_pods_the_job_controller_has_not_counted_yet(
    job_status: dict[str, object], pod_phases: list[str], succeeded: int
) -> None:
    job = {"metadata": {"name": "job-a", "namespace": "ns"}, "status": job_status}
    pods = [{"metadata": {"name": f"p{i}"}, "status": {"phase": phase}} for i, phase in enumerate(pod_phases)]
    assert derive_status(job, pods).succeeded == succeeded
