"""API errors keep their detail, against the real API server: a 422's causes per field, a
resourceVersion conflict as a ConflictError (ABORTED to callers); and reflection answers the
usual load tool, ghz, without a protoset."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from jobscheduler.domain.errors import ConflictError, FieldViolation, InvalidArgumentError
from jobscheduler.kube.connection import BackoffPolicy, load_api_client
from jobscheduler.kube.gateway import KubeGateway
from jobscheduler.obs.metrics import KUBE_REQUESTS, child
from tests.conftest import Cluster
from tests.helpers import tool
from tests.integration.conftest import Service


@pytest.fixture
def gateway(cluster: Cluster) -> Iterator[KubeGateway]:
    api = load_api_client(in_cluster=False, kubeconfig=str(cluster.kubeconfig))
    yield KubeGateway(api, backoff=BackoffPolicy(default_timeout=10))
    api.close()  # type: ignore[attr-defined]


def configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}


def test_a_422_names_every_field_the_api_server_refused(gateway: KubeGateway, namespace: str) -> None:
    # Two faults the API server reports as two causes: a container without an image, and a
    # label value that is not one.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "job-invalid", "labels": {"team": "-bad-"}},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": ""}]},
            }
        },
    }
    with pytest.raises(InvalidArgumentError) as caught:
        gateway.create_job(namespace, job, dry_run=True)

    fields = {v.field for v in caught.value.violations}
    assert "spec.template.spec.containers[0].image" in fields
    assert "metadata.labels" in fields
    assert "spec.template.spec.containers[0].image: Required value" in str(caught.value)
    assert all(isinstance(v, FieldViolation) and v.description for v in caught.value.violations)


def test_a_write_on_a_stale_resource_version_is_a_conflict(gateway: KubeGateway, namespace: str) -> None:
    created = gateway.create("configmaps", namespace, configmap("cm-conflict"))
    stale = created["metadata"]["resourceVersion"]
    gateway.patch("configmaps", namespace, "cm-conflict", {"data": {"a": "2"}})

    with pytest.raises(ConflictError) as patched:
        gateway.patch(
            "configmaps",
            namespace,
            "cm-conflict",
            {"metadata": {"resourceVersion": stale}, "data": {"a": "3"}},
        )
    replaced = dict(created, data={"a": "4"})
    with pytest.raises(ConflictError):
        gateway.replace("configmaps", namespace, "cm-conflict", replaced)

    assert "modified" in str(patched.value)
    assert gateway.get("configmaps", namespace, "cm-conflict")["data"] == {"a": "2"}


def ghz() -> str:
    return tool("ghz")


@pytest.mark.parametrize(
    ("call", "data", "code"),
    [
        (
            "jobscheduler.JobScheduler/GetJobStatus",
            {"job_id": "job-nowhere", "namespace": "default"},
            "NotFound",
        ),
        ("grpc.health.v1.Health/Check", {}, "OK"),
    ],
)
def test_ghz_finds_the_methods_through_reflection(
    api_service: Service, call: str, data: dict[str, str], code: str
) -> None:
    out = subprocess.run(
        [
            ghz(),
            "--insecure",
            "--call",
            call,
            "-d",
            json.dumps(data),
            "-n",
            "20",
            "-c",
            "2",
            "--format",
            "json",
            api_service.address,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert "Symbol not found" not in out.stdout + out.stderr
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["count"] == 20
    assert report["statusCodeDistribution"] == {code: 20}, report.get("errorDistribution")


def test_requests_use_keep_alive_and_replace_a_connection_the_server_closed(
    gateway: KubeGateway, namespace: str
) -> None:
    """The gateway's lean path (jobscheduler.kube.wire) keeps one connection for calls in a row,
    and when the server has closed an idle one, the next call gets a fresh one at once."""
    import socket
    import time

    assert gateway.http.wire is not None, "an https API server is reached through the lean path"
    gateway.create("configmaps", namespace, configmap("kept"))
    gateway.get("configmaps", namespace, "kept")
    idle = list(gateway.http.wire._idle)
    assert len(idle) == 1, "two calls in a row share one kept-alive connection"
    gateway.get("configmaps", namespace, "kept")
    assert list(gateway.http.wire._idle) == idle, "and the same one again"

    failed_attempts = child(KUBE_REQUESTS, "get", "0")
    before = failed_attempts._value.get()
    idle[0].sock.shutdown(socket.SHUT_RDWR)  # as a server ending an idle connection does
    started = time.monotonic()
    assert gateway.get("configmaps", namespace, "kept")["data"] == {"a": "1"}
    assert failed_attempts._value.get() == before, "not a failed attempt retried with backoff"
    assert time.monotonic() - started < 1
    assert gateway.http.wire._idle
    assert gateway.http.wire._idle[0] is not idle[0]


def test_errors_through_the_lean_path_keep_status_body_and_headers(
    gateway: KubeGateway, namespace: str
) -> None:
    from jobscheduler.domain.errors import AlreadyExistsError, NotFoundError

    with pytest.raises(NotFoundError, match='configmaps "absent" not found'):
        gateway.get("configmaps", namespace, "absent")
    gateway.create("configmaps", namespace, configmap("twice"))
    with pytest.raises(AlreadyExistsError):
        gateway.create("configmaps", namespace, configmap("twice"))


def test_list_all_passes_every_object_of_every_page_through_each(
    gateway: KubeGateway, namespace: str
) -> None:
    """The cache's relist keeps only slim copies, page by page (list_all's `each`)."""
    for i in range(5):
        gateway.create("configmaps", namespace, configmap(f"page-{i}"))
    seen: list[str] = []

    def keep_name(obj: dict[str, object]) -> dict[str, object]:
        seen.append(obj["metadata"]["name"])  # type: ignore[index]
        return {"name": obj["metadata"]["name"]}  # type: ignore[index]

    items, version = gateway.list_all("configmaps", namespace, label_selector="", page_size=2, each=keep_name)
    names = sorted(i["name"] for i in items)
    assert [n for n in names if str(n).startswith("page-")] == [f"page-{i}" for i in range(5)]
    assert sorted(seen) == names
    assert version.isdigit()


def test_list_all_gives_each_page_its_own_budget_with_page_seconds(
    gateway: KubeGateway, namespace: str
) -> None:
    """A relist of 100,000 Jobs may take minutes on a busy API server: the informer bounds each
    page, not the whole list (a whole-list deadline made it start over and over)."""
    import time

    from jobscheduler.domain.errors import UnavailableError

    for i in range(3):
        gateway.create("configmaps", namespace, configmap(f"budget-{i}"))
    spent = time.monotonic() - 1  # a whole-list budget already used up
    with pytest.raises(UnavailableError, match="within the deadline"):
        gateway.list_all("configmaps", namespace, label_selector="", page_size=1, deadline=spent)
    items, _ = gateway.list_all(
        "configmaps", namespace, label_selector="", page_size=1, deadline=spent, page_seconds=10
    )
    assert len(items) >= 3
