"""One lean HTTP path to the API server, for every call the gateway makes.

The `kubernetes` client loads the credentials (kubeconfig, in-cluster ServiceAccount, token
refresh) and owns the TLS connection pool; this module sends the requests through that pool
itself. The client's `call_api` walks every body and parameter with its generic sanitiser,
rebuilds the headers and resolves the pool from the URL on each call, which cost about a
fifth of the service's CPU per ScheduleJob (py-spy, bench/). Here the headers are prepared
once, bodies are encoded with orjson, and the one connection pool is looked up once.

Failures look exactly as they did through the client, so jobscheduler.kube.translate reads
them unchanged: a status outside 2xx raises the client's ApiException (with the response's
status, reason, headers and body), a TLS failure ApiException with status 0; other
connection errors leave as urllib3's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

Timeout = float | tuple[float, float | None]


def encode_body(body: object) -> bytes:
    """The API's JSON for a request body: dicts, lists, strings, numbers, datetimes (RFC 3339)."""
    return orjson.dumps(body, default=_plain)


def _plain(value: object) -> object:
    """What orjson cannot encode by itself but the client's sanitiser did: any mapping or
    sequence (e.g. a read-only view of a dict)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"cannot send a {type(value).__name__} to the Kubernetes API")


class KubeHttp:
    """Requests through an ApiClient's pool and credentials, without its per-call machinery."""

    def __init__(self, api: client.ApiClient) -> None:
        self.configuration = api.configuration
        self.host = api.configuration.host.rstrip("/")
        manager = api.rest_client.pool_manager
        # Through a proxy the manager decides per URL; otherwise there is one pool, the API server's.
        self._manager = manager
        self._pool = (
            None if isinstance(manager, urllib3.ProxyManager) else manager.connection_from_url(self.host)
        )
        self._base = urlsplit(self.host).path
        self._defaults: dict[str, str] = dict(api.default_headers)
        self._headers: dict[tuple[str, str], dict[str, str]] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Sequence[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: Timeout,
    ) -> Any:
        """One request; the response, its body unread. Raises ApiException for a status
        outside 2xx (its body read) and for TLS failures; urllib3's errors otherwise."""
        path_and_query = path + (f"?{urlencode(query)}" if query else "")
        headers = self._prepared(content_type, accept)
        data = None if body is None else encode_body(body)
        try:
            if self._pool is not None:
                resp = self._pool.urlopen(
                    method,
                    self._base + path_and_query,
                    body=data,
                    headers=headers,
                    timeout=_timeout(timeout),
                    preload_content=False,
                    redirect=False,
                    retries=False,
                )
            else:
                resp = self._manager.request(
                    method,
                    self.host + path_and_query,
                    body=data,
                    headers=headers,
                    timeout=_timeout(timeout),
                    preload_content=False,
                    redirect=False,
                    retries=False,
                )
        except urllib3.exceptions.SSLError as e:
            raise ApiException(status=0, reason=f"{type(e).__name__}\n{e}") from e
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp)
        return resp

    def _prepared(self, content_type: str, accept: str) -> dict[str, str]:
        """The headers of a request: prepared once per content type, plus the bearer token,
        read on every call so that a refreshed token (ServiceAccount rotation, exec plugins)
        is used as soon as the client has it."""
        headers = self._headers.get((content_type, accept))
        if headers is None:
            headers = {**self._defaults, "Content-Type": content_type, "Accept": accept}
            self._headers[(content_type, accept)] = headers
        configuration = self.configuration
        if "authorization" not in configuration.api_key:
            return headers
        return {**headers, "authorization": configuration.get_api_key_with_prefix("authorization")}


def _timeout(timeout: Timeout) -> urllib3.Timeout:
    """The client's convention: a number is the whole request's budget, a pair (connect, read)."""
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout)
