"""hack/kueue.py's pure parts: the manager's configuration and the manifests kueue-up applies."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hack import kueue

PORTS = kueue.KueuePorts(health=30001, webhook=30002, visibility=30003)


def crd(name: str, *, conversion: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"group": "kueue.x-k8s.io", "names": {"plural": name}}
    if conversion:
        service = {"name": "webhook-service", "namespace": "system", "path": "/convert"}
        spec["conversion"] = {"strategy": "Webhook", "webhook": {"clientConfig": {"service": service}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{name}.kueue.x-k8s.io"},
        "spec": spec,
    }


def webhook_configuration(kind: str, *paths: str) -> dict[str, Any]:
    hooks = [
        {
            "name": p,
            "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": p}},
        }
        for p in paths
    ]
    return {
        "kind": kind,
        "metadata": {"name": f"{kind[:-29].lower()}-webhook-configuration"},
        "webhooks": hooks,
    }


RENDERED = [
    crd("workloads", conversion=True),
    crd("resourceflavors", conversion=False),
    webhook_configuration("MutatingWebhookConfiguration", "/mutate-batch-v1-job"),
    webhook_configuration("ValidatingWebhookConfiguration", "/validate-batch-v1-job", "/validate-cohort"),
    {"kind": "Service", "metadata": {"name": "webhook-service", "namespace": "system"}, "spec": {}},
    {
        "kind": "APIService",
        "metadata": {"name": "v1beta2.visibility.kueue.x-k8s.io"},
        "spec": {
            "insecureSkipTLSVerify": True,
            "service": {"name": "visibility-server", "namespace": "kueue-system"},
        },
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "visibility-server-auth-reader", "namespace": "kube-system"},
    },
    {"kind": "ClusterRole", "metadata": {"name": "manager-role"}},
    {"kind": "ClusterRole", "metadata": {"name": "metrics-reader"}},
    {"kind": "ClusterRole", "metadata": {"name": "batch-user-role"}},
    {"kind": "ClusterRole", "metadata": {"name": "workload-viewer-role", "labels": {"x": "y"}}},
]


def installed() -> dict[tuple[str, str], dict[str, Any]]:
    objects = kueue.install_objects(copy.deepcopy(RENDERED), PORTS)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_webhook_configuration_names_are_those_the_cert_rotator_injects_its_ca_into() -> None:
    # pkg/util/cert/cert.go: the service name without "-webhook-service", then the type.
    base = kueue.WEBHOOK_SERVICE.removesuffix("-webhook-service")
    names = (kueue.MUTATING_WEBHOOK, kueue.VALIDATING_WEBHOOK)
    assert names == (f"{base}-mutating-webhook-configuration", f"{base}-validating-webhook-configuration")


def test_every_webhook_and_the_conversion_webhook_point_at_the_loopback_service_and_port() -> None:
    objects = installed()
    want = {"name": "kueue-webhook-service", "namespace": "kueue-system", "port": PORTS.webhook}
    mutating = objects["MutatingWebhookConfiguration", "kueue-mutating-webhook-configuration"]
    validating = objects["ValidatingWebhookConfiguration", "kueue-validating-webhook-configuration"]
    for hook in [*mutating["webhooks"], *validating["webhooks"]]:
        assert hook["clientConfig"]["service"] == {**want, "path": hook["name"]}
    conversion = objects["CustomResourceDefinition", "workloads.kueue.x-k8s.io"]["spec"]["conversion"]
    assert conversion["webhook"]["clientConfig"]["service"] == {**want, "path": "/convert"}
    assert "conversion" not in objects["CustomResourceDefinition", "resourceflavors.kueue.x-k8s.io"]["spec"]


def test_services_are_external_names_for_loopback() -> None:
    objects = installed()
    for name, port in (
        ("kueue-webhook-service", PORTS.webhook),
        ("kueue-visibility-server", PORTS.visibility),
    ):
        spec = objects["Service", name]["spec"]
        assert (spec["type"], spec["externalName"]) == ("ExternalName", "127.0.0.1")
        assert [p["port"] for p in spec["ports"]] == [port]
    assert ("Service", "webhook-service") not in objects


def test_apiservice_points_at_the_visibility_port() -> None:
    spec = installed()["APIService", "v1beta2.visibility.kueue.x-k8s.io"]["spec"]
    assert spec["service"] == {"name": "kueue-visibility-server", "namespace": "kueue-system", "port": 30003}
    assert spec["insecureSkipTLSVerify"] is True


def test_only_user_facing_cluster_roles_are_installed_with_the_release_prefix() -> None:
    roles = sorted(name for kind, name in installed() if kind == "ClusterRole")
    assert roles == ["kueue-batch-user-role", "kueue-workload-viewer-role"]
    assert ("RoleBinding", "visibility-server-auth-reader") not in installed()


def test_every_object_carries_the_label_kueue_down_finds_them_by() -> None:
    objects = installed()
    assert ("Namespace", "kueue-system") in objects
    for obj in objects.values():
        assert obj["metadata"]["labels"][kueue.LABEL[0]] == kueue.LABEL[1]
    assert objects["ClusterRole", "kueue-workload-viewer-role"]["metadata"]["labels"]["x"] == "y"


def test_config_binds_loopback_and_leaves_jobs_without_a_queue_alone(tmp_path: Path) -> None:
    config = kueue.render_config(PORTS, tmp_path)
    assert config["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:30001"
    assert config["webhook"] == {"host": "127.0.0.1", "port": 30002, "certDir": str(tmp_path)}
    assert config["visibilityServer"] == {"bindAddress": "127.0.0.1"}
    assert config["metrics"]["bindAddress"] == "0"
    assert config["leaderElection"]["leaderElect"] is False
    assert config["manageJobsWithoutQueueName"] is False
    assert config["integrations"]["frameworks"] == ["batch/job"]
    assert config["internalCertManagement"] == {
        "enable": True,
        "webhookServiceName": kueue.WEBHOOK_SERVICE,
        "webhookSecretName": kueue.WEBHOOK_SECRET,
    }
    # One of the strategy lists Kueue's config validation accepts (pkg/config/validation.go).
    assert config["fairSharing"]["preemptionStrategies"] == [
        "LessThanOrEqualToFinalShare",
        "LessThanInitialShare",
    ]


def test_json_stream_of_kubectl_is_split_into_objects() -> None:
    text = '{"kind": "A", "metadata": {}}\n{\n "kind": "List", "items": [{"kind": "B"}, {"kind": "C"}]\n}\n'
    assert [o["kind"] for o in kueue.parse_json_stream(text)] == ["A", "B", "C"]
    assert kueue.parse_json_stream("  \n") == []


@pytest.mark.parametrize("data", [None, {}, {"tls.crt": "", "tls.key": ""}])
def test_certificate_is_not_written_before_the_rotator_fills_the_secret(
    tmp_path: Path, data: dict[str, str] | None
) -> None:
    install = kueue.Install(tmp_path, tmp_path / "tools", "v0")
    assert install.sync_certs({"data": data}) is False
    assert not (install.cert_dir / "tls.crt").exists()


def test_certificate_files_follow_the_secret(tmp_path: Path) -> None:
    install = kueue.Install(tmp_path, tmp_path / "tools", "v0")

    def secret(crt: bytes, key: bytes) -> dict[str, Any]:
        return {
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}
        }

    assert install.sync_certs(secret(b"cert-1", b"key-1"))
    assert install.sync_certs(secret(b"cert-2", b"key-2"))  # rotated
    assert (install.cert_dir / "tls.crt").read_bytes() == b"cert-2"
    assert (install.cert_dir / "tls.key").read_bytes() == b"key-2"
    assert (install.cert_dir / "tls.key").stat().st_mode & 0o777 == 0o600


def test_ports_are_picked_once_and_recorded_in_a_file_of_their_own(tmp_path: Path) -> None:
    install = kueue.Install(tmp_path, tmp_path / "tools", "v0")
    picks = iter([[1, 2, 3], [4, 5, 6]])
    assert install.enable(lambda n: next(picks)[:n]) == kueue.KueuePorts(1, 2, 3)
    assert install.enable(lambda n: next(picks)[:n]) == kueue.KueuePorts(1, 2, 3)
    assert json.loads((tmp_path / "kueue.json").read_text())["ports"] == {
        "health": 1,
        "webhook": 2,
        "visibility": 3,
    }
    install.disable()
    assert not install.enabled()
    assert not install.dir.exists()


def test_cluster_queue_and_local_queue_builders() -> None:
    cq = kueue.cluster_queue(
        "team-a",
        flavor="f",
        cpu="200m",
        cohort="tenants",
        borrowing_limit="1",
        preemption={"withinClusterQueue": "LowerPriority"},
    )
    assert cq["kind"] == "ClusterQueue"
    spec = cq["spec"]
    assert (spec["cohortName"], spec["queueingStrategy"], spec["namespaceSelector"]) == (
        "tenants",
        "BestEffortFIFO",
        {},
    )
    [group] = spec["resourceGroups"]
    assert group["flavors"] == [
        {
            "name": "f",
            "resources": [
                {"name": "cpu", "nominalQuota": "200m", "borrowingLimit": "1"},
                {"name": "memory", "nominalQuota": "64Gi"},
            ],
        }
    ]
    assert spec["preemption"] == {"withinClusterQueue": "LowerPriority"}
    assert "cohortName" not in kueue.cluster_queue("x", flavor="f", cpu="1")["spec"]
    assert kueue.local_queue("q", "team-a")["spec"] == {"clusterQueue": "team-a"}
