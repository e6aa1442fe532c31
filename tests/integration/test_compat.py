"""Start-up against API servers that lack what the service needs, or do not answer: a clear
error naming the missing API (or what to check), exit 1, never a crash later; and the version
the service found in its start-up line (jobscheduler.kube.compat)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hack import toolversions
from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.kube.connection import load_api_client
from jobscheduler.kube.gateway import KubeGateway
from tests.conftest import Cluster
from tests.helpers import record_difference, wait_until
from tests.integration.conftest import Service, free_port, service_account_kubeconfig, start_serve
from tests.integration.test_service import wait_for_state


def serve_until_exit(kubeconfig: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobscheduler.cli.main", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "IN_CLUSTER": "false",
            "KUBECONFIG": str(kubeconfig),
            "GRPC_PORT": str(free_port()),
            "METRICS_PORT": "0",
            **(env or {}),
        },
    )


def test_the_start_up_line_names_the_api_servers_version(cluster: Cluster, tmp_path: Path) -> None:
    server = start_serve(cluster, tmp_path, port=free_port())

    def serving_line() -> dict[str, str] | None:
        # The port accepts connections a moment before the line is written (or half written).
        for line in server.output().splitlines():
            if '"event": "serving"' in line and line.endswith("}"):
                parsed: dict[str, str] = json.loads(line)
                return parsed
        return None

    try:
        serving = wait_until("the serving line", serving_line, timeout=20)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=20)
    if cluster.local:
        assert serving["kubernetes"] == toolversions.selected()["KUBERNETES_VERSION"]
    assert serving["kubernetes"].startswith("v1.")


def test_an_api_server_without_cronjobs_is_refused_at_start_naming_them(
    local_cluster: Cluster, tmp_path: Path
) -> None:
    env = {
        "JOBSCHEDULER_DEVCLUSTER_DIR": str(tmp_path / "no-cronjobs"),
        "JOBSCHEDULER_DEVCLUSTER_NODES": "1",
        "JOBSCHEDULER_DEVCLUSTER_APISERVER_ARGS": "--runtime-config=batch/v1/cronjobs=false",
    }
    local_cluster.devcluster("up", env=env)
    try:
        out = serve_until_exit(tmp_path / "no-cronjobs" / "kubeconfig")
    finally:
        local_cluster.devcluster("down", env=env)
    assert out.returncode == 1, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("jobscheduler: the Kubernetes API server (v1.")
    assert "lacks what the service needs: batch/v1 cronjobs." in line
    assert "Upgrade the cluster (tested: Kubernetes v1.34 and newer)" in line
    assert '"event": "serving"' not in out.stdout


def test_an_api_server_that_never_answers_ends_start_up_saying_what_to_check(
    cluster: Cluster, tmp_path: Path
) -> None:
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))

    out = serve_until_exit(path, {"KUBE_STARTUP_WAIT_SECONDS": "8", "LOG_FORMAT": "json"})

    assert out.returncode == 1
    assert "the Kubernetes API did not answer for 8 s" in out.stderr
    assert "check KUBECONFIG or IN_CLUSTER and that the API server is up" in out.stderr
    waits = [line for line in out.stdout.splitlines() if "waiting for the Kubernetes API" in line]
    assert waits, out.stdout  # progress while it waited
    assert '"event": "serving"' not in out.stdout


def test_a_bearer_token_from_the_kubeconfig_authenticates_every_call(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The client keeps the token where its major version likes (35: api_key["authorization"],
    37: api_key["BearerToken"]); the service's own HTTP path must send it either way, or every
    call in a pod (a ServiceAccount token) would be anonymous."""
    client.CoreV1Api(cluster.api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="caller"))
    )
    kubeconfig = service_account_kubeconfig(cluster, namespace, "caller", tmp_path / "kubeconfig")
    gateway = KubeGateway(load_api_client(in_cluster=False, kubeconfig=str(kubeconfig)))

    review = gateway.http.call(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        timeout=10,
    )

    user = json.loads(review.data)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:caller"


# What each kind of job looks like in ScheduleJob, and the fields of its Job's spec the API
# server fills in (defaults, the selector and its labels) on the default version, v1.35.4.
KINDS: dict[str, dict[str, object]] = {
    "timer": {
        "timer_job": pb.TimerJob(duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:50053")
    },
    "container with retry rules": {
        "container_job": pb.ContainerJob(image="registry.example/tool:1"),
        "retry": pb.RetryPolicy(fail_on_exit_codes=[3]),
    },
    "indexed batch": {
        "batch_job": pb.BatchJob(image="registry.example/shard:1", completions=3, backoff_limit_per_index=1)
    },
}
_TEMPLATE = "spec.template.metadata.labels"
_POD = "spec.template.spec"
_EVERY_JOB = {
    "spec.manualSelector",
    "spec.podReplacementPolicy",
    "spec.selector.matchLabels.batch.kubernetes.io/controller-uid",
    "spec.suspend",
    f"{_TEMPLATE}.batch.kubernetes.io/controller-uid",
    f"{_TEMPLATE}.batch.kubernetes.io/job-name",
    f"{_TEMPLATE}.controller-uid",
    f"{_TEMPLATE}.job-name",
    f"{_POD}.containers[0].imagePullPolicy",
    f"{_POD}.containers[0].terminationMessagePath",
    f"{_POD}.dnsPolicy",
    f"{_POD}.schedulerName",
    f"{_POD}.terminationGracePeriodSeconds",
}
_NON_INDEXED = {"spec.completionMode", "spec.completions", "spec.parallelism"}
DEFAULTED: dict[str, set[str]] = {
    "timer": _EVERY_JOB
    | _NON_INDEXED
    | {f"{_POD}.containers[0].env[{i}].valueFrom.fieldRef.apiVersion" for i in (4, 5, 6)},
    "container with retry rules": _EVERY_JOB | _NON_INDEXED,
    "indexed batch": _EVERY_JOB | {"spec.backoffLimit"},
}


def leaves(obj: object, prefix: str = "") -> dict[str, object]:
    """Every scalar of a JSON document by its path (spec.template.spec.containers[0].image)."""
    if isinstance(obj, dict):
        found: dict[str, object] = {}
        for key, value in obj.items():
            found.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return found
    if isinstance(obj, list):
        found = {}
        for i, value in enumerate(obj):
            found.update(leaves(value, f"{prefix}[{i}]"))
        return found
    return {prefix: obj}


@pytest.mark.parametrize("kind", KINDS)
def test_the_api_server_keeps_every_field_the_service_sets_on_a_job(
    api_service: Service, cluster: Cluster, namespace: str, kind: str, request: pytest.FixtureRequest
) -> None:
    """A minor that drops or rewrites a field of the service's Jobs (a feature gate, a changed
    default) fails here; one that fills in more or fewer fields is recorded as a difference."""
    response = api_service.stub.ScheduleJob(
        pb.ScheduleJobRequest(namespace=namespace, dry_run=True, **KINDS[kind]), timeout=10
    )
    sent = yaml.safe_load(response.manifest)
    gateway = KubeGateway(load_api_client(in_cluster=False, kubeconfig=str(cluster.kubeconfig)))
    stored = gateway.create_job(namespace, sent, dry_run=True)
    version = gateway.read_path("/version")["gitVersion"]

    sent_spec, stored_spec = leaves(sent["spec"], "spec"), leaves(stored["spec"], "spec")
    assert {p: (v, stored_spec.get(p)) for p, v in sent_spec.items() if stored_spec.get(p) != v} == {}
    added = {p for p in stored_spec if p not in sent_spec}
    print(kind, sorted(added))
    for path in sorted(added - DEFAULTED[kind]):
        record_difference(
            request, f"{version}: the API server also sets {path}={stored_spec[path]!r} ({kind})"
        )
    for path in sorted(DEFAULTED[kind] - added):
        record_difference(request, f"{version}: the API server no longer sets {path} ({kind})")


# How a finished Job's status reads on the default version: its condition types in order and
# the status fields present (the service derives every JobStatus from these).
FINISHED: dict[str, tuple[list[str], set[str]]] = {
    "succeeded": (
        ["SuccessCriteriaMet", "Complete"],
        {
            "completionTime",
            "conditions",
            "ready",
            "startTime",
            "succeeded",
            "terminating",
            "uncountedTerminatedPods",
        },
    ),
    "failed": (
        ["FailureTarget", "Failed"],
        {"conditions", "failed", "ready", "startTime", "terminating", "uncountedTerminatedPods"},
    ),
}


@pytest.mark.parametrize("outcome", FINISHED)
def test_a_finished_jobs_status_reads_as_the_service_expects(
    api_service: Service, cluster: Cluster, namespace: str, outcome: str, request: pytest.FixtureRequest
) -> None:
    """The conditions and fields a minor reports for a finished Job: the JobStatus the service
    derives must not change; other fields or conditions are recorded as differences."""
    annotations = {"sim.jobscheduler.io/duration": "100ms"}
    if outcome == "failed":
        annotations["sim.jobscheduler.io/exit-code"] = "3"
    reply = api_service.stub.ScheduleJob(
        pb.ScheduleJobRequest(
            namespace=namespace,
            container_job=pb.ContainerJob(image="registry.example/tool:1"),
            annotations=annotations,
            retry=pb.RetryPolicy(fail_on_exit_codes=[3]),
        ),
        timeout=10,
    )
    want = pb.JOB_STATE_SUCCEEDED if outcome == "succeeded" else pb.JOB_STATE_FAILED
    wait_for_state(api_service, namespace, reply.job_id, want)
    job = client.BatchV1Api(cluster.api).read_namespaced_job(reply.job_id, namespace).to_dict(serialize=True)
    version = client.VersionApi(cluster.api).get_code().git_version
    conditions = [c["type"] for c in job["status"].get("conditions") or []]
    fields = {k for k, v in job["status"].items() if v is not None}
    want_conditions, want_fields = FINISHED[outcome]
    if conditions != want_conditions:
        record_difference(request, f"{version}: a {outcome} Job's conditions are {conditions}")
    for name in sorted(fields - want_fields):
        record_difference(request, f"{version}: a {outcome} Job's status also has {name}")
    for name in sorted(want_fields - fields):
        record_difference(request, f"{version}: a {outcome} Job's status lacks {name}")
