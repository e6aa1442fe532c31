"""How the service reaches the Kubernetes API: credentials (in-cluster or a kubeconfig) loaded
into one pooled ApiClient, and the gateway's backoff and time budget for its calls."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from jobscheduler.domain.errors import GatewayConfigError


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How the gateway retries 429, 5xx and connection errors: capped exponential backoff
    (jittered) inside the caller's deadline. Not to be confused with a job's RetryPolicy
    (jobscheduler.domain.retry), which is about the job's pods."""

    initial_backoff: float = 0.05
    """Seconds before the first retry; doubled on each one after."""
    max_backoff: float = 2.0
    """The longest wait between two attempts, in seconds."""
    default_timeout: float = 10.0
    """Budget for one call, retries included, when the caller gives no deadline (seconds)."""


def load_api_client(*, in_cluster: bool, kubeconfig: str | None, pool_size: int = 64) -> client.ApiClient:
    """An ApiClient for the pod's ServiceAccount, or for a kubeconfig file."""
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
    except (ConfigException, OSError) as e:
        where = "the in-cluster ServiceAccount" if in_cluster else (kubeconfig or "~/.kube/config")
        hint = "" if in_cluster else "; set KUBECONFIG, or IN_CLUSTER=true inside a pod"
        raise GatewayConfigError(f"cannot load Kubernetes credentials from {where}: {e}{hint}") from e
    # Retries are ours (deadline-aware); urllib3's own would retry blindly, POSTs included.
    configuration.retries = False
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)
