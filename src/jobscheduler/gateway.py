"""The only code that talks to the Kubernetes API (through the official `kubernetes` client).

Objects cross this boundary as plain dicts in the API's JSON shape, never as client model
objects (they cost time and memory on hot paths). Calls retry 429, 5xx and connection errors
with capped exponential backoff inside the caller's deadline, and every failure leaves as
one of the domain's errors, with the API's own body kept out of the message.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from jobscheduler.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)

T = TypeVar("T")
Obj = dict[str, Any]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ConflictError(FailedPreconditionError):
    """The object changed since it was read (HTTP 409 on an update with a resourceVersion)."""


class GatewayConfigError(JobSchedulerError):
    """No usable Kubernetes credentials (in-cluster or kubeconfig)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    default_timeout: float = 10.0
    """Budget for one call, retries included, when the caller gives no deadline."""


def load_api_client(*, in_cluster: bool, kubeconfig: str | None, pool_size: int = 64) -> client.ApiClient:
    """An ApiClient for the pod's ServiceAccount, or for a kubeconfig file."""
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except (ConfigException, OSError) as e:
        where = "the in-cluster ServiceAccount" if in_cluster else (kubeconfig or "~/.kube/config")
        hint = "" if in_cluster else "; set KUBECONFIG, or IN_CLUSTER=true inside a pod"
        raise GatewayConfigError(f"cannot load Kubernetes credentials from {where}: {e}{hint}") from e
    # Retries are ours (deadline-aware); urllib3's own would retry blindly, POSTs included.
    configuration.retries = False
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class KubeGateway:
    def __init__(self, api: client.ApiClient, *, retry: RetryPolicy | None = None) -> None:
        self.api = api
        self.retry = retry or RetryPolicy()
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)

    # -- calls ---------------------------------------------------------------------------------

    def create_job(
        self, namespace: str, manifest: Obj, *, dry_run: bool = False, deadline: float | None = None
    ) -> Obj:
        """POST the Job (kubectl create -f; with dry_run, kubectl create --dry-run=server)."""
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return self._json(
            "create",
            deadline,
            lambda t: self._batch.create_namespaced_job(
                namespace, manifest, _preload_content=False, _request_timeout=t, **kwargs
            ),
        )

    def get_job(self, namespace: str, name: str, *, deadline: float | None = None) -> Obj:
        """GET one Job (kubectl get job NAME -n NAMESPACE -o json)."""
        return self._json(
            "get",
            deadline,
            lambda t: self._batch.read_namespaced_job(
                name, namespace, _preload_content=False, _request_timeout=t
            ),
        )

    def patch_job(self, namespace: str, name: str, patch: Obj, *, deadline: float | None = None) -> Obj:
        """JSON merge patch (kubectl patch job NAME --type=merge -p PATCH)."""
        # The client would send a dict as a JSON *Patch*; merge patch needs its own content type.
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        return self._json(
            "patch",
            deadline,
            lambda t: self._raw(
                "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout=t
            ),
        )

    def list_jobs(self, namespace: str, *, label_selector: str, deadline: float | None = None) -> list[Obj]:
        """Every Job matching the selector, all pages (kubectl get jobs -l SELECTOR)."""
        return list(
            self._list(
                "list_jobs",
                deadline,
                lambda t, cont: self._batch.list_namespaced_job(
                    namespace,
                    label_selector=label_selector,
                    limit=500,
                    _continue=cont,
                    _preload_content=False,
                    _request_timeout=t,
                ),
            )
        )

    def list_pods(self, namespace: str, *, label_selector: str, deadline: float | None = None) -> list[Obj]:
        """Every Pod matching the selector, all pages (kubectl get pods -l SELECTOR)."""
        return list(
            self._list(
                "list_pods",
                deadline,
                lambda t, cont: self._core.list_namespaced_pod(
                    namespace,
                    label_selector=label_selector,
                    limit=500,
                    _continue=cont,
                    _preload_content=False,
                    _request_timeout=t,
                ),
            )
        )

    def ready(self, *, timeout: float = 2.0) -> bool:
        """Whether the API server answers /readyz (kubectl get --raw /readyz); never raises."""
        try:
            return bool(self._raw("GET", "/readyz", timeout=timeout).status == 200)
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return False

    # -- plumbing ------------------------------------------------------------------------------

    def _raw(
        self,
        method: str,
        path: str,
        *,
        body: Obj | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float],
    ) -> Any:
        """One HTTP call through the client's connection pool and credentials; the response unread."""
        return self.api.call_api(
            path,
            method,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
            _return_http_data_only=True,
        )

    def _list(
        self, verb: str, deadline: float | None, call: Callable[[tuple[float, float], str | None], Any]
    ) -> Iterator[Obj]:
        cont: str | None = None
        while True:
            page = self._json(verb, deadline, lambda t, cont=cont: call(t, cont))  # type: ignore[misc]
            yield from page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue") or None
            if not cont:
                return

    def _json(self, verb: str, deadline: float | None, call: Callable[[tuple[float, float]], Any]) -> Obj:
        resp = self._with_retries(verb, deadline, call)
        data: Obj = json.loads(resp.data)
        return data

    def _with_retries(self, verb: str, deadline: float | None, call: Callable[[tuple[float, float]], T]) -> T:
        if deadline is None:
            deadline = time.monotonic() + self.retry.default_timeout
        backoff, attempt = self.retry.initial_backoff, 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise UnavailableError(
                    f"Kubernetes API did not answer {verb} within the deadline "
                    f"({attempt - 1} attempts); retry later"
                )
            try:
                return call((min(remaining, 5.0), remaining))
            except ApiException as e:
                if e.status not in RETRYABLE_STATUS:
                    raise translate(e, verb) from e
                wait = _retry_after(e) or backoff
                last: Exception = e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                wait, last = backoff, e
            if time.monotonic() + wait >= deadline:
                raise UnavailableError(
                    f"Kubernetes API unavailable for {verb} after {attempt} attempts "
                    f"({_describe(last)}); retry later"
                ) from last
            time.sleep(wait * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.retry.max_backoff)


def _retry_after(e: ApiException) -> float | None:
    try:
        return min(float((e.headers or {}).get("Retry-After", "")), 5.0)
    except ValueError:
        return None


def _describe(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason}"
    return type(e).__name__


def _api_message(e: ApiException) -> str:
    """The Status message, for logs and for field-level 422 details (never the raw body)."""
    try:
        body = json.loads(e.body or "{}")
    except ValueError:
        return ""
    return str(body.get("message", ""))[:500] if isinstance(body, dict) else ""


def translate(e: ApiException, verb: str) -> JobSchedulerError:
    """A domain error for a non-retryable API failure."""
    status = e.status or 0
    message = _api_message(e)
    if status == 403:
        return PermissionDeniedError(
            f"Kubernetes denied {verb} to the service's identity; check its Role/RoleBinding ({message})"
        )
    if status == 404:
        return NotFoundError(message or f"{verb}: not found")
    if status == 409:
        if (json.loads(e.body or "{}").get("reason") if e.body else "") == "AlreadyExists":
            return AlreadyExistsError(message)
        return ConflictError(message or f"{verb}: conflict")
    if status in (400, 422):
        return InvalidArgumentError("", f"Kubernetes rejected the request: {message}")
    if status == 401:
        return UnavailableError("Kubernetes rejected the service's credentials (401); they may have expired")
    return UnavailableError(f"Kubernetes API error {status} on {verb}")
