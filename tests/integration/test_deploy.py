"""The k8s/ manifests on the real cluster: they validate and apply, and the ServiceAccount's
Role is exactly enough. The service runs out of cluster with that ServiceAccount's token and
does everything it does; `kubectl auth can-i --list` shows that it may do nothing more."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import ROOT, Cluster
from tests.helpers import record_difference, tool, wait_until
from tests.integration.conftest import free_port, service_account_kubeconfig, start_serve
from tests.integration.test_notify import Receiver, make_secret
from tests.realnode.deployed import exclusive_namespace

NAMESPACE = "jobscheduler"  # as in k8s/kustomization.yaml: operators apply it unchanged
SA = f"system:serviceaccount:{NAMESPACE}:jobscheduler"
TIMER = pb.TimerJob(duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053")

# `kubectl auth can-i --list` for the ServiceAccount, less what every ServiceAccount may do (a
# fresh one's list): our Role's rules and the ClusterRole's one.
EXPECTED_RESOURCE_RULES = {
    ("jobs.batch", "create get list watch patch delete"),
    ("pods", "list watch"),
    ("pods/log", "get"),
    ("secrets", "create get"),
    ("configmaps", "create get list update delete"),
    ("cronjobs.batch", "create get list update patch delete"),
    ("leases.coordination.k8s.io", "create get patch"),
    ("priorityclasses.scheduling.k8s.io", "get"),  # the ClusterRole: priority_class_name exists
    # Queueing through Kueue: the Role's and the ClusterRole jobscheduler-queues'.
    ("localqueues.kueue.x-k8s.io", "get list"),
    ("workloads.kueue.x-k8s.io", "list"),
    ("localqueues.visibility.kueue.x-k8s.io/pendingworkloads", "get"),
    ("workloadpriorityclasses.kueue.x-k8s.io", "get"),
    ("clusterqueues.kueue.x-k8s.io", "get"),
}
# What every ServiceAccount may do on the default version (the cluster's default bindings).
EVERY_SERVICE_ACCOUNT_RULES = {
    ("selfsubjectreviews.authentication.k8s.io", "create"),
    ("selfsubjectaccessreviews.authorization.k8s.io", "create"),
    ("selfsubjectrulesreviews.authorization.k8s.io", "create"),
}
EXPECTED_NON_RESOURCE_URLS = {
    "/.well-known/openid-configuration/",
    "/.well-known/openid-configuration",
    "/api/*",
    "/api",
    "/apis/*",
    "/apis",
    "/healthz",
    "/livez",
    "/openapi/*",
    "/openapi",
    "/openid/v1/jwks/",
    "/openid/v1/jwks",
    "/readyz",
    "/version/",
    "/version",
}


def kubectl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    binary = tool("kubectl")
    return subprocess.run(
        [binary, "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Iterator[str]:
    """k8s/ applied as an operator would: Namespace first (a server-side dry run of objects
    in a namespace that does not exist yet cannot pass), then the dry run, then for real."""
    # Namespace `jobscheduler` is also where the real-node suite deploys the service: one at a time.
    with exclusive_namespace():
        yield from _deploy(cluster)


def _deploy(cluster: Cluster) -> Iterator[str]:
    core = client.CoreV1Api(cluster.api)
    if not _namespace_gone(core):  # left over from an interrupted run
        core.delete_namespace(NAMESPACE)
        wait_until("old namespace gone", lambda: _namespace_gone(core), timeout=60)
    ns = kubectl(cluster, "apply", "-f", str(ROOT / "k8s" / "namespace.yaml"))
    assert ns.returncode == 0, ns.stderr
    dry = kubectl(cluster, "apply", "--dry-run=server", "-k", str(ROOT / "k8s"))
    assert dry.returncode == 0, dry.stderr
    applied = kubectl(cluster, "apply", "-k", str(ROOT / "k8s"))
    assert applied.returncode == 0, applied.stderr
    try:
        yield dry.stdout
    finally:
        core.delete_namespace(NAMESPACE, propagation_policy="Background")


def _namespace_gone(core: client.CoreV1Api) -> bool:
    try:
        core.read_namespace(NAMESPACE)
    except client.ApiException as e:
        return e.status == 404
    return False


def test_server_side_dry_run_accepts_every_manifest(deployed: str) -> None:
    kinds = set(
        re.findall(r"^([a-z0-9.]+)/\S+ (?:created|configured|unchanged) \(server dry run\)$", deployed, re.M)
    )
    assert kinds == {
        "namespace",
        "serviceaccount",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "configmap",
        "secret",
        "service",
        "deployment.apps",
        "poddisruptionbudget.policy",
        "networkpolicy.networking.k8s.io",
    }


@pytest.mark.usefixtures("deployed")
def test_rbac_yaml_alone_applies_the_objects_the_kustomization_applied(cluster: Cluster) -> None:
    # The original service's troubleshooting: `kubectl apply -f k8s/rbac.yaml`, with no -n and
    # no kustomize: the file names its namespace and holds the ServiceAccount, Role and RoleBinding.
    out = kubectl(cluster, "apply", "-f", str(ROOT / "k8s" / "rbac.yaml"))
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == [
        "clusterrole.rbac.authorization.k8s.io/jobscheduler-priorityclasses unchanged",
        "clusterrole.rbac.authorization.k8s.io/jobscheduler-queues unchanged",
        "clusterrolebinding.rbac.authorization.k8s.io/jobscheduler-priorityclasses unchanged",
        "clusterrolebinding.rbac.authorization.k8s.io/jobscheduler-queues unchanged",
        "role.rbac.authorization.k8s.io/jobscheduler unchanged",
        "rolebinding.rbac.authorization.k8s.io/jobscheduler unchanged",
        "serviceaccount/jobscheduler unchanged",
    ]


@pytest.mark.usefixtures("deployed")
def test_deployment_runs_two_restricted_replicas_with_grpc_probes(cluster: Cluster) -> None:
    apps = client.AppsV1Api(cluster.api)
    deployment = wait_until(
        "2 available replicas",
        lambda: (
            d
            if (d := apps.read_namespaced_deployment("jobscheduler", NAMESPACE)).status.available_replicas
            == 2
            else None
        ),
        timeout=60,
    )
    pod = deployment.spec.template.spec
    [container] = pod.containers
    assert deployment.spec.replicas == 2
    assert container.readiness_probe.grpc.port == 50054
    assert container.readiness_probe.grpc.service == "jobscheduler.JobScheduler"
    assert container.liveness_probe.grpc.service == "liveness"
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    sc = container.security_context
    assert (sc.read_only_root_filesystem, sc.allow_privilege_escalation, sc.capabilities.drop) == (
        True,
        False,
        ["ALL"],
    )
    assert container.resources.requests
    assert container.resources.limits
    # AUTH_TOKENS_FILE (from the ConfigMap) lies in the read-only mount of the tokens Secret.
    [tokens] = [v for v in pod.volumes if v.secret is not None]
    [mount] = [m for m in container.volume_mounts if m.name == tokens.name]
    config = client.CoreV1Api(cluster.api).read_namespaced_config_map("jobscheduler-config", NAMESPACE)
    assert (tokens.secret.secret_name, mount.read_only) == ("jobscheduler-tokens", True)
    assert config.data["AUTH_TOKENS_FILE"] == f"{mount.mount_path}/tokens.yaml"
    assert {
        p.port
        for p in client.CoreV1Api(cluster.api).read_namespaced_service("jobscheduler", NAMESPACE).spec.ports
    } == {50054, 8080}
    labels = client.CoreV1Api(cluster.api).read_namespace(NAMESPACE).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.usefixtures("deployed")
def test_the_role_is_sufficient_for_the_full_grpc_flow(cluster: Cluster, tmp_path: Path) -> None:
    kubeconfig = service_account_kubeconfig(cluster, NAMESPACE, "jobscheduler", tmp_path / "sa.kubeconfig")
    receiver = Receiver()
    receiver.start()
    hooks = f"notify-hooks-{secrets.token_hex(3)}"
    make_secret(cluster, NAMESPACE, name=hooks)
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={
            "KUBECONFIG": str(kubeconfig),
            "K8S_NAMESPACE": NAMESPACE,
            "ALLOWED_NOTIFY_URLS": receiver.url,
            "LEADER_LEASE_SECONDS": "3",
        },
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )

            dry = stub.ScheduleJob(
                pb.ScheduleJobRequest(name="dry", timer_job=TIMER, dry_run=True), timeout=10
            )
            assert "kind: Job" in dry.manifest

            quick = stub.ScheduleJob(
                pb.ScheduleJobRequest(name="quick", timer_job=TIMER, request_id="r1"), timeout=10
            )
            again = stub.ScheduleJob(
                pb.ScheduleJobRequest(name="quick", timer_job=TIMER, request_id="r1"), timeout=10
            )
            assert (again.job_id, again.created) == (quick.job_id, False)
            wait_until(
                "SUCCEEDED",
                lambda: stub.GetJobStatus(
                    pb.GetJobStatusRequest(job_id=quick.job_id), timeout=10
                ).status.state
                == pb.JOB_STATE_SUCCEEDED,
            )
            # GetJobLogs needs pods/log get (without it: PERMISSION_DENIED from Kubernetes).
            chunks = stub.GetJobLogs(pb.GetJobLogsRequest(job_id=quick.job_id), timeout=10)
            assert [line for chunk in chunks for line in chunk.lines]

            slow = stub.ScheduleJob(
                pb.ScheduleJobRequest(
                    name="slow", timer_job=TIMER, annotations={"sim.jobscheduler.io/duration": "10m"}
                ),
                timeout=10,
            )
            wait_until(
                "RUNNING",
                lambda: stub.GetJobStatus(pb.GetJobStatusRequest(job_id=slow.job_id), timeout=10).status.state
                == pb.JOB_STATE_RUNNING,
            )
            cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=slow.job_id), timeout=10)
            assert cancelled.status.state == pb.JOB_STATE_CANCELLED

            listed = stub.ListJobs(pb.ListJobsRequest(label_selector="", page_size=10), timeout=10)
            assert {j.job_id for j in listed.jobs} == {quick.job_id, slow.job_id}

            with pytest.raises(grpc.RpcError) as err:
                stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job-missing"), timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            # Nothing outside its namespace: Kubernetes refuses, and the caller is told why.
            with pytest.raises(grpc.RpcError) as err:
                stub.ScheduleJob(
                    pb.ScheduleJobRequest(name="x", namespace="default", timer_job=TIMER), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # Templates: each ConfigMap verb the Role grants for them, used as the ServiceAccount.
            spec = pb.Template(name="t", job=pb.ScheduleJobRequest(timer_job=TIMER))
            assert stub.CreateTemplate(pb.CreateTemplateRequest(template=spec), timeout=10).version == 1
            spec.description = "second"
            assert stub.UpdateTemplate(pb.UpdateTemplateRequest(template=spec), timeout=10).version == 2
            listed = stub.ListTemplates(pb.ListTemplatesRequest(), timeout=10).templates
            assert [(t.name, t.latest_version) for t in listed] == [("t", 2)]
            from_v1 = stub.ScheduleJob(
                pb.ScheduleJobRequest(template="t", template_version=1, dry_run=True), timeout=10
            )
            assert "jobscheduler.io/template-version: '1'" in from_v1.manifest
            stub.DeleteTemplate(pb.DeleteTemplateRequest(name="t"), timeout=10)

            # Notifications: the sink's Secret read (get), the Job's delivery state and finalizer
            # patched by the leader.
            notified = stub.ScheduleJob(
                pb.ScheduleJobRequest(
                    name="notified", timer_job=TIMER, notify=[pb.NotifySink(url=receiver.url, secret=hooks)]
                ),
                timeout=10,
            )
            wait_until("the event received", lambda: len(receiver.received) == 1 or None, timeout=60)
            assert json.loads(receiver.received[0].body)["subject"] == notified.job_id
            wait_until(
                "the finalizer dropped",
                lambda: not client.BatchV1Api(cluster.api)
                .read_namespaced_job(notified.job_id, NAMESPACE)
                .metadata.finalizers,
                timeout=30,
            )
    finally:
        receiver.stop()
        client.CoreV1Api(cluster.api).delete_namespaced_secret(hooks, NAMESPACE)
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()


def can_i_list(cluster: Cluster, user: str) -> tuple[set[tuple[str, str]], set[str]]:
    """`kubectl auth can-i --list --as USER` in the namespace: (resource, verbs) rules and URLs."""
    out = kubectl(cluster, "auth", "can-i", "--list", f"--as={user}", "-n", NAMESPACE)
    assert out.returncode == 0, out.stderr
    resource_rules, urls = set(), set()
    for line in out.stdout.splitlines()[1:]:
        fields = re.findall(r"\[[^\]]*\]|\S+", line)
        verbs = fields[-1].strip("[]")
        if fields[0].startswith("["):  # a non-resource URL line: [url] [] [verbs]
            assert verbs == "get", line
            urls.add(fields[0].strip("[]"))
        else:
            resource_rules.add((fields[0], verbs))
    return resource_rules, urls


@pytest.mark.usefixtures("deployed")
def test_the_role_grants_nothing_more(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    rules, urls = can_i_list(cluster, SA)
    core = client.CoreV1Api(cluster.api)
    fresh = f"baseline-{secrets.token_hex(3)}"
    core.create_namespaced_service_account(
        NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=fresh))
    )
    try:
        every_rules, every_urls = can_i_list(cluster, f"system:serviceaccount:{NAMESPACE}:{fresh}")
    finally:
        core.delete_namespaced_service_account(fresh, NAMESPACE)

    assert rules - every_rules == EXPECTED_RESOURCE_RULES
    assert urls == every_urls  # the Role adds no URL
    # Minors differ in what they grant every ServiceAccount: named, not failed (v1.37 lets each
    # read ClusterTrustBundles, ClusterRoleBinding system:cluster-trust-bundle-discovery).
    version = client.VersionApi(cluster.api).get_code().git_version
    assert every_rules >= EVERY_SERVICE_ACCOUNT_RULES
    for resource, verbs in sorted(every_rules - EVERY_SERVICE_ACCOUNT_RULES):
        record_difference(
            request, f"{version}: every ServiceAccount may also {verbs} {resource} (default RBAC)"
        )
    if every_urls != EXPECTED_NON_RESOURCE_URLS:
        record_difference(
            request, f"{version}: the URLs every ServiceAccount may get are {sorted(every_urls)}"
        )
