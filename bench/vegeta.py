"""The raw side of every comparison: vegeta, a Go HTTP load generator, straight at kube-apiserver.

Both sides thus have a driver of the same class (ghz for the service, vegeta for the API server,
both Go, both HTTP/2 over one connection). vegeta gets the kubeconfig's client certificate and
the cluster CA as files in a private temporary directory, its targets as JSON lines (one per
request, each with its own body: every POST creates a Job of its own name), and runs closed
loop: `-rate=0 -workers=N -max-workers=N` keeps exactly N requests in flight, each worker
sending its next request when the previous one returned (what `ghz -c N` does). With `-lazy`
the targets file is read as a stream and the attack ends when it runs out, so exactly one
request is sent per target. The binary results are converted with `vegeta encode --to json`
and summarized with the same nearest-rank percentiles as ghz's per-request details.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.kube import Credentials, build_tls_context
from bench.load import LoadResult

# What vegeta writes for the workers that asked for a target after the last one was taken.
NO_TARGETS = "no targets to attack"
HEADERS = {
    "Accept": ["application/json"],
    # On loopback compression only costs CPU; without this Go asks for gzip, and the API
    # server compresses every response over 128 KiB (a page of 100 Jobs).
    "Accept-Encoding": ["identity"],
}
POST_HEADERS = {**HEADERS, "Content-Type": ["application/json"]}

VEGETA_DESCRIPTION = {
    "tool": "vegeta attack (Go), built from Go modules by hack/tools.sh",
    "transport": "HTTP/2 over TLS to kube-apiserver (ALPN h2), one connection; see `connections` of each run",
    "auth": "the kubeconfig's client certificate and CA as -cert/-key/-root-certs files, private temp dir",
    "load": "closed loop: -rate=0 -workers=N -max-workers=N, N requests in flight like ghz -c N; "
    "-max-connections=1 (one HTTP/2 connection, like ghz --connections=1)",
    "targets": "JSON targets, one per request, read lazily (-lazy): exactly one request per target; "
    "every POST has its own body (a Job of its own name)",
    "headers": "Accept: application/json, Accept-Encoding: identity (no gzip on loopback)",
    "results": "vegeta encode --to json; every request's latency, summarized like ghz's",
}


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a run. `kind` and `key` pair up the requests that make one logical read
    (a status read is the Job's GET and its pods' LIST, both keyed by the Job's name)."""

    method: str
    path: str
    body: bytes | None = None
    kind: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    """One request's outcome as vegeta recorded it."""

    method: str
    url: str
    code: int
    error: str
    started: float  # seconds since the epoch
    latency: float  # seconds

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300 and not self.error


@dataclass(slots=True)
class VegetaRun:
    """What one attack returned: every request's outcome and how it was sent."""

    hits: list[Hit]
    concurrency: int
    connections: int  # most TCP connections vegeta held open at once
    command: list[str] = field(default_factory=list)
    http2_requests: int | None = None  # requests Go's HTTP/2 transport sent (with http2_debug)


def target_line(server: str, request: Request) -> str:
    """A vegeta JSON target (body base64-encoded, as its format wants)."""
    target: dict[str, Any] = {
        "method": request.method,
        "url": server + request.path,
        "header": POST_HEADERS if request.body is not None else HEADERS,
    }
    if request.body is not None:
        target["body"] = base64.b64encode(request.body).decode()
    return json.dumps(target, separators=(",", ":"))


def parse_timestamp(value: str) -> float:
    """RFC 3339 with nanoseconds (Go's time format) as seconds since the epoch."""
    head, dot, rest = value.partition(".")
    if not dot:
        return datetime.fromisoformat(value).timestamp()
    digits = len(rest) - len(rest.lstrip("0123456789"))
    fraction, zone = rest[:digits], rest[digits:]
    return datetime.fromisoformat(head + zone).timestamp() + float("0." + (fraction or "0"))


def parse_results(lines: Iterable[str]) -> list[Hit]:
    """Hits from `vegeta encode --to json` output, without the workers' end-of-targets entries."""
    hits = []
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        if not r.get("url") and r.get("error") == NO_TARGETS:
            continue
        hits.append(
            Hit(
                method=r.get("method") or "",
                url=r.get("url") or "",
                code=int(r.get("code") or 0),
                error=r.get("error") or "",
                started=parse_timestamp(r["timestamp"]),
                latency=int(r["latency"]) / 1e9,
            )
        )
    return hits


def _wall(hits: Sequence[Hit]) -> float:
    if not hits:
        return 0.0
    return max(h.started + h.latency for h in hits) - min(h.started for h in hits)


def _describe(hit: Hit) -> str:
    return f"{hit.method} {hit.url}: {hit.error or hit.code}"


def to_load_result(hits: Sequence[Hit], *, concurrency: int) -> LoadResult:
    """Every request as one call: latencies of the successful ones, errors counted, wall time
    from the first request's start to the last one's end."""
    failed = [h for h in hits if not h.ok]
    return LoadResult(
        latencies=[h.latency for h in hits if h.ok],
        wall_seconds=_wall(hits),
        concurrency=concurrency,
        errors=len(failed),
        error_samples=[_describe(h) for h in failed[:3]],
    )


def pair_reads(
    hits: Sequence[Hit],
    *,
    classify: Callable[[Hit], tuple[str, str]],
    kinds: tuple[str, str],
    concurrency: int,
) -> LoadResult:
    """Requests of two kinds combined into one logical read per key: the n-th hit of kind
    kinds[0] for a key with the n-th of kinds[1] for that key (in start order). Its latency is
    the sum (the second request needs the first one's answer), it fails when either failed.
    The wall time is the whole run's, so reads per second = pairs / wall."""
    by_key: dict[str, dict[str, list[Hit]]] = {}
    for hit in hits:
        kind, key = classify(hit)
        by_key.setdefault(key, {k: [] for k in kinds}).setdefault(kind, []).append(hit)
    latencies: list[float] = []
    errors: list[str] = []
    for groups in by_key.values():
        first, second = (sorted(groups.get(k, []), key=lambda h: h.started) for k in kinds)
        if len(first) != len(second):
            errors.append(f"unpaired reads: {len(first)} {kinds[0]} vs {len(second)} {kinds[1]}")
        for a, b in zip(first, second, strict=False):
            if a.ok and b.ok:
                latencies.append(a.latency + b.latency)
            else:
                errors.append(_describe(a if not a.ok else b))
    return LoadResult(
        latencies=latencies,
        wall_seconds=_wall(hits),
        concurrency=concurrency,
        errors=len(errors),
        error_samples=errors[:3],
    )


def interleave(first: Sequence[Request], second: Sequence[Request]) -> list[Request]:
    """a0, b0, a1, b1, ...: the two requests of each read next to each other in the stream."""
    return [r for pair in zip(first, second, strict=True) for r in pair]


class VegetaDriver:
    """vegeta with the cluster's credentials, ready to attack; close() removes the key files."""

    def __init__(self, vegeta: Path, creds: Credentials) -> None:
        self.vegeta = vegeta
        self.server = f"https://{creds.host}:{creds.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="bench-vegeta-"))  # mode 0700
        self.ca, self.cert, self.key = (self.dir / n for n in ("ca.crt", "client.crt", "client.key"))
        self.ca.write_text(creds.ca_pem)
        self.cert.write_bytes(creds.cert_pem)
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(creds.key_pem)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def attack(
        self,
        requests: Sequence[Request],
        *,
        concurrency: int,
        timeout_seconds: float = 60,
        http2_debug: bool = False,
    ) -> VegetaRun:
        """Sends every request once, `concurrency` in flight; returns every outcome. With
        http2_debug, Go's HTTP/2 transport logs every request it sends (GODEBUG=http2debug=1),
        and they are counted: proof of the protocol, too costly for a measured run."""
        with tempfile.TemporaryDirectory(prefix="run-", dir=self.dir) as tmp:
            targets, binary = Path(tmp, "targets.json"), Path(tmp, "results.bin")
            targets.write_text("".join(target_line(self.server, r) + "\n" for r in requests))
            command = [
                str(self.vegeta),
                "attack",
                "-format=json",
                "-lazy",
                f"-targets={targets}",
                "-rate=0",
                f"-workers={concurrency}",
                f"-max-workers={concurrency}",
                f"-timeout={timeout_seconds:g}s",
                f"-cert={self.cert}",
                f"-key={self.key}",
                f"-root-certs={self.ca}",
                "-max-body=0",
                # One connection, like ghz --connections=1: without this the workers' first
                # requests race to dial (one TLS connection each) before HTTP/2 is negotiated.
                "-max-connections=1",
                f"-output={binary}",
            ]
            env = {**os.environ, "GODEBUG": "http2debug=1"} if http2_debug else None
            log = Path(tmp, "stderr.log")
            with log.open("wb") as err:
                proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
                connections = 0
                while proc.poll() is None:
                    connections = max(connections, count_sockets(proc.pid))
                    time.sleep(0.02)
            stderr = log.read_text(errors="replace")
            if proc.returncode != 0:
                raise RuntimeError(f"vegeta attack failed ({proc.returncode}): {stderr.strip()}")
            encoded = subprocess.run(
                [str(self.vegeta), "encode", "--to", "json", str(binary)],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            if encoded.returncode != 0:
                raise RuntimeError(f"vegeta encode failed: {encoded.stderr.strip()}")
        hits = parse_results(encoded.stdout.splitlines())
        if len(hits) != len(requests):
            raise RuntimeError(f"vegeta sent {len(hits)} requests, {len(requests)} were asked for")
        return VegetaRun(
            hits=hits,
            concurrency=concurrency,
            connections=connections,
            command=command,
            http2_requests=count_http2_requests(stderr) if http2_debug else None,
        )

    def check_http2(self, path: str, *, count: int = 200, concurrency: int = 8) -> dict[str, Any]:
        """A short attack with Go's HTTP/2 debug log on: how many of its requests went out over
        HTTP/2, and over how many connections."""
        run = self.attack([Request("GET", path)] * count, concurrency=concurrency, http2_debug=True)
        return {
            "requests": count,
            "concurrency": concurrency,
            "sent_over_http2": run.http2_requests,
            "connections": run.connections,
            "errors": sum(not h.ok for h in run.hits),
        }


def count_http2_requests(log: str) -> int:
    """Requests in a GODEBUG=http2debug=1 log: one `:method` pseudo-header encoded per request."""
    return sum('encoding header ":method"' in line for line in log.splitlines())


def count_sockets(pid: int) -> int:
    """How many sockets a process has open (vegeta's are all connections to the API server)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    count = 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def negotiated_protocol(creds: Credentials) -> str:
    """The protocol the API server picks (ALPN) when offered HTTP/2 and HTTP/1.1, as vegeta does."""
    context = build_tls_context(creds)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((creds.host, creds.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=creds.host) as tls,
    ):
        return tls.selected_alpn_protocol() or "http/1.1"
