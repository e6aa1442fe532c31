"""The webhook workload as the Job's container runs it: a real subprocess calling a real HTTP server on
127.0.0.1, checked on its exit code, the requests received and its JSON log lines."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import jobscheduler
from jobscheduler.workloads import webhook
from jobscheduler.workloads._common import WorkloadConfigError

SRC = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "jobscheduler.workloads.webhook"]
# Webhook URLs often carry their secret in the path or the query (Slack, Discord, signed URLs).
SECRET_PATH = "/hooks/T0001/B0002/path-s3cret"
SECRET_QUERY = "token=query-s3cret"
TOKEN = "Bearer header-s3cret-value"
BODY = '{"event": "job.done", "password": "body-s3cret"}'
SECRETS = ("path-s3cret", "query-s3cret", "header-s3cret", "body-s3cret")

Record = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    at: float  # time.monotonic()
    headers: dict[str, str]  # names lower-cased
    body: bytes


class HookServer:
    """Answers each request with the next scripted reply, 200 once the script runs out, and records it."""

    def __init__(self, *, replies: Sequence[Reply] = ()) -> None:
        self.received: list[Received] = []
        self._replies = list(replies)
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                reply = owner._record(
                    Received(
                        method=self.command,
                        path=self.path,
                        at=time.monotonic(),
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                    )
                )
                time.sleep(reply.delay)
                payload = b'{"ok": true}' if reply.status < 300 else b'{"error": "scripted failure"}'
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            # The names http.server dispatches on.
            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer  # noqa: N815

            def log_message(self, *_args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll keeps shutdown(), hence each test's teardown, from waiting out the default 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}{SECRET_PATH}?{SECRET_QUERY}"

    def _record(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            return self._replies.pop(0) if self._replies else Reply(200)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., HookServer]]:
    servers: list[HookServer] = []

    def start(*replies: Reply) -> HookServer:
        servers.append(HookServer(replies=replies))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def unused_port() -> int:
    """A port nothing listens on: bound and released at once, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SilentServer:
    """Accepts connections, reads nothing and never answers; `connected` is set at the first one."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed by close()
                return
            self._accepted.append(connection)
            self.connected.set()

    def close(self) -> None:
        # shutdown() wakes the accept() in the other thread, which close() alone does not do on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        for connection in self._accepted:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def webhook_env(url: str, **overrides: str | None) -> dict[str, str]:
    """The variables a Job manifest sets, tuned for tests; an override of None unsets the variable."""
    # Built from scratch rather than os.environ: proxy variables or a stray WEBHOOK_* must not leak in.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(SRC),
        "WEBHOOK_URL": url,
        "WEBHOOK_HEADERS": json.dumps({"Authorization": TOKEN, "X-Team": "a"}),
        "WEBHOOK_BODY": BODY,
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WEBHOOK_ATTEMPTS": "3",
        "WEBHOOK_BACKOFF_SECONDS": "0.05",
        "JOB_ID": "webhook-notify-7f3k2",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def parse_line(line: str) -> Record:
    """One log line: must be a JSON object with an RFC 3339 UTC ts, a level and an event."""
    record = json.loads(line)
    assert isinstance(record, dict), line
    assert record["ts"].endswith("Z"), line
    datetime.fromisoformat(record["ts"])
    assert record["level"] in {"debug", "info", "warn", "error"}, line
    assert isinstance(record["event"], str), line
    return record


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def log(self) -> list[Record]:
        return [parse_line(line) for line in self.stdout.splitlines()]

    def events(self, name: str) -> list[Record]:
        return [r for r in self.log if r["event"] == name]


def run_webhook(env: dict[str, str], *args: str) -> Finished:
    started = time.monotonic()
    proc = subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=30, check=False)
    return Finished(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


class RunningWebhook:
    """The workload started in the background, its log read line by line as it is written."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, event: str, *, timeout: float = 10) -> Record:
        """Reads the log up to the next line with this event and returns it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {event!r} within {timeout}s; log so far: {self._seen}") from None
            if line is None:
                raise AssertionError(f"exited before logging {event!r}; log: {self._seen}")
            self._seen.append(line)
            if parse_line(line)["event"] == event:
                return parse_line(line)

    def signal(self, signum: int) -> float:
        self.proc.send_signal(signum)
        return time.monotonic()

    def finish(self, *, since: float) -> Finished:
        code = self.proc.wait(timeout=10)
        seconds = time.monotonic() - since
        self._reader.join(timeout=5)
        while (line := self._lines.get_nowait()) is not None:
            self._seen.append(line)
        assert self.proc.stderr is not None
        return Finished(code, "".join(self._seen), self.proc.stderr.read(), seconds)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[dict[str, str]], RunningWebhook]]:
    running: list[RunningWebhook] = []

    def start(env: dict[str, str]) -> RunningWebhook:
        running.append(RunningWebhook(env))
        return running[-1]

    yield start
    for process in running:
        process.kill()


def gaps(server: HookServer) -> list[float]:
    times = [r.at for r in server.received]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def assert_no_secret_in(done: Finished) -> None:
    for secret in SECRETS:
        assert secret not in done.stdout
        assert secret not in done.stderr


@pytest.mark.timeout(30)
def test_post_sends_url_headers_and_body_once_and_exits_0(serve: Callable[..., HookServer]) -> None:
    server = serve(Reply(201))

    done = run_webhook(webhook_env(server.url))

    assert done.code == 0, done
    [request] = server.received
    assert request.method == "POST"
    assert request.path == f"{SECRET_PATH}?{SECRET_QUERY}"
    assert request.body == BODY.encode()
    assert request.headers["authorization"] == TOKEN
    assert request.headers["x-team"] == "a"
    assert request.headers["content-type"] == "application/json"  # the default once there is a body
    assert request.headers["user-agent"] == f"jobscheduler-webhook/{jobscheduler.__version__}"
    [started] = done.events("webhook.started")
    assert started["target"] == server.origin  # the origin only: path and query may be the secret
    assert started["header_names"] == ["Authorization", "X-Team"]
    assert started["body_bytes"] == len(BODY)
    assert started["job_id"] == "webhook-notify-7f3k2"
    [succeeded] = done.events("webhook.succeeded")
    assert succeeded["status"] == 201
    assert succeeded["attempt"] == 1
    assert succeeded["exit_code"] == 0
    assert 0 <= succeeded["elapsed_seconds"] < 5
    assert done.stderr == ""
    assert_no_secret_in(done)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["GET", "HEAD", "patch"])
def test_each_method_is_sent_as_configured(serve: Callable[..., HookServer], method: str) -> None:
    server = serve()
    body = None if method in ("GET", "HEAD") else BODY

    done = run_webhook(webhook_env(server.url, WEBHOOK_METHOD=method, WEBHOOK_BODY=body))

    assert done.code == 0, done
    [request] = server.received
    assert request.method == method.upper()
    assert request.body == (b"" if body is None else body.encode())
    if body is None:
        assert "content-type" not in request.headers


@pytest.mark.timeout(30)
def test_given_content_type_and_user_agent_replace_the_defaults(serve: Callable[..., HookServer]) -> None:
    server = serve()
    headers = {"content-type": "text/plain", "User-Agent": "team-a-notifier/2"}

    done = run_webhook(webhook_env(server.url, WEBHOOK_HEADERS=json.dumps(headers), WEBHOOK_BODY="plain"))

    assert done.code == 0, done
    [request] = server.received
    assert request.headers["content-type"] == "text/plain"
    assert request.headers["user-agent"] == "team-a-notifier/2"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("expected", "reply", "code"),
    [
        ("204", Reply(204), 0),
        ("200-299,304", Reply(304), 0),
        ("200-299, 404", Reply(404), 0),  # e.g. a DELETE that may find the thing already gone
        ("200-299,503", Reply(503), 0),  # expected wins over retryable
        ("201", Reply(200), 1),  # a 2xx outside the set is unexpected too
        (None, Reply(302, {"Location": "/elsewhere"}), 1),  # redirects are not followed
    ],
    ids=["204-only", "304-in-list", "404-in-list", "503-expected", "200-not-201", "302-not-followed"],
)
def test_expected_status_decides_success_and_an_unexpected_non_retryable_one_is_not_retried(
    serve: Callable[..., HookServer], expected: str | None, reply: Reply, code: int
) -> None:
    server = serve(reply, reply, reply)

    done = run_webhook(webhook_env(server.url, WEBHOOK_EXPECTED_STATUS=expected))

    assert done.code == code, done
    assert len(server.received) == 1
    if code == 0:
        assert done.events("webhook.succeeded")[0]["status"] == reply.status
    else:
        [failed] = done.events("webhook.failed")
        assert failed["reason"] == "unexpected_status"
        assert failed["status"] == reply.status
        assert failed["attempts"] == 1


@pytest.mark.timeout(30)
def test_retryable_statuses_are_retried_with_doubling_backoff_until_success(
    serve: Callable[..., HookServer],
) -> None:
    server = serve(Reply(503), Reply(429), Reply(200))

    done = run_webhook(webhook_env(server.url, WEBHOOK_ATTEMPTS="5", WEBHOOK_BACKOFF_SECONDS="0.1"))

    assert done.code == 0, done
    assert len(server.received) == 3
    assert {r.body for r in server.received} == {BODY.encode()}
    first, second = gaps(server)
    assert 0.1 <= first < 1
    assert 0.2 <= second < 1
    failed = done.events("webhook.attempt_failed")
    assert [(f["attempt"], f["status"], f["retry_in_seconds"]) for f in failed] == [
        (1, 503, 0.1),
        (2, 429, 0.2),
    ]
    [succeeded] = done.events("webhook.succeeded")
    assert succeeded["attempt"] == 3
    assert succeeded["elapsed_seconds"] >= 0.3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [400, 401])
def test_unexpected_client_error_fails_at_once_without_retry(
    serve: Callable[..., HookServer], status: int
) -> None:
    server = serve(Reply(status), Reply(200))

    done = run_webhook(webhook_env(server.url, WEBHOOK_ATTEMPTS="5"))

    assert done.code == 1, done
    assert len(server.received) == 1
    [attempt_failed] = done.events("webhook.attempt_failed")
    assert attempt_failed["retry_in_seconds"] is None
    [failed] = done.events("webhook.failed")
    assert failed["reason"] == "unexpected_status"
    assert failed["status"] == status
    assert failed["exit_code"] == 1
    assert "WEBHOOK_HEADERS" in failed["hint"]


@pytest.mark.timeout(30)
def test_retry_after_replaces_the_backoff(serve: Callable[..., HookServer]) -> None:
    server = serve(Reply(503, {"Retry-After": "1"}), Reply(200))

    done = run_webhook(webhook_env(server.url, WEBHOOK_BACKOFF_SECONDS="0.01"))

    assert done.code == 0, done
    [gap] = gaps(server)
    assert 1.0 <= gap < 2
    assert done.events("webhook.attempt_failed")[0]["retry_in_seconds"] == 1.0


@pytest.mark.timeout(30)
def test_retry_after_is_capped_by_max_backoff(serve: Callable[..., HookServer]) -> None:
    server = serve(Reply(429, {"Retry-After": "3600"}), Reply(200))

    done = run_webhook(
        webhook_env(server.url, WEBHOOK_BACKOFF_SECONDS="0.01", WEBHOOK_MAX_BACKOFF_SECONDS="0.3")
    )

    assert done.code == 0, done
    [gap] = gaps(server)
    assert 0.3 <= gap < 1.5
    assert done.events("webhook.attempt_failed")[0]["retry_in_seconds"] == 0.3


@pytest.mark.timeout(30)
def test_default_cap_is_30_s_and_sigterm_during_the_pause_gives_up_at_once(
    serve: Callable[..., HookServer], spawn: Callable[[dict[str, str]], RunningWebhook]
) -> None:
    server = serve(Reply(503, {"Retry-After": "3600"}))
    webhook = spawn(webhook_env(server.url))

    failed = webhook.wait_for("webhook.attempt_failed")
    assert failed["retry_in_seconds"] == 30.0
    done = webhook.finish(since=webhook.signal(signal.SIGTERM))

    assert done.code == 1, done
    assert done.seconds < 2
    assert len(server.received) == 1
    [gave_up] = done.events("webhook.failed")
    assert gave_up["reason"] == "interrupted"
    assert gave_up["attempts"] == 1
    assert gave_up["status"] == 503


@pytest.mark.timeout(30)
def test_timeout_is_retried_then_gives_up(silent: SilentServer) -> None:
    done = run_webhook(webhook_env(silent.url, WEBHOOK_TIMEOUT_SECONDS="0.3", WEBHOOK_ATTEMPTS="2"))

    assert done.code == 1, done
    assert 0.6 <= done.seconds < 5
    failed = done.events("webhook.attempt_failed")
    assert [f["error"] for f in failed] == ["no answer within 0.3s"] * 2
    assert all(f["status"] is None for f in failed)
    [gave_up] = done.events("webhook.failed")
    assert gave_up["reason"] == "attempts_exhausted"
    assert gave_up["attempts"] == 2


@pytest.mark.timeout(30)
def test_connection_refused_is_retried_then_gives_up() -> None:
    done = run_webhook(webhook_env(f"http://127.0.0.1:{unused_port()}/hook"))

    assert done.code == 1, done
    failed = done.events("webhook.attempt_failed")
    assert [(f["attempt"], f["status"], f["error"]) for f in failed] == [
        (n, None, "connection refused") for n in (1, 2, 3)
    ]
    [gave_up] = done.events("webhook.failed")
    assert gave_up["reason"] == "attempts_exhausted"
    assert gave_up["attempts"] == 3
    assert "reachable" in gave_up["hint"]


@pytest.mark.timeout(30)
def test_no_secret_reaches_the_output_even_at_debug_level(serve: Callable[..., HookServer]) -> None:
    server = serve(Reply(500), Reply(401))

    done = run_webhook(webhook_env(server.url, LOG_LEVEL="debug"))

    assert done.code == 1, done
    assert done.events("webhook.attempt")  # debug lines are there
    assert [r["status"] for r in done.events("webhook.response")] == [500, 401]
    assert_no_secret_in(done)


@pytest.mark.timeout(30)
def test_log_level_error_prints_nothing_on_success(serve: Callable[..., HookServer]) -> None:
    server = serve(Reply(503))

    done = run_webhook(webhook_env(server.url, LOG_LEVEL="ERROR"))

    assert done.code == 0, done
    assert len(server.received) == 2
    assert done.stdout == ""


@pytest.mark.timeout(30)
def test_first_sigterm_lets_the_attempt_in_flight_finish(
    serve: Callable[..., HookServer], spawn: Callable[[dict[str, str]], RunningWebhook]
) -> None:
    server = serve(Reply(200, delay=1.0))
    webhook = spawn(webhook_env(server.url))
    deadline = time.monotonic() + 10
    while not server.received:  # the request has arrived; its answer is 1 s away
        assert time.monotonic() < deadline, "the request never arrived"
        time.sleep(0.02)

    done = webhook.finish(since=webhook.signal(signal.SIGTERM))

    assert done.code == 0, done
    assert len(server.received) == 1
    assert done.events("webhook.succeeded")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_during_a_request_aborts_with_143(
    silent: SilentServer, spawn: Callable[[dict[str, str]], RunningWebhook], signum: signal.Signals
) -> None:
    webhook = spawn(webhook_env(silent.url, WEBHOOK_TIMEOUT_SECONDS="30"))
    assert silent.connected.wait(timeout=10)
    time.sleep(0.2)  # let the request reach its blocking read: that is what the second signal must cut
    webhook.signal(signum)
    time.sleep(0.1)

    done = webhook.finish(since=webhook.signal(signum))

    assert done.code == 143, done
    assert done.seconds < 3
    assert done.log[-1]["event"] == "webhook.aborted"
    assert done.log[-1]["signal"] == signum.name
    assert done.log[-1]["exit_code"] == 143


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBHOOK_URL", None),
        ("WEBHOOK_URL", "ftp://hooks.example.com/x"),
        ("WEBHOOK_METHOD", "FETCH"),
        ("WEBHOOK_HEADERS", '{"X-Retries": 3}'),
        ("WEBHOOK_EXPECTED_STATUS", "2xx"),
        ("WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("WEBHOOK_ATTEMPTS", "1.5"),
        ("WEBHOOK_BACKOFF_SECONDS", "-1"),
        ("WEBHOOK_MAX_BACKOFF_SECONDS", "inf"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable_without_sending(
    serve: Callable[..., HookServer], variable: str, value: str | None
) -> None:
    server = serve()

    done = run_webhook(webhook_env(server.url, **{variable: value}))

    assert done.code == 2, done
    [line] = done.stderr.splitlines()
    assert line.startswith(f"jobscheduler-webhook: configuration error: {variable}")
    assert done.stdout == ""
    assert server.received == []


# The finer rules of each variable, checked on load_settings itself: a process per value would add
# seconds and prove nothing the test above does not.


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WEBHOOK_URL", "  ", "WEBHOOK_URL is not set"),
        ("WEBHOOK_URL", "hooks.example.com/x", "WEBHOOK_URL must start with http:// or https://"),
        ("WEBHOOK_URL", "http://", "WEBHOOK_URL has no host"),
        ("WEBHOOK_URL", "http://hooks.example.com:99999/x", "WEBHOOK_URL is not a valid URL"),
        ("WEBHOOK_URL", "http://hooks.example.com/a b", "WEBHOOK_URL contains whitespace"),
        ("WEBHOOK_URL", "http://u:p@hooks.example.com/x", "WEBHOOK_URL must not hold a user or password"),
        ("WEBHOOK_METHOD", "CONNECT", "WEBHOOK_METHOD='CONNECT' is invalid; expected one of GET, POST"),
        (
            "WEBHOOK_HEADERS",
            "Authorization: x",
            "WEBHOOK_HEADERS is not valid JSON (Expecting value at line 1",
        ),
        ("WEBHOOK_HEADERS", '["Authorization", "x"]', "WEBHOOK_HEADERS must be a JSON object"),
        (
            "WEBHOOK_HEADERS",
            '{"X-Retries": 3}',
            "WEBHOOK_HEADERS has a value for 'X-Retries' that is not a JSON",
        ),
        ("WEBHOOK_HEADERS", '{"Bad Name": "x"}', "WEBHOOK_HEADERS has an invalid header name 'Bad Name'"),
        ("WEBHOOK_HEADERS", '{"X-A": "1", "x-a": "2"}', "WEBHOOK_HEADERS names header 'x-a' twice"),
        ("WEBHOOK_HEADERS", '{"Content-Length": "5"}', "WEBHOOK_HEADERS must not set 'Content-Length'"),
        (
            "WEBHOOK_HEADERS",
            '{"X-A": "1\\r\\nX-B: 1"}',
            "WEBHOOK_HEADERS has a value for 'X-A' with a line break",
        ),
        ("WEBHOOK_EXPECTED_STATUS", "299-200", "WEBHOOK_EXPECTED_STATUS='299-200' is invalid"),
        ("WEBHOOK_EXPECTED_STATUS", "200,600", "'600' is not a status code from 100 to 599"),
        ("WEBHOOK_EXPECTED_STATUS", "200,,204", "'' is not a status code"),
        ("WEBHOOK_ATTEMPTS", "0", "WEBHOOK_ATTEMPTS='0' is invalid; expected a whole number greater than 0"),
        ("WEBHOOK_ATTEMPTS", "+3", "WEBHOOK_ATTEMPTS='+3' is invalid"),
        ("WEBHOOK_TIMEOUT_SECONDS", "nan", "WEBHOOK_TIMEOUT_SECONDS='nan' is invalid"),
    ],
)
def test_load_settings_names_the_variable_and_the_rule(variable: str, value: str, message: str) -> None:
    env = webhook_env("http://hooks.example.com/x", **{variable: value})

    with pytest.raises(WorkloadConfigError) as caught:
        webhook.load_settings(env)

    assert caught.value.variable == variable
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBHOOK_URL", "http://user:password-s3cret@hooks.example.com/x"),
        ("WEBHOOK_URL", "gopher://hooks.example.com/path-s3cret?token=query-s3cret"),
        ("WEBHOOK_URL", "http://hooks.example.com:99999/path-s3cret"),
        ("WEBHOOK_HEADERS", '{"Authorization": "Bearer header-s3cret\\n"}'),
        ("WEBHOOK_HEADERS", '{"Authorization": "Bearer header-s3cret", "authorization": "x"}'),
        ("WEBHOOK_HEADERS", '{"Authorization": "Bearer header-s3cret",}'),
        ("WEBHOOK_HEADERS", '{"Authorization": ["Bearer header-s3cret"]}'),
    ],
)
def test_configuration_errors_do_not_echo_secrets(variable: str, value: str) -> None:
    with pytest.raises(WorkloadConfigError) as caught:
        webhook.load_settings(webhook_env("http://hooks.example.com/x", **{variable: value}))

    assert caught.value.variable == variable
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("status", [None, 408, 429, 500, 503, 599])
def test_no_answer_408_429_and_5xx_are_retried(status: int | None) -> None:
    assert webhook.is_retryable(status)


@pytest.mark.parametrize("status", [302, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert not webhook.is_retryable(status)


@pytest.mark.timeout(30)
def test_help_exits_0_and_arguments_are_refused() -> None:
    env = webhook_env("http://hooks.example.com/x")

    assert run_webhook(env, "--help").stdout.startswith("usage: python -m jobscheduler.workloads.webhook")
    refused = run_webhook(env, "now")
    assert refused.code == 2
    assert "takes no arguments" in refused.stderr
