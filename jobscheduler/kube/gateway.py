"""The only code that talks to the Kubernetes API (through the official `kubernetes` client).

Objects cross this boundary as plain dicts in the API's JSON shape, never as client model
objects (they cost time and memory on hot paths). Calls retry 429, 5xx and connection errors
with capped exponential backoff inside the caller's deadline, and every failure leaves as
one of the domain's errors, with the API's own body kept out of the message.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from jobscheduler.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    JobSchedulerError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from jobscheduler.obs.metrics import KUBE_DURATION, KUBE_REQUESTS

T = TypeVar("T")
Obj = dict[str, Any]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
REPLY_MARGIN = 0.1  # seconds kept to send the error back before the caller's deadline


class ConflictError(FailedPreconditionError):
    """The object changed since it was read (HTTP 409 on an update with a resourceVersion)."""


class GoneError(UnavailableError):
    """A watch asked for a resourceVersion the API server no longer has (HTTP 410): relist."""


class NodeUnavailableError(UnavailableError):
    """The API server is fine, but it could not get a pod's log from the pod's node (its kubelet
    did not answer): HTTP 500 from the pods/log proxy."""


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


# Collection paths by resource; the gateway only ever touches these two.
RESOURCES = {
    "jobs": "/apis/batch/v1",
    "cronjobs": "/apis/batch/v1",
    "pods": "/api/v1",
    "secrets": "/api/v1",
    "configmaps": "/api/v1",
    "leases": "/apis/coordination.k8s.io/v1",
}


def collection_path(resource: str, namespace: str) -> str:
    """The REST path of a collection; an empty namespace means every namespace."""
    prefix = RESOURCES[resource]
    return f"{prefix}/namespaces/{namespace}/{resource}" if namespace else f"{prefix}/{resource}"


class KubeGateway:
    def __init__(self, api: client.ApiClient, *, retry: RetryPolicy | None = None) -> None:
        self.api = api
        self.retry = retry or RetryPolicy()

    # -- calls ---------------------------------------------------------------------------------

    def create_job(
        self, namespace: str, manifest: Obj, *, dry_run: bool = False, deadline: float | None = None
    ) -> Obj:
        """POST the Job (kubectl create -f; with dry_run, kubectl create --dry-run=server)."""
        return self.create("jobs", namespace, manifest, dry_run=dry_run, deadline=deadline)

    def create(
        self,
        resource: str,
        namespace: str,
        body: Obj,
        *,
        dry_run: bool = False,
        deadline: float | None = None,
    ) -> Obj:
        """POST any object of RESOURCES (kubectl create -f)."""
        query = [("dryRun", "All")] if dry_run else []
        path = collection_path(resource, namespace)
        return self._json(
            "create", deadline, lambda t: self._raw("POST", path, body=body, query=query, timeout=t)
        )

    def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        deadline: float | None = None,
        uid: str = "",
        propagation: str = "Background",
    ) -> None:
        """DELETE one object, its dependents in the background (kubectl delete; "Orphan" leaves
        them); with `uid`, only that incarnation of the name. A missing object is not an error."""
        path = f"{collection_path(resource, namespace)}/{name}"
        options: Obj = {"propagationPolicy": propagation}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self._json("delete", deadline, lambda t: self._raw("DELETE", path, body=options, timeout=t))
        except NotFoundError:
            return

    def get(self, resource: str, namespace: str, name: str, *, deadline: float | None = None) -> Obj:
        """GET one object of RESOURCES (kubectl get RESOURCE NAME -o json)."""
        path = f"{collection_path(resource, namespace)}/{name}"
        return self._json("get", deadline, lambda t: self._raw("GET", path, timeout=t))

    def patch(
        self, resource: str, namespace: str, name: str, patch: Obj, *, deadline: float | None = None
    ) -> Obj:
        """JSON merge patch of one object; a metadata.resourceVersion in it makes it conditional
        (ConflictError when the object changed)."""
        path = f"{collection_path(resource, namespace)}/{name}"
        return self._json(
            "patch",
            deadline,
            lambda t: self._raw(
                "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout=t
            ),
        )

    def replace(
        self, resource: str, namespace: str, name: str, body: Obj, *, deadline: float | None = None
    ) -> Obj:
        """PUT the whole object (kubectl replace); its metadata.resourceVersion makes it conditional."""
        path = f"{collection_path(resource, namespace)}/{name}"
        return self._json("update", deadline, lambda t: self._raw("PUT", path, body=body, timeout=t))

    def list_of(
        self, resource: str, namespace: str, *, label_selector: str, deadline: float | None = None
    ) -> list[Obj]:
        """Every object matching the selector, all pages."""
        return self.list_all(resource, namespace, label_selector=label_selector, deadline=deadline)[0]

    def get_job(self, namespace: str, name: str, *, deadline: float | None = None) -> Obj:
        """GET one Job (kubectl get job NAME -n NAMESPACE -o json)."""
        return self.get("jobs", namespace, name, deadline=deadline)

    def patch_job(self, namespace: str, name: str, patch: Obj, *, deadline: float | None = None) -> Obj:
        """JSON merge patch (kubectl patch job NAME --type=merge -p PATCH)."""
        return self.patch("jobs", namespace, name, patch, deadline=deadline)

    def list_jobs(self, namespace: str, *, label_selector: str, deadline: float | None = None) -> list[Obj]:
        """Every Job matching the selector, all pages (kubectl get jobs -l SELECTOR)."""
        return self.list_all("jobs", namespace, label_selector=label_selector, deadline=deadline)[0]

    def list_pods(self, namespace: str, *, label_selector: str, deadline: float | None = None) -> list[Obj]:
        """Every Pod matching the selector, all pages (kubectl get pods -l SELECTOR)."""
        return self.list_all("pods", namespace, label_selector=label_selector, deadline=deadline)[0]

    def list_all(
        self,
        resource: str,
        namespace: str,
        *,
        label_selector: str,
        page_size: int = 500,
        deadline: float | None = None,
    ) -> tuple[list[Obj], str]:
        """Every object of a collection, paged, and the list's resourceVersion (to watch from)."""
        items: list[Obj] = []
        cont = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", str(page_size))]
            if cont:
                query.append(("continue", cont))
            page = self._json(
                f"list_{resource}",
                deadline,
                lambda t, q=query: self._raw(  # type: ignore[misc]
                    "GET", collection_path(resource, namespace), query=q, timeout=t
                ),
            )
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion", ""))

    def watch(
        self,
        resource: str,
        namespace: str,
        *,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> Iterator[Obj]:
        """Watch events from resource_version on, with bookmarks (kubectl get -w), as dicts
        {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}. Ends when the server
        closes the stream (after about timeout_seconds); raises UnavailableError on a broken
        connection and GoneError when resource_version is too old to resume from."""
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("labelSelector", label_selector),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        try:
            resp = self._raw(
                "GET",
                collection_path(resource, namespace),
                query=query,
                timeout=(5.0, timeout_seconds + 30.0),
            )
        except ApiException as e:
            KUBE_REQUESTS.labels(f"watch_{resource}", str(e.status)).inc()
            if e.status == 410:
                raise GoneError(f"resourceVersion {resource_version} of {resource} is gone") from e
            raise translate(e, f"watch_{resource}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            KUBE_REQUESTS.labels(f"watch_{resource}", "0").inc()
            raise UnavailableError(
                f"Kubernetes API unavailable for watch of {resource} ({_describe(e)})"
            ) from e
        KUBE_REQUESTS.labels(f"watch_{resource}", "200").inc()
        try:
            buffer = b""
            for chunk in resp.stream(64 * 1024, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event: Obj = json.loads(line)
                    if event.get("type") == "ERROR" and (event.get("object") or {}).get("code") == 410:
                        raise GoneError(f"watch of {resource}: {event['object'].get('message', 'gone')}")
                    yield event
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise UnavailableError(f"watch of {resource} broke ({_describe(e)})") from e
        finally:
            resp.release_conn()

    def open_pod_log(
        self,
        namespace: str,
        pod: str,
        *,
        container: str,
        follow: bool = False,
        tail_lines: int | None = None,
        since_seconds: int | None = None,
        timestamps: bool = False,
        deadline: float | None = None,
    ) -> PodLogStream:
        """GET the pods/log subresource (kubectl logs POD -c CONTAINER [-f] [--tail N]
        [--since Ns] [--timestamps]): the API server proxies it to the kubelet of the pod's node.
        Opening is retried like any call; the open stream is read by PodLogStream. Raises
        NotFoundError (no such pod), InvalidArgumentError (no such container),
        FailedPreconditionError (the node has no log for it yet, e.g. "waiting to start"),
        NodeUnavailableError (the node did not answer), or the usual translations."""
        query = [("container", container)]
        if follow:
            query.append(("follow", "true"))
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        if since_seconds is not None:
            query.append(("sinceSeconds", str(since_seconds)))
        if timestamps:
            query.append(("timestamps", "true"))
        path = f"{collection_path('pods', namespace)}/{pod}/log"
        try:
            resp = self._with_retries(
                "pod_log",
                deadline,
                # A followed log may stay quiet for as long as the container runs: no read timeout
                # (PodLogStream.close() ends it); a plain read gets the call's budget.
                lambda t: self._raw(
                    "GET", path, query=query, accept="*/*", timeout=(t[0], None) if follow else t
                ),
            )
        except JobSchedulerError as e:
            cause = e.__cause__
            if not isinstance(cause, ApiException):
                raise
            raise _pod_log_error(cause, pod=pod, container=container, fallback=e) from cause
        return PodLogStream(resp, pod=pod)

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
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float | tuple[float, float | None],
    ) -> Any:
        """One HTTP call through the client's connection pool and credentials; the response unread."""
        return self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
            _return_http_data_only=True,
        )

    def _json(self, verb: str, deadline: float | None, call: Callable[[tuple[float, float]], Any]) -> Obj:
        def fetch(timeout: tuple[float, float]) -> _Reply:
            # The body is read inside the retried attempt: a server that freezes after sending
            # the headers times out here, as an attempt, not as an unexpected error later.
            resp = call(timeout)
            return _Reply(status=resp.status, data=resp.data)

        data: Obj = json.loads(self._with_retries(verb, deadline, fetch).data)
        return data

    def _with_retries(self, verb: str, deadline: float | None, call: Callable[[tuple[float, float]], T]) -> T:
        if deadline is None:
            deadline = time.monotonic() + self.retry.default_timeout
        else:
            # Give up a moment before the caller does, so it hears UNAVAILABLE (retry) rather
            # than its own DEADLINE_EXCEEDED (which says nothing about the cause).
            deadline -= REPLY_MARGIN
        backoff, attempt = self.retry.initial_backoff, 0
        duration = KUBE_DURATION.labels(verb)
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise UnavailableError(
                    f"Kubernetes API did not answer {verb} within the deadline "
                    f"({attempt - 1} attempts); retry later"
                )
            started = time.perf_counter()
            try:
                result = call((min(remaining, 5.0), remaining))
                duration.observe(time.perf_counter() - started)
                KUBE_REQUESTS.labels(verb, str(getattr(result, "status", 200))).inc()
                return result
            except ApiException as e:
                duration.observe(time.perf_counter() - started)
                KUBE_REQUESTS.labels(verb, str(e.status)).inc()
                if not _retryable(e):
                    raise translate(e, verb) from e
                wait = _retry_after(e) or backoff
                last: Exception = e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                KUBE_REQUESTS.labels(verb, "0").inc()
                wait, last = backoff, e
            if time.monotonic() + wait >= deadline:
                raise UnavailableError(
                    f"Kubernetes API unavailable for {verb} after {attempt} attempts "
                    f"({_describe(last)}); retry later"
                ) from last
            time.sleep(wait * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.retry.max_backoff)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    data: bytes


class PodLogStream:
    """An open pods/log response, read by a thread of its own into a small queue, so that the
    reader can wait with a timeout and give up at any moment: a followed log ends only when the
    node closes it (kwok's fake nodes never do) or when close() is called."""

    CHUNK_BYTES = 64 * 1024

    def __init__(self, resp: Any, *, pod: str) -> None:
        self._resp = resp
        self._pod = pod
        # Bounded: a slow gRPC reader holds the node back through TCP, not through memory.
        self._queue: queue.Queue[bytes | Exception | None] = queue.Queue(maxsize=16)
        self._closed = threading.Event()
        self._finished = False
        # The end (None) or a break taken from the queue behind some bytes: given by the next read.
        self._held: list[Exception | None] = []
        self._thread = threading.Thread(target=self._pump, name=f"pod-log-{pod}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> bytes | None:
        """The bytes of the log that have come (up to about 1 MiB: a node may send each line on
        its own), waiting up to `timeout` seconds for the first; b"" when none came; None once
        the log has ended. Raises UnavailableError when the connection broke."""
        data = b""
        while len(data) < 16 * self.CHUNK_BYTES:
            item: bytes | Exception | None
            if self._held:
                item = self._held.pop()
            else:
                try:
                    item = self._queue.get(timeout=timeout) if not data else self._queue.get_nowait()
                except queue.Empty:
                    return data
            if item is None or isinstance(item, Exception):
                if data:
                    self._held.append(item)
                    return data
                if item is None:
                    self._finished = True
                    return None
                raise item
            data += item
        return data

    def close(self) -> None:
        """Stops reading and frees the connection (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if not self._finished:
            # Unblocks the pump's read: the stream may be followed and silent.
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                self._resp.shutdown()
        self._thread.join(timeout=5)
        if not self._finished:
            self._resp.close()  # partly read: the connection cannot be reused
        self._resp.release_conn()

    def _pump(self) -> None:
        try:
            for chunk in self._resp.stream(self.CHUNK_BYTES, decode_content=True):
                if chunk and not self._offer(chunk):
                    return
            self._offer(None)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if not self._closed.is_set():
                self._offer(UnavailableError(f"the log stream of pod {self._pod} broke ({_describe(e)})"))

    def _offer(self, item: bytes | Exception | None) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


def _pod_log_error(
    e: ApiException, *, pod: str, container: str, fallback: JobSchedulerError
) -> JobSchedulerError:
    message = _api_message(e)
    if e.status == 404:
        return NotFoundError(f"pod {pod!r} not found (deleted?)")
    if e.status == 400:
        if "container" in message and ("not valid" in message or "must be specified" in message):
            return InvalidArgumentError("container", message)
        # The kubelet's "container X in pod Y is waiting to start: ...", or a node without a log
        # for it (kwok: "no logs found for container ...").
        return FailedPreconditionError(f"no logs for container {container!r} of pod {pod!r}: {message}")
    if e.status == 500:
        return NodeUnavailableError(
            f"the node of pod {pod!r} did not serve its logs ({message or 'HTTP 500'}); retry later"
        )
    return fallback


def _retryable(e: ApiException) -> bool:
    if e.status in RETRYABLE_STATUS:
        return True
    # An API server that has just started refuses requests through its admission plugins with
    # 403 "not yet ready to handle request" until their caches have synced: not a denial.
    return e.status == 403 and "not yet ready to handle request" in str(e.body or "")


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
    if status == 413:
        return InvalidArgumentError("", "the request is too large for the Kubernetes API")
    if status in (400, 422):
        return InvalidArgumentError("", f"Kubernetes rejected the request: {message}")
    if status == 401:
        return UnavailableError("Kubernetes rejected the service's credentials (401); they may have expired")
    return UnavailableError(f"Kubernetes API error {status} on {verb}")
