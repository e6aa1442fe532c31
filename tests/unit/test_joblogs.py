"""The pure parts of GetJobLogs: where a container stands, which pods in which order, lines."""

from __future__ import annotations

from typing import Any

import pytest

from jobscheduler.app.joblogs import (
    MAX_CHUNK_LINES,
    MAX_LINE_BYTES,
    MAX_TAIL_LINES,
    LineSplitter,
    LogQuery,
    Progress,
    check_query,
    chunked,
    oldest_first,
    pick_container,
    view_container,
)
from jobscheduler.domain.errors import FailedPreconditionError, InvalidArgumentError


def pod(
    *,
    phase: str = "Running",
    node: str = "node-1",
    statuses: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if statuses is not None:
        status["containerStatuses"] = statuses
    if conditions is not None:
        status["conditions"] = conditions
    if reason:
        status["reason"] = reason
    spec: dict[str, Any] = {"containers": [{"name": "main"}, {"name": "side"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": "p"}, "spec": spec, "status": status}


def main(state: dict[str, Any], last: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [{"name": "main", "state": state, **({"lastState": last} if last else {})}]


@pytest.mark.parametrize(
    ("the_pod", "progress", "reason"),
    [
        (pod(statuses=main({"running": {}})), Progress.RUNNING, ""),
        (
            pod(phase="Succeeded", statuses=main({"terminated": {"reason": "Completed"}})),
            Progress.ENDED,
            "Completed",
        ),
        (
            pod(statuses=main({"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": {"exitCode": 1}})),
            Progress.ENDED,
            "CrashLoopBackOff",
        ),
        (
            pod(phase="Pending", statuses=main({"waiting": {"reason": "ImagePullBackOff"}})),
            Progress.STARTING,
            "ImagePullBackOff",
        ),
        (pod(phase="Pending", statuses=None), Progress.STARTING, ""),
        (
            pod(
                phase="Pending",
                node="",
                conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            ),
            Progress.UNSCHEDULED,
            "Unschedulable",
        ),
        (
            pod(phase="Failed", statuses=None, reason="DeadlineExceeded"),
            Progress.NEVER_RAN,
            "DeadlineExceeded",
        ),
        (
            pod(phase="Failed", statuses=main({"waiting": {"reason": "ErrImagePull"}})),
            Progress.NEVER_RAN,
            "Failed",
        ),
    ],
)
def test_view_container(the_pod: dict[str, Any], progress: Progress, reason: str) -> None:
    view = view_container(the_pod, "main")
    assert (view.progress, view.reason) == (progress, reason)
    assert view.has_log == (progress in (Progress.RUNNING, Progress.ENDED))


def test_a_container_without_a_status_of_its_own_is_starting() -> None:
    assert view_container(pod(statuses=main({"running": {}})), "side").progress is Progress.STARTING


def test_describe_says_why_there_is_no_log() -> None:
    waiting = view_container(
        pod(
            phase="Pending",
            statuses=main({"waiting": {"reason": "ErrImagePull", "message": "no such image"}}),
        ),
        "main",
    )
    assert (
        waiting.describe("p", "main")
        == "container 'main' of pod p is waiting to start (ErrImagePull: no such image)"
    )
    unscheduled = view_container(pod(phase="Pending", node="", conditions=[]), "main")
    assert unscheduled.describe("p", "main") == "pod p is not scheduled to a node yet"
    never = view_container(pod(phase="Failed", statuses=None, reason="DeadlineExceeded"), "main")
    assert never.describe("p", "main") == "pod p ended (DeadlineExceeded) before container 'main' started"


def test_pods_oldest_first_then_by_name() -> None:
    pods = [
        {"metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:02Z"}},
        {"metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:01Z"}},
        {"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:02Z"}},
    ]
    assert [p["metadata"]["name"] for p in oldest_first(pods)] == ["c", "a", "b"]


def test_pick_container() -> None:
    assert pick_container(pod(), "") == "main"
    assert pick_container(pod(), "side") == "side"
    with pytest.raises(
        InvalidArgumentError, match=r"^container: pod p has no container 'x'; its containers: main, side$"
    ):
        pick_container(pod(), "x")
    with pytest.raises(FailedPreconditionError):
        pick_container({"metadata": {"name": "p"}, "spec": {"containers": []}}, "")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tail_lines": -1}, "tail_lines"),
        ({"tail_lines": MAX_TAIL_LINES + 1}, "tail_lines"),
        ({"since_seconds": 0}, "since_seconds"),
        ({"pod": "Upper"}, "pod"),
        ({"pod": "-dash"}, "pod"),
        ({"container": "a_b"}, "container"),
    ],
)
def test_check_query_names_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        check_query(LogQuery(namespace="n", job_id="j", **fields))
    assert err.value.field == field


def test_check_query_accepts_the_limits() -> None:
    check_query(LogQuery(namespace="n", job_id="j", pod="job-a-x1.2", tail_lines=0, since_seconds=1))
    check_query(LogQuery(namespace="n", job_id="j", tail_lines=MAX_TAIL_LINES))


def test_line_splitter_keeps_partial_lines_until_complete() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\nthree") == ["two"]
    assert splitter.feed(b"\n\n") == ["three", ""]
    assert splitter.feed(b"last") == []
    assert splitter.flush() == ["last"]
    assert splitter.flush() == []


def test_line_splitter_replaces_bad_utf8_and_cuts_long_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed("é".encode() + b"\xff\n") == ["é\ufffd"]
    long = b"x" * (MAX_LINE_BYTES * 2 + 5)
    pieces = splitter.feed(long) + splitter.feed(b"\n")
    assert [len(p) for p in pieces] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]


def test_line_splitter_splits_a_multibyte_character_across_reads() -> None:
    splitter = LineSplitter()
    data = "ä\n".encode()
    assert splitter.feed(data[:1]) == []
    assert splitter.feed(data[1:]) == ["ä"]


def test_chunked_bounds_each_message() -> None:
    lines = [str(i) for i in range(MAX_CHUNK_LINES * 2 + 1)]
    chunks = list(chunked("p", "main", lines))
    assert [len(c.lines) for c in chunks] == [MAX_CHUNK_LINES, MAX_CHUNK_LINES, 1]
    assert [line for c in chunks for line in c.lines] == lines
    assert {(c.pod, c.container) for c in chunks} == {("p", "main")}
    assert list(chunked("p", "main", [])) == []
