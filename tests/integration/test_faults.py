"""The service under faults, on the real control plane: the API server killed and restarted,
etcd killed and restarted, the API server frozen (SIGSTOP) past the callers' deadlines, and a
replica stopped (SIGTERM) under load while a second one serves.

Each test drives a stream of ScheduleJob calls with request_ids from a client that retries
UNAVAILABLE and DEADLINE_EXCEEDED with the same request_id, as a careful caller does, and
checks the outcome on the cluster: one Job per request_id, no duplicates, no orphans. The
measured figures are printed (pytest -s, or the captured output of a failure) and recorded in
docs/reliability.md.
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import ServeProcess, free_port, start_serve

V = TypeVar("V")

pytestmark = pytest.mark.local_cluster

TIMER = pb.TimerJob(duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053")
CALL_DEADLINE = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Outcome:
    request_id: str
    job_id: str = ""
    attempts: int = 0
    failures: list[tuple[str, float]] = field(default_factory=list)  # (code, seconds the call took)


@dataclass
class Load:
    """ScheduleJob calls with request_ids from a few threads, retried with the same id."""

    stubs: list[pb_grpc.JobSchedulerStub]
    count: int
    prefix: str
    give_up_after: float = 180.0
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, i: int) -> None:
        rid = f"{self.prefix}-{i:05d}"
        outcome = Outcome(rid)
        request = pb.ScheduleJobRequest(name="fault", timer_job=TIMER, suspend=True, request_id=rid)
        stop_at = time.monotonic() + self.give_up_after
        while time.monotonic() < stop_at:
            stub = self.stubs[(i + outcome.attempts) % len(self.stubs)]
            outcome.attempts += 1
            started = time.monotonic()
            try:
                outcome.job_id = stub.ScheduleJob(request, timeout=CALL_DEADLINE).job_id
                break
            except grpc.RpcError as e:
                outcome.failures.append((e.code().name, time.monotonic() - started))
                if e.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                ):
                    break
                time.sleep(0.2)
        with self._lock:
            self.outcomes[rid] = outcome
            self.done += 1

    def run_in_background(self, workers: int = 4) -> threading.Thread:
        def run() -> None:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(self.call, range(self.count)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def ready(cluster: Cluster, timeout: float = 0.5) -> bool:
    """The API server's own /readyz (which includes etcd), asked directly, without retries."""
    conf = cluster.api.configuration
    ctx = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    if conf.cert_file:
        ctx.load_cert_chain(conf.cert_file, conf.key_file)
    try:
        with urllib.request.urlopen(f"{conf.host}/readyz", context=ctx, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class ChangeLog(Generic[V]):
    """Samples something every 100 ms on a thread of its own and records each change of the
    value with its (monotonic) time; a sample of None is no answer and records nothing."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, V]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> V | None:
        raise NotImplementedError

    def _run(self) -> None:
        last = None
        while not self._stop.wait(0.1):
            value = self.sample()
            if value is not None and value != last:
                self.changes.append((time.monotonic(), value))
                last = value

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class ApiLog(ChangeLog[bool]):
    """Asks the API server's /readyz: when it stopped and started being ready."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        super().__init__()

    def sample(self) -> bool:
        return ready(self.cluster)

    def back_at(self, after: float) -> float | None:
        """When it answered again after its first failure past `after`."""
        down = next((t for t, ok in self.changes if not ok and t >= after), None)
        if down is None:
            return None
        return next((t for t, ok in self.changes if ok and t > down), None)


class HealthLog(ChangeLog[int]):
    """Polls grpc.health.v1 (-1: no answer)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = health_pb2_grpc.HealthStub(channel)
        super().__init__()

    def sample(self) -> int:
        try:
            return int(self.stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
        except grpc.RpcError:
            return -1

    def first(self, status: int, after: float) -> float | None:
        return next((t for t, s in self.changes if s == status and t >= after), None)


class ServiceStatusLog(ChangeLog[dict[str, str]]):
    """Polls GetServiceStatus: its conditions' reasons by type, and the most failed Kubernetes
    API calls it reported for one window."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = pb_grpc.JobSchedulerStub(channel)
        self.most_errors = 0
        super().__init__()

    def sample(self) -> dict[str, str] | None:
        try:
            status = self.stub.GetServiceStatus(pb.GetServiceStatusRequest(), timeout=1)
        except grpc.RpcError:
            return None
        self.most_errors = max(self.most_errors, status.kubernetes.errors)
        return {c.type: c.reason for c in status.conditions}

    def first(self, condition: str, reason: str, after: float) -> float | None:
        return next((t for t, r in self.changes if r.get(condition) == reason and t >= after), None)


def jobs_by_request(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for job in client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items:
        rid = (job.metadata.annotations or {}).get("jobscheduler.io/request-id", "")
        found.setdefault(rid, []).append(job.metadata.name)
    return found


def check_exactly_once(cluster: Cluster, namespace: str, load: Load) -> dict[str, object]:
    """Every call that returned OK has exactly one Job; no request has two; no Job is orphaned."""
    assert load.done == load.count
    unfinished = [(o.request_id, o.failures) for o in load.outcomes.values() if not o.job_id]
    assert unfinished == [], f"calls that never succeeded: {unfinished[:5]}"
    found = {
        rid: names
        for rid, names in jobs_by_request(cluster, namespace).items()
        if rid.startswith(load.prefix)
    }
    duplicates = {rid: names for rid, names in found.items() if len(names) > 1}
    assert duplicates == {}
    assert {rid: names[0] for rid, names in found.items()} == {
        o.request_id: o.job_id for o in load.outcomes.values()
    }
    failures = [f for o in load.outcomes.values() for f in o.failures]
    slowest = max((seconds for _, seconds in failures), default=0.0)
    assert (
        slowest <= CALL_DEADLINE + 0.5
    ), f"a failed call took {slowest:.2f}s, past its {CALL_DEADLINE}s deadline"
    return {
        "calls": load.count,
        "jobs": len(found),
        "duplicates": 0,
        "failed_attempts": len(failures),
        "failed_attempts_by_code": dict(Counter(code for code, _ in failures)),
        "slowest_failed_call_seconds": round(slowest, 3),
        "max_attempts_for_one_call": max(o.attempts for o in load.outcomes.values()),
    }


@pytest.fixture
def served(cluster: Cluster, tmp_path: Path, namespace: str) -> Iterator[ServeProcess]:
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={
            "K8S_NAMESPACE": namespace,
            "WATCH_NAMESPACES": namespace,
            "HEALTH_INTERVAL_SECONDS": "0.5",
            "LOG_LEVEL": "info",
        },
    )
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def cache_agrees_with_the_cluster(stub: pb_grpc.JobSchedulerStub, cluster: Cluster, namespace: str) -> bool:
    """The service's (cached) list equals the Jobs on the cluster, each with its current state."""
    listed: dict[str, int] = {}
    token = ""
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token), timeout=10)
        listed.update({j.job_id: j.state for j in page.jobs})
        token = page.next_page_token
        if not token:
            break
    on_cluster = {
        j.metadata.name: bool(j.spec.suspend)
        for j in client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    }
    return set(listed) == set(on_cluster) and all(
        (listed[name] == pb.JOB_STATE_PENDING) == suspended for name, suspended in on_cluster.items()
    )


def report(name: str, figures: dict[str, object]) -> None:
    print(f"\nRELIABILITY {name}: {json.dumps(figures, sort_keys=True)}")


def run_fault(
    cluster: Cluster,
    namespace: str,
    server: ServeProcess,
    *,
    prefix: str,
    count: int,
    inject: Callable[[], None],
) -> dict[str, object]:
    """1,000-ish calls; `inject` breaks something mid-stream and returns once it is whole again."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.JobSchedulerStub(channel)
        health = HealthLog(channel)
        conditions = ServiceStatusLog(channel)
        api_log = ApiLog(cluster)
        wait_until("SERVING", lambda: health.changes and health.changes[-1][1] == SERVING, timeout=20)
        # A job whose change during the outage the watch must not miss.
        witness = stub.ScheduleJob(
            pb.ScheduleJobRequest(name="witness", timer_job=TIMER, suspend=True), timeout=10
        ).job_id
        load = Load([stub], count, prefix)
        started = time.monotonic()
        thread = load.run_in_background()
        wait_until("a fifth of the calls done", lambda: load.done >= count // 5, timeout=120, interval=0.05)
        broken_at = time.monotonic()
        inject()
        stub.ResumeJob(pb.ResumeJobRequest(job_id=witness), timeout=30)
        thread.join(timeout=240)
        elapsed = time.monotonic() - started
        health.stop()
        api_log.stop()
        figures = check_exactly_once(cluster, namespace, load)
        # GetServiceStatus answers through the outage (it needs no API call) and says why.
        wait_until(
            "GetServiceStatus sees the API and the watch whole again",
            lambda: conditions.changes[-1][1].get("KubernetesAPI") == "Reachable"
            and conditions.changes[-1][1].get("WatchCache") == "Current",
            timeout=30,
        )
        conditions.stop()
        ready_at = api_log.back_at(broken_at)
        assert ready_at is not None, "the API server never went away (the fault did not bite)"
        not_serving = health.first(health_pb2.HealthCheckResponse.NOT_SERVING, broken_at)
        assert not_serving is not None, "health never went NOT_SERVING"
        serving_again = health.first(SERVING, not_serving)
        assert serving_again is not None, "health never came back to SERVING"
        assert serving_again - ready_at <= 10
        unreachable = conditions.first("KubernetesAPI", "Unreachable", broken_at)
        assert unreachable is not None, f"GetServiceStatus never said Unreachable: {conditions.changes}"
        assert conditions.first("KubernetesAPI", "Reachable", unreachable) is not None
        assert conditions.most_errors > 0, "no failed Kubernetes API call was counted"
        wait_until(
            "witness SUCCEEDED through the cache",
            lambda: stub.GetJobStatus(pb.GetJobStatusRequest(job_id=witness), timeout=5).status.state
            == pb.JOB_STATE_SUCCEEDED,
            timeout=60,
        )
        assert wait_until(
            "cache agrees with the cluster",
            lambda: cache_agrees_with_the_cluster(stub, cluster, namespace),
            timeout=60,
        )
    figures |= {
        "seconds_total": round(elapsed, 1),
        "not_serving_after_break_seconds": round(not_serving - broken_at, 2),
        "serving_after_apiserver_ready_seconds": round(serving_again - ready_at, 2),
        "outage_seconds": round(ready_at - broken_at, 1),
    }
    assert "Traceback" not in server.output()
    return figures


def test_api_server_killed_and_restarted_during_1000_schedule_calls(
    local_cluster: Cluster, namespace: str, served: ServeProcess
) -> None:
    def kill_and_restart() -> None:
        local_cluster.devcluster("stop", "kube-apiserver", "--signal", "KILL")
        time.sleep(3)
        local_cluster.devcluster("start", "kube-apiserver")

    figures = run_fault(local_cluster, namespace, served, prefix="kill", count=1000, inject=kill_and_restart)
    report("apiserver SIGKILL + restart", figures)


def test_etcd_killed_and_restarted_during_schedule_calls(
    local_cluster: Cluster, namespace: str, served: ServeProcess
) -> None:
    def restart_etcd() -> None:
        local_cluster.devcluster("stop", "etcd", "--signal", "KILL")
        time.sleep(3)
        local_cluster.devcluster("start", "etcd")
        wait_until("API server ready again", lambda: ready(local_cluster), timeout=60)

    figures = run_fault(local_cluster, namespace, served, prefix="etcd", count=600, inject=restart_etcd)
    report("etcd SIGKILL + restart", figures)


def test_api_server_paused_past_the_deadline(
    local_cluster: Cluster, namespace: str, served: ServeProcess
) -> None:
    def pause() -> None:
        local_cluster.devcluster("pause", "kube-apiserver")
        try:
            time.sleep(3 * CALL_DEADLINE)
        finally:
            local_cluster.devcluster("resume", "kube-apiserver")
        wait_until("API server ready again", lambda: ready(local_cluster), timeout=30)

    figures = run_fault(local_cluster, namespace, served, prefix="pause", count=600, inject=pause)
    report("apiserver SIGSTOP past the deadline", figures)


def test_sigterm_to_one_replica_under_load_loses_and_duplicates_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    env = {"K8S_NAMESPACE": namespace, "WATCH_NAMESPACES": namespace, "SHUTDOWN_GRACE_SECONDS": "5"}
    a = start_serve(cluster, tmp_path, port=free_port(), env=env)
    b = start_serve(cluster, tmp_path, port=free_port(), env=env)
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{a.port}") as ca,
            grpc.insecure_channel(f"127.0.0.1:{b.port}") as cb,
        ):
            stubs = [pb_grpc.JobSchedulerStub(ca), pb_grpc.JobSchedulerStub(cb)]
            load = Load(stubs, 600, "term")
            thread = load.run_in_background(workers=6)
            wait_until("a third of the calls done", lambda: load.done >= 200, timeout=120, interval=0.05)
            stopped_at = time.monotonic()
            a.proc.send_signal(signal.SIGTERM)
            assert a.proc.wait(timeout=15) == 0
            exit_seconds = time.monotonic() - stopped_at
            thread.join(timeout=240)
            figures = check_exactly_once(cluster, namespace, load)
            # Only the stopped replica's calls failed, and only in ways a client can retry.
            assert set(figures["failed_attempts_by_code"]) <= {"UNAVAILABLE", "CANCELLED"}  # type: ignore[arg-type]
            b_health = health_pb2_grpc.HealthStub(cb).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert b_health.status == SERVING
    finally:
        for server in (a, b):
            if server.proc.poll() is None:
                server.proc.terminate()
                server.proc.wait(timeout=30)
    out = a.output()
    assert '"event": "shutting down"' in out
    assert "Traceback" not in out
    report("SIGTERM to one of two replicas", figures | {"replica_exit_seconds": round(exit_seconds, 2)})
