"""Kueue (sigs.k8s.io/kueue) as an optional part of the dev cluster (hack/devcluster.py).

The manager runs on this machine beside the control plane, not in a pod. What a pod would
have is made here: the Services it is reached by (ExternalName → 127.0.0.1: the API server
dials loopback and checks the certificate against `<service>.<namespace>.svc`), the webhook
certificate files (copied from the Secret Kueue's own certificate management fills) and its
configuration file. The manifests are the module's own (config/components, copied beside the
binary by `hack/tools.sh kueue`), rendered with the cluster's kubectl and adjusted here.
Standard library only, like devcluster.py.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

GROUP = "kueue.x-k8s.io"
VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
VISIBILITY_VERSIONS = ("v1beta2", "v1beta1")
NAMESPACE = "kueue-system"
WEBHOOK_SERVICE = "kueue-webhook-service"
VISIBILITY_SERVICE = "kueue-visibility-server"
WEBHOOK_SECRET = "kueue-webhook-server-cert"  # noqa: S105  (a name, not a secret)
# The names Kueue's cert rotator injects its CA into (pkg/util/cert/cert.go): the webhook
# service's name without "-webhook-service", then "-mutating|validating-webhook-configuration".
MUTATING_WEBHOOK = "kueue-mutating-webhook-configuration"
VALIDATING_WEBHOOK = "kueue-validating-webhook-configuration"
# On every object installed here, as on a release install (config/default): kueue-down finds
# the ClusterRoles by it.
LABEL = ("app.kubernetes.io/name", "kueue")
# Renders of config/components/<dir> that are installed; the manager's own RBAC, Deployment,
# leader election and metrics Service are not (it runs here with an admin kubeconfig).
RENDERED = ("crd", "webhook", "visibility", "rbac")


class KueueError(Exception):
    """Kueue could not be installed, started or removed; the message says what to do."""


class Api(Protocol):
    """devcluster.Api: JSON requests to the API server as admin."""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 5,
        content_type: str = "application/json",
    ) -> Any: ...


Log = Callable[[str], None]
Wait = Callable[[str, str, Callable[[], bool]], None]  # devcluster.wait_for(component, what, check)


@dataclasses.dataclass(frozen=True, slots=True)
class KueuePorts:
    """Loopback ports of the manager: health probes (HTTP), admission and conversion webhooks
    (HTTPS), the visibility API server (HTTPS, reached through the API server's aggregator)."""

    health: int
    webhook: int
    visibility: int


# ---------------------------------------------------------------------------------------------
# Pure parts: the configuration file and the install manifests


def render_config(ports: KueuePorts, cert_dir: Path) -> dict[str, Any]:
    """The manager's Configuration (config.kueue.x-k8s.io/v1beta2, apis/config/v1beta2)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.health}"},
        "webhook": {"host": "127.0.0.1", "port": ports.webhook, "certDir": str(cert_dir)},
        # Off: v0.17.0 serves metrics only over HTTPS behind TokenReview/SubjectAccessReview
        # (cmd/kueue/main.go sets SecureServing unconditionally); no setting gives plain HTTP.
        "metrics": {"bindAddress": "0"},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": WEBHOOK_SERVICE,
            "webhookSecretName": WEBHOOK_SECRET,
        },
        # Jobs without the kueue.x-k8s.io/queue-name label are left alone.
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
        # Fair sharing between the ClusterQueues of a cohort (preemption by dominant resource
        # share, the two strategies Kueue documents together), and admission fair sharing
        # between the LocalQueues of a ClusterQueue that asks for it (spec.admissionScope).
        "fairSharing": {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]},
        "admissionFairSharing": {"usageHalfLifeTime": "168h", "usageSamplingInterval": "5m"},
        "visibilityServer": {"bindAddress": "127.0.0.1"},
        # As the release's config (config/components/manager/controller_manager_config.yaml):
        # the client defaults (20 QPS) make 100 Jobs take minutes to admit.
        "clientConnection": {"qps": 50, "burst": 100},
        "controller": {
            "groupKindConcurrency": {
                "Job.batch": 5,
                "Pod": 5,
                "Workload.kueue.x-k8s.io": 5,
                "LocalQueue.kueue.x-k8s.io": 1,
                "Cohort.kueue.x-k8s.io": 1,
                "ClusterQueue.kueue.x-k8s.io": 1,
                "ResourceFlavor.kueue.x-k8s.io": 1,
            }
        },
    }


def install_objects(rendered: list[dict[str, Any]], ports: KueuePorts) -> list[dict[str, Any]]:
    """What kueue-up applies, from the renders of config/components (RENDERED): the namespace,
    the Services, the CRDs with their conversion webhook, the webhook configurations and the
    visibility APIServices pointed at this machine's ports, and the user-facing ClusterRoles.
    Dropped: the kustomize Services (replaced by ExternalName ones) and the manager's own
    RBAC (it runs with an admin kubeconfig)."""
    webhook_service = {"name": WEBHOOK_SERVICE, "namespace": NAMESPACE, "port": ports.webhook}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        external_service(WEBHOOK_SERVICE, ports.webhook),
        external_service(VISIBILITY_SERVICE, ports.visibility),
    ]
    for obj in rendered:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "CustomResourceDefinition":
            webhook = obj["spec"].get("conversion", {}).get("webhook")
            if webhook:
                webhook["clientConfig"]["service"] = {**webhook["clientConfig"]["service"], **webhook_service}
            objects.append(obj)
        elif kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            obj["metadata"]["name"] = MUTATING_WEBHOOK if kind.startswith("Mutating") else VALIDATING_WEBHOOK
            for hook in obj["webhooks"]:
                hook["clientConfig"]["service"] = {**hook["clientConfig"]["service"], **webhook_service}
            objects.append(obj)
        elif kind == "APIService":
            # insecureSkipTLSVerify stays as the module has it: the visibility server's
            # certificate is self-signed, see devcluster's note on /visibility.
            service = {"name": VISIBILITY_SERVICE, "namespace": NAMESPACE, "port": ports.visibility}
            obj["spec"]["service"] = service
            objects.append(obj)
        elif kind == "ClusterRole" and user_facing_role(name):
            obj["metadata"]["name"] = f"kueue-{name}"  # the release's namePrefix
            objects.append(obj)
    for obj in objects:
        obj["metadata"].setdefault("labels", {})[LABEL[0]] = LABEL[1]
    return objects


def user_facing_role(name: str) -> bool:
    """ClusterRoles for people and services using Kueue (batch-user-role, *-viewer-role, ...),
    not the manager's own (manager-role, metrics-*)."""
    return name.endswith(("-editor-role", "-viewer-role")) or name in ("batch-admin-role", "batch-user-role")


def external_service(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "ExternalName",
            "externalName": "127.0.0.1",
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    }


def cluster_queue(
    name: str,
    *,
    flavor: str,
    cpu: str,
    memory: str = "64Gi",
    cohort: str = "",
    borrowing_limit: str | None = None,
    preemption: dict[str, str] | None = None,
    strategy: str = "BestEffortFIFO",
) -> dict[str, Any]:
    """A ClusterQueue (kueue.x-k8s.io/v1beta2) open to every namespace, with a cpu and memory
    quota in one flavor (the tests' and bench/queueing.py's)."""
    cpu_quota: dict[str, Any] = {"name": "cpu", "nominalQuota": cpu}
    if borrowing_limit is not None:
        cpu_quota["borrowingLimit"] = borrowing_limit
    spec: dict[str, Any] = {
        "namespaceSelector": {},
        "queueingStrategy": strategy,
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory"],
                "flavors": [
                    {"name": flavor, "resources": [cpu_quota, {"name": "memory", "nominalQuota": memory}]}
                ],
            }
        ],
    }
    if cohort:
        spec["cohortName"] = cohort
    if preemption:
        spec["preemption"] = preemption
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": spec,
    }


def local_queue(name: str, cluster_queue_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": name},
        "spec": {"clusterQueue": cluster_queue_name},
    }


def parse_json_stream(text: str) -> list[dict[str, Any]]:
    """`kubectl create -o json` prints one JSON document per object, one after the other."""
    decoder, i = json.JSONDecoder(), 0
    objects: list[dict[str, Any]] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return objects
        obj, i = decoder.raw_decode(text, i)
        objects.extend(obj["items"] if obj.get("kind") == "List" else [obj])


# ---------------------------------------------------------------------------------------------
# State: STATE/kueue.json (Kueue is enabled; its version and ports) and STATE/kueue/


class Install:
    """Kueue in the cluster whose state directory is `state`, from the tool dir `tools`
    (<cache>/tools/kueue-<version>)."""

    def __init__(self, state: Path, tools: Path, version: str) -> None:
        self.state = state
        self.tools = tools
        self.version = version
        self.info_file = state / "kueue.json"
        self.dir = state / "kueue"
        self.cert_dir = self.dir / "certs"
        self.config_file = self.dir / "config.json"
        self.manifest_file = self.dir / "install.json"

    def enabled(self) -> bool:
        return self.info_file.exists()

    def info(self) -> dict[str, Any]:
        return dict(json.loads(self.info_file.read_text()))

    def ports(self) -> KueuePorts:
        return KueuePorts(**self.info()["ports"])

    def enable(self, pick_ports: Callable[[int], list[int]]) -> KueuePorts:
        """Records that the cluster has Kueue, with ports picked once (kept across restarts)."""
        if self.enabled():
            return self.ports()
        ports = KueuePorts(*pick_ports(3))
        self.dir.mkdir(parents=True, exist_ok=True)
        info = {
            "version": self.version,
            "namespace": NAMESPACE,
            "ports": dataclasses.asdict(ports),
            "config": str(self.config_file),
            "webhook_service": WEBHOOK_SERVICE,
            "visibility": [f"{VISIBILITY_GROUP}/{v}" for v in VISIBILITY_VERSIONS],
        }
        self.info_file.write_text(json.dumps(info, indent=2) + "\n")
        return ports

    def disable(self) -> None:
        self.info_file.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def check_tools(self) -> None:
        if not (self.tools / ".done-components").exists() or not self.binary().exists():
            raise KueueError(f"Kueue {self.version} is not built in {self.tools}: run `hack/tools.sh kueue`")

    def binary(self) -> Path:
        return self.tools / "bin" / "kueue"

    def components(self) -> Path:
        return self.tools / "config" / "components"

    def write_config(self) -> Path:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        config = render_config(self.ports(), self.cert_dir)
        self.config_file.write_text(json.dumps(config, indent=2) + "\n")
        return self.config_file

    def render(self, kubectl: Callable[..., str]) -> list[dict[str, Any]]:
        """The install objects, rendered by `kubectl kustomize` (the CRDs get their conversion
        patches that way) and turned into JSON by `kubectl create --dry-run=client`; written
        to STATE/kueue/install.json for kubectl apply."""
        yaml = "\n---\n".join(kubectl("kustomize", str(self.components() / d)) for d in RENDERED)
        rendered = parse_json_stream(
            kubectl("create", "--dry-run=client", "--validate=false", "-o", "json", "-f", "-", stdin=yaml)
        )
        objects = install_objects(rendered, self.ports())
        self.manifest_file.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        return objects

    # -----------------------------------------------------------------------------------------
    # The webhook certificate: the rotator fills the Secret and waits for the files

    def sync_certs(self, secret: dict[str, Any] | None) -> bool:
        """Writes the Secret's tls.crt and tls.key into the webhook certDir when they differ
        (out of a pod nothing mounts the Secret); True when the files match a filled Secret."""
        data = (secret or {}).get("data") or {}
        if not data.get("tls.crt") or not data.get("tls.key"):
            return False
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        # The key first: the rotator waits for tls.crt, and the server must find both.
        for name in ("tls.key", "tls.crt"):
            content = base64.b64decode(data[name])
            path = self.cert_dir / name
            if not path.exists() or path.read_bytes() != content:
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(content)
                tmp.chmod(0o600)
                tmp.replace(path)
        return True

    def webhook_serves(self, secret: dict[str, Any] | None) -> bool:
        """The webhook port completes a TLS handshake with the certificate that the injected CA
        (the Secret's ca.crt) signed for the name the API server checks."""
        ca = ((secret or {}).get("data") or {}).get("ca.crt")
        if not ca:
            return False
        ctx = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
        try:
            with (
                socket.create_connection(("127.0.0.1", self.ports().webhook), timeout=2) as sock,
                ctx.wrap_socket(sock, server_hostname=f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc"),
            ):
                return True
        except (OSError, ssl.SSLError):
            return False

    def create_secret(self, api: Api) -> None:
        """The webhook Secret, empty, before the manager starts: without it the manager hangs
        (and ignores SIGTERM). Created only when absent, so a re-run keeps the certificate the
        rotator put in it."""
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": WEBHOOK_SECRET, "labels": {LABEL[0]: LABEL[1]}},
        }
        try:
            api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise KueueError(
                    f"creating Secret {WEBHOOK_SECRET}: HTTP {e.code}: {e.read()[:300]!r}"
                ) from e

    # -----------------------------------------------------------------------------------------
    # Removal

    def remove(self, api: Api, *, wait: Wait, log: Log) -> None:
        """Deletes what kueue-up installed, with the manager already stopped: the webhook
        configurations and APIServices first (nothing fails closed, discovery stays whole), then
        the CRDs and so every Kueue object (their finalizers dropped: no manager is left to
        remove them), the ClusterRoles and the namespace; then the state. Jobs are left as they
        are: one that Kueue suspended stays suspended."""

        def delete(path: str) -> None:
            call(api, "DELETE", path, missing_ok=True)

        admission = "/apis/admissionregistration.k8s.io/v1"
        delete(f"{admission}/mutatingwebhookconfigurations/{MUTATING_WEBHOOK}")
        delete(f"{admission}/validatingwebhookconfigurations/{VALIDATING_WEBHOOK}")
        for version in VISIBILITY_VERSIONS:
            delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{VISIBILITY_GROUP}")
        log("kueue: webhook configurations and visibility APIServices deleted")

        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

        def kueue_crds() -> list[dict[str, Any]]:
            return [c for c in call(api, "GET", crds)["items"] if c["spec"]["group"] == GROUP]

        count = 0
        for crd in kueue_crds():
            name, plural = crd["metadata"]["name"], crd["spec"]["names"]["plural"]
            # No conversion webhook answers any more: read everything as stored.
            patch = {"spec": {"conversion": {"strategy": "None", "webhook": None}}}
            call(api, "PATCH", f"{crds}/{name}", patch, content_type=MERGE_PATCH)
            storage = next(v["name"] for v in crd["spec"]["versions"] if v["storage"])
            for obj in call(api, "GET", f"/apis/{GROUP}/{storage}/{plural}")["items"]:
                meta = obj["metadata"]
                if meta.get("finalizers"):
                    scope = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
                    path = f"/apis/{GROUP}/{storage}{scope}/{plural}/{meta['name']}"
                    unfinalize = {"metadata": {"finalizers": None}}
                    call(api, "PATCH", path, unfinalize, content_type=MERGE_PATCH, missing_ok=True)
                count += 1
            delete(f"{crds}/{name}")
        wait("kube-apiserver", "Kueue's CRDs to be deleted", lambda: not kueue_crds())
        log(f"kueue: CRDs deleted, and with them {count} Kueue objects")
        selector = urllib.parse.urlencode({"labelSelector": f"{LABEL[0]}={LABEL[1]}"})
        delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles?{selector}")
        namespace = f"/api/v1/namespaces/{NAMESPACE}"
        delete(namespace)
        wait(
            "kube-controller-manager",
            f"namespace {NAMESPACE} to be deleted",
            lambda: call(api, "GET", namespace, missing_ok=True) is None,
        )
        log(f"kueue: ClusterRoles and namespace {NAMESPACE} deleted")
        self.disable()


MERGE_PATCH = "application/merge-patch+json"


def call(
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    missing_ok: bool = False,
    retry_for: float = 30,
) -> Any:
    """api.request, retried on 429 and 503 (a CRD change makes its objects' storage
    reinitialise for a moment: 429 with Retry-After); None for 404 when missing_ok."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return api.request(method, path, body, timeout=30, content_type=content_type)
        except urllib.error.HTTPError as e:
            if e.code == 404 and missing_ok:
                return None
            if e.code in (429, 503) and time.monotonic() < deadline:
                time.sleep(min(float(e.headers.get("Retry-After") or 1), 2))
                continue
            raise KueueError(f"{method} {path}: HTTP {e.code}: {e.read()[:300]!r}") from e


# ---------------------------------------------------------------------------------------------
# Readiness


class Readiness:
    """Kueue's manager is ready when its health probe answers, the webhook port serves the
    certificate the API server trusts, the API server gets answers from its admission and
    conversion webhooks, and the visibility API answers through the aggregator, in that order;
    each step is logged once it passes. Every call first copies the webhook certificate from
    its Secret into the certDir: out of a pod nothing mounts it, and the rotator waits for the
    files. With log=None (status) nothing is logged and nothing written to the API server."""

    def __init__(self, api: Api, install: Install, *, log: Log | None) -> None:
        self.api = api
        self.install = install
        self.ports = install.ports()
        self.log = log
        self.secret: dict[str, Any] | None = None
        self.steps: list[tuple[str, Callable[[], bool]]] = [
            ("health probe answers", lambda: self.probe("healthz")),
            ("webhook certificate copied from its Secret", lambda: install.sync_certs(self.secret)),
            ("webhook port serves TLS for the webhook service", lambda: install.webhook_serves(self.secret)),
            ("API server reaches the admission and conversion webhooks", self.webhooks),
            ("visibility API answers through the API server", self.visibility),
            ("manager ready (/readyz)", lambda: self.probe("readyz")),
        ]
        self.passed = 0
        self.started = time.monotonic()

    def __call__(self) -> bool:
        self.secret = self.read_secret()
        self.install.sync_certs(self.secret)
        while self.passed < len(self.steps):
            what, check = self.steps[self.passed]
            if not check():
                return False
            self.passed += 1
            if self.log:
                self.log(f"kueue: {what} ({time.monotonic() - self.started:.1f}s)")
        return True

    def read_secret(self) -> dict[str, Any] | None:
        try:
            return dict(self.api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{WEBHOOK_SECRET}"))
        except (OSError, ValueError):
            return None

    def probe(self, endpoint: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports.health}/{endpoint}", timeout=3
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def webhooks(self) -> bool:
        """A v1beta1 Cohort created and deleted: the API server converts it to v1beta2 (the
        storage version) through the conversion webhook, and Kueue's validating webhook admits
        it. In status, a read instead (no webhook call when nothing is stored)."""
        base = f"/apis/{GROUP}/v1beta1/cohorts"
        try:
            if self.log is None:
                self.api.request("GET", f"{base}?limit=1")
                return True
            name = f"devcluster-probe-{os.getpid()}"
            body = {"apiVersion": f"{GROUP}/v1beta1", "kind": "Cohort", "metadata": {"name": name}}
            try:
                self.api.request("POST", base, body)
            finally:
                with contextlib.suppress(OSError):
                    self.api.request("DELETE", f"{base}/{name}")
        except (OSError, ValueError):
            return False
        return True

    def visibility(self) -> bool:
        try:
            found = self.api.request("GET", f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSIONS[0]}")
        except (OSError, ValueError):
            return False
        return any(r.get("name") == "clusterqueues/pendingworkloads" for r in found.get("resources", []))
