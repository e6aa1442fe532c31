"""Job templates on the real cluster: ConfigMaps holding versions, created, read, listed,
updated (also by two replicas at once) and deleted; ScheduleJob from a template with overrides,
and the Job and its status naming the template and version; refusals that name the field and
store nothing; the version cap; the README's examples."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.helpers import tool
from tests.integration.conftest import Service, free_port, start_serve
from tests.integration.test_readme import readme_grpcurl_lines

TIMER = pb.TimerJob(
    duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053", env={"A": "1"}
)
TEMPLATE_LABEL = "jobscheduler.io/template"
VERSION_LABEL = "jobscheduler.io/template-version"


def template(namespace: str, name: str = "report", description: str = "", **job: Any) -> pb.Template:
    job.setdefault("timer_job", TIMER)
    return pb.Template(
        name=name, namespace=namespace, description=description, job=pb.ScheduleJobRequest(**job)
    )


def create(stub: pb_grpc.JobSchedulerStub, spec: pb.Template) -> pb.Template:
    return stub.CreateTemplate(pb.CreateTemplateRequest(template=spec), timeout=10)


def update(stub: pb_grpc.JobSchedulerStub, spec: pb.Template, expected_version: int = 0) -> pb.Template:
    return stub.UpdateTemplate(
        pb.UpdateTemplateRequest(template=spec, expected_version=expected_version), timeout=10
    )


def get(
    stub: pb_grpc.JobSchedulerStub, namespace: str, name: str = "report", version: int = 0
) -> pb.Template:
    return stub.GetTemplate(
        pb.GetTemplateRequest(name=name, namespace=namespace, version=version), timeout=10
    )


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details() or ""


def configmaps(cluster: Cluster, namespace: str) -> list[client.V1ConfigMap]:
    items = client.CoreV1Api(cluster.api).list_namespaced_config_map(namespace).items
    return [cm for cm in items if cm.metadata.name != "kube-root-ca.crt"]


def job_manifest(cluster: Cluster, namespace: str, job_id: str) -> client.V1Job:
    return client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace)


def env_of(job: client.V1Job) -> dict[str, str]:
    return {e.name: e.value for e in job.spec.template.spec.containers[0].env if e.value is not None}


# -- create, read, list, update --------------------------------------------------------------------


def test_create_get_list_and_update_make_versions(service: Service, cluster: Cluster, namespace: str) -> None:
    stub = service.stub
    first = create(stub, template(namespace, description="daily report", labels={"team": "a"}))
    assert (first.name, first.namespace, first.version, first.latest_version) == ("report", namespace, 1, 1)
    assert list(first.versions) == [1]
    assert first.job_type == "timer"
    assert first.job == pb.ScheduleJobRequest(labels={"team": "a"}, timer_job=TIMER)
    assert first.HasField("created_at")
    assert first.HasField("updated_at")
    assert first.updated_by  # the caller (its address: tokens are off)

    longer = pb.TimerJob()
    longer.CopyFrom(TIMER)
    longer.duration_seconds = 120
    second = update(stub, template(namespace, description="daily report, longer", timer_job=longer))
    assert (second.version, second.latest_version, list(second.versions)) == (2, 2, [1, 2])
    assert second.job.timer_job.duration_seconds == 120
    assert second.created_at == first.created_at

    latest = get(stub, namespace)
    assert (latest.version, latest.description, latest.job.timer_job.duration_seconds) == (
        2,
        "daily report, longer",
        120,
    )
    old = get(stub, namespace, version=1)
    assert (old.version, old.latest_version, old.description) == (1, 2, "daily report")
    assert old.job == first.job

    create(stub, template(namespace, name="another"))
    listed = stub.ListTemplates(pb.ListTemplatesRequest(namespace=namespace), timeout=10).templates
    assert [(t.name, t.latest_version, t.version) for t in listed] == [("another", 1, 1), ("report", 2, 2)]
    assert listed[1].description == "daily report, longer"
    assert listed[1].updated_at == second.updated_at
    assert not listed[1].HasField("job")  # GetTemplate has it

    # What is on the cluster: one ConfigMap per template, one key per version.
    (cm,) = [c for c in configmaps(cluster, namespace) if c.metadata.name == "jobscheduler-template-report"]
    assert cm.metadata.labels == {"app.kubernetes.io/managed-by": "jobscheduler", TEMPLATE_LABEL: "report"}
    assert sorted(cm.data) == ["v1", "v2"]
    assert json.loads(cm.data["v1"])["job"]["timer_job"]["duration_seconds"] == 60


def test_an_update_identical_to_the_latest_version_stores_nothing(service: Service, namespace: str) -> None:
    stub = service.stub
    create(stub, template(namespace, description="d"))
    again = create(stub, template(namespace, description="d"))  # a retried create
    assert again.version == 1
    same = update(stub, template(namespace, description="d"))  # a retried update
    assert (same.version, list(same.versions)) == (1, [1])
    code, message = refused(lambda: create(stub, template(namespace, description="other")))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "UpdateTemplate" in message


def test_expected_version_makes_an_update_a_compare_and_set(service: Service, namespace: str) -> None:
    stub = service.stub
    create(stub, template(namespace))
    update(stub, template(namespace, description="2"))
    code, message = refused(lambda: update(stub, template(namespace, description="3"), expected_version=1))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 2" in message
    assert get(stub, namespace).version == 2
    assert update(stub, template(namespace, description="3"), expected_version=2).version == 3


def test_concurrent_updates_from_two_replicas_make_distinct_consecutive_versions(
    cached_service: Service, api_service: Service, namespace: str
) -> None:
    create(cached_service.stub, template(namespace))
    writers = 12
    results: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(i: int) -> None:
        stub = (cached_service if i % 2 else api_service).stub
        try:
            start.wait()
            results[f"writer {i}"] = update(stub, template(namespace, description=f"writer {i}")).version
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(results.values()) == list(range(2, writers + 2))
    latest = get(api_service.stub, namespace)
    assert (latest.version, list(latest.versions)) == (writers + 1, list(range(1, writers + 2)))
    # every version holds what the writer that was told its number wrote: none lost, none mixed
    for description, version in results.items():
        assert get(api_service.stub, namespace, version=version).description == description


def test_versions_beyond_the_cap_are_dropped_oldest_first(service: Service, namespace: str) -> None:
    stub = service.stub
    create(stub, template(namespace, description="1"))
    for n in range(2, 23):
        update(stub, template(namespace, description=str(n)))
    latest = get(stub, namespace)
    assert (latest.version, list(latest.versions)) == (22, list(range(3, 23)))  # TEMPLATE_HISTORY_LIMIT=20
    assert get(stub, namespace, version=3).description == "3"
    code, message = refused(lambda: get(stub, namespace, version=2))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "no longer kept (kept: 3..22)" in message
    code, message = refused(lambda: get(stub, namespace, version=23))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "the latest is 22" in message
    code, message = refused(
        lambda: stub.ScheduleJob(
            pb.ScheduleJobRequest(namespace=namespace, template="report", template_version=1), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("template_version: version 1 of template 'report' is no longer kept")


def test_delete_removes_every_version_and_leaves_its_jobs(
    service: Service, cluster: Cluster, namespace: str
) -> None:
    stub = service.stub
    create(stub, template(namespace))
    update(stub, template(namespace, description="2"))
    made = stub.ScheduleJob(pb.ScheduleJobRequest(namespace=namespace, template="report"), timeout=10)
    stub.DeleteTemplate(pb.DeleteTemplateRequest(name="report", namespace=namespace), timeout=10)
    assert configmaps(cluster, namespace) == []
    code, _ = refused(lambda: get(stub, namespace))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = refused(
        lambda: stub.DeleteTemplate(pb.DeleteTemplateRequest(name="report", namespace=namespace), timeout=10)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, message = refused(
        lambda: stub.ScheduleJob(pb.ScheduleJobRequest(namespace=namespace, template="report"), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == f"template: template 'report' not found in namespace '{namespace}'"
    status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=made.job_id, namespace=namespace), timeout=10)
    assert (status.status.template, status.status.template_version) == ("report", 2)
    # the name is free again; versions start over
    assert create(stub, template(namespace)).version == 1


def test_a_configmap_of_that_name_that_is_not_a_template_is_left_alone(
    service: Service, cluster: Cluster, namespace: str
) -> None:
    client.CoreV1Api(cluster.api).create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="jobscheduler-template-report"), data={"x": "y"}
        ),
    )
    code, _ = refused(lambda: get(service.stub, namespace))
    assert code == grpc.StatusCode.NOT_FOUND
    code, message = refused(lambda: create(service.stub, template(namespace)))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "not a jobscheduler template" in message
    assert (
        service.stub.ListTemplates(pb.ListTemplatesRequest(namespace=namespace), timeout=10).templates == []
    )
    code, _ = refused(
        lambda: service.stub.DeleteTemplate(
            pb.DeleteTemplateRequest(name="report", namespace=namespace), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert [c.data for c in configmaps(cluster, namespace)] == [{"x": "y"}]


# -- refusals -------------------------------------------------------------------------------------


def _bad(**changes: Any) -> Callable[[str], pb.Template]:
    def make(namespace: str) -> pb.Template:
        spec = template(namespace)
        for key, value in changes.items():
            if key == "job":
                spec.ClearField("job")
                if value is not None:
                    spec.job.CopyFrom(value)
            else:
                setattr(spec, key, value)
        return spec

    return make


BAD_TEMPLATES = [
    pytest.param(
        _bad(
            job=pb.ScheduleJobRequest(
                timer_job=pb.TimerJob(timer_name="t", control_plane_endpoint="http://c")
            )
        ),
        "template.job.timer_job.duration_seconds",
        id="timer-duration-missing",
    ),
    pytest.param(_bad(job=None), "template.job", id="no-job"),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(labels={"a": "b"})), "template.job.job_type", id="no-job-type"
    ),
    pytest.param(_bad(name=""), "template.name", id="no-name"),
    pytest.param(_bad(name="Not_A_Label"), "template.name", id="bad-name"),
    pytest.param(_bad(description="x" * 1025), "template.description", id="long-description"),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(request_id="r", timer_job=TIMER)),
        "template.job.request_id",
        id="request-id",
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(secret_env={"K": "v"}, timer_job=TIMER)),
        "template.job.secret_env",
        id="secret-env",
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(after=["job-a"], timer_job=TIMER)), "template.job.after", id="after"
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(dry_run=True, timer_job=TIMER)), "template.job.dry_run", id="dry-run"
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(template="x", timer_job=TIMER)), "template.job.template", id="nested"
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(namespace="elsewhere", timer_job=TIMER)),
        "template.job.namespace",
        id="other-namespace",
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(labels={"jobscheduler.io/x": "y"}, timer_job=TIMER)),
        "template.job.labels",
        id="reserved-label",
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(generic_job=pb.GenericJob(type="no-such-type"))),
        "template.job.generic_job.type",
        id="unknown-generic-type",
    ),
    pytest.param(
        _bad(job=pb.ScheduleJobRequest(resources=pb.Resources(cpu_request="lots"), timer_job=TIMER)),
        "template.job.resources.cpu_request",
        id="bad-quantity",
    ),
]


@pytest.mark.parametrize(("make", "field"), BAD_TEMPLATES)
def test_a_bad_template_is_refused_naming_the_field_and_nothing_is_stored(
    service: Service, cluster: Cluster, namespace: str, make: Callable[[str], pb.Template], field: str
) -> None:
    code, message = refused(lambda: create(service.stub, make(namespace)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(field + ":") or message.startswith(field + "["), message
    assert configmaps(cluster, namespace) == []


def test_a_bad_update_is_refused_and_the_template_keeps_its_versions(
    service: Service, namespace: str
) -> None:
    stub = service.stub
    create(stub, template(namespace))
    bad = template(
        namespace,
        timer_job=pb.TimerJob(duration_seconds=-1, timer_name="t", control_plane_endpoint="http://c"),
    )
    code, message = refused(lambda: update(stub, bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("template.job.timer_job.duration_seconds:")
    assert list(get(stub, namespace).versions) == [1]
    code, _ = refused(lambda: update(stub, template(namespace, name="missing")))
    assert code == grpc.StatusCode.NOT_FOUND


# -- ScheduleJob from a template ------------------------------------------------------------------


def test_schedule_from_the_latest_and_from_version_1_with_overrides(
    service: Service, cluster: Cluster, namespace: str
) -> None:
    stub = service.stub
    create(
        stub,
        template(
            namespace,
            labels={"team": "a", "tier": "batch"},
            annotations={"sim.jobscheduler.io/duration": "1s"},
            backoff_limit=2,
        ),
    )
    longer = pb.TimerJob()
    longer.CopyFrom(TIMER)
    longer.duration_seconds = 120
    update(stub, template(namespace, labels={"team": "a", "tier": "batch"}, timer_job=longer))

    latest = stub.ScheduleJob(
        pb.ScheduleJobRequest(
            namespace=namespace,
            template="report",
            labels={"tier": "web"},
            timer_job=pb.TimerJob(duration_seconds=30, env={"B": "2"}),
        ),
        timeout=10,
    )
    assert latest.created
    assert (latest.status.template, latest.status.template_version) == ("report", 2)
    assert latest.status.name == "report"  # the job's name defaults to the template's
    job = job_manifest(cluster, namespace, latest.job_id)
    assert job.metadata.labels["team"] == "a"
    assert job.metadata.labels["tier"] == "web"
    assert (job.metadata.labels[TEMPLATE_LABEL], job.metadata.labels[VERSION_LABEL]) == ("report", "2")
    assert job.spec.template.metadata.labels[TEMPLATE_LABEL] == "report"
    env = env_of(job)
    assert (env["TIMER_DURATION_SECONDS"], env["A"], env["B"]) == ("30", "1", "2")
    assert job.spec.backoff_limit == 0  # version 2 sets none

    old = stub.ScheduleJob(
        pb.ScheduleJobRequest(
            namespace=namespace, template="report", template_version=1, name="rerun", labels={"run": "7"}
        ),
        timeout=10,
    )
    job = job_manifest(cluster, namespace, old.job_id)
    assert job.metadata.labels[VERSION_LABEL] == "1"
    assert env_of(job)["TIMER_DURATION_SECONDS"] == "60"
    assert job.spec.backoff_limit == 2
    assert job.spec.template.metadata.annotations == {"sim.jobscheduler.io/duration": "1s"}
    status = stub.GetJobStatus(
        pb.GetJobStatusRequest(job_id=old.job_id, namespace=namespace), timeout=10
    ).status
    assert (status.name, status.template, status.template_version) == ("rerun", "report", 1)
    assert dict(status.labels) == {"team": "a", "tier": "batch", "run": "7"}  # the caller's labels only

    # The template label selects the jobs made from a template (and its version label a version).
    listed = stub.ListJobs(
        pb.ListJobsRequest(namespace=namespace, label_selector=f"{TEMPLATE_LABEL}=report"), timeout=10
    ).jobs
    assert {j.job_id for j in listed} == {latest.job_id, old.job_id}
    listed = stub.ListJobs(
        pb.ListJobsRequest(namespace=namespace, label_selector=f"{VERSION_LABEL}=1"), timeout=10
    ).jobs
    assert [j.job_id for j in listed] == [old.job_id]


def test_template_unset_resets_what_an_override_cannot(
    service: Service, cluster: Cluster, namespace: str
) -> None:
    stub = service.stub
    create(stub, template(namespace, suspend=True, labels={"team": "a", "tier": "batch"}))
    made = stub.ScheduleJob(
        pb.ScheduleJobRequest(
            namespace=namespace, template="report", template_unset=["suspend", "labels.tier"]
        ),
        timeout=10,
    )
    job = job_manifest(cluster, namespace, made.job_id)
    assert not job.spec.suspend
    assert "tier" not in job.metadata.labels
    held = stub.ScheduleJob(pb.ScheduleJobRequest(namespace=namespace, template="report"), timeout=10)
    assert job_manifest(cluster, namespace, held.job_id).spec.suspend


def test_a_dry_run_from_a_template_shows_the_merged_job(
    service: Service, cluster: Cluster, namespace: str
) -> None:
    create(service.stub, template(namespace))
    dry = service.stub.ScheduleJob(
        pb.ScheduleJobRequest(namespace=namespace, template="report", dry_run=True, labels={"x": "y"}),
        timeout=10,
    )
    assert f"{TEMPLATE_LABEL}: report" in dry.manifest
    assert f"{VERSION_LABEL}: '1'" in dry.manifest
    assert "x: y" in dry.manifest
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


def test_a_request_id_retry_returns_its_job_after_the_template_changed(
    service: Service, namespace: str
) -> None:
    stub = service.stub
    create(stub, template(namespace))
    request = pb.ScheduleJobRequest(
        namespace=namespace, template="report", request_id="deploy-42", labels={"a": "b"}
    )
    first = stub.ScheduleJob(request, timeout=10)
    update(stub, template(namespace, description="changed", backoff_limit=4))
    again = stub.ScheduleJob(request, timeout=10)
    assert (again.job_id, again.created, again.status.template_version) == (first.job_id, False, 1)
    other = pb.ScheduleJobRequest()
    other.CopyFrom(request)
    other.labels["a"] = "c"
    code, message = refused(lambda: stub.ScheduleJob(other, timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id 'deploy-42' was already used" in message


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        pytest.param({"template": "missing"}, "template", id="unknown-template"),
        pytest.param({"template": "Bad_Name"}, "template", id="bad-template-name"),
        pytest.param({"template": "report", "template_version": 9}, "template_version", id="unknown-version"),
        pytest.param(
            {"template": "report", "template_version": -1}, "template_version", id="negative-version"
        ),
        pytest.param({"template_version": 1, "timer_job": TIMER}, "template", id="version-without-template"),
        pytest.param(
            {"template": "report", "container_job": pb.ContainerJob(image="busybox")},
            "container_job",
            id="another-job-type",
        ),
        pytest.param({"template": "report", "template_unset": ["nope"]}, "template_unset[0]", id="bad-unset"),
        pytest.param(
            {"template": "report", "timer_job": pb.TimerJob(duration_seconds=-5)},
            "timer_job.duration_seconds",
            id="bad-override",
        ),
        pytest.param(
            {"template": "report", "template_unset": ["timer_job"]}, "job_type", id="unset-the-job-type-alone"
        ),
    ],
)
def test_a_bad_schedule_from_a_template_is_refused_naming_the_field(
    service: Service, cluster: Cluster, namespace: str, request_fields: dict[str, Any], field: str
) -> None:
    create(service.stub, template(namespace))
    request = pb.ScheduleJobRequest(namespace=namespace, **request_fields)
    code, message = refused(lambda: service.stub.ScheduleJob(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(field + ":"), message
    assert client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items == []


def test_a_schedules_job_cannot_name_a_template(service: Service, namespace: str) -> None:
    create(service.stub, template(namespace))
    spec = pb.ScheduleSpec(
        name="nightly", namespace=namespace, cron="0 2 * * *", job=pb.ScheduleJobRequest(template="report")
    )
    code, message = refused(
        lambda: service.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("schedule.job.template:")


# -- the README ------------------------------------------------------------------------------------


def test_the_readme_template_examples_work_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    lines = readme_grpcurl_lines("### Templates")
    methods = [line.rsplit("/", 1)[1] for line in lines]
    assert set(methods) >= {
        "CreateTemplate",
        "UpdateTemplate",
        "GetTemplate",
        "ListTemplates",
        "ScheduleJob",
        "DeleteTemplate",
    }
    # On a port of its own, not the README's 50054: other test sessions may hold that one.
    port = free_port()
    server = start_serve(cluster, tmp_path, port=port, env={"K8S_NAMESPACE": namespace})
    grpcurl = tool("grpcurl")
    replies: list[tuple[str, dict[str, Any]]] = []
    try:
        for line in lines:
            argv = [grpcurl, *shlex.split(line.replace("localhost:50054", f"localhost:{port}"))[1:]]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, f"{line}\n{out.stderr}"
            replies.append((argv[-1].rsplit("/", 1)[1], json.loads(out.stdout)))
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()
    by_method: dict[str, list[dict[str, Any]]] = {}
    for method, reply in replies:
        by_method.setdefault(method, []).append(reply)
    assert by_method["CreateTemplate"][0]["version"] == 1
    assert by_method["UpdateTemplate"][0]["version"] == 2
    scheduled = by_method["ScheduleJob"]
    assert [s["status"]["template_version"] for s in scheduled] == [2, 1]
    assert all(s["status"]["template"] == "nightly-report" for s in scheduled)
    listed = [j["job_id"] for j in by_method["ListJobs"][0]["jobs"]]
    assert sorted(listed) == sorted(s["job_id"] for s in scheduled)
    assert configmaps(cluster, namespace) == []  # the last example deletes it
