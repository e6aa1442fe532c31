"""One real Kubernetes node for the dev cluster, beside the kwok nodes (hack/devcluster.py).

containerd (runc from Debian), kubelet and kube-proxy run as root on this machine; pods get a
CNI bridge of their own and reach the API server through the `kubernetes` Service. The node is
tainted and labelled, so only pods that ask for it land there. Everything it creates is named
so that teardown can find it again after a SIGKILL of any part:

- processes: pid files under STATE/node/pids, shims by their binary, containers by cgroup;
- cgroups: CGROUP_ROOT in every v1 hierarchy (kubelet's cgroupRoot, containerd's parent);
- mounts: everything under STATE/node and RUN_DIR (kubelet volumes, rootfs, netns files);
- network: bridge BRIDGE with POD_SUBNET, iptables chains KUBE-* (kube-proxy, kubelet) and
  JSRN-* (ours), netns files under RUN_DIR.

Only one real node can run per machine (host cgroups, bridge, kubelet port): RUN_DIR/owner
names the state directory of the cluster that owns it, and an flock serialises up and down.
Standard library only, like devcluster.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import realnode_config as config
from realnode_config import (
    BRIDGE,
    CGROUP_ROOT,
    CONTAINERD_SOCKET,
    GATEWAY,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    NODE_LABEL,
    NODE_NAME,
    NODE_TAINT,
    POD_SUBNET,
    PROXY_HEALTHZ_PORT,
    RUN_DIR,
)

CHAIN_PREFIXES = ("KUBE-", "JSRN-")
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")


class NodeError(Exception):
    """The real node could not be started or cleaned up; the message says which step."""


def log(msg: str) -> None:
    print(f"[realnode {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


class Node:
    """The real node of the cluster whose state directory is `state`."""

    def __init__(self, state: Path, root: Path, bin_dir: Path) -> None:
        self.state = state
        self.root = root
        self.bin_dir = bin_dir
        self.dir = state / "node"
        self.pki = state / "pki"

    # -----------------------------------------------------------------------------------------
    # Files and processes

    def pid_file(self, component: str) -> Path:
        return self.dir / "pids" / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.state / "logs" / f"{component}.log"

    def binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise NodeError(f"{path} is missing: run `hack/tools.sh node` to build the real node's parts")
        return str(path.resolve())

    def running_pid(self, component: str) -> int | None:
        try:
            pid = int(self.pid_file(component).read_text())
            exe = os.readlink(f"/proc/{pid}/exe")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return None
        if stat.rsplit(")", 1)[1].split()[0] == "Z" or Path(exe.removesuffix(" (deleted)")).name != component:
            return None
        return pid

    def enabled(self) -> bool:
        """This cluster was started with a real node (the API server is set up for it)."""
        return (self.state / "realnode.json").exists()

    def info(self) -> dict[str, Any]:
        return json.loads((self.state / "realnode.json").read_text())

    # -----------------------------------------------------------------------------------------
    # Ownership: one real node per machine

    @contextlib.contextmanager
    def machine_lock(self) -> Iterator[None]:
        with open(RUN_DIR.parent / "jobscheduler-realnode.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def owner(self) -> Path | None:
        try:
            return Path((RUN_DIR / "owner").read_text().strip())
        except OSError:
            return None

    def other_owner_alive(self) -> Path | None:
        """The state directory of another cluster whose real node runs on this machine."""
        owner = self.owner()
        if owner and owner != self.state:
            other = Node(owner, self.root, self.bin_dir)
            if any(other.running_pid(c) for c in NODE_COMPONENTS):
                return owner
        return None

    def claim(self) -> None:
        """Takes the machine's real node for this cluster; refuses while another cluster's
        node runs, and cleans up after one that died."""
        owner = self.owner()
        if owner and owner != self.state:
            other = Node(owner, self.root, self.bin_dir)
            alive = [c for c in NODE_COMPONENTS if other.running_pid(c)]
            if alive:
                raise NodeError(
                    f"the cluster in {owner} runs this machine's real node ({', '.join(alive)} alive); "
                    "only one real node per machine: stop it first (`hack/devcluster.py down` there)"
                )
            log(f"the real node of {owner} died without teardown: cleaning up after it")
            other.cleanup()
        elif owner == self.state and any(self.running_pid(c) for c in NODE_COMPONENTS):
            return
        elif owner or self.leftovers():
            log("leftovers of a real node that was not stopped cleanly: cleaning up first")
            self.cleanup()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "owner").write_text(str(self.state))

    # -----------------------------------------------------------------------------------------
    # Configuration

    def prepare_state(self, *, image: str, sandbox: str) -> None:
        """Written before the API server starts: devcluster.py reads it for the flags below."""
        self.dir.mkdir(parents=True, exist_ok=True)
        info = {
            "node": NODE_NAME,
            "label": f"{NODE_LABEL[0]}={NODE_LABEL[1]}",
            "taint": NODE_TAINT,
            "pod_subnet": POD_SUBNET,
            "gateway": GATEWAY,
            "bridge": BRIDGE,
            "image": image,
            "sandbox_image": sandbox,
        }
        (self.state / "realnode.json").write_text(json.dumps(info, indent=2) + "\n")

    def apiserver_flags(self) -> dict[str, str]:
        return config.apiserver_flags(self.pki)

    def make_certs(self, leaf: Callable[..., None]) -> None:
        if not (self.pki / "apiserver-kubelet-client.crt").exists():
            # kubelet's webhook authorizer asks the API server; system:masters may do anything.
            leaf(
                "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth"
            )
        if not (self.pki / "kubelet.crt").exists():
            leaf("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
            leaf(
                "kubelet-serving",
                f"/O=system:nodes/CN=system:node:{NODE_NAME}",
                "serverAuth",
                f"IP:{GATEWAY},DNS:{NODE_NAME}",
            )
            leaf("kube-proxy", "/CN=system:kube-proxy", "clientAuth")

    def write_configs(self, server: str, write_kubeconfig: Callable[[Path, str, str], None]) -> None:
        d = self.dir
        for sub in ("pids", "kubelet", "pod-logs", "cni/net.d", "cni/ipam", "containerd/root"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        write_kubeconfig(d / "kubelet.kubeconfig", "kubelet", server)
        write_kubeconfig(d / "kube-proxy.kubeconfig", "kube-proxy", server)
        runc = shutil.which("runc") or "/usr/sbin/runc"
        toml = config.containerd_toml(d, sandbox_image=self.info()["sandbox_image"], runc=runc)
        write_if_changed(d / "containerd.toml", toml)
        write_if_changed(d / "cni/net.d/10-jsrn.conflist", json.dumps(config.cni_conflist(d), indent=2))
        write_if_changed(d / "kubelet.json", json.dumps(config.kubelet_config(d, self.pki), indent=2) + "\n")
        write_if_changed(d / "kube-proxy.json", json.dumps(config.kube_proxy_config(d), indent=2) + "\n")

    def command(self, component: str) -> list[str]:
        d = self.dir
        if component == "containerd":
            return [self.binary("containerd"), f"--config={d / 'containerd.toml'}", "--log-level=warn"]
        if component == "kubelet":
            return [
                self.binary("kubelet"),
                f"--config={d / 'kubelet.json'}",
                f"--kubeconfig={d / 'kubelet.kubeconfig'}",
                f"--root-dir={d / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
                "--v=1",
            ]
        if component == "kube-proxy":
            return [self.binary("kube-proxy"), f"--config={d / 'kube-proxy.json'}", "--v=1"]
        raise NodeError(f"unknown node component {component!r}")

    # -----------------------------------------------------------------------------------------
    # Start

    def start_process(self, component: str, env: dict[str, str] | None = None) -> int:
        pid = self.running_pid(component)
        if pid:
            return pid
        argv = self.command(component)
        self.log_file(component).parent.mkdir(parents=True, exist_ok=True)
        self.pid_file(component).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(component), "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
                env={**os.environ, "PATH": f"/usr/sbin:/usr/bin:/sbin:/bin:{self.bin_dir}", **(env or {})},
            )
        self.pid_file(component).write_text(str(proc.pid))
        return proc.pid

    def wait(self, component: str, what: str, check: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.running_pid(component) is None:
                raise NodeError(f"{component} exited while waiting for {what}:\n{self.tail(component)}")
            time.sleep(0.2)
        raise NodeError(
            f"{component}: timed out after {timeout:.0f}s waiting for {what}:\n{self.tail(component)}"
        )

    def tail(self, component: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file(component).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(
            self.binary("ctr"),
            "--address",
            str(CONTAINERD_SOCKET),
            "-n",
            "k8s.io",
            *args,
            timeout=timeout,
        )

    def setup_network(self) -> None:
        """The bridge exists before the kubelet starts (its node IP is the gateway); the
        JSRN-* chains keep the API server's all-address listener and the pods in bounds."""
        if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")  # kube-proxy's DNAT'd replies
        apiserver_port = json.loads((self.state / "ports.json").read_text())["apiserver"]
        ipt = ["iptables", "-w", "5"]
        for chain, hook, rules in (
            (
                "JSRN-INPUT",
                "INPUT",
                [
                    ["-i", "lo", "-j", "RETURN"],
                    ["-i", BRIDGE, "-j", "RETURN"],
                    ["-p", "tcp", "--dport", str(apiserver_port), "-j", "REJECT"],
                    ["-p", "tcp", "--dport", str(KUBELET_PORT), "-j", "REJECT"],
                ],
            ),
            # Pods talk to this machine only (the gateway and each other): no forwarding out.
            ("JSRN-FORWARD", "FORWARD", [["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "REJECT"]]),
        ):
            if run(*ipt, "-n", "-L", chain, check=False).returncode != 0:
                run(*ipt, "-N", chain)
            run(*ipt, "-F", chain)
            for rule in rules:
                run(*ipt, "-A", chain, *rule)
            if run(*ipt, "-C", hook, "-j", chain, check=False).returncode != 0:
                run(*ipt, "-I", hook, "1", "-j", chain)

    def create_cgroup_root(self) -> None:
        """kubelet refuses a cgroupRoot that does not exist: make it in every v1 hierarchy
        (cpuset needs its cpus and mems filled in from the parent before it takes tasks)."""
        base = Path("/sys/fs/cgroup")
        tops = [h for h in base.iterdir() if h.is_dir() and (h / "cgroup.procs").exists()]
        if (base / "cgroup.procs").exists():  # a pure cgroup v2 machine
            tops = [base]
        for top in tops:
            (top / CGROUP_ROOT).mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (top / knob).exists() and not (top / CGROUP_ROOT / knob).read_text().strip():
                    (top / CGROUP_ROOT / knob).write_text((top / knob).read_text())

    def load_images(self, cache: Path) -> None:
        info = self.info()
        refs = (info["sandbox_image"], info["image"])
        for ref in refs:
            archive = cache / "images" / (ref.replace("/", "_").replace(":", "_") + ".tar")
            if not archive.exists():
                archive.parent.mkdir(parents=True, exist_ok=True)
                run("bash", str(self.root / "hack/image.sh"), "save", ref, str(archive), timeout=300)
            started = time.monotonic()
            self.ctr("images", "import", "--local", str(archive))
            log(f"loaded {ref} into the node's containerd ({time.monotonic() - started:.1f}s)")
        # An archive is ~250 MB and every source change makes a new one: keep only the two
        # just imported.
        keep = {(cache / "images" / (ref.replace("/", "_").replace(":", "_") + ".tar")) for ref in refs}
        for old in (cache / "images").glob("*.tar"):
            if old not in keep:
                old.unlink(missing_ok=True)

    def up(self, api: Any, cache: Path) -> None:
        started = time.monotonic()
        with self.machine_lock():
            self.claim()
            self.setup_network()
            self.start_process("containerd")
            sock = CONTAINERD_SOCKET
            self.wait(
                "containerd",
                "its socket",
                lambda: sock.exists() and self.ctr("version", timeout=10).returncode == 0,
            )
            log(f"containerd ready ({time.monotonic() - started:.1f}s)")
            self.load_images(cache)
            self.create_cgroup_root()
            self.start_process("kubelet")
            self.start_process("kube-proxy")
            self.wait(
                "kubelet", "its /healthz", lambda: http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz")
            )
            self.wait("kubelet", f"node {NODE_NAME} Ready", lambda: node_ready(api), timeout=120)
            self.wait(
                "kube-proxy",
                "its /healthz",
                lambda: http_ok(f"http://127.0.0.1:{PROXY_HEALTHZ_PORT}/healthz"),
            )
        log(f"real node {NODE_NAME} ready in {time.monotonic() - started:.1f}s ({POD_SUBNET} on {BRIDGE})")

    # -----------------------------------------------------------------------------------------
    # Teardown: idempotent, and it assumes nothing about how the last run ended

    def leftovers(self) -> list[str]:
        """What of a real node is still on this machine (empty when clean)."""
        found = []
        found += [f"process {p}" for p in self.node_pids()]
        found += [f"mount {m}" for m in self.mounts()]
        found += [f"cgroup {c}" for c in self.cgroups()]
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            found.append(f"bridge {BRIDGE}")
        found += [f"iptables {c}" for c in iptables_chains()]
        if RUN_DIR.exists() and any(RUN_DIR.iterdir()):
            found.append(f"dir {RUN_DIR}")
        if host_containerd_dir_is_ours():
            found.append(f"dir {HOST_CONTAINERD_DIR}")
        return found

    def node_pids(self) -> list[int]:
        """Our node's processes: its daemons and shims (by binary) and every process in its
        cgroups (the containers)."""
        ours = {
            str((self.bin_dir / b).resolve())
            for b in ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy")
        }
        pids = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.readlink(proc / "exe").removesuffix(" (deleted)") in ours:
                    pids.add(int(proc.name))
            except OSError:
                pass
        for cg in self.cgroups():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (Path(cg) / "cgroup.procs").read_text().split())
        pids.discard(os.getpid())
        return sorted(pids)

    def mounts(self) -> list[str]:
        roots = (str(self.dir) + "/", str(RUN_DIR) + "/")
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(roots) or point + "/" in roots:
                found.append(point)
        return found

    def cgroups(self) -> list[str]:
        found = []
        base = Path("/sys/fs/cgroup")
        candidates = [base / CGROUP_ROOT] + [h / CGROUP_ROOT for h in base.iterdir() if h.is_dir()]
        for top in candidates:
            if top.is_dir() and (top / "cgroup.procs").exists():
                found += [str(p) for p, _, _ in os.walk(top)]
        return found

    def cleanup(self) -> None:
        """Removes every trace of a real node: processes, mounts, cgroups, netns, bridge,
        iptables chains and the runtime directory. Safe to run any number of times."""
        for component in ("kube-proxy", "kubelet"):
            pid = self.running_pid(component)
            if pid:
                os.kill(pid, signal.SIGTERM)
        for component in ("kube-proxy", "kubelet"):
            wait_gone(self.running_pid(component), 5)
        # Whatever is left (containerd, shims, containers): SIGKILL, and wait until gone.
        for _ in range(5):
            pids = self.node_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in pids:
                wait_gone(pid, 5)
        # Mounts, deepest first (volumes inside pod dirs, rootfs inside task dirs, netns files).
        for point in sorted(self.mounts(), key=lambda p: p.count("/"), reverse=True):
            run("umount", "--lazy", point, check=False)
        for cg in sorted(self.cgroups(), key=lambda p: p.count("/"), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(cg)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run("ip", "link", "del", BRIDGE, check=False)
        remove_chains()
        if RUN_DIR.exists():
            shutil.rmtree(RUN_DIR, ignore_errors=True)
        if host_containerd_dir_is_ours():
            shutil.rmtree(HOST_CONTAINERD_DIR, ignore_errors=True)
        for component in NODE_COMPONENTS:
            self.pid_file(component).unlink(missing_ok=True)
        left = self.leftovers()
        if left:
            raise NodeError("real node teardown left: " + ", ".join(left))

    def down(self) -> None:
        started = time.monotonic()
        with self.machine_lock():
            owner = self.owner()
            if owner and owner != self.state:
                other = Node(owner, self.root, self.bin_dir)
                if any(other.running_pid(c) for c in NODE_COMPONENTS):
                    return  # another cluster's node: not ours to stop
            if owner is None and not self.leftovers():
                return
            self.cleanup()
        log(f"real node down in {time.monotonic() - started:.1f}s; nothing left behind")

    def rss(self) -> dict[str, int]:
        """Resident memory in kB of each node daemon (and of all its shims together)."""
        out = {}
        for component in NODE_COMPONENTS:
            pid = self.running_pid(component)
            if pid:
                out[component] = vm_rss(pid)
        shim = str((self.bin_dir / "containerd-shim-runc-v2").resolve())
        total = 0
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if proc.name.isdigit() and os.readlink(proc / "exe") == shim:
                    total += vm_rss(int(proc.name))
        out["shims"] = total
        return out


# containerd's shims put their sockets in /run/containerd/s whatever the daemon's state dir
# (a compiled-in default); a machine without a containerd of its own has no socket there, and
# then the directory is only ever ours.
HOST_CONTAINERD_DIR = Path("/run/containerd")


def host_containerd_dir_is_ours() -> bool:
    return HOST_CONTAINERD_DIR.is_dir() and not (HOST_CONTAINERD_DIR / "containerd.sock").exists()


def write_if_changed(path: Path, text: str) -> None:
    """kube-proxy exits when its config file is written to, and containerd reloads CNI
    configs: a running node must not see its files rewritten with the same content."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_gone(pid: int | None, timeout: float) -> None:
    if not pid:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return
        except OSError:
            return
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def node_ready(api: Any) -> bool:
    try:
        node = api.request("GET", f"/api/v1/nodes/{NODE_NAME}")
    except (urllib.error.URLError, OSError):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle")


def iptables_chains() -> list[str]:
    """Chains of kube-proxy, kubelet and ours, in every table, as 'iptables/table/chain'."""
    found = []
    for ipt in IPTABLES:
        for table in TABLES:
            proc = run(ipt, "-w", "5", "-t", table, "-S", check=False)
            for line in proc.stdout.splitlines():
                if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES):
                    found.append(f"{ipt}/{table}/{line.split()[1]}")
    return found


def remove_chains() -> None:
    """Deletes the jumps into our chains, then the chains. Only called for a machine whose
    real node this project ran (KUBE-* chains are kube-proxy's and kubelet's)."""
    for ipt in IPTABLES:
        for table in TABLES:
            rules = run(ipt, "-w", "5", "-t", table, "-S", check=False).stdout.splitlines()
            ours = {
                r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(CHAIN_PREFIXES)
            }
            if not ours:
                continue
            for line in rules:
                parts = shlex.split(line)
                if (
                    parts[0] == "-A"
                    and parts[1] not in ours
                    and "-j" in parts
                    and parts[parts.index("-j") + 1] in ours
                ):
                    run(ipt, "-w", "5", "-t", table, "-D", *parts[1:], check=False)
            for chain in ours:
                run(ipt, "-w", "5", "-t", table, "-F", chain, check=False)
            for chain in ours:
                run(ipt, "-w", "5", "-t", table, "-X", chain, check=False)
