"""The grpcurl examples of the README and docs/, run as written against a live server, so the
documentation can't rot. Each section with examples is run here or by its feature's test file
(TESTED_ELSEWHERE); a section with grpcurl examples that no test runs fails this file."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import ROOT, Cluster
from tests.helpers import tool, wait_until
from tests.integration.conftest import ServeProcess, free_port, start_serve

EXAMPLE_ID = "job-7f3k2m9x1q"  # the placeholder the examples use for a job id
EXAMPLE_POD = "job-7f3k2m9x1q-x2v9k"  # ... and for one of its pods
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
HEADING = re.compile(r"(#{1,6}) (.+)")


def headings(text: str) -> list[tuple[int, int, int, str]]:
    """(start, end, level, title) of each Markdown heading, skipping fenced code (where `# ...`
    is a shell comment)."""
    found, offset, fenced = [], 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.fullmatch(line.rstrip("\n"))):
            found.append((offset, offset + len(line), len(match.group(1)), match.group(2)))
        offset += len(line)
    return found


# Sections whose examples other test files run as written.
TESTED_ELSEWHERE = {
    ("docs/job-control.md", "Templates"): "tests/integration/test_templates.py",
    ("docs/job-control.md", "Dependencies"): "tests/integration/test_dependencies.py",
    ("docs/queueing.md", "Scheduling into a queue"): "tests/integration/test_queueing.py",
    ("docs/queueing.md", "ListQueues"): "tests/integration/test_queueing.py",
    ("docs/operations.md", "Service status"): "tests/integration/test_service_status.py",
    (
        "docs/schedules.md",
        "Self-pausing, backfill and buffer_one",
    ): "tests/integration/test_schedule_stops.py",
    ("docs/notifications.md", "Asking for notifications"): "tests/integration/test_notify.py",
}
# Sections whose grpcurl lines are shown, not run, and why.
NOT_RUN = {
    # A random token and a host of the reader's; the tokens file format itself is tested by
    # tests/unit/test_security.py, the metadata by tests/integration/test_security.py.
    ("docs/security.md", "Bearer tokens"),
}


def doc_section(heading: str, doc: str | None = None) -> tuple[Path, str]:
    """The section under `heading` (its title, with or without the leading #s) in the README or
    docs/*.md (or only in `doc`, e.g. "docs/watching.md"), up to the next heading of the same or
    a higher level. The title must be unique there."""
    title = heading.lstrip("#").strip()
    found = []
    for path in DOCS if doc is None else (ROOT / doc,):
        text = path.read_text()
        marks = headings(text)
        for i, (_, end, level, found_title) in enumerate(marks):
            if found_title != title:
                continue
            after = [start for start, _, lvl, _ in marks[i + 1 :] if lvl <= level]
            found.append((path, text[end : after[0] if after else len(text)]))
    assert len(found) == 1, f"heading {title!r} is in {len(found)} places: {[str(p) for p, _ in found]}"
    return found[0]


def sh_blocks(text: str) -> list[str]:
    """The ```sh blocks in `text`, in order."""
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def readme_grpcurl_lines(heading: str = "## Using it", doc: str | None = None) -> list[str]:
    """The grpcurl lines of the first ```sh block under `heading`, in the README or docs/."""
    path, section = doc_section(heading, doc)
    blocks = sh_blocks(section)
    assert blocks, f"{path.name}: section {heading!r} has a ```sh block"
    return [line for line in blocks[0].splitlines() if line.startswith("grpcurl ")]


def grpcurl_binary() -> str:
    return tool("grpcurl")


def run_grpcurl(line: str) -> tuple[str, dict[str, object]]:
    argv = [grpcurl_binary(), *shlex.split(line)[1:]]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{line}\n{out.stderr}"
    return argv[-1].rsplit("/", 1)[1], json.loads(out.stdout)


def sections_with_grpcurl_examples() -> set[tuple[str, str]]:
    """(file, heading title) of every section whose own text has a grpcurl line in a ```sh block."""
    found = set()
    for path in DOCS:
        text = path.read_text()
        marks = headings(text)
        for i, (_, end, _, title) in enumerate(marks):
            own = text[end : marks[i + 1][0] if i + 1 < len(marks) else len(text)]
            if any(line.startswith("grpcurl ") for block in sh_blocks(own) for line in block.splitlines()):
                found.add((str(path.relative_to(ROOT)), title))
    return found


def test_the_readme_shows_every_rpc() -> None:
    methods = {line.rsplit(" ", 1)[1] for line in readme_grpcurl_lines()}
    assert {
        f"jobscheduler.JobScheduler/{m}" for m in ("ScheduleJob", "GetJobStatus", "ListJobs", "CancelJob")
    } <= methods
    assert "grpc.health.v1.Health/Check" in methods


def test_the_readme_grpcurl_examples_work_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    grpcurl = grpcurl_binary()
    server = start_serve(cluster, tmp_path, port=50054, env={"K8S_NAMESPACE": namespace})
    job_id = EXAMPLE_ID
    try:
        for line in readme_grpcurl_lines():
            argv = [grpcurl, *shlex.split(line.replace(EXAMPLE_ID, job_id))[1:]]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            method = argv[-1].rsplit("/", 1)[1]
            if method == "CancelJob" and out.returncode != 0:
                # The example job finishes after about a second on the local cluster; the README
                # says cancelling a finished job is FAILED_PRECONDITION.
                assert "FailedPrecondition" in out.stderr, out.stderr
                assert "already finished" in out.stderr
                continue
            assert out.returncode == 0, f"{line}\n{out.stderr}"
            reply = json.loads(out.stdout)
            if method == "ScheduleJob":
                job_id = reply["job_id"]
            elif method == "GetJobStatus":
                assert reply["status"]["job_id"] == job_id
            elif method == "ListJobs":
                assert job_id in [j["job_id"] for j in reply["jobs"]]
            elif method == "CancelJob":
                assert reply["status"]["state"] == "JOB_STATE_CANCELLED"
            elif method == "Check":
                assert reply == {"status": "SERVING"}
        assert job_id != EXAMPLE_ID
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def test_the_readme_schedule_examples_work_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    lines = readme_grpcurl_lines("# Schedules")
    methods = [line.rsplit(" ", 1)[1].rsplit("/", 1)[1] for line in lines]
    assert set(methods) >= {
        "CreateSchedule",
        "GetSchedule",
        "TriggerSchedule",
        "PauseSchedule",
        "ResumeSchedule",
        "ListSchedules",
        "DeleteSchedule",
    }
    server = start_serve(cluster, tmp_path, port=50054, env={"K8S_NAMESPACE": namespace})
    triggered = ""
    try:
        for line in lines:
            method, reply = run_grpcurl(line)
            if method == "CreateSchedule":
                assert reply["spec"]["namespace"] == namespace  # type: ignore[index]
            elif method == "GetSchedule":
                assert len(reply["status"]["next_runs"]) == 3  # type: ignore[index]
            elif method == "TriggerSchedule":
                assert reply["created"] is True
                triggered = reply["status"]["job_id"]  # type: ignore[index]
            elif method == "ListJobs":
                assert [j["job_id"] for j in reply["jobs"]] == [triggered]  # type: ignore[union-attr]
            elif method == "PauseSchedule":
                assert reply["spec"]["paused"] is True  # type: ignore[index]
            elif method == "ListSchedules":
                assert sorted(s["spec"]["name"] for s in reply["schedules"]) == ["nightly-cleanup", "scan"]  # type: ignore[union-attr]
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    left = client.BatchV1Api(cluster.api).list_namespaced_cron_job(namespace).items
    assert [cj.metadata.name for cj in left] == ["nightly-cleanup"]


# -- the other guides' examples -----------------------------------------------------------------

# Run by test_the_guides_grpcurl_examples_work_as_written, each with what its replies must show.
GUIDE_SECTIONS = (
    ("docs/jobs.md", "Jobs, job types and status"),
    ("docs/jobs.md", "Job types"),
    ("docs/job-control.md", "Job control"),
    ("docs/watching.md", "Watching and logs"),
    ("docs/watching.md", "Logs"),
)


def test_every_section_with_grpcurl_examples_is_run_by_a_test() -> None:
    run_here = {("README.md", "Using it"), ("docs/schedules.md", "Schedules"), *GUIDE_SECTIONS}
    assert sections_with_grpcurl_examples() == run_here | set(TESTED_ELSEWHERE) | NOT_RUN
    for (doc, title), test_file in TESTED_ELSEWHERE.items():
        assert (
            f'"{title}")' in (ROOT / test_file).read_text()
            or f'"### {title}")' in (ROOT / test_file).read_text()
        ), f"{test_file} runs the examples of {doc} {title!r}"


def _serve(cluster: Cluster, namespace: str, tmp_path: Path) -> tuple[ServeProcess, str]:
    # On a port of its own, not the examples' 50054: other test sessions may hold that one.
    port = free_port()
    return start_serve(cluster, tmp_path, port=port, env={"K8S_NAMESPACE": namespace}), f"localhost:{port}"


def _finished_job(stub: pb_grpc.JobSchedulerStub, namespace: str) -> tuple[str, str]:
    """A timer job labelled team=a that has SUCCEEDED, and its pod: what the examples' placeholders
    stand for."""
    job = stub.ScheduleJob(
        pb.ScheduleJobRequest(
            namespace=namespace,
            labels={"team": "a"},
            timer_job=pb.TimerJob(
                duration_seconds=1, timer_name="t", control_plane_endpoint="http://cp:50053"
            ),
        ),
        timeout=10,
    )

    def succeeded() -> pb.JobStatus | None:
        status = stub.GetJobStatus(pb.GetJobStatusRequest(namespace=namespace, job_id=job.job_id), timeout=10)
        return status.status if status.status.state == pb.JOB_STATE_SUCCEEDED else None

    status = wait_until("SUCCEEDED", succeeded, timeout=60)
    return job.job_id, status.pods[0]


def _run_example(line: str, *, address: str, job_id: str, pod: str) -> tuple[str, list[Any]]:
    """Runs one grpcurl line as written (the server's address and the placeholders replaced);
    returns the method and the replies (a stream gives several). WatchJobs never ends: what it
    sent in 5 s is its reply."""
    line = line.replace("localhost:50054", address).replace(EXAMPLE_POD, pod).replace(EXAMPLE_ID, job_id)
    argv = [grpcurl_binary(), *shlex.split(line)[1:]]
    method = argv[-1].rsplit("/", 1)[1]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5 if method == "WatchJobs" else 30)
    except subprocess.TimeoutExpired as e:
        if method != "WatchJobs":
            raise
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    else:
        assert out.returncode == 0, f"{line}\n{out.stderr}"
        stdout = out.stdout
    decoder, replies, rest = json.JSONDecoder(), [], stdout.strip()
    while rest:
        reply, end = decoder.raw_decode(rest)
        replies.append(reply)
        rest = rest[end:].strip()
    return method, replies


def test_the_guides_grpcurl_examples_work_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    server, address = _serve(cluster, namespace, tmp_path)
    replies: dict[str, list[tuple[str, list[Any]]]] = {}
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            finished, pod = _finished_job(stub, namespace)
            for doc, title in GUIDE_SECTIONS:
                job_id = finished
                for line in readme_grpcurl_lines(title, doc):
                    method, got = _run_example(line, address=address, job_id=job_id, pod=pod)
                    replies.setdefault(title, []).append((method, got))
                    if method == "ScheduleJob" and got[0].get("job_id") and not got[0].get("manifest"):
                        job_id = got[0]["job_id"]  # "release later" means this one
                assert replies[title], f"{doc} {title!r} has grpcurl examples"
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()

    def states(title: str) -> list[tuple[str, Any]]:
        return [(m, r[0].get("status", {}).get("state") if r else None) for m, r in replies[title]]

    # Jobs: held, then released; the dry run creates nothing and shows the manifest.
    (_, held), (_, resumed), (_, dry) = replies["Jobs, job types and status"]
    assert held[0]["status"]["state"] == "JOB_STATE_PENDING"
    assert resumed[0]["status"]["job_id"] == held[0]["job_id"]
    assert "kind: Job" in dry[0]["manifest"]
    # Job types: batch described; each type's job created.
    (_, types), *created = replies["Job types"]
    assert [t["name"] for t in types[0]["job_types"]] == ["batch"]
    assert [r[0]["status"]["job_type"] for _, r in created] == ["batch", "health-check", "webhook"]
    # Job control: both created, pending.
    assert [m for m, _ in replies["Job control"]] == ["ScheduleJob", "ScheduleJob"]
    # Watching: the finished job's status, then the end; WatchJobs shows the team=a timer job.
    (_, watched), (_, stream) = replies["Watching and logs"]
    assert watched[0]["status"]["job_id"] == finished
    assert watched[-1]["status"]["state"] == "JOB_STATE_SUCCEEDED"
    assert finished in [event["status"]["job_id"] for event in stream]
    # Logs: every line of the pod, then its last lines with timestamps, then the follow.
    logs = [[line for chunk in r for line in chunk["lines"]] for _, r in replies["Logs"]]
    assert all(lines for lines in logs), logs
    assert all(chunk["pod"] == pod for _, r in replies["Logs"] for chunk in r)
    assert len(logs[1]) <= 20
    assert re.match(r"\d{4}-\d\d-\d\dT", logs[1][0]), logs[1][0]
    assert states("Job control") == [("ScheduleJob", "JOB_STATE_PENDING")] * 2


# -- the name rules the README states ---------------------------------------------------------------


def test_a_job_name_is_trimmed_and_lower_cased_then_must_be_a_dns_label(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    server, address = _serve(cluster, namespace, tmp_path)
    timer = pb.TimerJob(duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053")
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            named = stub.ScheduleJob(pb.ScheduleJobRequest(name=" My-Timer ", timer_job=timer), timeout=10)
            unnamed = stub.ScheduleJob(pb.ScheduleJobRequest(timer_job=timer), timeout=10)
            listed = stub.ListJobs(pb.ListJobsRequest(name="My-Timer"), timeout=10)
            refused = {}
            for name in ("My_Timer", "-x", "a" * 64):
                with pytest.raises(grpc.RpcError) as err:
                    stub.ScheduleJob(pb.ScheduleJobRequest(name=name, timer_job=timer), timeout=10)
                refused[name] = (err.value.code(), err.value.details())
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert named.status.name == "my-timer"
    assert unnamed.status.name == "timer"
    assert [j.job_id for j in listed.jobs] == [named.job_id]
    label = client.BatchV1Api(cluster.api).read_namespaced_job(named.job_id, namespace).metadata.labels
    assert label["jobscheduler.io/name"] == "my-timer"
    assert refused["My_Timer"] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "name: 'my_timer' is not a valid job name (it must become a DNS-1123 label): at most 63 "
        "lower-case letters, digits or '-', starting and ending with a letter or digit",
    )
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT for code, _ in refused.values())
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    assert len(jobs) == 2  # nothing created for the refused names
