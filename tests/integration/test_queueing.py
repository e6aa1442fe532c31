"""Queues and priorities through a real Kueue (docs/queueing.md): `jobscheduler serve` against
the dev cluster with Kueue added for this module (hack/devcluster.py kueue-up; removed again at
its end, so the rest of the suite runs without Kueue's webhooks), kwok playing the pods.

Each test gets ClusterQueues of its own, named after its namespace, with quotas small enough to
saturate with a few jobs of the default 100m CPU request.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kubernetes import client

from hack import kueue as kueue_objects
from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import ROOT, Cluster
from tests.helpers import tool, wait_until
from tests.integration.conftest import free_port, start_serve
from tests.integration.test_dependencies import grpc_error, replica, schedule, status, timer, wait_state
from tests.integration.test_readme import _run_example, readme_grpcurl_lines

S = pb.JobState
KUEUE = ("kueue.x-k8s.io", "v1beta2")
EXAMPLES = ROOT / "k8s" / "examples" / "queueing"
ACTIVE = (S.JOB_STATE_PENDING, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED)


def kueue_installed(cluster: Cluster) -> bool:
    groups = client.ApisApi(cluster.api).get_api_versions().groups
    return any(g.name == "kueue.x-k8s.io" for g in groups)


def test_a_queue_is_refused_on_a_cluster_without_kueue(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # First in the module: Kueue is added by the fixture of the tests below.
    if kueue_installed(cluster):
        pytest.skip("this cluster has Kueue (JOBSCHEDULER_TEST_KUBECONFIG): nothing to refuse")
    with replica(cluster, tmp_path, namespace) as (server, stub):
        err = grpc_error(lambda: stub.ScheduleJob(timer(namespace, "q", queue="team-a"), timeout=15))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "queue: 'team-a' was asked for, but the cluster has no Kueue" in str(err.details())
        # Nothing created; and a job without a queue runs as always.
        assert not client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
        job = schedule(stub, timer(namespace, "plain"))
        wait_state(stub, namespace, job, S.JOB_STATE_SUCCEEDED)
        reply = stub.ListQueues(pb.ListQueuesRequest(namespace=namespace), timeout=10)
        assert not reply.available
    assert '"queueing": "unavailable (no Kueue in the cluster' in server.output()


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[None]:
    """Kueue on the cluster for this module's tests: added to the dev cluster and removed at
    the end; an external cluster must have it already."""
    added = False
    if not kueue_installed(cluster):
        if not cluster.local:
            pytest.skip("needs Kueue in the cluster (JOBSCHEDULER_TEST_KUBECONFIG has none)")
        cluster.devcluster("kueue-up")
        added = True
    try:
        kubectl(cluster, "apply", "--server-side", "-f", str(EXAMPLES))
        yield
    finally:
        if added:
            cluster.devcluster("kueue-down")


def kubectl(cluster: Cluster, *args: str) -> str:
    out = subprocess.run(
        [tool("kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def custom(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def make_queue(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    cpu: str,
    cohort: str = "",
    preemption: dict[str, str] | None = None,
) -> None:
    """A ClusterQueue `name` (default-flavor of k8s/examples/queueing, cpu quota; FIFO to the
    letter) and a LocalQueue `name` in namespace."""
    api = custom(cluster)
    api.create_cluster_custom_object(
        *KUEUE,
        "clusterqueues",
        kueue_objects.cluster_queue(
            name,
            flavor="default-flavor",
            cpu=cpu,
            cohort=cohort,
            preemption=preemption,
            strategy="StrictFIFO",
        ),
    )
    api.create_namespaced_custom_object(
        *KUEUE, namespace, "localqueues", kueue_objects.local_queue(name, name)
    )


@pytest.fixture
def queue(kueue: None, cluster: Cluster, namespace: str) -> Iterator[str]:  # noqa: ARG001 - Kueue must be there first
    """The test's own ClusterQueue (two 100m jobs at a time) and LocalQueue, both `namespace`."""
    make_queue(cluster, namespace, namespace, cpu="200m")
    yield namespace
    custom(cluster).delete_cluster_custom_object(*KUEUE, "clusterqueues", namespace)


def admitted_at(stub: pb_grpc.JobSchedulerStub, namespace: str, job: str) -> float:
    found = status(stub, namespace, job).queue_status
    assert found.admitted, f"{job} not admitted"
    return found.admitted_at.ToDatetime().timestamp() + found.admitted_at.nanos / 1e9


def test_jobs_beyond_the_quota_wait_queued_and_are_admitted_in_order(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        jobs = []
        for i in range(5):
            jobs.append(schedule(stub, timer(namespace, f"j{i}", duration="4s", queue=queue)))
            # Kueue orders equal priorities by creation time, kept to the second.
            time.sleep(1.1 if i >= 1 else 0)
        for job in jobs[:2]:
            wait_until(f"{job} admitted", lambda job=job: status(stub, namespace, job).state in ACTIVE)
        # Beyond the quota: QUEUED, with Kueue's reason and their places (1 = next).
        positions = {}
        for job in jobs[2:]:
            current = status(stub, namespace, job)
            assert current.state == S.JOB_STATE_QUEUED, current
            assert current.queue == queue
            assert current.queue_status.workload
            assert "quota" in current.message, current.message
            positions[job] = current.queue_status.position_in_queue
        assert [positions[j] for j in jobs[2:]] == [1, 2, 3]
        # As the first ones finish, the rest move up and are admitted, oldest first.
        last = jobs[-1]
        seen = [status(stub, namespace, last).queue_status.position_in_queue]
        while status(stub, namespace, last).state == S.JOB_STATE_QUEUED:
            seen.append(status(stub, namespace, last).queue_status.position_in_queue)
            time.sleep(0.5)
        moved = [p for p in seen if p]
        assert moved == sorted(moved, reverse=True)
        assert moved[0] == 3
        assert min(moved) < 3
        for job in jobs:
            wait_state(stub, namespace, job, S.JOB_STATE_SUCCEEDED, timeout=90)
        admitted = [admitted_at(stub, namespace, j) for j in jobs]
        assert admitted == sorted(admitted), admitted  # oldest first (times kept to the second)
        # The filter by queue (ListJobs, WatchJobs), and ListQueues' counts.
        listed = stub.ListJobs(pb.ListJobsRequest(namespace=namespace, queue=queue), timeout=10).jobs
        assert {j.job_id for j in listed} == set(jobs)
        watched = stub.WatchJobs(pb.WatchJobsRequest(namespace=namespace, queue=queue), timeout=10)
        assert {next(watched).status.job_id for _ in jobs} == set(jobs)
        watched.cancel()
        assert not stub.ListJobs(pb.ListJobsRequest(namespace=namespace, queue="other"), timeout=10).jobs
        [info] = stub.ListQueues(pb.ListQueuesRequest(namespace=namespace), timeout=10).queues
        assert (info.name, info.cluster_queue, info.pending) == (queue, queue, 0)
        cpu = next(r for r in info.resources if r.resource == "cpu")
        assert (cpu.flavor, cpu.nominal) == ("default-flavor", "200m")


@pytest.mark.usefixtures("kueue")
def test_a_high_priority_job_overtakes_queued_ones_and_preempts_a_running_one(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    make_queue(cluster, namespace, namespace, cpu="100m", preemption={"withinClusterQueue": "LowerPriority"})
    try:
        with replica(cluster, tmp_path, namespace) as (_, stub):
            running = schedule(
                stub, timer(namespace, "low-running", duration="600s", queue=namespace, priority="low")
            )
            wait_state(stub, namespace, running, S.JOB_STATE_RUNNING)
            low = schedule(
                stub, timer(namespace, "low-queued", duration="2s", queue=namespace, priority="low")
            )
            assert status(stub, namespace, low).state == S.JOB_STATE_QUEUED
            high = schedule(stub, timer(namespace, "high", duration="2s", queue=namespace, priority="high"))
            assert status(stub, namespace, high).priority == "high"
            # The high one evicts the running low one and runs before the queued low one.
            wait_state(stub, namespace, high, S.JOB_STATE_SUCCEEDED, timeout=90)
            evicted = wait_until(
                "the running low job reports its eviction",
                lambda: (s := status(stub, namespace, running)).queue_status.eviction_reason and s,
            )
            assert evicted.queue_status.eviction_reason in ("InClusterQueue", "Preempted")
            assert "Preempted" in evicted.queue_status.eviction_message
            assert evicted.queue_status.priority_value == 100
            assert status(stub, namespace, high).queue_status.priority_value == 1000
            assert admitted_at(stub, namespace, high) < admitted_at_or_inf(stub, namespace, low)
            stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=running), timeout=10)
            wait_state(stub, namespace, low, S.JOB_STATE_SUCCEEDED, timeout=90)
            assert wait_state(stub, namespace, running, S.JOB_STATE_CANCELLED).state == S.JOB_STATE_CANCELLED
    finally:
        custom(cluster).delete_cluster_custom_object(*KUEUE, "clusterqueues", namespace)


def admitted_at_or_inf(stub: pb_grpc.JobSchedulerStub, namespace: str, job: str) -> float:
    found = status(stub, namespace, job).queue_status
    return admitted_at(stub, namespace, job) if found.admitted else float("inf")


@pytest.mark.usefixtures("kueue")
def test_two_tenants_in_a_cohort_borrow_and_reclaim_their_share(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(cluster.api)
    other = f"{namespace[:50]}-b"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    cohort = f"{namespace[:50]}-cohort"
    qa, qb = f"{namespace[:50]}-a", f"{namespace[:50]}-b"
    reclaim = {"reclaimWithinCohort": "Any", "withinClusterQueue": "Never"}
    make_queue(cluster, namespace, qa, cpu="100m", cohort=cohort, preemption=reclaim)
    make_queue(cluster, other, qb, cpu="100m", cohort=cohort, preemption=reclaim)
    try:
        with replica(cluster, tmp_path, namespace, WATCH_NAMESPACES=f"{namespace},{other}") as (_, stub):
            # Tenant A alone: it borrows B's idle quota (two jobs at once on its 100m).
            a = []
            for i in range(3):
                a.append(schedule(stub, timer(namespace, f"a{i}", duration="600s", queue=qa)))
                time.sleep(1.1)  # FIFO within a queue is by creation time, kept to the second
            for job in a[:2]:
                wait_state(stub, namespace, job, S.JOB_STATE_RUNNING)
            assert status(stub, namespace, a[2]).state == S.JOB_STATE_QUEUED
            # Fair sharing accounts for it: A's share of the cohort is above B's (idle) one.
            shares = wait_until(
                "fair-sharing shares of both ClusterQueues",
                lambda: (sa := weighted_share(cluster, qa)) is not None
                and (sb := weighted_share(cluster, qb)) is not None
                and sa > sb
                and (sa, sb),
            )
            # Tenant B arrives: it gets its share back at once, A's borrowed job is evicted.
            b = schedule(stub, timer(other, "b0", duration="10s", queue=qb))

            def evictions() -> list[pb.JobStatus] | None:
                found = [
                    s for s in (status(stub, namespace, j) for j in a[:2]) if s.queue_status.eviction_reason
                ]
                return found or None

            # Seen while it stands (Kueue's Preempted condition: the cause), or once A's job is
            # admitted again (Kueue's eviction counts: the cause where it records one).
            evicted = wait_until("one of A's jobs evicted for B", evictions, timeout=60)
            assert len(evicted) == 1, evicted
            reason = evicted[0].queue_status.eviction_reason
            assert reason.startswith("InCohortReclamation") or reason == "Preempted", evicted[0]
            assert "Preempted" in evicted[0].queue_status.eviction_message
            assert wait_state(stub, other, b, S.JOB_STATE_RUNNING, timeout=60).queue_status.admitted
            assert status(stub, namespace, a[2]).state == S.JOB_STATE_QUEUED  # A keeps its own share only
            print(
                f"cohort: shares A {shares[0]} > B {shares[1]} while A borrows; a0,a1 in (a1 borrowing), "
                f"a2 queued; b0 in, reclaiming {evicted[0].job_id}"
            )
            [info] = stub.ListQueues(pb.ListQueuesRequest(namespace=namespace), timeout=10).queues
            assert (info.cohort, info.pending >= 1) == (cohort, True)
            for job in a:
                stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=job), timeout=10)
    finally:
        for name in (qa, qb):
            custom(cluster).delete_cluster_custom_object(*KUEUE, "clusterqueues", name)
        core.delete_namespace(other)


def weighted_share(cluster: Cluster, cluster_queue: str) -> int | None:
    """The ClusterQueue's fair-sharing share (status.fairSharing.weightedShare), once Kueue set it."""
    cq = custom(cluster).get_cluster_custom_object(*KUEUE, "clusterqueues", cluster_queue)
    share = ((cq.get("status") or {}).get("fairSharing") or {}).get("weightedShare")
    return int(share) if share is not None else None


def test_a_held_job_waits_outside_the_queue_until_released(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    batch = client.BatchV1Api(cluster.api)
    with replica(cluster, tmp_path, namespace) as (_, stub):
        # The caller's suspend: Kueue must not admit it before ResumeJob.
        held = schedule(stub, timer(namespace, "held", duration="1s", queue=queue, suspend=True))
        first = schedule(stub, timer(namespace, "first", duration="3s", queue=queue))
        # A dependent job: held by the service until `first` succeeds, then queued.
        dependent = schedule(stub, timer(namespace, "dependent", duration="1s", queue=queue, after=[first]))
        time.sleep(3)
        for job, reason in ((held, "Suspended"), (dependent, "WaitingForDependencies")):
            current = status(stub, namespace, job)
            assert (current.state, current.reason) == (S.JOB_STATE_PENDING, reason), current
            assert current.queue == queue
            labels = batch.read_namespaced_job(job, namespace).metadata.labels
            assert "kueue.x-k8s.io/queue-name" not in labels
            assert batch.read_namespaced_job(job, namespace).spec.suspend
        wait_state(stub, namespace, dependent, S.JOB_STATE_SUCCEEDED, timeout=90)
        assert status(stub, namespace, dependent).queue_status.admitted
        assert status(stub, namespace, held).state == S.JOB_STATE_PENDING
        stub.ResumeJob(pb.ResumeJobRequest(namespace=namespace, job_id=held), timeout=10)
        wait_state(stub, namespace, held, S.JOB_STATE_SUCCEEDED, timeout=90)
        assert status(stub, namespace, held).queue_status.admitted


def test_a_queued_job_is_cancelled_without_running(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        blockers = [schedule(stub, timer(namespace, f"b{i}", duration="30s", queue=queue)) for i in range(2)]
        waiting = schedule(stub, timer(namespace, "waiting", duration="1s", queue=queue))
        assert status(stub, namespace, waiting).state == S.JOB_STATE_QUEUED
        stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=waiting), timeout=10)
        wait_until(
            "the cancelled job's Job failed",
            lambda: any(
                c.type == "Failed" and c.status == "True"
                for c in client.BatchV1Api(cluster.api)
                .read_namespaced_job(waiting, namespace)
                .status.conditions
                or ()
            ),
            timeout=60,
        )
        final = status(stub, namespace, waiting)
        assert final.state == S.JOB_STATE_CANCELLED
        assert final.succeeded == 0
        assert not final.pods
        for job in blockers:
            stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=job), timeout=10)


def test_a_schedules_runs_go_to_its_queue(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        stub.CreateSchedule(
            pb.CreateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    name="nightly",
                    namespace=namespace,
                    cron="0 3 * * *",
                    job=timer(namespace, "nightly", duration="1s", queue=queue, priority="low"),
                )
            ),
            timeout=15,
        )
        run = stub.TriggerSchedule(pb.TriggerScheduleRequest(namespace=namespace, name="nightly"), timeout=15)
        done = wait_state(stub, namespace, run.status.job_id, S.JOB_STATE_SUCCEEDED, timeout=90)
        assert (done.queue, done.priority, done.schedule) == (queue, "low", "nightly")
        assert done.queue_status.admitted


def test_bad_queue_input_names_the_field_and_creates_nothing(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        for fields, field, code in (
            ({"queue": "no-such-queue"}, "queue", grpc.StatusCode.INVALID_ARGUMENT),
            ({"queue": queue, "priority": "no-such-class"}, "priority", grpc.StatusCode.INVALID_ARGUMENT),
            ({"priority": "high"}, "priority", grpc.StatusCode.INVALID_ARGUMENT),
            ({"queue": "Not_A_Name"}, "queue", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            err = grpc_error(
                lambda fields=fields: stub.ScheduleJob(timer(namespace, "bad", **fields), timeout=15)
            )
            assert err.code() == code, (fields, err)
            assert str(err.details()).startswith(f"{field}:"), err.details()
        assert not client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items


def test_a_token_pinned_to_a_queue_may_submit_only_there(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    make_queue(cluster, namespace, f"{namespace[:50]}-x", cpu="100m")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"- name: tenant-a\n  token: tenant-a-token-0123456789\n  namespaces: [{namespace}]\n"
        f"  verbs: [schedule, read]\n  queues: [{queue}]\n"
    )
    try:
        with replica(cluster, tmp_path, namespace, AUTH_TOKENS_FILE=str(tokens)) as (_, stub):
            auth = (("authorization", "Bearer tenant-a-token-0123456789"),)
            job = stub.ScheduleJob(timer(namespace, "mine", queue=queue), timeout=15, metadata=auth).job_id
            for other in (f"{namespace[:50]}-x", ""):
                err = grpc_error(
                    lambda other=other: stub.ScheduleJob(
                        timer(namespace, "theirs", queue=other), timeout=15, metadata=auth
                    )
                )
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "may only submit to the queues" in str(err.details())
            names = [
                q.name
                for q in stub.ListQueues(
                    pb.ListQueuesRequest(namespace=namespace), timeout=10, metadata=auth
                ).queues
            ]
            assert names == [queue]
            assert [
                j.job_id
                for j in stub.ListJobs(
                    pb.ListJobsRequest(namespace=namespace), timeout=10, metadata=auth
                ).jobs
            ] == [job]
    finally:
        custom(cluster).delete_cluster_custom_object(*KUEUE, "clusterqueues", f"{namespace[:50]}-x")


def test_queue_depth_and_admission_wait_are_metrics(
    cluster: Cluster, namespace: str, queue: str, tmp_path: Path
) -> None:
    port = free_port()
    with replica(cluster, tmp_path, namespace, METRICS_PORT=str(port)) as (_, stub):
        jobs = [schedule(stub, timer(namespace, f"m{i}", duration="3s", queue=queue)) for i in range(4)]
        depth = f'jobscheduler_queue_pending_jobs{{namespace="{namespace}",queue="{queue}"}} 2.0'
        wait_until("queue depth 2", lambda: depth in scrape(port), timeout=30)
        for job in jobs:
            wait_state(stub, namespace, job, S.JOB_STATE_SUCCEEDED, timeout=90)
        count = (
            f'jobscheduler_queue_admission_wait_seconds_count{{namespace="{namespace}",queue="{queue}"}} 4.0'
        )
        wait_until("4 admission waits observed", lambda: count in scrape(port), timeout=30)
        assert f'jobscheduler_queue_pending_jobs{{namespace="{namespace}",queue="{queue}"}}' not in scrape(
            port
        )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


@pytest.mark.usefixtures("kueue")
def test_the_guides_grpcurl_examples_work_as_written(cluster: Cluster, tmp_path: Path) -> None:
    # docs/queueing.md's examples, on the LocalQueue team-a of k8s/examples/queueing.
    server = start_serve(cluster, tmp_path, port=free_port(), env={"K8S_NAMESPACE": "team-a"})
    address = f"localhost:{server.port}"
    try:
        (_, scheduled), (_, listed) = (
            _run_example(line, address=address, job_id="", pod="")
            for line in readme_grpcurl_lines("Scheduling into a queue")
        )
        status = scheduled[0]["status"]
        assert (status["queue"], status["priority"], status["namespace"]) == ("team-a", "low", "team-a")
        assert [job["job_id"] for job in listed[0]["jobs"]] == [status["job_id"]]
        [(method, queues)] = [
            _run_example(line, address=address, job_id="", pod="")
            for line in readme_grpcurl_lines("ListQueues")
        ]
        assert method == "ListQueues"
        assert queues[0]["available"] is True
        [team_a] = queues[0]["queues"]
        assert (team_a["name"], team_a["cluster_queue"], team_a["cohort"]) == ("team-a", "team-a", "tenants")
        client.BatchV1Api(cluster.api).delete_namespaced_job(
            status["job_id"], "team-a", propagation_policy="Background"
        )
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()
