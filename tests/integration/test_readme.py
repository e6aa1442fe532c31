"""The README's grpcurl examples, run as written against a live server, so the README can't rot."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from kubernetes import client

from tests.conftest import ROOT, Cluster
from tests.integration.conftest import start_serve

EXAMPLE_ID = "job-7f3k2m9x1q"  # the placeholder the README's examples use


def readme_grpcurl_lines(heading: str = "## Using it") -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"the README's {heading!r} section has a ```sh block"
    return [line for line in block.group(1).splitlines() if line.startswith("grpcurl ")]


def run_grpcurl(line: str) -> tuple[str, dict[str, object]]:
    grpcurl = shutil.which("grpcurl") or str(Path.home() / ".cache/jobscheduler/bin/grpcurl")
    argv = [grpcurl, *shlex.split(line)[1:]]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{line}\n{out.stderr}"
    return argv[-1].rsplit("/", 1)[1], json.loads(out.stdout)


def test_the_readme_shows_every_rpc() -> None:
    methods = {line.rsplit(" ", 1)[1] for line in readme_grpcurl_lines()}
    assert {
        f"jobscheduler.JobScheduler/{m}" for m in ("ScheduleJob", "GetJobStatus", "ListJobs", "CancelJob")
    } <= methods
    assert "grpc.health.v1.Health/Check" in methods


def test_the_readme_grpcurl_examples_work_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    grpcurl = shutil.which("grpcurl") or str(Path.home() / ".cache/jobscheduler/bin/grpcurl")
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
    lines = readme_grpcurl_lines("## Schedules")
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
