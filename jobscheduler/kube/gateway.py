"""The gateway's calls: create, get, list, patch, replace, delete and watch objects, and open a
pod's log (jobscheduler.kube is the only importer of the `kubernetes` client).

Objects cross this boundary as plain dicts in the API's JSON shape, never as client model
objects (they cost time and memory on hot paths). The client loads the credentials and owns
the connection pool; requests take one lean path (jobscheduler.kube.http: prepared headers,
orjson), not the client's generic per-call machinery. Calls retry 429, 5xx and connection
errors with capped exponential backoff inside the caller's deadline, and every failure leaves
as one of the domain's errors (jobscheduler.kube.translate), with the API's own body kept out
of the message. Credentials and the backoff settings: jobscheduler.kube.connection.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

# ConflictError and GoneError are what callers of the gateway catch; they are re-exported here
# for the modules that still import them from the gateway (their home is domain.errors).
from jobscheduler.domain.errors import ConflictError as ConflictError
from jobscheduler.domain.errors import GoneError as GoneError
from jobscheduler.domain.errors import JobSchedulerError, NotFoundError, UnavailableError
from jobscheduler.domain.servicehealth import WATCH_TIMEOUT_SECONDS, ErrorWindow, failed_status
from jobscheduler.kube.connection import BackoffPolicy
from jobscheduler.kube.http import KubeHttp
from jobscheduler.kube.podlog import PodLogStream
from jobscheduler.kube.translate import describe, pod_log_error, retry_after, retryable, translate
from jobscheduler.obs.metrics import KUBE_DURATION, KUBE_REQUESTS, child

T = TypeVar("T")
Obj = dict[str, Any]

REPLY_MARGIN = 0.1  # seconds kept to send the error back before the caller's deadline


# Collection paths by resource; the gateway only ever touches these two.
RESOURCES = {
    "jobs": "/apis/batch/v1",
    "cronjobs": "/apis/batch/v1",
    "pods": "/api/v1",
    "secrets": "/api/v1",
    "configmaps": "/api/v1",
    "leases": "/apis/coordination.k8s.io/v1",
    "priorityclasses": "/apis/scheduling.k8s.io/v1",  # cluster-scoped: namespace ""
}
# Kueue's, where it is installed (jobscheduler.app.queues asks discovery first); the start-up
# check (jobscheduler.kube.compat) requires only RESOURCES.
OPTIONAL_RESOURCES = {
    "localqueues": "/apis/kueue.x-k8s.io/v1beta2",
    "clusterqueues": "/apis/kueue.x-k8s.io/v1beta2",  # cluster-scoped
    "workloads": "/apis/kueue.x-k8s.io/v1beta2",
    "workloadpriorityclasses": "/apis/kueue.x-k8s.io/v1beta2",  # cluster-scoped
}


# The first "event" of every watch stream: the API server accepted it (gateway.watch).
OPENED = "OPENED"


def collection_path(resource: str, namespace: str) -> str:
    """The REST path of a collection; an empty namespace means every namespace."""
    prefix = RESOURCES.get(resource) or OPTIONAL_RESOURCES[resource]
    return f"{prefix}/namespaces/{namespace}/{resource}" if namespace else f"{prefix}/{resource}"


class KubeGateway:
    def __init__(self, api: client.ApiClient, *, backoff: BackoffPolicy | None = None) -> None:
        self.api = api
        self.http = KubeHttp(api)
        self.backoff = backoff or BackoffPolicy()
        # Outcomes of the last minute's calls, for the service's health (GetServiceStatus).
        self.outcomes = ErrorWindow(time.monotonic)

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
            "create", deadline, lambda t: self.http.call("POST", path, body=body, query=query, timeout=t)
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
            self._json("delete", deadline, lambda t: self.http.call("DELETE", path, body=options, timeout=t))
        except NotFoundError:
            return

    def get(self, resource: str, namespace: str, name: str, *, deadline: float | None = None) -> Obj:
        """GET one object of RESOURCES (kubectl get RESOURCE NAME -o json)."""
        path = f"{collection_path(resource, namespace)}/{name}"
        return self._json("get", deadline, lambda t: self.http.call("GET", path, timeout=t))

    def patch(
        self, resource: str, namespace: str, name: str, patch: Obj, *, deadline: float | None = None
    ) -> Obj:
        """JSON merge patch of one object; a metadata.resourceVersion in it makes it conditional
        (ConflictError when the object changed)."""
        path = f"{collection_path(resource, namespace)}/{name}"
        return self._json(
            "patch",
            deadline,
            lambda t: self.http.call(
                "PATCH", path, body=patch, content_type="application/merge-patch+json", timeout=t
            ),
        )

    def replace(
        self, resource: str, namespace: str, name: str, body: Obj, *, deadline: float | None = None
    ) -> Obj:
        """PUT the whole object (kubectl replace); its metadata.resourceVersion makes it conditional."""
        path = f"{collection_path(resource, namespace)}/{name}"
        return self._json("update", deadline, lambda t: self.http.call("PUT", path, body=body, timeout=t))

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
        page_seconds: float | None = None,
        each: Callable[[Obj], Obj | None] | None = None,
    ) -> tuple[list[Obj], str]:
        """Every object of a collection, paged, and the list's resourceVersion (to watch from).
        `deadline` bounds the whole list; `page_seconds` instead gives each page its own budget
        (a relist of 100,000 Jobs on a busy API server may take minutes, but no one page
        should). With `each`, every object is passed through it as its page arrives, and
        what it returns is kept, None dropping the object (the watch cache keeps slim copies,
        a scan only its candidates: neither holds every full object at once)."""
        items: list[Obj] = []
        cont = ""
        while True:
            query = [("labelSelector", label_selector), ("limit", str(page_size))]
            if cont:
                query.append(("continue", cont))
            page = self._json(
                f"list_{resource}",
                deadline if page_seconds is None else time.monotonic() + page_seconds,
                lambda t, q=query: self.http.call(  # type: ignore[misc]
                    "GET", collection_path(resource, namespace), query=q, timeout=t
                ),
            )
            page_items = page.get("items") or []
            if each is None:
                items.extend(page_items)
            else:
                items.extend(kept for kept in map(each, page_items) if kept is not None)
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
        timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
    ) -> Iterator[Obj]:
        """Watch events from resource_version on, with bookmarks (kubectl get -w), as dicts
        {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}, after a first {"type":
        OPENED} once the API server has accepted the watch (proof of life for an idle stream,
        which may hear nothing until its timeout). Ends when the server
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
            self._count(f"watch_{resource}", e.status)
            if e.status == 410:
                raise GoneError(f"resourceVersion {resource_version} of {resource} is gone") from e
            raise translate(e, f"watch_{resource}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            self._count(f"watch_{resource}", 0)
            raise UnavailableError(
                f"Kubernetes API unavailable for watch of {resource} ({describe(e)})"
            ) from e
        self._count(f"watch_{resource}", 200)
        try:
            yield {"type": OPENED}
            buffer = b""
            for chunk in resp.stream(64 * 1024, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event: Obj = orjson.loads(line)
                    if event.get("type") == "ERROR" and (event.get("object") or {}).get("code") == 410:
                        raise GoneError(f"watch of {resource}: {event['object'].get('message', 'gone')}")
                    yield event
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise UnavailableError(f"watch of {resource} broke ({describe(e)})") from e
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
            raise pod_log_error(cause, pod=pod, container=container, fallback=e) from cause
        return PodLogStream(resp, pod=pod)

    def read_path(
        self, path: str, *, query: list[tuple[str, str]] | None = None, deadline: float | None = None
    ) -> Obj:
        """GET a read-only API path that is not an object of RESOURCES: /version, discovery
        (/apis/batch/v1), OpenAPI (/openapi/v3/apis/batch/v1), Kueue's visibility API;
        kubectl get --raw PATH."""
        return self._json(
            "get", deadline, lambda t: self.http.call("GET", path, query=query or [], timeout=t)
        )

    def ready(self, *, timeout: float = 2.0) -> bool:
        """Whether the API server answers /readyz (kubectl get --raw /readyz); never raises."""
        try:
            return self.http.call("GET", "/readyz", timeout=timeout).status == 200
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
        return self.http.stream(
            method, path, body=body, query=query, content_type=content_type, accept=accept, timeout=timeout
        )

    def _json(self, verb: str, deadline: float | None, call: Callable[[tuple[float, float]], Any]) -> Obj:
        def fetch(timeout: tuple[float, float]) -> _Reply:
            # The body is read inside the retried attempt: a server that freezes after sending
            # the headers times out here, as an attempt, not as an unexpected error later.
            resp = call(timeout)
            return _Reply(status=resp.status, data=resp.data)

        reply = self._with_retries(verb, deadline, fetch)
        try:
            data: Obj = orjson.loads(reply.data)
        except (orjson.JSONDecodeError, TypeError):
            # Not the API server's own answer (a proxy's page, a cut reply): not a crash of ours.
            raise UnavailableError(
                f"Kubernetes API answered {verb} with HTTP {reply.status} and a body that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise UnavailableError(f"Kubernetes API answered {verb} with JSON that is not an object")
        return data

    def _count(self, verb: str, status: int) -> None:
        child(KUBE_REQUESTS, verb, str(status)).inc()
        self.outcomes.record(failed=failed_status(status))

    def _with_retries(self, verb: str, deadline: float | None, call: Callable[[tuple[float, float]], T]) -> T:
        if deadline is None:
            deadline = time.monotonic() + self.backoff.default_timeout
        else:
            # Give up a moment before the caller does, so it hears UNAVAILABLE (retry) rather
            # than its own DEADLINE_EXCEEDED (which says nothing about the cause).
            deadline -= REPLY_MARGIN
        backoff, attempt = self.backoff.initial_backoff, 0
        duration = child(KUBE_DURATION, verb)
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
                self._count(verb, getattr(result, "status", 200))
                return result
            except ApiException as e:
                duration.observe(time.perf_counter() - started)
                self._count(verb, e.status)
                if not retryable(e):
                    raise translate(e, verb) from e
                wait = retry_after(e) or backoff
                last: Exception = e
            except (urllib3.exceptions.HTTPError, OSError) as e:
                self._count(verb, 0)
                wait, last = backoff, e
            if time.monotonic() + wait >= deadline:
                raise UnavailableError(
                    f"Kubernetes API unavailable for {verb} after {attempt} attempts "
                    f"({describe(last)}); retry later"
                ) from last
            time.sleep(wait * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self.backoff.max_backoff)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    data: bytes
