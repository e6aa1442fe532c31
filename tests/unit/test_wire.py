"""jobscheduler.kube.wire: reading HTTP/1.1 replies (the request side is exercised against the
real API server by every integration test)."""

from __future__ import annotations

import io

import pytest

from jobscheduler.kube.wire import ProtocolError, _read_reply


def read(raw: bytes, method: str = "GET") -> tuple[int, str, dict[str, str], bytes, bool]:
    reader = io.BytesIO(raw)
    status_line = reader.readline()
    reply, keep = _read_reply(reader, status_line, method)
    return reply.status, reply.reason, dict(reply.headers), reply.data, keep


def test_content_length_body_and_keep_alive() -> None:
    status, reason, headers, body, keep = read(
        b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}NEXT'
    )
    assert (status, reason, body, keep) == (201, "Created", b'{"a":1}', True)
    assert headers["Content-Type"] == "application/json"


def test_chunked_body_is_joined_and_trailers_skipped() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    assert read(raw)[3:] == (b"Wikipedia", True)


def test_connection_close_and_http10_end_keep_alive() -> None:
    assert read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")[4] is False
    assert read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")[4] is False


def test_body_without_length_runs_to_the_end_and_closes() -> None:
    assert read(b"HTTP/1.1 200 OK\r\n\r\nall of it")[3:] == (b"all of it", False)


def test_no_body_for_head_and_204() -> None:
    assert read(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", method="HEAD")[3] == b""
    assert read(b"HTTP/1.1 204 No Content\r\n\r\n")[3:] == (b"", True)


def test_error_status_keeps_reason_and_headers() -> None:
    status, reason, headers, body, _ = read(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert (status, reason, headers["Retry-After"], body) == (429, "Too Many Requests", "1", b"{}")


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 abc OK\r\n\r\n",  # no status code
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # cut body
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",  # bad length
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # malformed header
        b"HTTP/1.1 200 OK\r\nContent-Type: a\r\n",  # ends inside the headers
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nabc",  # cut chunk
    ],
)
def test_malformed_replies_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        read(raw)


def test_protocol_errors_are_connection_errors_the_gateway_retries() -> None:
    assert issubclass(ProtocolError, OSError)
