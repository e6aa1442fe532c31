"""Submit-time guards against what a real node can only fail later: image references outside the
reference grammar, and jobs in Kubernetes' own namespaces. Each refusal names the field (or the
setting), and nothing is created."""

from __future__ import annotations

import grpc
import pytest
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from tests.conftest import Cluster
from tests.integration.conftest import Service

BAD_IMAGES = ["../../etc", "GHCR.io/Acme/Tool:1", "Docker.IO/Library/BusyBox:Latest"]


def _requests(namespace: str, image: str) -> dict[str, pb.ScheduleJobRequest]:
    timer = pb.TimerJob(
        duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:50053", image=image
    )
    return {
        "timer_job.image": pb.ScheduleJobRequest(namespace=namespace, timer_job=timer),
        "container_job.image": pb.ScheduleJobRequest(
            namespace=namespace, container_job=pb.ContainerJob(image=image)
        ),
        "batch_job.image": pb.ScheduleJobRequest(
            namespace=namespace, batch_job=pb.BatchJob(image=image, completions=2)
        ),
    }


def _jobs(cluster: Cluster, namespace: str) -> list[str]:
    return [j.metadata.name for j in client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items]


@pytest.mark.parametrize("image", BAD_IMAGES)
def test_malformed_image_references_are_refused_naming_the_field(
    service: Service, cluster: Cluster, namespace: str, image: str
) -> None:
    for field, request in _requests(namespace, image).items():
        for dry_run in (False, True):
            request.dry_run = dry_run
            with pytest.raises(grpc.RpcError) as caught:
                service.stub.ScheduleJob(request, timeout=10)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            details = caught.value.details() or ""
            assert details.startswith(f"{field}: "), details
            assert "is not an image reference" in details
    assert _jobs(cluster, namespace) == []


def test_a_well_formed_image_is_still_accepted(service: Service, cluster: Cluster, namespace: str) -> None:
    request = _requests(namespace, "ghcr.io/acme/tool:1@sha256:" + "0" * 64)["container_job.image"]
    response = service.stub.ScheduleJob(request, timeout=10)
    assert _jobs(cluster, namespace) == [response.job_id]


@pytest.mark.parametrize("system", ["kube-system", "kube-public"])
def test_system_namespaces_are_refused_unless_the_operator_lists_them(
    service: Service, cluster: Cluster, system: str
) -> None:
    before = _jobs(cluster, system)
    request = _requests(system, "busybox:1.36")["container_job.image"]
    with pytest.raises(grpc.RpcError) as caught:
        service.stub.ScheduleJob(request, timeout=10)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "Kubernetes system namespace" in (caught.value.details() or "")
    assert "ALLOWED_NAMESPACES" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as listed:
        service.stub.ListJobs(pb.ListJobsRequest(namespace=system), timeout=10)
    assert listed.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _jobs(cluster, system) == before
