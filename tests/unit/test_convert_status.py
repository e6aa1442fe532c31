"""transport.convert: JobStatus messages, converted once per status object."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.models import JobState, JobStatus
from jobscheduler.transport.convert import _convert_status, _StatusMemo, fit_page, to_proto_status


def status(job_id: str = "job-a", **changes: object) -> JobStatus:
    base = JobStatus(
        job_id=job_id,
        namespace="ns",
        name="n",
        job_type="timer",
        state=JobState.RUNNING,
        created_at=datetime(2026, 12, 7, 10, 0, tzinfo=UTC),
        labels={"team": "a"},
        pods=("p1",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_status_object_is_converted_once() -> None:
    memo = _StatusMemo(8)
    one = status()
    first, size = memo.get(one)
    again, size_again = memo.get(one)
    assert again is first
    assert size == size_again == first.ByteSize()
    assert first == _convert_status(one)


def test_an_equal_but_new_status_is_converted_again_and_a_changed_one_differs() -> None:
    memo = _StatusMemo(8)
    old = status()
    first, _ = memo.get(old)
    newer = status(state=JobState.SUCCEEDED)
    message, _ = memo.get(newer)
    assert message is not first
    assert message.state == pb.JOB_STATE_SUCCEEDED
    assert memo.get(status())[0] is not first  # identity, never value


def test_the_memo_is_bounded_and_forgets_the_oldest() -> None:
    memo = _StatusMemo(3)
    statuses = [status(f"job-{i}") for i in range(5)]
    messages = [memo.get(s)[0] for s in statuses]
    assert len(memo._entries) == 3
    assert memo.get(statuses[4])[0] is messages[4]
    assert memo.get(statuses[0])[0] is not messages[0]


def test_pages_and_single_reads_carry_the_same_message() -> None:
    statuses = [status(f"job-{i}") for i in range(3)]
    page = fit_page(statuses, "next")
    assert [j.job_id for j in page.jobs] == ["job-0", "job-1", "job-2"]
    assert page.jobs[1] == to_proto_status(statuses[1])
    assert page.next_page_token == "next"
