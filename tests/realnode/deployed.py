"""The service deployed for real: `k8s/` applied through a generated kustomize overlay onto the
dev cluster's real node, reached with `kubectl port-forward`, plus the HTTP receiver its jobs
report to. Used by the test_deployed_*.py modules.

The overlay changes only what a cluster without a registry needs (the locally built image,
pull policy Never, TIMER_IMAGE/WORKER_IMAGE), where the pods go (the real node's selector and
toleration) and one bearer token for the tests (the shipped Secret has none, which refuses
every call). Everything else is k8s/ as operators apply it: namespace `jobscheduler`,
in-cluster config through the `kubernetes` Service, gRPC probes, restricted pods.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from hack import toolversions
from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.realnode.support import REAL_NODE_LABEL, ROOT, STATE, node_info, wait_until

NAMESPACE = "jobscheduler"  # k8s/kustomization.yaml's: the overlay keeps it
BIN = toolversions.bin_dir()  # KUBERNETES_VERSION's tools
CONTAINERD_SOCKET = "/run/jobscheduler-realnode/containerd.sock"  # hack/realnode_config.py
# Held for as long as this suite's deployment exists; a second run of the suite against the
# same cluster waits for it instead of applying over (or deleting) the first one's.
LOCK = STATE / "deployed-jobscheduler.lock"
DEPLOY_TIMEOUT = 180  # apply → both replicas Ready; measured ~20-40 s on an idle node
GONE_TIMEOUT = 120  # namespace deletion: the replicas' graceful shutdown, then the jobs' pods
OWNER_LABEL = "jobscheduler.io/deployed-by"
OWNER = "tests-realnode"

KEY, VALUE = REAL_NODE_LABEL
NODE_SELECTOR = {KEY: VALUE}
TOLERATIONS = [pb.Toleration(key=KEY, operator="Equal", value=VALUE, effect="NoSchedule")]


def kubectl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={STATE / 'kubeconfig'}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kubectl_json(*args: str) -> Any:
    proc = kubectl(*args, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ensure_image_loaded(ref: str) -> None:
    """The image in the real node's containerd (k8s.io namespace); imported when the tree's
    image is newer than the one the node was started with."""
    ctr = [str(BIN / "ctr"), "--address", CONTAINERD_SOCKET, "-n", "k8s.io"]
    listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    if ref in listed.stdout.split():
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "image.tar"
        saved = subprocess.run(
            ["bash", str(ROOT / "hack" / "image.sh"), "save", ref, str(archive)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert saved.returncode == 0, saved.stderr
        imported = subprocess.run(
            [*ctr, "images", "import", "--local", str(archive)], capture_output=True, text=True, timeout=300
        )
        assert imported.returncode == 0, imported.stderr


def write_overlay(directory: Path, *, image: str, token: str) -> Path:
    """A kustomization whose base is the repository's k8s/ (a relative path: kustomize refuses
    absolute ones)."""
    name, tag = image.rsplit(":", 1)
    base = os.path.relpath(ROOT / "k8s", directory)
    tokens = [
        {
            "name": "e2e",
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "namespaces": [NAMESPACE],
            "verbs": ["schedule", "read", "cancel"],
        }
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "labels": [{"pairs": {OWNER_LABEL: OWNER}, "includeSelectors": False}],
        "images": [{"name": "jobscheduler", "newName": name, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "ConfigMap", "name": "jobscheduler-config"},
                "patch": json.dumps(
                    [
                        {"op": "replace", "path": "/data/TIMER_IMAGE", "value": image},
                        {"op": "replace", "path": "/data/WORKER_IMAGE", "value": image},
                    ]
                ),
            },
            {
                "target": {"kind": "Secret", "name": "jobscheduler-tokens"},
                "patch": json.dumps(
                    [{"op": "replace", "path": "/stringData/tokens.yaml", "value": json.dumps(tokens)}]
                ),
            },
            {
                "target": {"kind": "Deployment", "name": "jobscheduler"},
                "patch": json.dumps(
                    [
                        {"op": "add", "path": "/spec/template/spec/nodeSelector", "value": NODE_SELECTOR},
                        {
                            "op": "add",
                            "path": "/spec/template/spec/tolerations",
                            "value": [
                                {"key": KEY, "operator": "Equal", "value": VALUE, "effect": "NoSchedule"}
                            ],
                        },
                        # No registry: the node has the image or the pod fails visibly.
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/containers/0/imagePullPolicy",
                            "value": "Never",
                        },
                    ]
                ),
            },
        ],
    }
    path = directory / "kustomization.yaml"
    path.write_text(json.dumps(kustomization, indent=2))  # JSON is YAML
    return directory


@contextlib.contextmanager
def exclusive_namespace(timeout: float = 600) -> Iterator[None]:
    """This suite's hold on namespace `jobscheduler` of the dev cluster (a lock file in its
    state directory): one deployment at a time, whatever process runs it."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as fh:
        wait_until(
            f"the lock {LOCK} (another run of the deployed suite holds it)",
            lambda: _try_lock(fh),
            timeout=timeout,
            interval=1,
        )
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _try_lock(fh: Any) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def namespace_state() -> dict[str, Any] | None:
    proc = kubectl("get", "namespace", NAMESPACE, "-o", "json")
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    state: dict[str, Any] = json.loads(proc.stdout)
    return state


def claim_namespace() -> None:
    """Namespace `jobscheduler` gone before this suite applies k8s/. A leftover of this suite
    (its owner label; the lock says no run of it is alive) is deleted; anyone else's
    (tests/integration/test_deploy.py's, an operator's) is waited for, never deleted."""
    state = namespace_state()
    if state is None:
        return
    labels = state["metadata"].get("labels", {})
    if labels.get(OWNER_LABEL) == OWNER and "deletionTimestamp" not in state["metadata"]:
        kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    wait_until(
        f"namespace {NAMESPACE} to be gone (not this suite's: another deployment of k8s/ uses it, "
        "e.g. tests/integration/test_deploy.py; it is never deleted from here)",
        lambda: namespace_state() is None,
        timeout=GONE_TIMEOUT,
        interval=1,
    )


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL, so no
    port-forward outlives it (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class PortForward:
    """`kubectl port-forward <target> :<port>` on loopback; `local_port` once it listens."""

    def __init__(self, target: str, port: int, *, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [
                str(BIN / "kubectl"),
                f"--kubeconfig={STATE / 'kubeconfig'}",
                "port-forward",
                "-n",
                NAMESPACE,
                "--address=127.0.0.1",
                target,
                f":{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.local_port = self._read_port(timeout)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                line = self.proc.stdout.readline()
                if not line:
                    break
                if m := re.match(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line):
                    return int(m.group(1))
        self.close()
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"kubectl port-forward did not start within {timeout}s: {stderr}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Deployed:
    """The deployed service: its stub (through port-forward, with the test token), and what
    deploying it measured."""

    image: str
    token: str
    forward: PortForward
    channel: grpc.Channel
    stub: pb_grpc.JobSchedulerStub
    start_seconds: float  # `kubectl apply -k` started → both replicas Ready
    overlay: Path

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]


def record(job_id: str, status: Any) -> None:
    """With JOBSCHEDULER_E2E_RECORD=<file>: appends the job's final JobStatus and its pods'
    status as the kubelet wrote them (one JSON line), for docs/realnode.md and bug reports."""
    path = os.environ.get("JOBSCHEDULER_E2E_RECORD")
    if not path:
        return
    from google.protobuf.json_format import MessageToDict

    pods = kubectl_json("get", "pods", "-n", NAMESPACE, "-l", f"batch.kubernetes.io/job-name={job_id}")[
        "items"
    ]
    line = {
        "job_status": MessageToDict(status),
        "pods": [{"name": p["metadata"]["name"], "status": p["status"]} for p in pods],
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def deploy(image: str, overlay_dir: Path) -> Deployed:
    """Applies the overlay and waits for both replicas to be Ready (the kubelet's startup and
    readiness gRPC probes passed); forwards a local port to the Service."""
    ensure_image_loaded(image)
    token = secrets.token_urlsafe(24)
    overlay = write_overlay(overlay_dir, image=image, token=token)
    started = time.monotonic()
    # The Namespace first: a namespaced object cannot be applied before its namespace exists.
    applied = kubectl("apply", "-k", str(overlay), timeout=120)
    if applied.returncode != 0 and "not found" in applied.stderr:
        applied = kubectl("apply", "-k", str(overlay), timeout=120)
    assert applied.returncode == 0, applied.stderr

    def both_ready() -> bool:
        dep = kubectl_json("get", "deployment", "jobscheduler", "-n", NAMESPACE)
        status = dep.get("status", {})
        return bool(
            status.get("readyReplicas") == 2
            and status.get("updatedReplicas") == 2
            and status.get("replicas") == 2
            and status.get("observedGeneration") == dep["metadata"]["generation"]
        )

    wait_until("both replicas Ready", both_ready, timeout=DEPLOY_TIMEOUT, interval=0.2)
    start_seconds = time.monotonic() - started
    forward = PortForward("service/jobscheduler", 50054)
    channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{forward.local_port}"), _Bearer(token))
    return Deployed(
        image=image,
        token=token,
        forward=forward,
        channel=channel,
        stub=pb_grpc.JobSchedulerStub(channel),
        start_seconds=start_seconds,
        overlay=overlay,
    )


def undeploy(deployed: Deployed | None, overlay: Path) -> None:
    """Everything the overlay applied, the cluster-scoped ClusterRole and binding included
    (tests/integration/test_deploy.py applies them itself), and waits for the namespace to go."""
    if deployed is not None:
        deployed.channel.close()
        deployed.forward.close()
    kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=false", timeout=120)
    wait_until(
        "namespace jobscheduler deleted", lambda: namespace_state() is None, timeout=GONE_TIMEOUT, interval=1
    )


class _Session:
    """One deployment shared by every test_deployed_*.py module (a fixture imported into two
    modules would otherwise be two fixtures)."""

    deployed: Deployed | None = None
    failure: str | None = None


def deployed_service(request: pytest.FixtureRequest, image: str) -> Deployed:
    """The deployment, made on first use; `request` is a package-scoped fixture's, so it is
    removed when tests/realnode/ is done, before the cluster fixture's teardown and before any
    other package's test (tests/integration/test_deploy.py) could want the namespace."""
    if _Session.failure:
        pytest.fail(f"deploying k8s/ failed earlier in this session: {_Session.failure}")
    if _Session.deployed is not None:
        return _Session.deployed
    lock = exclusive_namespace()
    lock.__enter__()
    overlay_dir = Path(tempfile.mkdtemp(prefix="jobscheduler-overlay-"))
    claimed = False

    def cleanup() -> None:
        try:
            if claimed:
                undeploy(_Session.deployed, overlay_dir)
        finally:
            _Session.deployed = None
            shutil.rmtree(overlay_dir, ignore_errors=True)
            lock.__exit__(None, None, None)

    request.addfinalizer(cleanup)
    try:
        claim_namespace()
        claimed = True
        _Session.deployed = deploy(image, overlay_dir)
    except BaseException as e:
        _Session.failure = str(e)[:2000]
        raise
    return _Session.deployed


def probe_results(node: str) -> dict[tuple[str, str, str], float]:
    """The kubelet's own probe counters (/metrics/probes through the API server's node proxy):
    (pod, probe_type, result) → count, for the service's namespace."""
    proc = kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/probes")
    assert proc.returncode == 0, proc.stderr
    found = {}
    for line in proc.stdout.splitlines():
        if m := re.match(r"prober_probe_total\{(.*)\} (\S+)$", line):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("namespace") == NAMESPACE:
                found[(labels["pod"], labels["probe_type"], labels["result"])] = float(m.group(2))
    return found


# ---------------------------------------------------------------------------------------------
# The HTTP receiver the jobs' pods report to: on the real node's bridge gateway, which pods
# reach directly (the host's end of jsrn0), bound to a free port.


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    host: str
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def wait_for(self, what: str, match: Callable[[Received], bool], *, timeout: float) -> Received:
        def found() -> Received | None:
            with self.lock:
                return next((r for r in self.requests if match(r)), None)

        return wait_until(what, found, timeout=timeout, interval=0.2)

    def seen(self, match: Callable[[Received], bool]) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if match(r)]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    gateway = str(node_info()["gateway"])
    received: list[Received] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP names are case-blind
                received.append(Received(self.command, self.path, headers, body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_POST = do_PUT = do_GET = _record  # noqa: N815  (http.server's names)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((gateway, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    try:
        yield Receiver(host=gateway, server=server, requests=received, lock=lock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
