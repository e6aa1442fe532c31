"""Kueue in the dev cluster (hack/devcluster.py kueue-up) queues Jobs as the service will use it.

The module adds Kueue to the session's cluster, applies the operator's example queues
(k8s/examples/queueing/: tenants team-a and team-b sharing a cohort), and removes Kueue again
at its end, so the rest of the suite runs on a cluster without it. The last test checks that
removal itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import DEVCLUSTER, ROOT, Cluster
from tests.helpers import job_condition, job_manifest, tool, wait_until

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
EXAMPLES = ROOT / "k8s" / "examples" / "queueing"
TENANTS = ("team-a", "team-b")
# Each tenant's ClusterQueue: 4 CPUs nominal, 4 more borrowable from the other (30-cluster-queues.yaml).
NOMINAL_CPU, BORROWABLE_CPU = 4, 4
TEST_LABEL = "jobscheduler.io/kueue-test"
TAG = pytest.StashKey[str]()  # the test's value of TEST_LABEL

pytestmark = pytest.mark.local_cluster


def apply_examples(cluster: Cluster) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            "apply",
            "--server-side",
            "-f",
            str(EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster with Kueue and the example queues; Kueue is removed at the end
    unless the cluster had it before this module (then it is put back)."""
    if not cluster.local:
        pytest.skip("adds and removes Kueue: needs the project's dev cluster")
    running = [sys.executable, str(DEVCLUSTER), "running", "--kueue"]
    had_kueue = subprocess.run(running, capture_output=True, check=False).returncode == 0
    cluster.devcluster("kueue-up")
    applied = apply_examples(cluster)
    assert applied.returncode == 0, applied.stderr
    try:
        yield cluster
    finally:
        core = client.CoreV1Api(cluster.api)
        cluster.devcluster("kueue-down")
        for name in TENANTS:
            try:
                core.delete_namespace(name, propagation_policy="Background")
            except client.ApiException as e:
                if e.status != 404:
                    raise
        if had_kueue:
            cluster.devcluster("kueue-up")


@pytest.fixture
def team_a(kueue: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The namespace team-a; the test's Jobs (labelled TEST_LABEL) are deleted afterwards and
    their Workloads waited out, so the next test finds the tenants' quota free."""
    tag = request.node.name[:63].strip("-_.").replace("[", "-").replace("]", "")
    request.node.stash[TAG] = tag
    yield "team-a"
    batch, custom = client.BatchV1Api(kueue.api), client.CustomObjectsApi(kueue.api)
    for ns in TENANTS:
        batch.delete_collection_namespaced_job(
            ns, label_selector=f"{TEST_LABEL}={tag}", propagation_policy="Background"
        )
        # Not left to the garbage collector: it learns of a new CRD's objects only at its next
        # resync (up to 30 s after kueue-up). Kueue releases their quota as they go.
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, "workloads")

    def workloads_gone() -> bool:
        return not any(
            custom.list_namespaced_custom_object(GROUP, VERSION, ns, "workloads")["items"] for ns in TENANTS
        )

    wait_until("the test's Workloads to be deleted", workloads_gone, timeout=60)


def queued_job(
    request: pytest.FixtureRequest,
    name: str,
    *,
    queue: str = "team-a",
    cpu: str = "100m",
    priority: str | None = None,
    duration: str | None = None,
) -> client.V1Job:
    """A Job for `queue`'s LocalQueue, created suspended (Kueue unsuspends it on admission)."""
    job = job_manifest(name, annotations={"sim.jobscheduler.io/duration": duration} if duration else None)
    job.metadata.labels = {QUEUE_LABEL: queue, TEST_LABEL: request.node.stash[TAG]}
    if priority:
        job.metadata.labels[PRIORITY_LABEL] = priority
    job.spec.suspend = True
    job.spec.template.spec.containers[0].resources.requests = {"cpu": cpu, "memory": "64Mi"}
    return job


def workload_of(cluster: Cluster, namespace: str, job: client.V1Job) -> dict[str, Any] | None:
    items = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloads"
    )["items"]
    return next(
        (
            w
            for w in items
            if any(o["uid"] == job.metadata.uid for o in w["metadata"].get("ownerReferences", []))
        ),
        None,
    )


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == kind), None
    )


def admitted(batch: client.BatchV1Api, namespace: str, name: str) -> bool:
    return batch.read_namespaced_job(name, namespace).spec.suspend is False


def test_example_queues_apply_cleanly_and_become_active(kueue: Cluster) -> None:
    again = apply_examples(kueue)  # the fixture applied them once; a second apply is clean too

    assert again.returncode == 0, again.stderr
    assert again.stdout.count("serverside-applied") == 10, again.stdout
    custom = client.CustomObjectsApi(kueue.api)
    for name in TENANTS:
        cq = wait_until(
            f"ClusterQueue {name} Active",
            lambda n=name: condition(
                custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", n), "Active"
            )
            and custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", n),
            timeout=30,
        )
        assert condition(cq, "Active")["status"] == "True"
        assert cq["spec"]["cohortName"] == "tenants"
        lq = custom.get_namespaced_custom_object(GROUP, VERSION, name, "localqueues", name)
        assert lq["spec"]["clusterQueue"] == name
    priorities = {
        p["metadata"]["name"]: p["value"]
        for p in custom.list_cluster_custom_object(GROUP, VERSION, "workloadpriorityclasses")["items"]
    }
    assert priorities == {"high": 1000, "low": 100}


def test_suspended_job_with_queue_label_is_admitted_and_gets_a_workload(
    kueue: Cluster, team_a: str, request: pytest.FixtureRequest
) -> None:
    batch = client.BatchV1Api(kueue.api)
    created = time.monotonic()
    job = batch.create_namespaced_job(team_a, queued_job(request, "queued"))

    wait_until(
        "Kueue to unsuspend the Job", lambda: admitted(batch, team_a, "queued"), timeout=30, interval=0.05
    )
    latency = time.monotonic() - created

    workload = workload_of(kueue, team_a, job)
    assert workload is not None
    assert workload["spec"]["queueName"] == "team-a"
    assert condition(workload, "QuotaReserved")["status"] == "True"
    assert condition(workload, "Admitted")["status"] == "True"
    assert workload["status"]["admission"]["clusterQueue"] == "team-a"
    wait_until("Job Complete", lambda: job_condition(batch.read_namespaced_job("queued", team_a), "Complete"))
    request.node.user_properties.append(("admission_latency_s", f"{latency:.2f}"))


def test_job_without_queue_label_is_left_alone(
    kueue: Cluster, team_a: str, request: pytest.FixtureRequest
) -> None:
    # manageJobsWithoutQueueName: false - no Workload, the Job runs as if Kueue were not there.
    batch = client.BatchV1Api(kueue.api)
    job = job_manifest("unqueued")
    job.metadata.labels = {TEST_LABEL: request.node.stash[TAG]}
    created = batch.create_namespaced_job(team_a, job)

    wait_until(
        "Job Complete", lambda: job_condition(batch.read_namespaced_job("unqueued", team_a), "Complete")
    )
    assert workload_of(kueue, team_a, created) is None


def test_job_beyond_the_quota_stays_suspended_with_quota_not_reserved(
    kueue: Cluster, team_a: str, request: pytest.FixtureRequest
) -> None:
    batch = client.BatchV1Api(kueue.api)
    too_big = str(NOMINAL_CPU + BORROWABLE_CPU + 1)
    job = batch.create_namespaced_job(team_a, queued_job(request, "too-big", cpu=too_big))

    workload = wait_until(
        "a Workload with QuotaReserved=False",
        lambda: (w := workload_of(kueue, team_a, job)) and condition(w, "QuotaReserved") and w,
        timeout=30,
    )
    assert condition(workload, "QuotaReserved")["status"] == "False"
    assert condition(workload, "QuotaReserved")["reason"] == "Pending"
    time.sleep(2)
    assert batch.read_namespaced_job("too-big", team_a).spec.suspend is True


def pending_workloads(cluster: Cluster, cluster_queue: str) -> dict[str, Any]:
    """GET of the visibility API, as `kubectl get --raw` would (the client has no method for it)."""
    path = f"/apis/visibility.kueue.x-k8s.io/v1beta2/clusterqueues/{cluster_queue}/pendingworkloads"
    reply = cluster.api.rest_client.pool_manager.request(
        "GET", cluster.api.configuration.host + path, timeout=10
    )
    assert reply.status == 200, reply.data[:500]
    return dict(json.loads(reply.data))


def test_visibility_api_lists_pending_workloads_with_their_positions(
    kueue: Cluster, team_a: str, request: pytest.FixtureRequest
) -> None:
    batch = client.BatchV1Api(kueue.api)
    # The whole quota (nominal and borrowable) for 10 minutes, at `high` so nothing preempts it...
    hog = queued_job(request, "hog", cpu=str(NOMINAL_CPU + BORROWABLE_CPU), priority="high", duration="10m")
    batch.create_namespaced_job(team_a, hog)
    wait_until("the hog admitted", lambda: admitted(batch, team_a, "hog"), timeout=30)
    # ...then two Jobs that must wait: the later one first in line, by its priority.
    waiting = [
        batch.create_namespaced_job(team_a, queued_job(request, "early-low", cpu="1", priority="low")),
        batch.create_namespaced_job(team_a, queued_job(request, "later-high", cpu="1", priority="high")),
    ]
    jobs = {}
    for job in waiting:
        workload = wait_until("its Workload", lambda j=job: workload_of(kueue, team_a, j))
        jobs[workload["metadata"]["name"]] = job.metadata.name

    listed = wait_until(
        "both Jobs listed as pending",
        lambda: (p := pending_workloads(kueue, "team-a")) and len(p.get("items", [])) == 2 and p,
        timeout=30,
    )

    by_job = {jobs[w["metadata"]["name"]]: w for w in listed["items"]}
    assert (by_job["later-high"]["positionInClusterQueue"], by_job["later-high"]["priority"]) == (0, 1000)
    assert (by_job["early-low"]["positionInClusterQueue"], by_job["early-low"]["priority"]) == (1, 100)
    assert by_job["later-high"]["positionInLocalQueue"] == 0
    assert by_job["early-low"]["positionInLocalQueue"] == 1
    assert {(w["metadata"]["namespace"], w["localQueueName"]) for w in listed["items"]} == {
        ("team-a", "team-a")
    }
    assert all(batch.read_namespaced_job(j.metadata.name, team_a).spec.suspend for j in waiting)


def test_high_priority_job_preempts_a_low_priority_one_of_the_same_tenant(
    kueue: Cluster, team_a: str, request: pytest.FixtureRequest
) -> None:
    batch = client.BatchV1Api(kueue.api)
    low = queued_job(request, "low", cpu=str(NOMINAL_CPU + BORROWABLE_CPU), priority="low", duration="10m")
    low = batch.create_namespaced_job(team_a, low)
    wait_until("the low-priority Job admitted", lambda: admitted(batch, team_a, "low"), timeout=30)

    high = queued_job(request, "high", cpu=str(NOMINAL_CPU), priority="high", duration="10m")
    batch.create_namespaced_job(team_a, high)

    wait_until("the high-priority Job admitted", lambda: admitted(batch, team_a, "high"), timeout=60)
    assert batch.read_namespaced_job("low", team_a).spec.suspend is True
    evicted = condition(workload_of(kueue, team_a, low), "Evicted")
    assert evicted["status"] == "True"
    assert evicted["reason"] == "Preempted"


def test_tenant_below_its_share_reclaims_the_quota_the_other_borrowed(
    kueue: Cluster, team_a: str, request: pytest.FixtureRequest
) -> None:
    batch = client.BatchV1Api(kueue.api)
    # team-a takes its own quota and all of team-b's idle quota...
    borrower = queued_job(request, "borrower", cpu=str(NOMINAL_CPU + BORROWABLE_CPU), duration="10m")
    borrower = batch.create_namespaced_job(team_a, borrower)
    wait_until("team-a's Job admitted", lambda: admitted(batch, team_a, "borrower"), timeout=30)

    # ...until team-b asks for its nominal quota: same priority, so fair sharing decides.
    owner = queued_job(request, "owner", queue="team-b", cpu=str(NOMINAL_CPU), duration="10m")
    batch.create_namespaced_job("team-b", owner)

    wait_until("team-b's Job admitted", lambda: admitted(batch, "team-b", "owner"), timeout=60)
    assert batch.read_namespaced_job("borrower", team_a).spec.suspend is True
    assert condition(workload_of(kueue, team_a, borrower), "Evicted")["reason"] == "Preempted"


def test_kueue_down_removes_kueue_and_plain_jobs_still_run(kueue: Cluster, namespace: str) -> None:
    # Last in the module: the fixture's own kueue-down then has nothing left to do.
    kueue.devcluster("kueue-down")

    crds = client.ApiextensionsV1Api(kueue.api).list_custom_resource_definition().items
    assert [c.metadata.name for c in crds if c.spec.group == GROUP] == []
    admission = client.AdmissionregistrationV1Api(kueue.api)
    hooks = [
        *admission.list_mutating_webhook_configuration().items,
        *admission.list_validating_webhook_configuration().items,
    ]
    assert [h.metadata.name for h in hooks if "kueue" in h.metadata.name] == []
    services = client.ApiregistrationV1Api(kueue.api).list_api_service().items
    assert [s.metadata.name for s in services if "kueue" in s.metadata.name] == []
    assert "kueue-system" not in {n.metadata.name for n in client.CoreV1Api(kueue.api).list_namespace().items}
    assert not (kueue.kubeconfig.parent / "kueue.json").exists()

    batch = client.BatchV1Api(kueue.api)
    batch.create_namespaced_job(namespace, job_manifest("plain"))
    wait_until(
        "Job Complete", lambda: job_condition(batch.read_namespaced_job("plain", namespace), "Complete")
    )
