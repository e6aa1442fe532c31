"""Placement on the real API server: node_selector, tolerations and priority_class_name reach the
Job's pod template (and a dry run's manifest), the scheduler honours them on the kwok nodes, the
status reports them, templates and schedules carry them, and bad ones are refused naming the
field with nothing created."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import grpc
import pytest
import yaml
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import Service

QUICK = {"sim.jobscheduler.io/duration": "200ms"}
KWOK_NODES = {"type": "kwok"}  # every kwok node of the dev cluster carries it
GPU_TAINT = pb.Toleration(key="example.com/gpu", operator="Exists", effect="NoSchedule")


@pytest.fixture
def priority_class(cluster: Cluster) -> Iterator[str]:
    name = f"jobs-high-{secrets.token_hex(3)}"
    api = client.SchedulingV1Api(cluster.api)
    api.create_priority_class(client.V1PriorityClass(metadata=client.V1ObjectMeta(name=name), value=1000))
    yield name
    api.delete_priority_class(name)


def container(namespace: str, **fields: object) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        namespace=namespace,
        annotations=QUICK,
        container_job=pb.ContainerJob(image="busybox:1.36"),
        **fields,  # type: ignore[arg-type]
    )


def pod_spec(cluster: Cluster, namespace: str, job_id: str) -> client.V1PodSpec:
    job = client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace)
    return job.spec.template.spec


def test_placement_reaches_the_pods_and_the_status(
    service: Service, cluster: Cluster, namespace: str, priority_class: str
) -> None:
    request = container(
        namespace, node_selector=KWOK_NODES, tolerations=[GPU_TAINT], priority_class_name=priority_class
    )
    job_id = service.stub.ScheduleJob(request, timeout=10).job_id

    spec = pod_spec(cluster, namespace, job_id)
    assert spec.node_selector == KWOK_NODES
    assert [(t.key, t.operator, t.effect) for t in spec.tolerations] == [
        ("example.com/gpu", "Exists", "NoSchedule")
    ]
    assert spec.priority_class_name == priority_class

    def pods() -> list[client.V1Pod]:
        return (
            client.CoreV1Api(cluster.api)
            .list_namespaced_pod(namespace, label_selector=f"job-name={job_id}")
            .items
        )

    wait_until("the pod is scheduled", lambda: any(p.spec.node_name for p in pods()), timeout=60)
    [pod] = pods()
    assert pod.spec.node_name.startswith("kwok-node-")
    assert pod.spec.priority == 1000  # the PriorityClass was resolved by the API server's admission

    status = service.stub.GetJobStatus(pb.GetJobStatusRequest(namespace=namespace, job_id=job_id), timeout=10)
    assert dict(status.status.node_selector) == KWOK_NODES
    assert list(status.status.tolerations) == [GPU_TAINT]
    assert status.status.priority_class_name == priority_class


def test_a_dry_run_shows_the_placement_in_its_manifest(
    service: Service, cluster: Cluster, namespace: str, priority_class: str
) -> None:
    request = container(
        namespace, node_selector={"disk": "ssd"}, priority_class_name=priority_class, dry_run=True
    )
    manifest = yaml.safe_load(service.stub.ScheduleJob(request, timeout=10).manifest)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["priorityClassName"] == priority_class
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


def test_a_selector_no_node_matches_leaves_the_job_unschedulable(service: Service, namespace: str) -> None:
    request = container(namespace, node_selector={"example.com/pool": "nowhere"})
    job_id = service.stub.ScheduleJob(request, timeout=10).job_id

    def reason() -> str:
        got = service.stub.GetJobStatus(
            pb.GetJobStatusRequest(namespace=namespace, job_id=job_id), timeout=10
        )
        return got.status.reason

    wait_until("Unschedulable", lambda: reason() == "Unschedulable", timeout=60)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"priority_class_name": "no-such-class"}, "priority_class_name"),
        ({"priority_class_name": "Not_A_Name"}, "priority_class_name"),
        ({"node_selector": {"zone": "not ok"}}, "node_selector[zone]"),
        ({"tolerations": [pb.Toleration(key="gpu", effect="NoRun")]}, "tolerations[0].effect"),
        (
            {"tolerations": [pb.Toleration(key="gpu", effect="NoSchedule", toleration_seconds=5)]},
            "tolerations[0].toleration_seconds",
        ),
    ],
)
def test_bad_placement_is_refused_naming_the_field(
    service: Service, cluster: Cluster, namespace: str, fields: dict[str, object], field: str
) -> None:
    for dry_run in (False, True):
        with pytest.raises(grpc.RpcError) as caught:
            service.stub.ScheduleJob(container(namespace, dry_run=dry_run, **fields), timeout=10)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(f"{field}: "), caught.value.details()
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


def test_templates_and_schedules_carry_the_placement(
    service: Service, cluster: Cluster, namespace: str, priority_class: str
) -> None:
    job = pb.ScheduleJobRequest(
        annotations=QUICK,
        container_job=pb.ContainerJob(image="busybox:1.36"),
        node_selector=KWOK_NODES,
        tolerations=[GPU_TAINT],
        priority_class_name=priority_class,
    )
    service.stub.CreateTemplate(
        pb.CreateTemplateRequest(template=pb.Template(name="gpu", namespace=namespace, job=job)), timeout=10
    )
    made = service.stub.ScheduleJob(
        pb.ScheduleJobRequest(namespace=namespace, template="gpu", node_selector={"disk": "ssd"}), timeout=10
    )
    spec = pod_spec(cluster, namespace, made.job_id)
    assert spec.node_selector == {**KWOK_NODES, "disk": "ssd"}  # maps merge, the request's entries added
    assert spec.priority_class_name == priority_class

    schedule = pb.ScheduleSpec(name="nightly-gpu", namespace=namespace, cron="0 3 * * *", job=job)
    got = service.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule), timeout=10)
    assert dict(got.spec.job.node_selector) == KWOK_NODES
    assert list(got.spec.job.tolerations) == [GPU_TAINT]
    cronjob = client.BatchV1Api(cluster.api).read_namespaced_cron_job("nightly-gpu", namespace)
    template_spec = cronjob.spec.job_template.spec.template.spec
    assert template_spec.node_selector == KWOK_NODES
    assert template_spec.priority_class_name == priority_class
