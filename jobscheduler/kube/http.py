"""One lean HTTP path to the API server, for every call the gateway makes.

The `kubernetes` client loads the credentials (kubeconfig, in-cluster ServiceAccount, token
refresh); this module sends the requests itself. The client's `call_api` walks every body
and parameter with its generic sanitiser, rebuilds the headers and resolves the pool from
the URL on each call, and urllib3 then costs several times the TLS work of a small call: a
large share of the service's CPU per ScheduleJob (py-spy and yappi profiles, bench/). Here
the headers are prepared once, bodies are encoded with orjson, request-reply calls go over
jobscheduler.kube.wire's keep-alive connections, and streams (watches, pod logs) through
the client's urllib3 pool, looked up once.

Failures look exactly as they did through the client, so jobscheduler.kube.translate reads
them unchanged: a status outside 2xx raises the client's ApiException (with the response's
status, reason, headers and body), a TLS failure ApiException with status 0; other
connection errors leave as OSErrors or urllib3's own, which the gateway retries.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import should_bypass_proxies

from jobscheduler.kube.wire import Reply, WirePool

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
        self._blocks: dict[tuple[str, str], bytes] = {}
        self.wire = wire_pool(api.configuration)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Sequence[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: Timeout,
    ) -> Reply:
        """One request-reply call, its body read (`.status`, `.data`). Raises ApiException for a
        status outside 2xx and for TLS failures; OSErrors and urllib3's errors otherwise."""
        if self.wire is None:
            resp = self.stream(
                method,
                path,
                body=body,
                query=query,
                content_type=content_type,
                accept=accept,
                timeout=timeout,
            )
            return Reply(resp.status, resp.reason or "", list(resp.headers.items()), resp.data)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        target = self._base + path + (f"?{urlencode(query)}" if query else "")
        try:
            reply = self.wire.request(
                method,
                target,
                self._block(content_type, accept),
                None if body is None else encode_body(body),
                connect_timeout=connect,
                read_timeout=read,
            )
        except ssl.SSLError as e:
            raise ApiException(status=0, reason=f"{type(e).__name__}\n{e}") from e
        if not 200 <= reply.status <= 299:
            error = ApiException(status=reply.status, reason=reply.reason)
            error.body = reply.data.decode("utf-8", "replace")
            error.headers = urllib3.HTTPHeaderDict(reply.headers)
            raise error
        return reply

    def _block(self, content_type: str, accept: str) -> bytes:
        """The header lines of a request (prepared once per content type), with the current
        bearer token."""
        block = self._blocks.get((content_type, accept))
        if block is None:
            fixed = {**self._defaults, "Content-Type": content_type, "Accept": accept}
            block = b"".join(_header_line(k, v) for k, v in fixed.items())
            self._blocks[(content_type, accept)] = block
        token = self._authorization()
        return block if token is None else block + _header_line("Authorization", token)

    def stream(
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
        token = self._authorization()
        return headers if token is None else {**headers, "authorization": token}

    def _authorization(self) -> str | None:
        """The bearer token's header value, read on every call (the client refreshes it, through
        its refresh hook, inside auth_settings). The client's own auth settings, not its api_key
        dict: kubernetes 37 keeps the token under "BearerToken", 35 kept it under "authorization"."""
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and str(setting.get("key", "")).lower() == "authorization":
                value = setting.get("value")
                return str(value) if value else None
        return None


def wire_pool(configuration: client.Configuration) -> WirePool | None:
    """Keep-alive connections to the API server with the client's TLS settings (its CA, or
    certifi's when none; its client certificate; verify_ssl, assert_hostname and
    tls_server_name); None when the server is reached through a proxy or over plain HTTP,
    which stay with urllib3."""
    url = urlsplit(configuration.host)
    proxied = configuration.proxy and not should_bypass_proxies(
        configuration.host, no_proxy=configuration.no_proxy or ""
    )
    if url.scheme != "https" or proxied or not url.hostname:
        return None
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or certifi.where())
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    server_hostname = configuration.tls_server_name or url.hostname
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    elif isinstance(configuration.assert_hostname, str) and configuration.assert_hostname:
        server_hostname = configuration.assert_hostname
    return WirePool(url.hostname, url.port or 443, context, server_hostname=server_hostname)


def _header_line(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} holds a line break")
    return f"{name}: {value}\r\n".encode("latin-1")


def _timeout(timeout: Timeout) -> urllib3.Timeout:
    """The client's convention: a number is the whole request's budget, a pair (connect, read)."""
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(total=timeout)
