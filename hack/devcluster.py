#!/usr/bin/env python3
"""Runs a real Kubernetes control plane on loopback for tests and development.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries built
by hack/tools.sh; kwok plays the kubelets of fake nodes. With --real-node one real
node runs beside them: containerd, kubelet and kube-proxy
(hack/realnode.py), with the image of hack/image.sh loaded. With --kueue (or kueue-up on a
running cluster) Kueue's manager runs beside them too, installed from the module's own
manifests (hack/kueue.py; built by `hack/tools.sh kueue`): namespace kueue-system, its CRDs,
webhooks and visibility API (visibility.kueue.x-k8s.io, served through the API server's
aggregator, for which the API server always has the front-proxy flags). Every process is
started detached, its pid recorded under the state directory, and stopped by that pid.
Standard library only, so it runs before the project's virtualenv exists.

    hack/devcluster.py up [--real-node] [--kueue] | down | status | env
    hack/devcluster.py running [--real-node] [--kueue]   (exit 0 when every process is alive)
    hack/devcluster.py node-up | node-down | node-rss   (the real node of a running cluster)
    hack/devcluster.py kueue-up | kueue-down   (Kueue in a running cluster; down removes every
                                                trace: CRDs and so all Kueue objects, webhooks,
                                                APIServices, ClusterRoles, kueue-system)
    hack/devcluster.py stop|start|restart COMPONENT [--signal KILL]   (COMPONENT: one of the
                                                control plane's, or kueue when it is enabled)
    hack/devcluster.py pause|resume COMPONENT      (SIGSTOP / SIGCONT, for fault tests)

State (JOBSCHEDULER_DEVCLUSTER_DIR, default .devcluster): ports.json, pids/, logs/, pki/,
kubeconfig; with Kueue also kueue.json (it is enabled: version, namespace and its loopback
ports), kueue/ (config.json, the webhook certificate, install.json) and kueue.kubeconfig.
While Kueue's manager is stopped (stop/pause kueue) its webhooks fail closed, so Jobs and pods
cannot be created, and namespaces stay Terminating (discovery of its aggregated API fails).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kueue  # beside this script; standard library only too
import realnode  # beside this script; standard library only too
import toolversions  # beside this script: KUBERNETES_VERSION and the matrix

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("JOBSCHEDULER_DEVCLUSTER_DIR", ROOT / ".devcluster")).resolve()
NODES = int(os.environ.get("JOBSCHEDULER_DEVCLUSTER_NODES", "2"))
NODE_CPU = os.environ.get("JOBSCHEDULER_DEVCLUSTER_NODE_CPU", "16")
NODE_MEMORY = os.environ.get("JOBSCHEDULER_DEVCLUSTER_NODE_MEMORY", "64Gi")
NODE_PODS = os.environ.get("JOBSCHEDULER_DEVCLUSTER_NODE_PODS", "1000")
SERVICE_CIDR = "10.96.0.0/16"
# Components in start order; stop runs in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Kueue's manager: a component of clusters that have Kueue (up --kueue, kueue-up), started last.
KUEUE = "kueue"
APISERVER_EXTRA_ARGS = os.environ.get("JOBSCHEDULER_DEVCLUSTER_APISERVER_ARGS", "").split()
READY_TIMEOUT = float(os.environ.get("JOBSCHEDULER_DEVCLUSTER_TIMEOUT", "120"))


class ClusterError(Exception):
    """A component failed to start or to become ready; the message says which and why."""


def log(msg: str) -> None:
    print(f"[devcluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Binaries and versions


def versions() -> dict[str, str]:
    """The tool versions of this run (KUBERNETES_VERSION from the environment selects one of the
    matrix); a version outside the matrix is a ClusterError naming the choices."""
    try:
        return toolversions.selected()
    except toolversions.VersionError as e:
        raise ClusterError(str(e)) from None


def bin_dir() -> Path:
    versions()  # a bad KUBERNETES_VERSION fails here with the matrix in the message
    return toolversions.bin_dir()


def binary(name: str) -> str:
    path = bin_dir() / name
    if not path.exists():
        raise ClusterError(f"{path} is missing: run hack/tools.sh to build the cluster binaries")
    return str(path.resolve())


# ---------------------------------------------------------------------------------------------
# State: ports, pids, PKI and kubeconfigs under STATE


@dataclasses.dataclass(frozen=True, slots=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def load_or_pick(cls) -> Ports:
        path = STATE / "ports.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        ports = cls(*free_ports(6))
        path.write_text(json.dumps(dataclasses.asdict(ports)))
        return ports


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pid_file(component: str) -> Path:
    return STATE / "pids" / f"{component}.pid"


def log_file(component: str) -> Path:
    return STATE / "logs" / f"{component}.log"


def running_pid(component: str) -> int | None:
    """The component's pid if that process is alive and is still our binary."""
    try:
        pid = int(pid_file(component).read_text())
        # /proc/PID/exe is set at exec; cmdline can read empty for a moment right after it.
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # A zombie (state Z) has exited; a recycled pid runs some other program.
    if stat.rsplit(")", 1)[1].split()[0] == "Z" or Path(exe.removesuffix(" (deleted)")).name != component:
        return None
    return pid


def gone(pid: int) -> bool:
    """The process has fully exited (reaped, or a zombie): its sockets and files are closed.
    Checked by /proc/PID/stat, not by the binary: the exe link vanishes before the sockets do."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_leaf(name: str, subject: str, usage: str, san: str | None = None, *, ca: str = "ca") -> None:
    """A key and certificate signed by the cluster CA (or the CA named `ca`), in
    STATE/pki/NAME.{key,crt}."""
    pki = STATE / "pki"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ext = [
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext",
        f"extendedKeyUsage={usage}",
    ]
    if san:
        ext += ["-addext", f"subjectAltName={san}"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-CA",
        f"{pki}/{ca}.crt",
        "-CAkey",
        f"{pki}/{ca}.key",
        "-keyout",
        f"{pki}/{name}.key",
        "-out",
        f"{pki}/{name}.crt",
        "-days",
        "3650",
        "-subj",
        subject,
        *ext,
    )


def make_ca(name: str, subject: str) -> None:
    pki = STATE / "pki"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        f"{pki}/{name}.key",
        "-out",
        f"{pki}/{name}.crt",
        "-days",
        "3650",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def make_pki() -> None:
    """The cluster's CA, serving and client certificates; a pki dir made before the front proxy
    and Kueue's identity were added is completed (complete_pki)."""
    pki = STATE / "pki"
    if (pki / "done").exists():
        complete_pki()
        return
    pki.mkdir(parents=True, exist_ok=True)
    make_ca("ca", "/CN=jobscheduler-devcluster-ca")
    leaf = make_leaf
    sans = ",".join(
        [
            "IP:127.0.0.1",
            "IP:10.96.0.1",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    leaf("apiserver", "/CN=kube-apiserver", "serverAuth", sans)
    leaf("admin", "/O=system:masters/CN=jobscheduler-admin", "clientAuth")
    leaf("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    leaf("scheduler", "/CN=system:kube-scheduler", "clientAuth")
    # kwok updates node and pod status for many nodes; the admin identity keeps it simple.
    leaf("kwok", "/O=system:masters/CN=kwok-controller", "clientAuth")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f"{pki}/sa.key")
    openssl("pkey", "-in", f"{pki}/sa.key", "-pubout", "-out", f"{pki}/sa.pub")
    complete_pki()
    (pki / "done").touch()


def complete_pki() -> None:
    """Certificates added after the first ones, made when missing so that an older state dir
    gets them too: the front proxy's CA and client (the API server proxies aggregated APIs,
    such as Kueue's visibility API, with that client certificate, and the aggregated server
    trusts the X-Remote-* headers only from it) and Kueue's admin identity."""
    pki = STATE / "pki"
    if not (pki / "front-proxy-client.crt").exists():
        # A CA of its own: a client certificate of the cluster CA must not be able to assert
        # another user's name in X-Remote-User.
        make_ca("front-proxy-ca", "/CN=jobscheduler-devcluster-front-proxy-ca")
        make_leaf("front-proxy-client", "/CN=front-proxy-client", "clientAuth", ca="front-proxy-ca")
    if not (pki / "kueue.crt").exists():
        # Kueue's manager and visibility server act as an admin, as kwok does (no RBAC to keep
        # in step with Kueue's role.yaml); the name tells its requests apart in audit and logs.
        make_leaf("kueue", "/O=system:masters/CN=kueue-controller-manager", "clientAuth")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, identity: str, server: str) -> None:
    pki = STATE / "pki"
    # JSON is valid YAML; every kubeconfig reader (kubectl, client-go, the Python client)
    # takes it. Certificates are embedded so the file can be copied elsewhere.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devcluster",
                "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate-data": b64(pki / f"{identity}.crt"),
                    "client-key-data": b64(pki / f"{identity}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "devcluster",
                "context": {"cluster": "devcluster", "user": identity, "namespace": "default"},
            }
        ],
        "current-context": "devcluster",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# Talking to the API server with the admin certificate (stdlib only)


class Api:
    def __init__(self, port: int) -> None:
        pki = STATE / "pki"
        self.base = f"https://127.0.0.1:{port}"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 5,
        content_type: str = "application/json",
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.startswith(b"{") else raw.decode()


def http_ok(url: str, *, insecure: bool = False, ctx: ssl.SSLContext | None = None) -> bool:
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


def wait_for(component: str, what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if component in (*COMPONENTS, KUEUE) and running_pid(component) is None:
            raise ClusterError(
                f"{component} exited while waiting for {what}; last lines of {log_file(component)}:\n"
                + tail(log_file(component))
            )
        time.sleep(0.2)
    raise ClusterError(
        f"{component}: timed out after {timeout:.0f}s waiting for {what}; last lines of "
        f"{log_file(component)}:\n" + tail(log_file(component))
    )


# ---------------------------------------------------------------------------------------------
# Components


def command(component: str, ports: Ports) -> list[str]:
    pki, data = STATE / "pki", STATE / "data"
    if component == "etcd":
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        client = f"http://127.0.0.1:{ports.etcd_client}"
        return [
            binary("etcd"),
            "--name=devcluster",
            f"--data-dir={data}/etcd",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            "--initial-cluster-state=new",
            # Throwaway test data: skip fsync so a busy 2-core machine stays responsive.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        return with_real_node_flags(
            [
                binary("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports.apiserver}",
                f"--cert-dir={data}/apiserver",
                f"--tls-cert-file={pki}/apiserver.crt",
                f"--tls-private-key-file={pki}/apiserver.key",
                f"--client-ca-file={pki}/ca.crt",
                # The front proxy: the aggregator's client certificate and the headers that name
                # the user to an aggregated API server (Kueue's visibility API). Harmless without
                # one; set always, so that adding one needs no API server restart.
                f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
                f"--proxy-client-key-file={pki}/front-proxy-client.key",
                "--authorization-mode=Node,RBAC",
                # PodSecurity is among the default admission plugins; named here so it is never lost.
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                # Privileged pods are allowed by the server so that PodSecurity, not this flag,
                # is what rejects them in restricted namespaces.
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki}/sa.pub",
                f"--service-account-signing-key-file={pki}/sa.key",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Endpoints may not hold loopback addresses; nothing in-cluster dials the apiserver
                # through the kubernetes Service here.
                "--endpoint-reconciler-type=none",
                # pods/log (and exec, port-forward) are proxied to the node's kubelet endpoint: on
                # kwok's fake nodes that is kwok's own server, at the node's InternalIP (127.0.0.1)
                # and status.daemonEndpoints port. The default order tries Hostname first, which
                # kwok's nodes do not resolve. kwok serves TLS with a self-signed certificate and
                # asks for no client certificate; without --kubelet-certificate-authority the API
                # server does not verify a kubelet's serving certificate (its default).
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--v=1",
                # A test's own cluster may switch APIs off (--runtime-config=batch/v1/cronjobs=false)
                # to see the service refuse an API server that lacks them.
                *APISERVER_EXTRA_ARGS,
            ]
        )
    if component == "kube-controller-manager":
        kc = STATE / "controller-manager.kubeconfig"
        return [
            binary("kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={data}/controller-manager",
            "--leader-elect=false",
            # Every default controller: job, cronjob, garbage-collector, ttl-after-finished,
            # namespace, serviceaccount, serviceaccount-token, podgc, node-lifecycle, ...
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki}/sa.key",
            f"--root-ca-file={pki}/ca.crt",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-job-syncs=10",
            "--concurrent-cron-job-syncs=5",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kube-scheduler":
        kc = STATE / "scheduler.kubeconfig"
        return [
            binary("kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--cert-dir={data}/scheduler",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kwok":
        return [
            binary("kwok"),
            f"--kubeconfig={STATE / 'kwok.kubeconfig'}",
            f"--config={ROOT / 'hack' / 'kwok' / 'stages.yaml'}",
            f"--config={write_kwok_logs_config()}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{ports.kwok}",
            # Published as the nodes' kubelet port (status.daemonEndpoints, see stages.yaml),
            # so the API server reaches kwok's server for pods/log.
            f"--node-port={ports.kwok}",
            "--node-ip=127.0.0.1",
            "--cidr=10.244.0.0/16",
            "--node-lease-duration-seconds=40",
        ]
    if component == KUEUE:
        kq = kueue_install()
        # The visibility server writes a self-signed serving certificate into /visibility: a
        # directory fixed in v0.17.0 (pkg/visibility/server.go), shared by the clusters of this
        # machine; the APIServices skip verifying it (insecureSkipTLSVerify, as upstream). Its
        # authentication and authorization use --kubeconfig (TokenReview, SubjectAccessReview,
        # the front-proxy CA from kube-system/extension-apiserver-authentication).
        return [
            str(kq.binary().resolve()),
            f"--config={kq.config_file}",
            f"--kubeconfig={STATE / 'kueue.kubeconfig'}",
            f"--visibility-server-port={kq.ports().visibility}",
        ]
    raise ClusterError(f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}")


def node() -> realnode.Node:
    return realnode.Node(STATE, ROOT, bin_dir())


def with_real_node_flags(argv: list[str]) -> list[str]:
    """The API server's flags, changed where a real node needs it (realnode.apiserver_flags)."""
    if not node().enabled():
        return argv
    overrides = node().apiserver_flags()
    kept = [a for a in argv if a.split("=", 1)[0] not in overrides]
    return kept + [f"{flag}={value}" for flag, value in overrides.items()]


def prepare_real_node() -> None:
    """Before the API server starts: the images, the node's certificates and realnode.json."""
    started = time.monotonic()
    other = node().other_owner_alive()
    if other:
        raise ClusterError(
            f"the cluster in {other} runs this machine's real node; only one per machine: "
            "stop it first, or start this cluster without --real-node"
        )
    if subprocess.run(["bash", str(ROOT / "hack" / "packages.sh"), "--check"]).returncode != 0:
        raise ClusterError("the real node needs Debian packages: run hack/packages.sh (as root)")
    for name in ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr"):
        if not (bin_dir() / name).exists():
            raise ClusterError(f"{bin_dir() / name} is missing: run `hack/tools.sh node`")

    def image(action: str) -> str:
        proc = subprocess.run(
            ["bash", str(ROOT / "hack" / "image.sh"), action], stdout=subprocess.PIPE, text=True
        )
        if proc.returncode != 0:
            raise ClusterError(f"hack/image.sh {action} failed (see its output above)")
        return proc.stdout.strip().splitlines()[-1]

    node().prepare_state(image=image("build"), sandbox=image("sandbox"))
    node().make_certs(make_leaf)
    log(f"real node prepared in {time.monotonic() - started:.1f}s (image {node().info()['image']})")


def start_real_node(ports: Ports) -> None:
    # kubelet and kube-proxy run on this machine: loopback, which the serving cert names.
    node().write_configs(f"https://127.0.0.1:{ports.apiserver}", write_kubeconfig)
    try:
        node().up(Api(ports.apiserver), bin_dir().parent)
    except (realnode.NodeError, subprocess.TimeoutExpired) as e:
        raise ClusterError(str(e)) from e


def write_kwok_logs_config() -> Path:
    """kwok's ClusterLogs: every pod on the fake nodes serves hack/kwok/pod.log (CRI log format)
    as its containers' log, through pods/log (kubectl logs). kwok's selector matches only pod
    names and namespaces, not annotations, so it is all pods. Written into the state directory
    because kwok resolves a relative logsFile against its working directory."""
    path = STATE / "kwok-logs.yaml"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "ClusterLogs",
                "metadata": {"name": "simulated-pod-logs"},
                "spec": {"logs": [{"logsFile": str(ROOT / "hack" / "kwok" / "pod.log")}]},
            },
            indent=2,
        )
        + "\n"
    )
    return path


def ready_check(component: str, ports: Ports) -> tuple[str, Callable[[], bool]]:
    if component == "etcd":
        return "/health", lambda: http_ok(f"http://127.0.0.1:{ports.etcd_client}/health")
    if component == "kube-apiserver":
        api = Api(ports.apiserver)
        return "/readyz", lambda: http_ok(f"{api.base}/readyz", ctx=api.ctx)
    if component == "kube-controller-manager":
        return "/healthz", lambda: http_ok(
            f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure=True
        )
    if component == "kube-scheduler":
        return "/healthz", lambda: http_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure=True)
    if component == "kwok":
        return "/healthz", lambda: http_ok(f"http://127.0.0.1:{ports.kwok}/healthz")
    if component == KUEUE:
        return "health, webhook certificate and TLS, webhooks, visibility API", kueue_ready(ports)
    raise ClusterError(f"unknown component {component!r}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listen_ports(component: str, ports: Ports) -> list[int]:
    if component == KUEUE:
        return list(dataclasses.astuple(kueue_install().ports()))
    return {
        "etcd": [ports.etcd_client, ports.etcd_peer],
        "kube-apiserver": [ports.apiserver],
        "kube-controller-manager": [ports.controller_manager],
        "kube-scheduler": [ports.scheduler],
        "kwok": [ports.kwok],
    }[component]


def start(component: str, ports: Ports) -> None:
    if running_pid(component):
        return
    if component == "kube-apiserver":
        make_pki()  # a state dir from before the front-proxy flags gets their files
    # A process just killed may hold its listening socket a moment longer than its pid.
    deadline = time.monotonic() + 15
    for port in listen_ports(component, ports):
        while not port_free(port):
            if time.monotonic() > deadline:
                raise ClusterError(f"{component}: port {port} is still in use by another process")
            time.sleep(0.1)
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    (STATE / "data").mkdir(parents=True, exist_ok=True)
    argv = command(component, ports)
    with open(log_file(component), "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        out.flush()
        # A session of its own: the component outlives this script and ignores its terminal.
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=STATE,
        )
    pid_file(component).write_text(str(proc.pid))
    what, check = ready_check(component, ports)
    started = time.monotonic()
    wait_for(component, what, check)
    log(f"{component} ready (pid {proc.pid}, {time.monotonic() - started:.1f}s)")


def stop(component: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 5) -> bool:
    pid = running_pid(component)
    if pid is None:
        pid_file(component).unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    if sig in (signal.SIGSTOP, signal.SIGCONT):
        return True
    # A stopped process cannot act on SIGTERM until it is continued.
    os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not gone(pid):
        time.sleep(0.05)
    if not gone(pid):
        log(f"{component} (pid {pid}) ignored {sig.name} for {timeout:.0f}s: sending SIGKILL")
        os.kill(pid, signal.SIGKILL)
        while not gone(pid):
            time.sleep(0.05)
    pid_file(component).unlink(missing_ok=True)
    log(f"{component} stopped (pid {pid}, {sig.name})")
    return True


# ---------------------------------------------------------------------------------------------
# Cluster-level operations


def bootstrap(ports: Ports) -> None:
    """Fake nodes, then wait until they are Ready and the default ServiceAccount exists."""
    api = Api(ports.apiserver)
    for i in range(NODES):
        name = f"kwok-node-{i}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/agent": "",
                },
            },
            "spec": {},
            "status": {
                "allocatable": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS},
                "capacity": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS},
            },
        }
        try:
            api.request("POST", "/api/v1/nodes", node)
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise ClusterError(f"creating node {name}: HTTP {e.code}: {e.read()[:300]!r}") from e

    def nodes_ready() -> bool:
        items = api.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        ready = [
            n
            for n in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            and not any(t.get("effect") == "NoSchedule" for t in n["spec"].get("taints", []))
        ]
        return len(ready) >= NODES

    wait_for("kwok", f"{NODES} Ready, schedulable fake nodes", nodes_ready)

    def default_sa() -> bool:
        try:
            api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except urllib.error.HTTPError:
            return False

    wait_for("kube-controller-manager", "the default ServiceAccount", default_sa)


def settle(ports: Ports) -> None:
    """After an API server restart, waits until the controllers' watches have caught up: their
    client-go reflectors back off while it is down, and a namespace created before they resume
    gets no ServiceAccount for a while. A probe namespace getting one proves they are back."""
    api = Api(ports.apiserver)
    name = f"devcluster-probe-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
    api.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )

    def has_sa() -> bool:
        try:
            api.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")
            return True
        except urllib.error.HTTPError:
            return False

    try:
        wait_for(
            "kube-controller-manager",
            "controllers to resume after the API server restart",
            has_sa,
            timeout=READY_TIMEOUT,
        )
    finally:
        api.request("DELETE", f"/api/v1/namespaces/{name}")


def restart_dependents(ports: Ports) -> None:
    """Restarts the components that watch the API server, then waits until they are back.

    While the API server is down, their client-go reflectors back off (up to 30 s between
    tries, and the first tries after a restart meet 403s until RBAC has synced), so pods and
    ServiceAccounts could lag by a minute or more. Tests restart the API server to observe
    *this service's* recovery; a fresh controller-manager, scheduler and kwok keep the rest of
    the cluster from adding that minute to every such test. Kueue's manager, when running, is
    restarted last, once the controllers are back."""
    for component in ("kube-controller-manager", "kube-scheduler", "kwok"):
        if running_pid(component):
            stop(component)
            start(component, ports)
    settle(ports)
    if running_pid(KUEUE):
        stop(KUEUE)
        start(KUEUE, ports)


def up(*, real_node: bool = False, with_kueue: bool = False) -> None:
    started = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    try:
        pinned = versions()
    except ClusterError as e:
        log(f"ERROR: {e}")
        raise SystemExit(1) from None
    if all(running_pid(c) for c in COMPONENTS) and (STATE / "kubeconfig").exists():
        running_version = (STATE / "version").read_text().strip() if (STATE / "version").exists() else "?"
        if running_version != pinned["KUBERNETES_VERSION"]:
            log(
                f"ERROR: the cluster in {STATE} runs Kubernetes {running_version}, not "
                f"{pinned['KUBERNETES_VERSION']}: stop it first (`hack/devcluster.py down`) or give the "
                "other version a state dir of its own (JOBSCHEDULER_DEVCLUSTER_DIR)"
            )
            raise SystemExit(1)
        log(f"already running Kubernetes {running_version}; kubeconfig: {STATE / 'kubeconfig'}")
        if real_node:
            node_up()
        if with_kueue:
            kueue_up()
        return
    for name in COMPONENTS:
        binary(name)  # fail early, before starting anything, if a binary is missing
    if with_kueue:
        try:
            kueue_install().check_tools()
        except kueue.KueueError as e:
            log(f"ERROR: {e}")
            raise SystemExit(1) from None
    ports = Ports.load_or_pick()
    make_pki()
    server = f"https://127.0.0.1:{ports.apiserver}"
    write_kubeconfig(STATE / "kubeconfig", "admin", server)
    write_kubeconfig(STATE / "controller-manager.kubeconfig", "controller-manager", server)
    write_kubeconfig(STATE / "scheduler.kubeconfig", "scheduler", server)
    write_kubeconfig(STATE / "kwok.kubeconfig", "kwok", server)
    try:
        if real_node:
            prepare_real_node()
        elif node().enabled():  # state of an earlier run with a real node: not this time
            node_down()
            (STATE / "realnode.json").unlink()
    except ClusterError as e:
        log(f"ERROR: {e}")
        raise SystemExit(1) from None
    log(
        f"starting Kubernetes {pinned['KUBERNETES_VERSION']} (etcd {pinned['ETCD_VERSION']}, "
        f"kwok {pinned['KWOK_VERSION']}) from {bin_dir()} in {STATE}"
    )
    (STATE / "version").write_text(pinned["KUBERNETES_VERSION"] + "\n")
    try:
        for component in COMPONENTS:
            start(component, ports)
        bootstrap(ports)
        if real_node:
            start_real_node(ports)
        if with_kueue:
            kueue_up()
        elif kueue_install().enabled():
            # An earlier run had Kueue and was not taken down: its webhooks are still in etcd.
            log("this state dir had Kueue (not asked for this time): removing it")
            kueue_down()
    except (ClusterError, OSError, urllib.error.URLError) as e:
        log(f"ERROR: {e}")
        log("stopping what was started; logs are kept in " + str(STATE / "logs"))
        stop(KUEUE)
        node_down()
        for component in reversed(COMPONENTS):
            stop(component)
        raise SystemExit(1) from None
    log(f"cluster ready in {time.monotonic() - started:.1f}s; " f"export KUBECONFIG={STATE / 'kubeconfig'}")


def node_up() -> None:
    """Adds the real node to a running cluster; its API server is restarted once with the
    real node's flags if it was started without them."""
    if not (STATE / "ports.json").exists() or running_pid("kube-apiserver") is None:
        raise ClusterError("no cluster running: `hack/devcluster.py up --real-node` starts both")
    ports = Ports.load_or_pick()
    if not node().enabled():
        prepare_real_node()
        log("restarting the API server with the real node's flags")
        stop("kube-apiserver")
        start("kube-apiserver", ports)
        restart_dependents(ports)
    start_real_node(ports)


def node_down() -> None:
    if not node().enabled() and node().owner() != STATE:
        return  # this cluster never ran a real node (a dead one elsewhere is cleaned at its next up)
    try:
        node().down()
    except (realnode.NodeError, subprocess.TimeoutExpired) as e:
        raise ClusterError(str(e)) from e


# ---------------------------------------------------------------------------------------------
# Kueue: an optional component (up --kueue, kueue-up, kueue-down); see hack/kueue.py


def kueue_install() -> kueue.Install:
    version = versions()["KUEUE_VERSION"]
    return kueue.Install(STATE, toolversions.cache_dir() / "tools" / f"kueue-{version}", version)


def kubectl(*args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """The cluster's kubectl, as admin; a failure is a ClusterError with its stderr."""
    argv = [binary("kubectl"), f"--kubeconfig={STATE / 'kubeconfig'}", *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args[:2])} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def has_front_proxy(component: str = "kube-apiserver") -> bool:
    pid = running_pid(component)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.startswith(b"--proxy-client-cert-file=") for a in argv)


def kueue_ready(ports: Ports, *, quiet: bool = False) -> kueue.Readiness:
    """Kueue's readiness check (kueue.Readiness); quiet: no progress lines and no writes, for
    status."""
    return kueue.Readiness(Api(ports.apiserver), kueue_install(), log=None if quiet else log)


def kueue_up() -> None:
    """Adds Kueue to the running cluster: its manifests, its configuration, its manager; ready
    as kueue.Readiness defines it. Idempotent; on failure, removes what it installed again
    (a webhook that fails closed would otherwise block every Job), keeping the logs."""
    if not (STATE / "ports.json").exists() or running_pid("kube-apiserver") is None:
        raise ClusterError("no cluster running: `hack/devcluster.py up --kueue` starts one with Kueue")
    started = time.monotonic()
    kq = kueue_install()
    try:
        kq.check_tools()
    except kueue.KueueError as e:
        raise ClusterError(str(e)) from None
    ports = Ports.load_or_pick()
    if kq.enabled() and running_pid(KUEUE):
        if kueue_ready(ports, quiet=True)():
            log(f"Kueue {kq.version} already running (pid {running_pid(KUEUE)})")
            return
        log("Kueue's manager runs but is not ready: installing again and restarting it")
        stop(KUEUE)
    make_pki()
    write_kubeconfig(STATE / "kueue.kubeconfig", "kueue", f"https://127.0.0.1:{ports.apiserver}")
    if not has_front_proxy():
        log("restarting the API server with the front-proxy flags (Kueue's visibility API needs them)")
        stop("kube-apiserver")
        start("kube-apiserver", ports)
        restart_dependents(ports)
    try:
        kports = kq.enable(free_ports)
        log(
            f"installing Kueue {kq.version} from {kq.tools} (namespace {kueue.NAMESPACE}; ports: "
            f"health {kports.health}, webhook {kports.webhook}, visibility {kports.visibility})"
        )
        install_kueue(kq, ports)
        kq.write_config()
        log("starting Kueue's manager")
        start(KUEUE, ports)
    except (ClusterError, kueue.KueueError, OSError, urllib.error.URLError, subprocess.TimeoutExpired) as e:
        log(f"ERROR: Kueue did not come up: {e}")
        log(f"removing it again; its log stays in {log_file(KUEUE)}")
        try:
            kueue_down()
        except ClusterError as again:
            log(f"ERROR: {again}")
        raise ClusterError(f"Kueue did not come up (see above and {log_file(KUEUE)})") from None
    log(
        f"Kueue {kq.version} ready in {time.monotonic() - started:.1f}s; "
        f"queue Jobs with the label kueue.x-k8s.io/queue-name (state: {kq.info_file})"
    )


def install_kueue(kq: kueue.Install, ports: Ports) -> None:
    step = time.monotonic()
    objects = kq.render(kubectl)
    kinds: dict[str, int] = {}
    for obj in objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
    log(f"kueue: rendered {summary} ({time.monotonic() - step:.1f}s)")
    step = time.monotonic()
    # Server-side: the CRDs are too big for kubectl's last-applied annotation, and the CA
    # bundles the rotator writes into them (and into the webhooks) stay the rotator's.
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=jobscheduler-devcluster",
        "-f",
        str(kq.manifest_file),
    )
    kq.create_secret(Api(ports.apiserver))
    log(f"kueue: applied, Secret {kueue.WEBHOOK_SECRET} in place ({time.monotonic() - step:.1f}s)")


def kueue_down() -> None:
    """Removes Kueue (kueue.Install.remove): the manager first, then its objects."""
    kq = kueue_install()
    stop(KUEUE)
    if not kq.enabled():
        log("Kueue is not enabled in this cluster: nothing to remove")
        return
    if running_pid("kube-apiserver") is None:
        raise ClusterError(
            "the API server is not running: start it (`hack/devcluster.py start kube-apiserver`) "
            "so that Kueue's objects can be removed, or take the whole cluster down"
        )
    started = time.monotonic()
    try:
        kq.remove(Api(Ports.load_or_pick().apiserver), wait=wait_for, log=log)
    except (kueue.KueueError, OSError, urllib.error.URLError) as e:
        raise ClusterError(f"removing Kueue: {e}; run `hack/devcluster.py kueue-down` again") from None
    log(f"Kueue removed in {time.monotonic() - started:.1f}s")


def down() -> None:
    # Kueue and the node first: they would otherwise retry a vanished API server.
    stop(KUEUE)
    node_down()
    for component in reversed(COMPONENTS):
        stop(component)
    if STATE.exists():
        shutil.rmtree(STATE)
    log(f"cluster down; removed {STATE}")


def running(*, real_node: bool = False, with_kueue: bool = False) -> int:
    """0 when every component's process is alive (no readiness probes: a loaded machine can make
    a probe time out, and a caller deciding whether it owns the cluster must not guess wrong)."""
    alive = STATE.exists() and (STATE / "kubeconfig").exists() and all(running_pid(c) for c in COMPONENTS)
    if alive and real_node:
        alive = node().enabled() and all(node().running_pid(c) for c in realnode.NODE_COMPONENTS)
    if alive and with_kueue:
        alive = kueue_install().enabled() and running_pid(KUEUE) is not None
    return 0 if alive else 1


def status() -> int:
    if not STATE.exists():
        print("not running")
        return 1
    ports = Ports.load_or_pick()
    code = 0
    for component in COMPONENTS:
        pid = running_pid(component)
        what, check = ready_check(component, ports)
        state = "ready" if pid and check() else ("running, not ready" if pid else "stopped")
        code |= 0 if state == "ready" else 1
        print(f"{component:24} {state:20} pid={pid or '-'}")
    if node().enabled():
        for component in realnode.NODE_COMPONENTS:
            pid = node().running_pid(component)
            code |= 0 if pid else 1
            print(f"{'node/' + component:24} {'running' if pid else 'stopped':20} pid={pid or '-'}")
    kq = kueue_install()
    if kq.enabled():
        pid = running_pid(KUEUE)
        ready = pid is not None and kueue_ready(ports, quiet=True)()
        state = "ready" if ready else ("running, not ready" if pid else "stopped")
        code |= 0 if state == "ready" else 1
        kports = kq.ports()
        print(f"{KUEUE:24} {state:20} pid={pid or '-'}")
        print(
            f"kueue: {kq.version}, namespace {kueue.NAMESPACE}, ports health={kports.health} "
            f"webhook={kports.webhook} visibility={kports.visibility} ({kq.info_file})"
        )
    print(f"kubeconfig: {STATE / 'kubeconfig'}")
    return code


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "action",
        choices=[
            "up",
            "down",
            "status",
            "running",
            "env",
            "stop",
            "start",
            "restart",
            "pause",
            "resume",
            "node-up",
            "node-down",
            "node-rss",
            "kueue-up",
            "kueue-down",
        ],
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: also start the real node (containerd, kubelet, kube-proxy); running: and check it. "
        "A flag, not an environment variable, so that clusters started by tests never inherit it",
    )
    parser.add_argument(
        "--kueue",
        action="store_true",
        help="up: also install and start Kueue; running: and check its manager runs",
    )
    parser.add_argument(
        "component",
        nargs="?",
        choices=(*COMPONENTS, KUEUE),
        help=f"{KUEUE} only in a cluster that has Kueue (up --kueue, kueue-up)",
    )
    parser.add_argument("--signal", default="TERM", help="signal for stop/restart (TERM, KILL)")
    args = parser.parse_args()
    try:
        if args.action == "up":
            up(real_node=args.real_node, with_kueue=args.kueue)
        elif args.action == "kueue-up":
            kueue_up()
        elif args.action == "kueue-down":
            kueue_down()
        elif args.action == "node-up":
            node_up()
        elif args.action == "node-down":
            node_down()
        elif args.action == "node-rss":
            print(json.dumps(node().rss()))
        elif args.action == "down":
            down()
        elif args.action == "running":
            return running(real_node=args.real_node, with_kueue=args.kueue)
        elif args.action == "status":
            return status()
        elif args.action == "env":
            print(f"export KUBECONFIG={STATE / 'kubeconfig'}")
        else:
            if not args.component:
                parser.error(f"{args.action} needs a component: {', '.join((*COMPONENTS, KUEUE))}")
            if not (STATE / "ports.json").exists():
                raise ClusterError("no cluster state: run `hack/devcluster.py up` first")
            if args.component == KUEUE and not kueue_install().enabled():
                raise ClusterError("this cluster has no Kueue: `hack/devcluster.py kueue-up` adds it")
            ports = Ports.load_or_pick()
            sig = signal.Signals[f"SIG{args.signal.upper().removeprefix('SIG')}"]
            if args.action in ("stop", "restart"):
                stop(args.component, sig)
            if args.action in ("start", "restart"):
                start(args.component, ports)
                if args.component == "kube-apiserver":
                    restart_dependents(ports)
            if args.action == "pause":
                stop(args.component, signal.SIGSTOP)
            if args.action == "resume":
                stop(args.component, signal.SIGCONT)
    except ClusterError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
