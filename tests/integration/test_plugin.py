"""A third-party job type: the example plugin package (examples/jobscheduler-sleep-plugin) is
built and installed, offline, into a directory of its own, and `jobscheduler serve` started
with that directory on PYTHONPATH lists the type and runs its jobs through generic_job. The
project's virtualenv is never changed, so no other test sees the plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Struct
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.registry import ENTRY_POINT_GROUP
from tests.conftest import ROOT, Cluster
from tests.helpers import wait_until
from tests.integration.conftest import free_port, start_serve

PLUGIN = ROOT / "examples" / "jobscheduler-sleep-plugin"


def install_plugin(tmp_path: Path) -> Path:
    """The plugin installed into tmp_path/site; built from a copy, so that the build leaves
    nothing in the repository."""
    source = tmp_path / "plugin-source"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


@pytest.fixture
def plugin_stub(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[pb_grpc.JobSchedulerStub]:
    site = install_plugin(tmp_path)
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={"PYTHONPATH": str(site), "K8S_NAMESPACE": namespace, "WATCH_NAMESPACES": namespace},
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.JobSchedulerStub(channel)
    finally:
        channel.close()
        server.proc.terminate()
        server.proc.wait(timeout=30)


def params(value: dict[str, object]) -> Struct:
    message = Struct()
    ParseDict(value, message)
    return message


def test_an_installed_plugin_type_is_listed_and_runs_through_generic_job(
    plugin_stub: pb_grpc.JobSchedulerStub, cluster: Cluster, namespace: str
) -> None:
    (info,) = plugin_stub.ListJobTypes(pb.ListJobTypesRequest(name="sleep"), timeout=10).job_types
    assert (info.request_field, info.description != "") == ("generic_job", True)
    assert [(p.name, p.type, p.required, p.default) for p in info.parameters] == [
        ("seconds", "integer", True, ""),
        ("image", "string", False, "busybox:1.36"),
    ]
    every = [t.name for t in plugin_stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=10).job_types]
    assert {"sleep", "timer", "batch"} <= set(every)

    request = pb.ScheduleJobRequest(
        namespace=namespace,
        annotations={"sim.jobscheduler.io/duration": "200ms"},
        generic_job=pb.GenericJob(type="sleep", params=params({"seconds": 2})),  # a Struct: 2.0
    )
    job_id = plugin_stub.ScheduleJob(request, timeout=10).job_id

    def succeeded() -> pb.JobStatus | None:
        status = plugin_stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10).status
        return status if status.state == pb.JOB_STATE_SUCCEEDED else None

    status = wait_until("the sleep job to succeed", succeeded)
    assert status.job_type == "sleep"
    job = client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace)
    (container,) = job.spec.template.spec.containers
    assert (container.image, container.command) == ("busybox:1.36", ["sleep", "2"])
    assert container.security_context.allow_privilege_escalation is False


@pytest.mark.parametrize(
    ("given", "field"),
    [
        pytest.param({"seconds": 0}, "generic_job.params.seconds", id="handler-validate"),
        pytest.param({"seconds": 1.5}, "generic_job.params.seconds", id="not-whole"),
        pytest.param({"seconds": 1, "minutes": 2}, "generic_job.params.minutes", id="unknown-parameter"),
        pytest.param({}, "generic_job.params.seconds", id="missing"),
    ],
)
def test_a_plugin_types_params_are_checked_by_its_own_schema(
    plugin_stub: pb_grpc.JobSchedulerStub,
    cluster: Cluster,
    namespace: str,
    given: dict[str, object],
    field: str,
) -> None:
    request = pb.ScheduleJobRequest(generic_job=pb.GenericJob(type="sleep", params=params(given)))
    with pytest.raises(grpc.RpcError) as err:
        plugin_stub.ScheduleJob(request, timeout=10)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{field}: ")
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


def test_the_project_environment_is_left_without_the_plugin() -> None:
    assert "sleep" not in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
