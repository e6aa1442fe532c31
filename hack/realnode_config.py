"""What the dev cluster's real node is made of: its names and addresses, and the configuration
of containerd, the CNI bridge, kubelet, kube-proxy and the API server, as pure functions of
the node's directory. hack/realnode.py starts and stops what these describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Chosen to stay out of the way: 10.217/24 is in no common default (Docker 172.17, podman
# 10.88, kind/k3s 10.42-10.244, kwok's 10.244 here); the bridge name says whose it is.
POD_SUBNET = "10.217.0.0/24"
GATEWAY = "10.217.0.1"
BRIDGE = "jsrn0"
SERVICE_CIDR = "10.96.0.0/16"  # the dev cluster's (hack/devcluster.py)
NODE_NAME = "jobscheduler-realnode"
NODE_LABEL = ("jobscheduler.io/real-node", "true")
NODE_TAINT = {"key": "jobscheduler.io/real-node", "value": "true", "effect": "NoSchedule"}
CGROUP_ROOT = "jobscheduler-realnode"
RUN_DIR = Path("/run/jobscheduler-realnode")
CONTAINERD_SOCKET = RUN_DIR / "containerd.sock"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
PROXY_METRICS_PORT = 10249


def apiserver_flags(pki: Path) -> dict[str, str]:
    """Overrides for the API server of a cluster with a real node: it listens on every
    address (JSRN-INPUT lets only loopback and the pod bridge reach its port) and
    advertises the bridge's gateway, which becomes the `kubernetes` Service's endpoint;
    it reaches kubelets with a client certificate."""
    return {
        "--bind-address": "0.0.0.0",  # noqa: S104  (JSRN-INPUT admits only lo and the bridge)
        "--advertise-address": GATEWAY,
        "--endpoint-reconciler-type": "lease",
        "--kubelet-client-certificate": str(pki / "apiserver-kubelet-client.crt"),
        "--kubelet-client-key": str(pki / "apiserver-kubelet-client.key"),
    }


def containerd_toml(node_dir: Path, *, sandbox_image: str, runc: str) -> str:
    return f"""version = 3
root = '{node_dir / "containerd/root"}'
state = '{RUN_DIR / "containerd"}'
disabled_plugins = ['io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.blockfile', 'io.containerd.snapshotter.v1.erofs',
  'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing',
  'io.containerd.nri.v1.nri']

[grpc]
  address = '{CONTAINERD_SOCKET}'

[ttrpc]
  address = '{CONTAINERD_SOCKET}.ttrpc'

[debug]
  address = ''

[metrics]
  address = ''

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{sandbox_image}'
  [plugins.'io.containerd.cri.v1.runtime']
    # root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj is refused, which made
    # every runc start fail ("can't get final child's PID from pipe: EOF").
    restrict_oom_score_adj = true
    # netns files under RUN_DIR, so teardown finds exactly this node's.
    netns_mounts_under_state_dir = true
    enable_cdi = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{RUN_DIR / "runc"}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{node_dir / "cni/net.d"}'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"""


def cni_conflist(node_dir: Path) -> dict[str, Any]:
    # The pods' only route off the bridge is to the Service range, through the gateway
    # (kube-proxy's DNAT to the API server); no masquerading, nothing leaves the machine.
    return {
        "cniVersion": "1.0.0",
        "name": "jsrn",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node_dir / "cni/ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                    "routes": [{"dst": SERVICE_CIDR}],
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(node_dir: Path, pki: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        # No anonymous kubelet API: the API server (and only a caller it vouches for)
        # gets in, with its client certificate and a SubjectAccessReview.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "cgroupsPerQOS": True,
        "failCgroupV1": False,  # these machines have cgroup v1; 1.35 refuses it otherwise
        "failSwapOn": False,
        "podLogsDir": str(node_dir / "pod-logs"),
        "registerWithTaints": [NODE_TAINT],
        "resolvConf": "",
        "clusterDomain": "cluster.local",
        "maxPods": 30,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(node_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(node_dir / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{PROXY_METRICS_PORT}",
        "clusterCIDR": POD_SUBNET,
        # Leave the host's conntrack table sizes alone (and root may not change them here).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "nodePortAddresses": ["primary"],
    }
