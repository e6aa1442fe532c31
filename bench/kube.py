"""Python talking straight to kube-apiserver over HTTPS: the bench's set-up and checks.

Used to create the namespace, fill it with jobs, patch pods and clean up; the measured raw
side is vegeta (bench/vegeta.py). Deliberately lean: one urllib3 connection pool (HTTP/1.1
keep-alive, one connection per thread) authenticated with the admin client certificate from
the kubeconfig, request bodies serialized up front, responses read but only parsed when the
caller needs a field from them. No retries, no model objects, no kubernetes client.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3
import yaml

Obj = dict[str, Any]
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
MERGE_PATCH_HEADERS = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}

# How the set-up talks to the API server (the fill of the read phases), recorded in the results.
RAW_CLIENT_DESCRIPTION = {
    "library": f"urllib3 {urllib3.__version__} HTTPSConnectionPool (no kubernetes client)",
    "transport": "HTTP/1.1 keep-alive over TLS to 127.0.0.1, one pooled connection per thread",
    "auth": "admin client certificate from .devcluster/kubeconfig (same identity as the service)",
    "bodies": "plain-dict JSON manifests serialized to bytes before timing starts",
    "responses": "read in full; JSON-parsed only where the next request needs a field (the Job's uid "
    "for the pod list of a status read); created Jobs and lists are not parsed",
    "retries": "none",
    "concurrency": "N Python threads for concurrency N, each issuing its next request as soon as "
    "the previous one returned (closed loop, like ghz -c N)",
}


class ApiError(Exception):
    """The API server answered with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        detail = body[:300].decode(errors="replace")
        super().__init__(f"{method} {path}: HTTP {status}: {detail}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Credentials:
    host: str
    port: int
    ca_pem: str
    cert_pem: bytes
    key_pem: bytes


def read_credentials(kubeconfig: Path) -> Credentials:
    """The API server address and the admin identity of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    context = contexts[config.get("current-context") or next(iter(contexts))]
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    url = urlsplit(cluster["server"])
    return Credentials(
        host=url.hostname or "127.0.0.1",
        port=url.port or 443,
        ca_pem=base64.b64decode(cluster["certificate-authority-data"]).decode(),
        cert_pem=base64.b64decode(user["client-certificate-data"]),
        key_pem=base64.b64decode(user["client-key-data"]),
    )


def build_tls_context(creds: Credentials) -> ssl.SSLContext:
    """A client TLS context trusting the cluster CA and presenting the admin certificate."""
    context = ssl.create_default_context(cadata=creds.ca_pem)
    # load_cert_chain only reads files: write them to a private directory, load, remove.
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        cert, key = Path(tmp, "client.crt"), Path(tmp, "client.key")
        cert.write_bytes(creds.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(creds.key_pem)
        context.load_cert_chain(cert, key)
    return context


class RawKube:
    """A minimal, thread-safe Kubernetes REST client over one urllib3 connection pool."""

    def __init__(self, kubeconfig: Path, *, pool_size: int = 64) -> None:
        creds = read_credentials(kubeconfig)
        self.credentials = creds  # for the raw side's driver (bench/vegeta.py)
        self.server = f"https://{creds.host}:{creds.port}"
        self.pool = urllib3.HTTPSConnectionPool(
            creds.host,
            creds.port,
            maxsize=pool_size,
            block=True,
            ssl_context=build_tls_context(creds),
            retries=False,
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
        )

    def close(self) -> None:
        self.pool.close()

    # -- the timed calls: bytes in, status and bytes out ----------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] = JSON_HEADERS,
        expect: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> bytes:
        """One request; the raw response body. Raises ApiError on any status not in `expect`.
        `timeout` (seconds to wait for the response) replaces the pool's 60s for slow calls."""
        kwargs: dict[str, Any] = (
            {} if timeout is None else {"timeout": urllib3.Timeout(connect=5.0, read=timeout)}
        )
        resp = self.pool.urlopen(method, path, body=body, headers=headers, preload_content=True, **kwargs)
        if resp.status not in expect:
            raise ApiError(method, path, resp.status, resp.data)
        return bytes(resp.data)

    # -- conveniences for set-up and checks (not timed) ----------------------------------------

    def get_json(self, path: str, *, expect: tuple[int, ...] = (200,)) -> Obj:
        data: Obj = json.loads(self.send("GET", path, expect=expect))
        return data

    def post_json(self, path: str, obj: Obj, *, expect: tuple[int, ...] = (201,)) -> Obj:
        data: Obj = json.loads(self.send("POST", path, body=json.dumps(obj).encode(), expect=expect))
        return data

    def exists(self, path: str) -> bool:
        try:
            self.send("GET", path)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    def create_namespace(self, name: str, *, labels: dict[str, str]) -> None:
        self.post_json("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})

    def wait_for(
        self, what: str, check: Callable[[], bool], *, timeout: float, interval: float = 0.2
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def delete_namespace(self, name: str) -> None:
        """Starts the namespace's deletion (its Jobs go with it); 404 counts as done."""
        self.send(
            "DELETE",
            f"/api/v1/namespaces/{name}",
            body=json.dumps({"propagationPolicy": "Background"}).encode(),
            expect=(200, 202, 404),
        )


def jobs_path(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def with_query(path: str, **params: str) -> str:
    """The path with a URL-encoded query string (label selectors contain '=' and ',')."""
    return f"{path}?{urlencode(params, quote_via=quote)}" if params else path
