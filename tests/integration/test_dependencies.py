"""Job dependencies end to end: `jobscheduler serve` processes (their leader loop covering the
test's namespace) against the real cluster, with kwok playing the pods.

A dependent job must not get a pod before its dependencies have ended as required: checked on
the cluster's own timestamps, and by watching the namespace's pods while the test runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.render import job_id_for_request
from tests.conftest import Cluster
from tests.helpers import tool, wait_until
from tests.integration.conftest import ServeProcess, free_port, start_serve
from tests.integration.test_readme import doc_section

S = pb.JobState
RELEASED = "dependencies met; job released"


@contextmanager
def replica(
    cluster: Cluster, tmp_path: Path, namespace: str, **env: str
) -> Iterator[tuple[ServeProcess, pb_grpc.JobSchedulerStub]]:
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={
            "K8S_NAMESPACE": namespace,
            "WATCH_NAMESPACES": namespace,
            "SCHEDULE_TICK_SECONDS": "0.2",
            "LEADER_LEASE_SECONDS": "3",
            **env,
        },
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, pb_grpc.JobSchedulerStub(channel)
    finally:
        channel.close()
        if server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()
    assert "leader task crashed" not in server.output()


class PodWatch:
    """Every pod seen in the namespace (by its Job's name), polled in the background: a pod
    that lived for a second still shows."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.core = client.CoreV1Api(cluster.api)
        self.namespace = namespace
        self.seen: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pod in self.core.list_namespaced_pod(self.namespace).items:
                job = (pod.metadata.labels or {}).get("job-name", "")
                self.seen.setdefault(job, set()).add(pod.metadata.name)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def timer(
    namespace: str, name: str, *, duration: str = "1s", exit_code: int | None = None, **fields: Any
) -> pb.ScheduleJobRequest:
    annotations = {"sim.jobscheduler.io/duration": duration}
    if exit_code is not None:
        annotations["sim.jobscheduler.io/exit-code"] = str(exit_code)
    return pb.ScheduleJobRequest(
        name=name,
        namespace=namespace,
        annotations=annotations,
        timer_job=pb.TimerJob(duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:50053"),
        **fields,
    )


def schedule(stub: pb_grpc.JobSchedulerStub, request: pb.ScheduleJobRequest) -> str:
    return str(stub.ScheduleJob(request, timeout=15).job_id)


def status(stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str) -> pb.JobStatus:
    return stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id, namespace=namespace), timeout=10).status


def wait_state(
    stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str, state: int, timeout: float = 60
) -> pb.JobStatus:
    def probe() -> pb.JobStatus | None:
        current = status(stub, namespace, job_id)
        return current if current.state == state else None

    return wait_until(f"{job_id} {S.Name(state)}", probe, timeout=timeout)


def grpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def k8s_job(cluster: Cluster, namespace: str, name: str) -> client.V1Job:
    return client.BatchV1Api(cluster.api).read_namespaced_job(name, namespace)


def first_pod_created(cluster: Cluster, namespace: str, job_id: str) -> datetime:
    pods = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector=f"job-name={job_id}")
        .items
    )
    assert pods, f"{job_id} has no pods"
    return min(pod.metadata.creation_timestamp for pod in pods)


def completed_at(cluster: Cluster, namespace: str, job_id: str) -> datetime:
    when = k8s_job(cluster, namespace, job_id).status.completion_time
    assert when is not None, f"{job_id} has no completionTime"
    return when  # type: ignore[no-any-return]


def released(server: ServeProcess) -> list[str]:
    """The jobs this replica released, from its JSON log."""
    found = []
    for line in server.output().splitlines():
        if RELEASED in line:
            record = json.loads(line)
            if record.get("event") == RELEASED:
                found.append(str(record["job_id"]))
    return found


@pytest.mark.parametrize("watch", ["cache", "api"])
def test_a_chain_runs_in_order(cluster: Cluster, namespace: str, tmp_path: Path, watch: str) -> None:
    env = {} if watch == "cache" else {"WATCH_NAMESPACES": "-"}
    with replica(cluster, tmp_path, namespace, **env) as (_, stub), PodWatch(cluster, namespace) as pods:
        a = schedule(stub, timer(namespace, "a", duration="3s"))
        b = schedule(stub, timer(namespace, "b", after=[a]))
        c = schedule(stub, timer(namespace, "c", after=[b]))

        held = status(stub, namespace, b)
        assert (held.state, held.reason) == (S.JOB_STATE_PENDING, "WaitingForDependencies")
        assert list(held.waiting_for) == [a]
        assert list(held.after) == [a]
        assert held.after_condition == pb.DEPENDENCY_CONDITION_SUCCEEDED
        assert f"waiting for {a} to succeed" in held.message
        assert k8s_job(cluster, namespace, b).spec.suspend is True

        wait_state(stub, namespace, c, S.JOB_STATE_SUCCEEDED)
        assert first_pod_created(cluster, namespace, b) >= completed_at(cluster, namespace, a)
        assert first_pod_created(cluster, namespace, c) >= completed_at(cluster, namespace, b)
        for job_id in (a, b, c):
            assert len(pods.seen.get(job_id, ())) == 1
        done = status(stub, namespace, c)
        assert list(done.after) == [b]
        assert list(done.waiting_for) == []


def test_fan_in_waits_for_every_dependency_and_reports_progress(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub), PodWatch(cluster, namespace) as pods:
        quick = schedule(stub, timer(namespace, "quick", duration="1s"))
        slow = schedule(stub, timer(namespace, "slow", duration="6s"))
        join = schedule(stub, timer(namespace, "join", after=[quick, slow]))

        wait_state(stub, namespace, quick, S.JOB_STATE_SUCCEEDED)

        def progressed() -> pb.JobStatus | None:
            current = status(stub, namespace, join)
            return current if list(current.waiting_for) == [slow] else None

        progress = wait_until("join waiting only for slow", progressed, timeout=30)
        assert progress.reason == "WaitingForDependencies"
        assert progress.message == f"waiting for {slow} to succeed"
        assert join not in pods.seen
        assert status(stub, namespace, slow).state != S.JOB_STATE_SUCCEEDED

        wait_state(stub, namespace, join, S.JOB_STATE_SUCCEEDED)
        assert first_pod_created(cluster, namespace, join) >= completed_at(cluster, namespace, slow)


def test_a_failed_dependency_fails_its_dependents_and_nothing_of_theirs_runs(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub), PodWatch(cluster, namespace) as pods:
        broken = schedule(stub, timer(namespace, "broken", exit_code=3))
        middle = schedule(stub, timer(namespace, "middle", after=[broken]))
        last = schedule(stub, timer(namespace, "last", after=[middle]))

        failed = wait_state(stub, namespace, middle, S.JOB_STATE_FAILED)
        assert failed.reason == "DependencyFailed"
        assert failed.message == f"dependency {broken} FAILED (BackoffLimitExceeded)"
        assert failed.HasField("finished_at")
        cascaded = wait_state(stub, namespace, last, S.JOB_STATE_FAILED)
        assert cascaded.reason == "DependencyFailed"
        assert cascaded.message == f"dependency {middle} FAILED (DependencyFailed)"

        # The Job controller records the failure itself (so TTL retention applies), pod-less.
        def failed_on_cluster() -> bool:
            conditions = k8s_job(cluster, namespace, last).status.conditions or []
            return any(c.type == "Failed" and c.status == "True" for c in conditions)

        wait_until("the Job controller marks the dependent Failed", failed_on_cluster, timeout=30)
        assert status(stub, namespace, last).reason == "DependencyFailed"
        for job_id in (middle, last):
            assert job_id not in pods.seen
            assert (k8s_job(cluster, namespace, job_id).status.failed or 0) == 0
            assert list(status(stub, namespace, job_id).pods) == []


def test_finished_condition_releases_after_a_failure(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        broken = schedule(stub, timer(namespace, "broken", exit_code=1))
        cleanup = schedule(
            stub,
            timer(namespace, "cleanup", after=[broken], after_condition=pb.DEPENDENCY_CONDITION_FINISHED),
        )
        assert f"waiting for {broken} to finish" in status(stub, namespace, cleanup).message
        wait_state(stub, namespace, cleanup, S.JOB_STATE_SUCCEEDED)
        assert status(stub, namespace, broken).state == S.JOB_STATE_FAILED
        assert first_pod_created(cluster, namespace, cleanup) >= k8s_job(
            cluster, namespace, broken
        ).status.conditions[-1].last_transition_time.replace(microsecond=0)


def test_unknown_ids_self_references_and_cycles_are_rejected_and_nothing_is_created(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    batch = client.BatchV1Api(cluster.api)

    def job_names() -> set[str]:
        return {j.metadata.name for j in batch.list_namespaced_job(namespace).items}

    with replica(cluster, tmp_path, namespace) as (_, stub):
        existing = schedule(stub, timer(namespace, "existing", duration="10m"))

        err = grpc_error(lambda: schedule(stub, timer(namespace, "x", after=[existing, "job-nosuchjob"])))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("after[1]: no job 'job-nosuchjob'")

        own = job_id_for_request(namespace, "pipeline-step")
        err = grpc_error(
            lambda: schedule(stub, timer(namespace, "x", request_id="pipeline-step", after=[own]))
        )
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("after[0]: a job cannot depend on itself")

        err = grpc_error(
            lambda: schedule(stub, timer(namespace, "x", after_condition=pb.DEPENDENCY_CONDITION_FINISHED))
        )
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("after_condition:")
        assert job_names() == {existing}

        # A cycle needs a job named by its request_id: `first` is that job, `second` waits for
        # it; `first` is deleted and asked for again, now after `second`.
        first = schedule(stub, timer(namespace, "first", request_id="pipeline-step", duration="10m"))
        assert first == own
        second = schedule(stub, timer(namespace, "second", after=[first]))
        batch.delete_namespaced_job(first, namespace, propagation_policy="Background")
        wait_until("the first job is gone", lambda: first not in job_names(), timeout=30)
        err = grpc_error(
            lambda: schedule(
                stub, timer(namespace, "first", request_id="pipeline-step", duration="10m", after=[second])
            )
        )
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith(f"after[0]: {second} already waits for {first}")
        assert f"{first} → {second} → {first}" in err.details()
        assert job_names() == {existing, second}

        # Dry runs check the same, and show the held manifest.
        manifest = stub.ScheduleJob(
            timer(namespace, "dry", after=[existing], dry_run=True), timeout=10
        ).manifest
        assert "suspend: true" in manifest
        assert f"jobscheduler.io/waiting-for: {existing}" in manifest
        assert job_names() == {existing, second}


def test_resume_refuses_a_held_job_and_a_callers_suspend_outlasts_the_release(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        first = schedule(stub, timer(namespace, "first", duration="2s"))
        held = schedule(stub, timer(namespace, "held", after=[first], suspend=True))

        err = grpc_error(
            lambda: stub.ResumeJob(pb.ResumeJobRequest(job_id=held, namespace=namespace), timeout=10)
        )
        assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert f"is held by its dependencies (waiting for {first})" in err.details()
        assert status(stub, namespace, held).message.endswith("then suspended until ResumeJob")

        def suspended_by_caller() -> pb.JobStatus | None:
            current = status(stub, namespace, held)
            return current if current.reason == "Suspended" else None

        wait_until("released from its dependency, still suspended", suspended_by_caller, timeout=30)
        assert status(stub, namespace, first).state == S.JOB_STATE_SUCCEEDED
        assert (
            not client.CoreV1Api(cluster.api)
            .list_namespaced_pod(namespace, label_selector=f"job-name={held}")
            .items
        )
        stub.ResumeJob(pb.ResumeJobRequest(job_id=held, namespace=namespace), timeout=10)
        wait_state(stub, namespace, held, S.JOB_STATE_SUCCEEDED)


def test_cancelling_a_held_job_starts_nothing(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    with replica(cluster, tmp_path, namespace) as (server, stub), PodWatch(cluster, namespace) as pods:
        first = schedule(stub, timer(namespace, "first", duration="10m"))
        held = schedule(stub, timer(namespace, "held", after=[first]))
        cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=held, namespace=namespace), timeout=10).status
        assert cancelled.state == S.JOB_STATE_CANCELLED

        def hold_dropped() -> bool:
            return "jobscheduler.io/held" not in (k8s_job(cluster, namespace, held).metadata.labels or {})

        wait_until("the leader drops the hold of the cancelled job", hold_dropped, timeout=30)
        wait_until(
            "the Job controller fails it",
            lambda: any(
                c.type == "Failed" for c in k8s_job(cluster, namespace, held).status.conditions or []
            ),
            timeout=30,
        )
        assert held not in pods.seen
        assert status(stub, namespace, held).state == S.JOB_STATE_CANCELLED
        assert "hold dropped" in server.output()


def test_with_two_replicas_each_job_is_released_exactly_once_across_a_handover(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with (
        replica(cluster, tmp_path, namespace) as (one, one_stub),
        replica(cluster, tmp_path, namespace) as (two, two_stub),
    ):
        stubs = (one_stub, two_stub)
        early_dep = schedule(one_stub, timer(namespace, "early", duration="1s"))
        late_dep = schedule(two_stub, timer(namespace, "late", duration="10s"))
        early = [schedule(stubs[i % 2], timer(namespace, f"early-{i}", after=[early_dep])) for i in range(4)]
        late = [schedule(stubs[i % 2], timer(namespace, f"late-{i}", after=[late_dep])) for i in range(4)]
        for job_id in early:
            wait_state(one_stub, namespace, job_id, S.JOB_STATE_SUCCEEDED)
        assert status(one_stub, namespace, late_dep).state != S.JOB_STATE_SUCCEEDED
        # The leader goes away (releasing its Lease); the other replica takes over.
        leader, survivor, stub = (one, two, two_stub) if released(one) else (two, one, one_stub)
        leader.proc.terminate()
        leader.proc.wait(timeout=30)
        for job_id in late:
            wait_state(stub, namespace, job_id, S.JOB_STATE_SUCCEEDED)
        assert sorted(released(leader)) == sorted(early)
        assert sorted(released(survivor)) == sorted(late)


def test_the_readme_dependencies_example_works_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    if shutil.which("jq") is None:
        pytest.skip("the Dependencies example uses jq")
    _, section = doc_section("Dependencies")
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the Dependencies section (docs/job-control.md) has a ```sh block"
    with replica(cluster, tmp_path, namespace) as (server, stub):
        script = block.group(1).replace("localhost:50054", f"localhost:{server.port}")
        grpcurl_dir = tool("grpcurl")
        env = {**os.environ, "PATH": f"{Path(grpcurl_dir).parent}:{os.environ['PATH']}"}
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 0, out.stderr
        jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
        ids = {j.metadata.labels["jobscheduler.io/name"]: j.metadata.name for j in jobs}
        assert sorted(ids) == ["build", "cleanup", "lint", "publish", "test"]
        for job_id in ids.values():
            wait_state(stub, namespace, job_id, S.JOB_STATE_SUCCEEDED)
        publish = status(stub, namespace, ids["publish"])
        assert sorted(publish.after) == sorted([ids["test"], ids["lint"]])
        for before in ("test", "lint"):
            assert first_pod_created(cluster, namespace, ids["publish"]) >= completed_at(
                cluster, namespace, ids[before]
            )
