"""Pending timeouts: the timeout a request renders onto its Job, which jobs the leader finds stuck
pending past it (from the Job and its pods, as the API server's JSON), and how a job the service
ended that way is reported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from jobscheduler.control.pending import Stuck, find_stuck, pending_timeout
from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.models import (
    CANCELLED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILED_MESSAGE_ANNOTATION,
    FAILED_REASON_ANNOTATION,
    PENDING_TIMEOUT_ANNOTATION,
    JobState,
)
from jobscheduler.domain.render import JobRequest, check_request, render_job
from jobscheduler.domain.status import derive_status
from jobscheduler.jobtypes.container import ContainerJobType

Obj = dict[str, Any]
CONTAINER = ContainerJobType()
PARAMS: Mapping[str, Any] = {"image": "ghcr.io/acme/tool:1"}
NOW = datetime(2026, 11, 27, 13, 10, 0, tzinfo=UTC)


def ts(minute: int, second: int = 0) -> str:
    return f"2026-11-27T13:{minute:02d}:{second:02d}Z"


# -- the timeout on the Job --------------------------------------------------------------------


def rendered_timeout(pending_timeout_seconds: int | None, *, default: int = 0) -> str | None:
    settings = Settings(default_pending_timeout_seconds=default)
    request = check_request(
        JobRequest(job_type="container", params=PARAMS, pending_timeout_seconds=pending_timeout_seconds),
        settings,
    )
    params = CONTAINER.validate(PARAMS, settings)
    manifest = render_job(
        request, job_type=CONTAINER, params=params, job_id="job-7f3k2m9x1q", settings=settings
    )
    value: str | None = manifest["metadata"]["annotations"].get(PENDING_TIMEOUT_ANNOTATION)
    return value


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [
        pytest.param(None, 0, None, id="unset-default-off-no-annotation"),
        pytest.param(300, 0, "300", id="requested"),
        pytest.param(None, 600, "600", id="unset-takes-the-default"),
        pytest.param(30, 600, "30", id="requested-beats-the-default"),
        pytest.param(0, 600, None, id="zero-turns-the-default-off"),
    ],
)
def test_pending_timeout_is_stored_on_the_job(
    requested: int | None, default: int, expected: str | None
) -> None:
    assert rendered_timeout(requested, default=default) == expected


@pytest.mark.parametrize("value", [-1, 2**31])
def test_out_of_range_pending_timeout_is_refused_naming_the_field(value: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        rendered_timeout(value)
    assert caught.value.field == "pending_timeout_seconds"


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("300", 300, id="seconds"),
        pytest.param("0", None, id="zero-is-none"),
        pytest.param("-5", None, id="negative-unreadable"),
        pytest.param("5m", None, id="not-seconds"),
        pytest.param("٣", None, id="non-ascii-digit"),
    ],
)
def test_pending_timeout_is_read_from_the_annotation(annotation: str | None, expected: int | None) -> None:
    annotations = {} if annotation is None else {PENDING_TIMEOUT_ANNOTATION: annotation}
    assert pending_timeout({"metadata": {"annotations": annotations}}) == expected


# -- finding stuck jobs ------------------------------------------------------------------------


def make_job(
    *, timeout: str | None = "60", annotations: Mapping[str, str] | None = None, status: Obj | None = None
) -> Obj:
    notes = {**({PENDING_TIMEOUT_ANNOTATION: timeout} if timeout is not None else {}), **(annotations or {})}
    return {
        "metadata": {
            "name": "job-7f3k2m9x1q",
            "namespace": "team-a",
            "resourceVersion": "42",
            "creationTimestamp": ts(0),
            "labels": {"app.kubernetes.io/managed-by": "jobscheduler"},
            "annotations": notes,
        },
        "status": status if status is not None else {"active": 1, "startTime": ts(0)},
    }


def waiting_pod(name: str, reason: str, *, created: str, init: bool = False) -> Obj:
    container = {"name": "main", "state": {"waiting": {"reason": reason, "message": f"simulated {reason}"}}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": "Pending", key: [container]},
    }


def unschedulable_pod(name: str, *, created: str) -> Obj:
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 Insufficient cpu.",
    }
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": "Pending", "conditions": [condition]},
    }


def running_pod(name: str, *, created: str) -> Obj:
    container = {"name": "main", "state": {"running": {"startedAt": created}}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": "Running", "containerStatuses": [container]},
    }


def failed_pod(name: str, *, created: str) -> Obj:
    container = {
        "name": "main",
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": created}},
    }
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": "Failed", "containerStatuses": [container]},
    }


@pytest.mark.parametrize(
    ("job", "pods", "expected"),
    [
        pytest.param(
            make_job(),
            [waiting_pod("p1", "ImagePullBackOff", created=ts(8))],
            {"reason": "ImagePullBackOff", "pod": "p1", "since": datetime(2026, 11, 27, 13, 8, tzinfo=UTC)},
            id="image-pull-backoff-past-timeout",
        ),
        pytest.param(
            make_job(),
            [waiting_pod("p1", "ErrImagePull", created=ts(8))],
            {"reason": "ErrImagePull"},
            id="err-image-pull",
        ),
        pytest.param(
            make_job(),
            [waiting_pod("p1", "CreateContainerConfigError", created=ts(8))],
            {"reason": "CreateContainerConfigError"},
            id="create-container-config-error",
        ),
        pytest.param(
            make_job(),
            [waiting_pod("p1", "InvalidImageName", created=ts(8), init=True)],
            {"reason": "InvalidImageName"},
            id="init-container-stuck",
        ),
        pytest.param(
            make_job(),
            [unschedulable_pod("p1", created=ts(8))],
            {"reason": "Unschedulable", "pod": "p1"},
            id="unschedulable",
        ),
        pytest.param(
            make_job(timeout="600"),
            [waiting_pod("p1", "ImagePullBackOff", created=ts(0))],
            {"reason": "ImagePullBackOff", "timeout_seconds": 600},
            id="exactly-at-its-timeout",
        ),
        pytest.param(
            make_job(status={"failed": 1, "active": 1}),
            [failed_pod("p1", created=ts(1)), waiting_pod("p2", "ImagePullBackOff", created=ts(8))],
            {"pod": "p2", "since": datetime(2026, 11, 27, 13, 8, tzinfo=UTC)},
            id="a-retry-counts-from-its-own-pod",
        ),
    ],
)
def test_stuck_job_is_found(job: Obj, pods: Sequence[Obj], expected: Mapping[str, Any]) -> None:
    stuck = find_stuck(job, pods, now=NOW)
    assert stuck is not None
    assert {key: getattr(stuck, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("job", "pods"),
    [
        pytest.param(
            make_job(), [waiting_pod("p1", "ImagePullBackOff", created=ts(9, 30))], id="within-its-timeout"
        ),
        pytest.param(
            make_job(timeout=None), [waiting_pod("p1", "ImagePullBackOff", created=ts(0))], id="no-timeout"
        ),
        pytest.param(
            make_job(timeout="0"), [waiting_pod("p1", "ImagePullBackOff", created=ts(0))], id="timeout-zero"
        ),
        pytest.param(
            make_job(), [waiting_pod("p1", "ContainerCreating", created=ts(0))], id="ordinary-start-up"
        ),
        pytest.param(make_job(), [], id="no-pod-yet"),
        pytest.param(
            make_job(),
            [running_pod("p1", created=ts(0)), waiting_pod("p2", "ImagePullBackOff", created=ts(0))],
            id="another-pod-runs",
        ),
        pytest.param(
            make_job(),
            [
                {
                    **running_pod("p1", created=ts(0)),
                    "status": {
                        "phase": "Running",
                        "containerStatuses": [
                            {"name": "main", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                        ],
                    },
                }
            ],
            id="crash-loop-ran-once",
        ),
        pytest.param(
            make_job(annotations={CANCELLED_AT_ANNOTATION: ts(5)}),
            [waiting_pod("p1", "ImagePullBackOff", created=ts(0))],
            id="cancelled",
        ),
        pytest.param(
            make_job(annotations={FAILED_REASON_ANNOTATION: "ImagePullBackOff"}),
            [waiting_pod("p1", "ImagePullBackOff", created=ts(0))],
            id="already-ended",
        ),
        pytest.param(
            make_job(status={"conditions": [{"type": "Suspended", "status": "True"}]}),
            [waiting_pod("p1", "ImagePullBackOff", created=ts(0))],
            id="suspended",
        ),
        pytest.param(
            make_job(
                status={
                    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
                }
            ),
            [waiting_pod("p1", "ImagePullBackOff", created=ts(0))],
            id="already-failed",
        ),
    ],
)
def test_job_is_left_alone(job: Obj, pods: Sequence[Obj]) -> None:
    assert find_stuck(job, pods, now=NOW) is None


def test_message_names_the_reason_the_timeout_and_the_pod() -> None:
    stuck = find_stuck(
        make_job(timeout="300"), [waiting_pod("p1", "ImagePullBackOff", created=ts(0))], now=NOW
    )
    assert stuck is not None
    assert stuck.message() == (
        "ended by the service: pending longer than its pending timeout of 300s with ImagePullBackOff; "
        "pod p1: container main: simulated ImagePullBackOff"
    )


# -- the status of a job ended that way --------------------------------------------------------


def ended(status: Obj) -> Obj:
    stuck = Stuck("ImagePullBackOff", "p1", NOW, 300, "pod p1: container main: back-off")
    return make_job(
        annotations={
            FAILED_REASON_ANNOTATION: stuck.reason,
            FAILED_MESSAGE_ANNOTATION: stuck.message(),
            FAILED_AT_ANNOTATION: ts(10),
        },
        status=status,
    )


@pytest.mark.parametrize(
    "job",
    [
        pytest.param(ended({"active": 1}), id="before-the-job-controller-acts"),
        pytest.param(
            ended({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
            id="after-it-marked-the-deadline",
        ),
    ],
)
def test_ended_job_reads_failed_with_the_stuck_reason(job: Obj) -> None:
    status = derive_status(job, [waiting_pod("p1", "ImagePullBackOff", created=ts(0))])
    assert (status.state, status.reason, status.finished_at) == (
        JobState.FAILED,
        "ImagePullBackOff",
        datetime(2026, 11, 27, 13, 10, tzinfo=UTC),
    )
    assert "pending timeout of 300s" in status.message


def test_completed_job_stays_succeeded_even_if_ended_late() -> None:
    job = ended({"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1})
    assert derive_status(job, []).state is JobState.SUCCEEDED
