"""The local control plane behaves like Kubernetes: Jobs, CronJobs, PodSecurity, RBAC, restarts.

These tests pin down the cluster every other integration test relies on, including the kwok
Stages (hack/kwok/stages.yaml) that drive pods through success, failure and waiting states.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from hack import toolversions
from tests.conftest import ROOT, Cluster
from tests.helpers import job_condition, job_manifest, restricted_pod_spec, wait_until

VERSIONS = toolversions.selected()  # KUBERNETES_VERSION from the environment picks one of the matrix


def pods_of(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def test_fake_nodes_are_ready_with_allocatable_cpu_and_memory(cluster: Cluster) -> None:
    nodes = client.CoreV1Api(cluster.api).list_node(label_selector="type=kwok").items
    ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)]
    assert len(ready) >= 2
    for node in ready:
        assert int(node.status.allocatable["cpu"]) >= 1
        assert node.status.allocatable["memory"].endswith("Gi")


def test_api_server_reports_the_pinned_kubernetes_version(cluster: Cluster) -> None:
    info = client.VersionApi(cluster.api).get_code()
    if cluster.local:
        assert info.git_version == VERSIONS["KUBERNETES_VERSION"]
    assert info.major == "1"


def test_job_runs_to_complete_on_a_fake_node(cluster: Cluster, namespace: str) -> None:
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job_manifest("ok"))

    job = wait_until(
        "Job Complete",
        lambda: job_condition(batch.read_namespaced_job("ok", namespace), "Complete")
        and batch.read_namespaced_job("ok", namespace),
    )
    assert job.status.succeeded == 1
    [pod] = pods_of(core, namespace, "ok")
    assert pod.spec.node_name.startswith("kwok-node-")
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_fake_nodes_serve_pod_logs_through_the_api_server(cluster: Cluster, namespace: str) -> None:
    # kwok's ClusterLogs (hack/devcluster.py) serves hack/kwok/pod.log for every pod, reached by
    # the API server at the node's InternalIP and status.daemonEndpoints port, as a kubelet is.
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job_manifest("logs"))
    wait_until(
        "Job Complete", lambda: job_condition(batch.read_namespaced_job("logs", namespace), "Complete")
    )
    [pod] = pods_of(core, namespace, "logs")
    node = core.read_node(pod.spec.node_name)
    assert node.status.daemon_endpoints.kubelet_endpoint.port > 0
    text = [line.split(" ", 3)[3] for line in (ROOT / "hack" / "kwok" / "pod.log").read_text().splitlines()]
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace).splitlines() == text
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=1).splitlines() == text[-1:]


def test_failing_pod_with_backoff_limit_2_fails_the_job_after_3_pods(
    cluster: Cluster, namespace: str
) -> None:
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    sim = {"sim.jobscheduler.io/exit-code": "3", "sim.jobscheduler.io/duration": "200ms"}
    batch.create_namespaced_job(namespace, job_manifest("fails", annotations=sim, backoff_limit=2))

    # The Job controller backs off 10 s, then 20 s between retries.
    cond = wait_until(
        "Job Failed",
        lambda: job_condition(batch.read_namespaced_job("fails", namespace), "Failed"),
        timeout=90,
    )
    assert cond.reason == "BackoffLimitExceeded"
    pods = pods_of(core, namespace, "fails")
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Failed"
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (3, "Error")


def test_active_deadline_ends_a_long_pod_with_deadline_exceeded(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    sim = {"sim.jobscheduler.io/duration": "10m"}
    batch.create_namespaced_job(namespace, job_manifest("slow", annotations=sim, active_deadline_seconds=2))

    cond = wait_until(
        "Job Failed",
        lambda: job_condition(batch.read_namespaced_job("slow", namespace), "Failed"),
        timeout=30,
    )
    assert cond.reason == "DeadlineExceeded"
    # The Job controller deletes the running pod; kwok completes the deletion.
    core = client.CoreV1Api(cluster.api)
    wait_until("pods deleted", lambda: not pods_of(core, namespace, "slow"), timeout=30)


def test_ttl_after_finished_deletes_the_finished_job(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job_manifest("ephemeral", ttl_seconds_after_finished=1))

    def gone() -> bool:
        try:
            batch.read_namespaced_job("ephemeral", namespace)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_until("TTL controller to delete the Job", gone, timeout=45)


@pytest.mark.parametrize(("exit_code", "reason"), [("137", "OOMKilled"), ("1", "Error")])
def test_pod_fails_with_the_annotated_exit_code_and_reason(
    cluster: Cluster, namespace: str, exit_code: str, reason: str
) -> None:
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    sim = {
        "sim.jobscheduler.io/exit-code": exit_code,
        "sim.jobscheduler.io/reason": reason,
        "sim.jobscheduler.io/duration": "100ms",
    }
    batch.create_namespaced_job(namespace, job_manifest("oom", annotations=sim))

    pod = wait_until(
        "pod Failed",
        lambda: next((p for p in pods_of(core, namespace, "oom") if p.status.phase == "Failed"), None),
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (int(exit_code), reason)


@pytest.mark.parametrize(
    ("reason", "phase"),
    [
        ("ImagePullBackOff", "Pending"),
        ("CreateContainerConfigError", "Pending"),
        ("CrashLoopBackOff", "Running"),
    ],
)
def test_pod_is_held_in_the_annotated_waiting_reason(
    cluster: Cluster, namespace: str, reason: str, phase: str
) -> None:
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    sim = {"sim.jobscheduler.io/waiting-reason": reason, "sim.jobscheduler.io/duration": "100ms"}
    batch.create_namespaced_job(namespace, job_manifest("stuck", annotations=sim))

    def waiting() -> client.V1Pod | None:
        for pod in pods_of(core, namespace, "stuck"):
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.waiting:
                return pod
        return None

    pod = wait_until("container waiting", waiting)
    assert pod.status.container_statuses[0].state.waiting.reason == reason
    assert pod.status.phase == phase
    # It stays there: the pod neither starts running nor finishes.
    time.sleep(1.5)
    again = core.read_namespaced_pod(pod.metadata.name, namespace)
    assert again.status.container_statuses[0].state.waiting.reason == reason
    assert again.status.phase == phase


def test_start_delay_keeps_the_pod_pending_then_running(cluster: Cluster, namespace: str) -> None:
    batch, core = client.BatchV1Api(cluster.api), client.CoreV1Api(cluster.api)
    sim = {"sim.jobscheduler.io/start-delay": "2s", "sim.jobscheduler.io/duration": "3s"}
    batch.create_namespaced_job(namespace, job_manifest("phases", annotations=sim))

    pod = wait_until(
        "pod scheduled",
        lambda: next((p for p in pods_of(core, namespace, "phases") if p.spec.node_name), None),
    )
    assert pod.status.phase == "Pending"
    wait_until(
        "pod Running",
        lambda: next((p for p in pods_of(core, namespace, "phases") if p.status.phase == "Running"), None),
    )
    wait_until(
        "pod Succeeded",
        lambda: next((p for p in pods_of(core, namespace, "phases") if p.status.phase == "Succeeded"), None),
    )


@pytest.mark.slow
def test_cronjob_every_minute_creates_a_job_within_70s(cluster: Cluster, namespace: str) -> None:
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_cron_job(
        namespace,
        client.V1CronJob(
            metadata=client.V1ObjectMeta(name="tick"),
            spec=client.V1CronJobSpec(
                schedule="*/1 * * * *",
                job_template=client.V1JobTemplateSpec(
                    spec=client.V1JobSpec(backoff_limit=0, template=restricted_pod_spec())
                ),
            ),
        ),
    )
    jobs = wait_until(
        "a Job from the CronJob",
        lambda: [
            j
            for j in batch.list_namespaced_job(namespace).items
            if any(o.kind == "CronJob" and o.name == "tick" for o in j.metadata.owner_references or [])
        ],
        timeout=70,
        interval=1,
    )
    assert jobs[0].metadata.name.startswith("tick-")


def test_privileged_pod_is_rejected_in_a_restricted_namespace(cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    template = restricted_pod_spec()
    template.spec.containers[0].security_context = client.V1SecurityContext(privileged=True)
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="root"), spec=template.spec)

    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(namespace, pod)
    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body
    assert not core.list_namespaced_pod(namespace).items


def test_service_account_needs_a_role_binding_to_create_jobs(cluster: Cluster, namespace: str) -> None:
    core, rbac = client.CoreV1Api(cluster.api), client.RbacAuthorizationV1Api(cluster.api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="launcher"))
    )
    token = core.create_namespaced_service_account_token(
        "launcher",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token

    configuration = client.Configuration()
    configuration.host = cluster.api.configuration.host
    configuration.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as as_sa:
        batch = client.BatchV1Api(as_sa)
        with pytest.raises(client.ApiException) as err:
            batch.create_namespaced_job(namespace, job_manifest("denied"))
        assert err.value.status == 403
        assert "system:serviceaccount:" + namespace + ":launcher" in err.value.body

        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="launch-jobs"),
                rules=[client.V1PolicyRule(api_groups=["batch"], resources=["jobs"], verbs=["create"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="launch-jobs"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="launch-jobs"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="launcher", namespace=namespace)],
            ),
        )

        def allowed() -> client.V1Job | None:
            # RBAC is served from the API server's informer cache: allow a moment to catch up.
            try:
                return batch.create_namespaced_job(namespace, job_manifest("allowed"))
            except client.ApiException as e:
                if e.status != 403:
                    raise
                return None

        job = wait_until("RoleBinding to take effect", allowed, timeout=10)
        assert job.metadata.name == "allowed"


@pytest.mark.local_cluster
def test_api_server_killed_and_restarted_keeps_the_data(local_cluster: Cluster, namespace: str) -> None:
    core = client.CoreV1Api(local_cluster.api)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="survivor"), data={"k": "v"})
    )

    local_cluster.devcluster("restart", "kube-apiserver", "--signal", "KILL")

    def read() -> client.V1ConfigMap | None:
        try:
            return core.read_namespaced_config_map("survivor", namespace)
        except Exception:  # connection refused while it starts
            return None

    assert wait_until("ConfigMap readable", read, timeout=60).data == {"k": "v"}


@pytest.mark.local_cluster
def test_second_up_while_running_is_harmless(local_cluster: Cluster) -> None:
    pids_dir = local_cluster.kubeconfig.parent / "pids"
    before = {p.name: p.read_text() for p in pids_dir.iterdir()}

    out = local_cluster.devcluster("up")

    assert "already running" in out.stderr
    assert {p.name: p.read_text() for p in pids_dir.iterdir()} == before


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.local_cluster
def test_down_stops_every_process_and_removes_the_state(local_cluster: Cluster, tmp_path: Path) -> None:
    # A second, throwaway cluster in its own state directory, so the shared one keeps serving.
    state = tmp_path / "cluster"
    env = {"JOBSCHEDULER_DEVCLUSTER_DIR": str(state), "JOBSCHEDULER_DEVCLUSTER_NODES": "1"}
    local_cluster.devcluster("up", env=env)
    pids = [int(p.read_text()) for p in (state / "pids").iterdir()]
    assert len(pids) == 5
    assert all(_alive(pid) for pid in pids)

    local_cluster.devcluster("down", env=env)

    assert [pid for pid in pids if _alive(pid)] == []
    assert not state.exists()
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True).stdout.split()
    assert leftovers == []


@pytest.mark.local_cluster
@pytest.mark.usefixtures("local_cluster")
def test_components_report_their_real_versions() -> None:
    bin_dir = Path(
        subprocess.run(
            ["bash", str(ROOT / "hack" / "tools.sh"), "path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    want = VERSIONS["KUBERNETES_VERSION"]
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        out = subprocess.run([str(bin_dir / name), "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"Kubernetes {want}"
    kubectl = subprocess.run(
        [str(bin_dir / "kubectl"), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f'"gitVersion": "{want}"' in kubectl.stdout
    etcd = subprocess.run([str(bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=True)
    assert f"etcd Version: {VERSIONS['ETCD_VERSION'].lstrip('v')}" in etcd.stdout


def test_warm_tool_cache_builds_nothing() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert "building" not in out.stderr
    assert "all tools ready" in out.stderr
