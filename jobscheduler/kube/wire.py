"""HTTP/1.1 keep-alive over TLS to the API server, for the gateway's request-reply calls.

A Kubernetes API call is a small JSON request and a small JSON reply on a connection that
stays open. urllib3 and http.client spend several times the cost of the TLS work itself on
it (header objects, the email parser for the reply's headers, per-call pool resolution), a
large share of the service's CPU per ScheduleJob. This module writes the request in one
piece and reads the reply with a buffered reader: status line, the few headers it needs,
then a Content-Length or chunked body. Streams (watches, pod logs) stay on urllib3.

Failures are OSErrors (connection, TLS, timeout, a malformed reply), which the gateway
retries with backoff like any connection error. One case is retried here at once: a
connection taken from the idle pool that turns out to have been closed by the server
(it closes idle keep-alive connections) before any byte of the reply arrived.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 65536  # a status or header line; the API server's are far shorter
MAX_HEADERS = 100
MAX_IDLE = 32  # idle connections kept; more are closed when returned


class ProtocolError(ConnectionError):
    """The reply was not well-formed HTTP/1.1, or the connection ended in the middle of it."""


class StaleConnectionError(ConnectionError):
    """A reused connection was closed by the server before the reply started."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    data: bytes

    def header(self, name: str) -> str:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), "")


class _Connection:
    __slots__ = ("reader", "sock")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class WirePool:
    """Keep-alive connections to one API server; safe to use from many threads at once."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, *, server_hostname: str) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.server_hostname = server_hostname
        self.authority = host if port == 443 else f"{host}:{port}"
        if ":" in host and not host.startswith("["):  # an IPv6 literal
            self.authority = f"[{host}]" if port == 443 else f"[{host}]:{port}"
        self._idle: deque[_Connection] = deque()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def request(
        self,
        method: str,
        target: str,
        headers: bytes,
        body: bytes | None,
        *,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> Reply:
        """One request; `headers` is the prepared header block (each line ending in CRLF, no
        Host, Content-Length or the blank line)."""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.authority}\r\n".encode() + headers
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: %d\r\n" % len(body or b"")
        message = head + b"\r\n" + (body or b"")
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = None
        if connection is not None:
            try:
                return self._exchange(connection, message, method, read_timeout, reused=True)
            except StaleConnectionError:
                pass  # the server closed it while idle: a fresh one, at once
        connection = self._connect(connect_timeout)
        return self._exchange(connection, message, method, read_timeout, reused=False)

    def _connect(self, timeout: float) -> _Connection:
        raw = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.context.wrap_socket(raw, server_hostname=self.server_hostname)
        except BaseException:
            raw.close()
            raise
        return _Connection(sock)

    def _exchange(
        self,
        connection: _Connection,
        message: bytes,
        method: str,
        read_timeout: float | None,
        *,
        reused: bool,
    ) -> Reply:
        keep = False
        try:
            connection.sock.settimeout(read_timeout)
            try:
                connection.sock.sendall(message)
                status_line = connection.reader.readline(MAX_LINE + 1)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError) as e:
                if reused:
                    raise StaleConnectionError(str(e)) from e
                raise
            if not status_line:
                if reused:
                    raise StaleConnectionError("closed by the server before the reply")
                raise ProtocolError("the API server closed the connection without a reply")
            reply, keep = _read_reply(connection.reader, status_line, method)
            return reply
        finally:
            if keep and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
            else:
                connection.close()


def _read_reply(reader: BinaryIO, status_line: bytes, method: str) -> tuple[Reply, bool]:
    """The reply after its status line, and whether the connection may be used again."""
    parts = status_line.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    while True:
        line = reader.readline(MAX_LINE + 1)
        if not line:
            raise ProtocolError("the connection ended inside the reply's headers")
        if line in (b"\r\n", b"\n"):
            break
        if len(line) > MAX_LINE or len(headers) >= MAX_HEADERS:
            raise ProtocolError("the reply's headers are too large")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        name, value = name.strip(), value.strip()
        headers.append((name, value))
        lower = name.lower()
        if lower == "content-length":
            if not value.isdigit():
                raise ProtocolError(f"bad Content-Length: {value[:20]!r}")
            length = int(value)
        elif lower == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif lower == "connection":
            close = close or "close" in value.lower()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif chunked:
        body = _read_chunked(reader)
    elif length is not None:
        body = reader.read(length)
        if len(body) != length:
            raise ProtocolError("the connection ended inside the reply's body")
    else:
        body = reader.read()  # delimited by the connection's end
        close = True
    return Reply(status, reason, headers, body), not close


def _read_chunked(reader: BinaryIO) -> bytes:
    pieces: list[bytes] = []
    while True:
        line = reader.readline(MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size: {line[:20]!r}") from None
        if size == 0:
            while reader.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailers, ignored
            return b"".join(pieces)
        chunk = reader.read(size)
        if len(chunk) != size or reader.readline(MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise ProtocolError("the connection ended inside a chunk")
        pieces.append(chunk)
