"""The `jobscheduler` client commands as a person or a script runs them: a real subprocess
talking to the real server (and, for TLS, health and timeouts, to small real gRPC servers
built here), checked by what it prints, its exit code and what exists in the cluster."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import Service, free_port

TIMER_FLAGS = (
    "--duration",
    "300",
    "--timer-name",
    "build-timeout",
    "--endpoint",
    "http://control-plane:50053",
)
FAIL_SIM = {"sim.jobscheduler.io/exit-code": "3", "sim.jobscheduler.io/duration": "100ms"}
QUICK_FAIL = tuple(arg for k, v in FAIL_SIM.items() for arg in ("--annotation", f"{k}={v}"))
FOREVER = ("--annotation", "sim.jobscheduler.io/duration=10m")
S = pb.JobState
PROGRESS = re.compile(r"^\s*(?P<elapsed>\d+\.\d)s\s+(?P<state>[A-Z]+)\b")


def cli_process(server: str | None, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Popen/run arguments for `jobscheduler [--server SERVER] ARGS...` as its own process."""
    base_env = {k: v for k, v in os.environ.items() if k != "JOBSCHEDULER_SERVER"}
    server_flag = ["--server", server] if server else []
    return {
        "args": [sys.executable, "-m", "jobscheduler.cli.main", *server_flag, *args],
        "env": {**base_env, **(env or {})},
        "text": True,
    }


def default_sigint() -> None:
    """Runs in the child before it execs: SIGINT back to its default disposition. A shell that
    starts the suite as a background job ignores SIGINT, the child would inherit that, and Python
    installs its KeyboardInterrupt handler only where SIGINT is not ignored at start-up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """`jobscheduler ARGS...` as a running process whose stdout and stderr lines are read by
    threads, so that every wait on it has its own timeout, shorter than the runner's."""

    def __init__(self, server: str | None, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            **cli_process(server, *args, env=env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=default_sigint,
        )
        self.lines: dict[str, queue.Queue[str | None]] = {"out": queue.Queue(), "err": queue.Queue()}
        self.seen: dict[str, list[str]] = {"out": [], "err": []}
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._pump, args=(stream, self.lines[name]), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def read_until(self, stream: str, pattern: re.Pattern[str], *, timeout: float = 60) -> re.Match[str]:
        """The first line of `stream` ("out" or "err") matching pattern, read within timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines[stream].get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"std{stream} ended before {pattern.pattern!r}: {self.transcript()}")
            self.seen[stream].append(line)
            if match := pattern.search(line):
                return match
        raise AssertionError(
            f"no {pattern.pattern!r} on std{stream} within {timeout:g}s: {self.transcript()}"
        )

    def finish(self, *, timeout: float = 30) -> tuple[int, str, str]:
        """Waits for the process to end (killing it after timeout); its exit code and the rest
        of its stdout and stderr."""
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        for name in ("out", "err"):
            while (line := self.lines[name].get(timeout=10)) is not None:
                self.seen[name].append(line)
        return code, "".join(self.seen["out"]), "".join(self.seen["err"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def transcript(self) -> str:
        return f"\nstdout:\n{''.join(self.seen['out'])}\nstderr:\n{''.join(self.seen['err'])}"


@contextmanager
def child(server: str | None, *args: str, env: dict[str, str] | None = None) -> Iterator[Child]:
    running = Child(server, *args, env=env)
    try:
        yield running
    finally:
        running.kill()


def cli(
    server: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(**cli_process(server, *args, env=env), capture_output=True, timeout=timeout)


def jobs_in(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items)


def table(stdout: str) -> list[dict[str, str]]:
    """A printed table as rows keyed by header; columns are found from the header's positions."""
    lines = stdout.rstrip("\n").splitlines()
    header = lines[0]
    names = re.split(r"\s{2,}", header.strip())
    starts, position = [], 0
    for name in names:
        position = header.index(name, position)
        starts.append(position)
        position += len(name)
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines[1:]
    ]


def schedule(service: Service, namespace: str, name: str, **kwargs: Any) -> str:
    request = pb.ScheduleJobRequest(
        name=name,
        namespace=namespace,
        timer_job=pb.TimerJob(
            duration_seconds=300, timer_name="t", control_plane_endpoint="http://control-plane:50053"
        ),
        **kwargs,
    )
    return service.stub.ScheduleJob(request, timeout=10).job_id


def wait_for_state(service: Service, namespace: str, job_id: str, state: int) -> None:
    def probe() -> bool:
        request = pb.GetJobStatusRequest(job_id=job_id, namespace=namespace)
        return service.stub.GetJobStatus(request, timeout=10).status.state == state

    wait_until(f"{job_id} in {S.Name(state)}", probe, timeout=60)


def progress_states(stderr: str) -> list[str]:
    lines = [m for line in stderr.splitlines() if (m := PROGRESS.match(line))]
    elapsed = [float(m["elapsed"]) for m in lines]
    assert elapsed == sorted(elapsed), stderr
    return [m["state"] for m in lines]


# -- schedule ------------------------------------------------------------------------------------


def test_schedule_prints_the_id_of_a_job_that_exists(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    out = cli(service.address, "-n", namespace, "schedule", "timer", *TIMER_FLAGS, "--name", "my-timer")

    assert out.returncode == 0, out.stderr
    [row] = table(out.stdout)
    assert row["JOB ID"].startswith("job-")
    assert (row["NAME"], row["TYPE"], row["STATE"]) == ("my-timer", "timer", "PENDING")
    job = client.BatchV1Api(cluster.api).read_namespaced_job(row["JOB ID"], namespace)
    assert job.metadata.labels["jobscheduler.io/name"] == "my-timer"
    assert "job created" in out.stderr


def test_every_schedule_flag_reaches_the_job(cluster: Cluster, service: Service, namespace: str) -> None:
    out = cli(
        service.address,
        "schedule",
        "timer",
        "--duration",
        "42",
        "--timer-name",
        "nightly",
        "--endpoint",
        "https://cp.example:8443/report",
        "--image",
        "registry.example/timer:2",
        "--log-level",
        "debug",
        "--env",
        "GREETING=a=b",
        "--env",
        "EMPTY=",
        "--name",
        "flags",
        "-l",
        "team=a",
        "--label",
        "tier=batch",
        "--annotation",
        "note.example/why=testing",
        "--cpu-request",
        "200m",
        "--memory-request",
        "96Mi",
        "--cpu-limit",
        "1",
        "--memory-limit",
        "128Mi",
        "--backoff-limit",
        "2",
        "--active-deadline",
        "600",
        "--ttl",
        "60",
        "--request-id",
        "deploy-7",
        # Common flags after the command name count as much as before it.
        "-n",
        namespace,
        "-o",
        "json",
    )

    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["created"] is True
    job = client.BatchV1Api(cluster.api).read_namespaced_job(printed["job_id"], namespace)
    assert job.metadata.labels["team"] == "a"
    assert job.metadata.labels["tier"] == "batch"
    assert job.metadata.annotations["jobscheduler.io/request-id"] == "deploy-7"
    assert (
        job.spec.backoff_limit,
        job.spec.active_deadline_seconds,
        job.spec.ttl_seconds_after_finished,
    ) == (
        2,
        600,
        60,
    )
    pod = job.spec.template
    assert pod.metadata.annotations["note.example/why"] == "testing"
    [container] = pod.spec.containers
    assert container.image == "registry.example/timer:2"
    env = {e.name: e.value for e in container.env}
    assert env["TIMER_DURATION_SECONDS"] == "42"
    assert env["TIMER_NAME"] == "nightly"
    assert env["CONTROL_PLANE_ENDPOINT"] == "https://cp.example:8443/report"
    assert env["LOG_LEVEL"] == "debug"
    assert env["GREETING"] == "a=b"
    assert env["EMPTY"] in ("", None)
    assert container.resources.requests == {"cpu": "200m", "memory": "96Mi"}
    assert container.resources.limits == {"cpu": "1", "memory": "128Mi"}


def test_schedule_wait_follows_the_job_to_succeeded_and_exits_0(service: Service, namespace: str) -> None:
    sim = (
        "--annotation",
        "sim.jobscheduler.io/start-delay=2s",
        "--annotation",
        "sim.jobscheduler.io/duration=3s",
    )

    out = cli(service.address, "-n", namespace, "schedule", "timer", *TIMER_FLAGS, *sim, "--wait")

    assert out.returncode == 0, out.stderr
    states = progress_states(out.stderr)
    assert states[0] == "PENDING"
    assert "RUNNING" in states
    assert states[-1] == "SUCCEEDED"
    assert states.index("RUNNING") < len(states) - 1
    [row] = table(out.stdout)
    assert (row["STATE"], row["REASON"]) == ("SUCCEEDED", "Completed")


def test_schedule_wait_on_a_failing_job_exits_6(service: Service, namespace: str) -> None:
    out = cli(
        service.address,
        "-n",
        namespace,
        "-o",
        "json",
        "schedule",
        "timer",
        *TIMER_FLAGS,
        *QUICK_FAIL,
        "--wait",
    )

    assert out.returncode == 6, out.stderr
    assert progress_states(out.stderr)[-1] == "FAILED"
    assert "BackoffLimitExceeded" in out.stderr.splitlines()[-1]
    status = json.loads(out.stdout)["status"]
    assert (status["state"], status["exit_code"]) == ("JOB_STATE_FAILED", 3)


def test_wait_timeout_gives_up_with_5_and_leaves_the_job_running(service: Service, namespace: str) -> None:
    out = cli(
        service.address,
        "-n",
        namespace,
        "schedule",
        "timer",
        *TIMER_FLAGS,
        *FOREVER,
        "--wait",
        "--wait-timeout",
        "2",
    )

    assert out.returncode == 5, out.stderr
    assert "jobscheduler: DEADLINE_EXCEEDED: " in out.stderr
    assert "--wait-timeout" in out.stderr
    [job_id] = re.findall(r"job-[a-z0-9]{10}", out.stderr.split("DEADLINE_EXCEEDED")[1])[:1]
    status = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10)
    assert status.status.state in (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)


def test_ctrl_c_while_waiting_exits_130_and_leaves_the_job_running(service: Service, namespace: str) -> None:
    argv = ("-n", namespace, "schedule", "timer", *TIMER_FLAGS, *FOREVER, "--wait")
    with child(service.address, *argv) as waiting:
        waiting.read_until("err", PROGRESS)
        waiting.proc.send_signal(signal.SIGINT)
        code, _, err = waiting.finish(timeout=30)

    assert code == 130, err
    [job_id] = re.findall(r"stopped waiting; (job-[a-z0-9]+) keeps running", err)
    assert f"jobscheduler status {job_id} -n {namespace}" in err
    status = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10)
    assert status.status.state in (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING)


def test_ctrl_c_reaches_the_command_when_the_suite_runs_with_sigint_ignored() -> None:
    """A suite started from a shell as a background job runs with SIGINT ignored, and children
    inherit that: the child must still take Ctrl-C (exit 130) instead of blocking."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with health_server(delay=20) as port, child(f"127.0.0.1:{port}", "health", "--timeout", "60") as call:
            time.sleep(1)  # the call is under way
            call.proc.send_signal(signal.SIGINT)
            code, _, err = call.finish(timeout=15)
    finally:
        signal.signal(signal.SIGINT, previous)

    assert (code, err) == (130, "jobscheduler: interrupted\n")


def test_dry_run_prints_the_manifest_and_creates_nothing(
    cluster: Cluster, service: Service, namespace: str
) -> None:
    out = cli(service.address, "-n", namespace, "schedule", "timer", *TIMER_FLAGS, "--dry-run")

    assert out.returncode == 0, out.stderr
    manifest = yaml.safe_load(out.stdout)
    assert manifest["kind"] == "Job"
    assert manifest["metadata"]["namespace"] == namespace
    assert "nothing was created" in out.stderr
    assert jobs_in(cluster, namespace) == []


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--duration", "0"), "jobscheduler: INVALID_ARGUMENT: timer_job.duration_seconds:"),
        (("--duration", "5", "-l", "bad key=v"), "jobscheduler: INVALID_ARGUMENT: labels:"),
        (("--duration", "5", "--env", "NO_EQUALS_SIGN"), "argument --env: expected KEY=VALUE"),
        (("--duration", "5", "--env", "A=1", "--env", "A=2"), "argument --env: key 'A' given twice"),
        (("--duration", "99999999999"), "argument --duration: 99999999999 is out of range"),
        (("--duration", "5", "--wait-timeout", "5"), "--wait-timeout needs --wait"),
    ],
    ids=["zero duration", "bad label", "env without =", "env twice", "int32 overflow", "wait-timeout alone"],
)
def test_bad_input_exits_2_naming_what_is_wrong_and_creates_nothing(
    cluster: Cluster, service: Service, namespace: str, flags: tuple[str, ...], expected: str
) -> None:
    others = ("--timer-name", "t", "--endpoint", "http://control-plane:50053")

    out = cli(service.address, "-n", namespace, "schedule", "timer", *flags, *others)

    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert out.stdout == ""
    assert jobs_in(cluster, namespace) == []


def test_request_id_reused_for_another_request_exits_4(service: Service, namespace: str) -> None:
    first = cli(service.address, "-n", namespace, "schedule", "timer", *TIMER_FLAGS, "--request-id", "k1")
    again = cli(service.address, "-n", namespace, "schedule", "timer", *TIMER_FLAGS, "--request-id", "k1")
    changed = cli(
        service.address,
        "-n",
        namespace,
        "schedule",
        "timer",
        *TIMER_FLAGS,
        "--request-id",
        "k1",
        "--name",
        "other",
    )

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert table(again.stdout)[0]["JOB ID"] == table(first.stdout)[0]["JOB ID"]
    assert changed.returncode == 4, changed.stderr
    assert changed.stderr.startswith("jobscheduler: ALREADY_EXISTS: ")


# -- status, list, cancel ------------------------------------------------------------------------


def test_status_prints_a_table_json_or_yaml(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace, "shown", labels={"team": "a"})
    wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)

    shown = cli(service.address, "-n", namespace, "status", job_id)
    as_json = cli(service.address, "-n", namespace, "status", job_id, "-o", "json")
    as_yaml = cli(service.address, "-n", namespace, "status", job_id, "-o", "yaml")

    assert shown.returncode == as_json.returncode == as_yaml.returncode == 0, shown.stderr
    [row] = table(shown.stdout)
    assert list(row) == ["JOB ID", "NAME", "TYPE", "STATE", "REASON", "ATTEMPTS", "AGE", "MESSAGE"]
    assert (row["JOB ID"], row["NAME"], row["TYPE"], row["STATE"], row["REASON"]) == (
        job_id,
        "shown",
        "timer",
        "SUCCEEDED",
        "Completed",
    )
    assert row["ATTEMPTS"] == "0"
    assert re.fullmatch(r"\d+s|\d+m(\d+s)?", row["AGE"])
    status = json.loads(as_json.stdout)["status"]
    assert status["job_id"] == job_id
    assert status["namespace"] == namespace
    assert status["state"] == "JOB_STATE_SUCCEEDED"
    assert status["labels"] == {"team": "a"}
    assert status["attempts"] == 0  # fields at their default are printed too
    assert "created_at" in status
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)


def test_list_filters_by_state_type_label_and_name(service: Service, namespace: str) -> None:
    done_a = schedule(service, namespace, "done-a", labels={"team": "a"})
    done_b = schedule(service, namespace, "done-b", labels={"team": "b"})
    running = schedule(
        service,
        namespace,
        "running-a",
        labels={"team": "a"},
        annotations={"sim.jobscheduler.io/duration": "10m"},
    )
    for job_id in (done_a, done_b):
        wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)
    wait_for_state(service, namespace, running, S.JOB_STATE_RUNNING)

    def listed(*flags: str) -> set[str]:
        out = cli(service.address, "-n", namespace, "list", *flags)
        assert out.returncode == 0, out.stderr
        return {row["JOB ID"] for row in table(out.stdout)} if out.stdout else set()

    assert listed() == {done_a, done_b, running}
    assert listed("--state", "running") == {running}
    assert listed("--state", "SUCCEEDED") == {done_a, done_b}
    assert listed("--state", "Running", "--state", "job_state_succeeded") == {done_a, done_b, running}
    assert listed("--state", "failed") == set()
    assert listed("--type", "timer") == {done_a, done_b, running}
    assert listed("--type", "other") == set()
    assert listed("-l", "team=a") == {done_a, running}
    assert listed("-l", "team=a", "--state", "succeeded") == {done_a}
    assert listed("--name", "done-b") == {done_b}

    nothing = cli(service.address, "-n", namespace, "list", "--type", "other")
    assert nothing.stdout == ""
    assert f"no jobs found in namespace {namespace}" in nothing.stderr
    bad = cli(service.address, "-n", namespace, "list", "--state", "sleeping")
    assert bad.returncode == 2
    assert "'sleeping' is not a job state" in bad.stderr


def test_list_pages_and_all_follows_every_page(service: Service, namespace: str) -> None:
    ids = {schedule(service, namespace, f"p{i}") for i in range(3)}

    first = cli(service.address, "-n", namespace, "list", "--page-size", "1")
    [token] = re.findall(r"--page-token (\S+)", first.stderr)
    second = cli(service.address, "-n", namespace, "list", "--page-size", "1", "--page-token", token)
    everything = cli(service.address, "-n", namespace, "list", "--page-size", "1", "--all", "-o", "json")

    assert first.returncode == second.returncode == everything.returncode == 0, everything.stderr
    [one], [two] = table(first.stdout), table(second.stdout)
    assert one["JOB ID"] != two["JOB ID"]
    listed = json.loads(everything.stdout)
    assert sorted(j["job_id"] for j in listed["jobs"]) == sorted(ids)
    assert listed["next_page_token"] == ""


def test_cancel_a_running_job_reads_cancelled(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace, "long", annotations={"sim.jobscheduler.io/duration": "10m"})
    wait_for_state(service, namespace, job_id, S.JOB_STATE_RUNNING)

    out = cli(service.address, "-n", namespace, "cancel", job_id)

    assert out.returncode == 0, out.stderr
    [row] = table(out.stdout)
    assert (row["JOB ID"], row["STATE"], row["REASON"]) == (job_id, "CANCELLED", "Cancelled")
    status = service.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10)
    assert status.status.state == S.JOB_STATE_CANCELLED


def test_cancel_an_unknown_job_exits_3_with_the_code_and_a_hint(service: Service, namespace: str) -> None:
    out = cli(service.address, "-n", namespace, "cancel", "job-nope")

    assert out.returncode == 3
    first, hint = out.stderr.splitlines()
    assert first.startswith("jobscheduler: NOT_FOUND: ")
    assert "job-nope" in first
    assert f"jobscheduler list -n {namespace}" in hint
    assert out.stdout == ""


def test_cancel_a_finished_job_exits_4(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace, "quick")
    wait_for_state(service, namespace, job_id, S.JOB_STATE_SUCCEEDED)

    out = cli(service.address, "-n", namespace, "cancel", job_id)

    assert out.returncode == 4
    assert out.stderr.startswith("jobscheduler: FAILED_PRECONDITION: ")


def test_status_after_a_failed_wait_shows_the_exit_code(service: Service, namespace: str) -> None:
    job_id = schedule(service, namespace, "broken", annotations=FAIL_SIM)
    wait_for_state(service, namespace, job_id, S.JOB_STATE_FAILED)

    out = cli(service.address, "-n", namespace, "status", job_id, "-o", "yaml")

    assert out.returncode == 0
    status = yaml.safe_load(out.stdout)["status"]
    assert (status["state"], status["reason"], status["exit_code"]) == (
        "JOB_STATE_FAILED",
        "BackoffLimitExceeded",
        3,
    )


# -- health, reaching the server ---------------------------------------------------------------


def test_health_reports_serving_and_exits_0(service: Service) -> None:
    shown = cli(service.address, "health")
    as_json = cli(service.address, "health", "-o", "json")

    assert (shown.returncode, shown.stdout) == (0, "SERVING\n")
    assert json.loads(as_json.stdout) == {"status": "SERVING"}


def test_the_server_comes_from_the_flag_before_or_after_the_command_or_the_environment(
    service: Service,
) -> None:
    nobody = f"127.0.0.1:{free_port()}"

    assert cli(None, "health", env={"JOBSCHEDULER_SERVER": service.address}).returncode == 0
    assert cli(None, "health", "--server", service.address).returncode == 0
    # The flag wins over the environment, and after the command over before it.
    assert cli(service.address, "health", env={"JOBSCHEDULER_SERVER": nobody}).returncode == 0
    assert cli(nobody, "health", "--server", service.address).returncode == 0
    assert cli(service.address, "health", "--server", nobody).returncode == 5


def test_nobody_listening_exits_5_with_a_hint_to_start_the_server() -> None:
    address = f"127.0.0.1:{free_port()}"

    out = cli(address, "status", "job-x")

    assert out.returncode == 5
    first, hint = out.stderr.splitlines()
    assert first.startswith("jobscheduler: UNAVAILABLE: ")
    assert f"is the server running at {address}?" in hint
    assert "hack/dev.sh run" in hint


@contextmanager
def health_server(
    *,
    status: health_pb2.HealthCheckResponse.ServingStatus.ValueType = health_pb2.HealthCheckResponse.SERVING,
    credentials: grpc.ServerCredentials | None = None,
    delay: float = 0,
) -> Iterator[int]:
    """A real gRPC server with only the health service on a free port; yields the port."""

    class Slow(health.HealthServicer):
        def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
            time.sleep(delay)
            return super().Check(request, context)

    servicer = Slow() if delay else health.HealthServicer()
    servicer.set("", status)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait()


def test_health_not_serving_exits_7() -> None:
    with health_server(status=health_pb2.HealthCheckResponse.NOT_SERVING) as port:
        out = cli(f"127.0.0.1:{port}", "health")

    assert out.returncode == 7
    assert out.stdout == "NOT_SERVING\n"
    assert "jobscheduler: NOT_SERVING: " in out.stderr


def test_no_answer_within_timeout_exits_5() -> None:
    with health_server(delay=3) as port:
        started = time.monotonic()
        out = cli(f"127.0.0.1:{port}", "health", "--timeout", "0.5")
        took = time.monotonic() - started

    assert out.returncode == 5
    assert out.stderr.startswith("jobscheduler: DEADLINE_EXCEEDED: ")
    assert "--timeout" in out.stderr
    assert took < 3


# -- TLS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_credentials(self, *, require_client_auth: bool = False) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.server_key.read_bytes(), self.server_cert.read_bytes())],
            root_certificates=self.ca.read_bytes() if require_client_auth else None,
            require_client_auth=require_client_auth,
        )


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def _issue(directory: Path, name: str, subject: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=directory)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=directory)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA (EC P-256), a server certificate for 127.0.0.1/localhost and a client one."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=jobscheduler test CA", "-days", "1",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem",
        cwd=d,
    )  # fmt: skip
    _issue(
        d,
        "server",
        "/CN=localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _issue(d, "client", "/CN=jobscheduler-cli", "extendedKeyUsage=clientAuth\n")
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


def test_tls_health_with_the_ca_trusted_exits_0(pki: Pki) -> None:
    with health_server(credentials=pki.server_credentials()) as port:
        out = cli(f"127.0.0.1:{port}", "health", "--tls", "--ca-cert", str(pki.ca))

    assert (out.returncode, out.stdout) == (0, "SERVING\n"), out.stderr


def test_tls_with_an_untrusted_certificate_exits_5_with_a_hint(pki: Pki) -> None:
    with health_server(credentials=pki.server_credentials()) as port:
        out = cli(f"127.0.0.1:{port}", "health", "--tls")

    assert out.returncode == 5
    assert out.stderr.startswith("jobscheduler: UNAVAILABLE: ")
    assert "--ca-cert" in out.stderr


def test_tls_checks_the_certificate_against_server_name(pki: Pki) -> None:
    with health_server(credentials=pki.server_credentials()) as port:
        address = f"127.0.0.1:{port}"
        named = cli(address, "health", "--ca-cert", str(pki.ca), "--server-name", "localhost")
        misnamed = cli(address, "health", "--ca-cert", str(pki.ca), "--server-name", "other.example")

    assert named.returncode == 0, named.stderr
    assert misnamed.returncode == 5


def test_mutual_tls_needs_the_client_certificate_and_key(pki: Pki) -> None:
    creds = pki.server_credentials(require_client_auth=True)
    with health_server(credentials=creds) as port:
        address = f"127.0.0.1:{port}"
        ca = ("--ca-cert", str(pki.ca))
        with_cert = cli(address, "health", *ca, "--cert", str(pki.client_cert), "--key", str(pki.client_key))
        without = cli(address, "health", *ca)
        half = cli(address, "health", *ca, "--cert", str(pki.client_cert))

    assert with_cert.returncode == 0, with_cert.stderr
    assert without.returncode == 5
    assert half.returncode == 2
    assert "--cert and --key go together" in half.stderr
