"""The Timer workload as the Job's container runs it: a real subprocess reporting to a real HTTP server on
127.0.0.1, checked on its exit code, the reports received and its JSON log lines."""

from __future__ import annotations

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

SRC = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "jobscheduler.workloads.timer"]
JOB_ID = "timer-nightly-7f3k2"
REPORT_KEYS = {
    "schema", "timer_name", "job_id", "namespace", "pod", "duration_seconds",
    "started_at", "finished_at", "elapsed_seconds", "outcome",
}  # fmt: skip

Record = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    method: str
    at: float  # time.monotonic()
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def report(self) -> Record:
        doc = json.loads(self.body)
        assert isinstance(doc, dict)
        return doc


class ReportServer:
    """Answers each request with the next scripted reply, 200 once the script runs out, and records it."""

    def __init__(self, *, replies: Sequence[Reply] = (), port: int = 0) -> None:
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
                        at=time.monotonic(),
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                    )
                )
                payload = b'{"accepted": true}' if reply.status < 300 else b'{"error": "scripted failure"}'
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = _answer  # noqa: N815 -- the names http.server dispatches on

            def log_message(self, *_args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        # A short poll keeps shutdown(), hence each test's teardown, from waiting out the default 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1/timer-reports"

    def _record(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            return self._replies.pop(0) if self._replies else Reply(200)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., ReportServer]]:
    servers: list[ReportServer] = []

    def start(*, replies: Sequence[Reply] = (), port: int = 0) -> ReportServer:
        servers.append(ReportServer(replies=replies, port=port))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def report_server(serve: Callable[..., ReportServer]) -> ReportServer:
    return serve()


def unused_port() -> int:
    """A port nothing listens on: bound and released at once, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog does) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/timer-reports"


def timer_env(endpoint: str, **overrides: str | None) -> dict[str, str]:
    """The variables a Job manifest sets, tuned for tests; an override of None unsets the variable."""
    # Built from scratch rather than os.environ: proxy variables or a stray TIMER_* must not leak in.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(SRC),
        "TIMER_NAME": "nightly-report",
        "TIMER_DURATION_SECONDS": "1",
        "CONTROL_PLANE_ENDPOINT": endpoint,
        "JOB_ID": JOB_ID,
        "JOB_NAMESPACE": "team-a",
        "POD_NAME": f"{JOB_ID}-x8q2m",
        "LOG_LEVEL": "info",
        "TIMER_PROGRESS_INTERVAL_SECONDS": "0.2",
        "TIMER_REPORT_ATTEMPTS": "3",
        "TIMER_REPORT_BACKOFF_SECONDS": "0.05",
        "TIMER_REPORT_TIMEOUT_SECONDS": "2",
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
    assert record["level"] in {"trace", "debug", "info", "warn", "error"}, line
    assert isinstance(record["event"], str), line
    return record


@dataclass(frozen=True)
class Finished:
    code: int
    log: list[Record]
    stderr: str
    seconds: float

    def events(self, name: str) -> list[Record]:
        return [r for r in self.log if r["event"] == name]


def run_timer(env: dict[str, str], *, timeout: float = 30) -> Finished:
    started = time.monotonic()
    proc = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return Finished(
        code=proc.returncode,
        log=[parse_line(line) for line in proc.stdout.splitlines()],
        stderr=proc.stderr,
        seconds=time.monotonic() - started,
    )


class RunningTimer:
    """The workload started in the background, its log read line by line as it is written."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._log: list[Record] = []
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
                raise AssertionError(f"no {event!r} within {timeout}s; log so far: {self._log}") from None
            if line is None:
                raise AssertionError(f"exited before logging {event!r}; log: {self._log}")
            self._log.append(parse_line(line))
            if self._log[-1]["event"] == event:
                return self._log[-1]

    def signal(self, signum: int) -> float:
        self.proc.send_signal(signum)
        return time.monotonic()

    def finish(self, *, since: float, timeout: float = 10) -> Finished:
        code = self.proc.wait(timeout=timeout)
        seconds = time.monotonic() - since
        self._reader.join(timeout=5)
        while (line := self._lines.get_nowait()) is not None:
            self._log.append(parse_line(line))
        assert self.proc.stderr is not None
        return Finished(code=code, log=self._log, stderr=self.proc.stderr.read(), seconds=seconds)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[dict[str, str]], RunningTimer]]:
    running: list[RunningTimer] = []

    def start(env: dict[str, str]) -> RunningTimer:
        running.append(RunningTimer(env))
        return running[-1]

    yield start
    for timer in running:
        timer.kill()


@pytest.mark.timeout(30)
def test_completed_timer_reports_once_logs_progress_and_exits_0(report_server: ReportServer) -> None:
    done = run_timer(timer_env(report_server.url))

    assert done.code == 0, done
    assert [r.method for r in report_server.received] == ["POST"]
    request = report_server.received[0]
    report = request.report()
    assert set(report) == REPORT_KEYS
    assert report["schema"] == "jobscheduler.timer.report/v1"
    assert report["timer_name"] == "nightly-report"
    assert report["job_id"] == JOB_ID
    assert report["namespace"] == "team-a"
    assert report["pod"] == f"{JOB_ID}-x8q2m"
    assert report["duration_seconds"] == 1
    assert report["outcome"] == "completed"
    started, finished = (datetime.fromisoformat(report[k]) for k in ("started_at", "finished_at"))
    assert report["started_at"].endswith("Z")
    assert report["finished_at"].endswith("Z")
    assert finished >= started
    assert 1.0 <= report["elapsed_seconds"] < 5
    assert abs((finished - started).total_seconds() - report["elapsed_seconds"]) < 0.5

    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == f"{JOB_ID}-{report['started_at']}"
    assert request.headers["user-agent"] == f"jobscheduler-timer/{jobscheduler.__version__}"

    progress = done.events("timer.progress")
    assert len(progress) >= 3  # every 0.2 s over 1 s: 4 when the machine keeps up
    assert all(r["timer_name"] == "nightly-report" and r["job_id"] == JOB_ID for r in progress)
    elapsed = [r["elapsed_seconds"] for r in progress]
    assert elapsed == sorted(elapsed)
    assert all(0 < r["elapsed_seconds"] < 1 and 0 < r["remaining_seconds"] <= 1 for r in progress)
    assert all(0 < r["percent"] < 100 for r in progress)
    [delivered] = done.events("report.delivered")
    assert delivered["attempt"] == 1
    assert delivered["status"] == 200


@pytest.mark.timeout(30)
def test_report_is_retried_until_an_endpoint_that_was_down_comes_up(
    serve: Callable[..., ReportServer], spawn: Callable[[dict[str, str]], RunningTimer]
) -> None:
    port = unused_port()
    timer = spawn(timer_env(
        f"http://127.0.0.1:{port}/v1/timer-reports",
        TIMER_REPORT_ATTEMPTS="8", TIMER_REPORT_BACKOFF_SECONDS="0.2",
    ))  # fmt: skip

    # Down for two attempts, proven by the log, then listening on that very port.
    for _ in range(2):
        failed = timer.wait_for("report.attempt_failed")
        assert failed["status"] is None
        assert failed["retry_in_seconds"] > 0
    server = serve(port=port)
    done = timer.finish(since=time.monotonic())

    assert done.code == 0, done
    assert len(server.received) == 1
    assert server.received[0].report()["outcome"] == "completed"
    [delivered] = done.events("report.delivered")
    assert delivered["attempt"] >= 3
    assert [r["attempt"] for r in done.events("report.attempt")][-1] == delivered["attempt"]


@pytest.mark.timeout(30)
def test_retryable_answers_are_retried_with_the_same_idempotency_key(
    serve: Callable[..., ReportServer],
) -> None:
    server = serve(replies=[Reply(503), Reply(429), Reply(408), Reply(500)])

    done = run_timer(timer_env(server.url, TIMER_REPORT_ATTEMPTS="5"))

    assert done.code == 0, done
    assert len(server.received) == 5
    assert len({r.headers["idempotency-key"] for r in server.received}) == 1
    assert len({r.body for r in server.received}) == 1
    assert [r["status"] for r in done.events("report.attempt_failed")] == [503, 429, 408, 500]
    assert done.events("report.delivered")[0]["attempt"] == 5


@pytest.mark.timeout(30)
def test_retry_after_from_the_server_sets_the_pause(serve: Callable[..., ReportServer]) -> None:
    server = serve(replies=[Reply(503, {"Retry-After": "1"})])

    done = run_timer(timer_env(server.url, TIMER_REPORT_BACKOFF_SECONDS="0.01"))

    assert done.code == 0, done
    first, second = server.received
    assert second.at - first.at >= 0.9  # backoff alone would have waited 0.01 s
    assert done.events("report.attempt_failed")[0]["retry_in_seconds"] == 1


@pytest.mark.timeout(30)
def test_unreachable_endpoint_exits_1_after_all_attempts_saying_what_to_check() -> None:
    endpoint = f"http://127.0.0.1:{unused_port()}/v1/timer-reports"

    done = run_timer(timer_env(endpoint, TIMER_REPORT_ATTEMPTS="3"))

    assert done.code == 1, done
    assert done.seconds < 10
    assert [r["attempt"] for r in done.events("report.attempt")] == [1, 2, 3]
    assert len(done.events("report.attempt_failed")) == 3
    [undelivered] = done.events("report.undelivered")
    assert undelivered["level"] == "error"
    assert undelivered["endpoint"] == endpoint
    assert undelivered["reason"] == "attempts_exhausted"
    assert undelivered["attempts"] == 3
    assert "refused" in undelivered["last_error"].lower()
    assert "CONTROL_PLANE_ENDPOINT is reachable" in undelivered["hint"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "reply",
    [Reply(400), Reply(404), Reply(302, {"Location": "/elsewhere"})],
    ids=["400-bad-request", "404-not-found", "302-redirect"],
)
def test_permanent_refusal_exits_1_after_exactly_one_attempt(
    serve: Callable[..., ReportServer], reply: Reply
) -> None:
    server = serve(replies=[reply] * 3)

    done = run_timer(timer_env(server.url, TIMER_REPORT_ATTEMPTS="3"))

    assert done.code == 1, done
    # One POST and nothing else: no retry, and a redirect is not followed as a body-less GET.
    assert [r.method for r in server.received] == ["POST"]
    assert len(done.events("report.attempt")) == 1
    [undelivered] = done.events("report.undelivered")
    assert undelivered["reason"] == "rejected"
    assert undelivered["status"] == reply.status
    assert undelivered["endpoint"] == server.url


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_the_wait_reports_cancelled_and_exits_0(
    report_server: ReportServer, spawn: Callable[[dict[str, str]], RunningTimer], signum: signal.Signals
) -> None:
    timer = spawn(
        timer_env(report_server.url, TIMER_DURATION_SECONDS="60", TIMER_PROGRESS_INTERVAL_SECONDS="10")
    )
    timer.wait_for("timer.started")  # logged once the signal handlers are in place

    done = timer.finish(since=timer.signal(signum))

    assert done.code == 0, done
    assert done.seconds < 3
    [request] = report_server.received
    report = request.report()
    assert report["outcome"] == "cancelled"
    assert report["duration_seconds"] == 60
    assert 0 <= report["elapsed_seconds"] < 5  # stopped at the signal, not after 60 s
    [cancelled] = done.events("timer.cancelled")
    assert cancelled["signal"] == signum.name
    assert done.events("report.delivered")


@pytest.mark.timeout(30)
def test_second_signal_while_reporting_aborts_with_143(
    silent_endpoint: str, spawn: Callable[[dict[str, str]], RunningTimer]
) -> None:
    timer = spawn(timer_env(
        silent_endpoint, TIMER_DURATION_SECONDS="60", TIMER_REPORT_TIMEOUT_SECONDS="30",
    ))  # fmt: skip
    timer.wait_for("timer.started")
    timer.signal(signal.SIGTERM)
    timer.wait_for("report.attempt")
    time.sleep(0.2)  # let the request reach its blocking read: that is what the second signal must cut

    done = timer.finish(since=timer.signal(signal.SIGTERM))

    assert done.code == 143, done
    assert done.seconds < 3
    assert done.log[-1]["event"] == "timer.aborted"
    assert done.log[-1]["signal"] == "SIGTERM"
    assert not done.events("report.delivered")


@pytest.mark.timeout(30)
def test_cancelled_report_gives_up_within_the_shutdown_budget(
    silent_endpoint: str, spawn: Callable[[dict[str, str]], RunningTimer]
) -> None:
    timer = spawn(timer_env(
        silent_endpoint, TIMER_DURATION_SECONDS="60", TIMER_REPORT_TIMEOUT_SECONDS="30",
        TIMER_CANCEL_REPORT_BUDGET_SECONDS="1",
    ))  # fmt: skip
    timer.wait_for("timer.started")

    done = timer.finish(since=timer.signal(signal.SIGTERM))

    assert done.code == 1, done
    assert done.seconds < 4  # the request's own 30 s timeout was cut to the 1 s budget
    [undelivered] = done.events("report.undelivered")
    assert undelivered["reason"] == "shutdown_budget_exhausted"
    assert undelivered["endpoint"] == silent_endpoint


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TIMER_NAME", None),
        ("TIMER_NAME", "   "),
        ("TIMER_DURATION_SECONDS", None),
        ("TIMER_DURATION_SECONDS", "0"),
        ("TIMER_DURATION_SECONDS", "-5"),
        ("TIMER_DURATION_SECONDS", "1.5"),
        ("TIMER_DURATION_SECONDS", "ten"),
        ("CONTROL_PLANE_ENDPOINT", None),
        ("CONTROL_PLANE_ENDPOINT", "ftp://control-plane/reports"),
        ("CONTROL_PLANE_ENDPOINT", "control-plane:8080/reports"),
        ("CONTROL_PLANE_ENDPOINT", "http://"),
        ("CONTROL_PLANE_ENDPOINT", "http://control-plane:99999/reports"),
        ("LOG_LEVEL", "verbose"),
        ("TIMER_PROGRESS_INTERVAL_SECONDS", "nan"),
        ("TIMER_REPORT_ATTEMPTS", "0"),
        ("TIMER_REPORT_BACKOFF_SECONDS", "-1"),
        ("TIMER_REPORT_TIMEOUT_SECONDS", "0"),
        ("TIMER_CANCEL_REPORT_BUDGET_SECONDS", "soon"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable_without_reporting(
    report_server: ReportServer, variable: str, value: str | None
) -> None:
    done = run_timer(timer_env(report_server.url, **{variable: value}))

    assert done.code == 2, done
    [line] = done.stderr.splitlines()
    assert variable in line
    if value is not None and value.strip():
        assert repr(value) in line
    else:
        assert "is not set" in line
    assert done.log == []
    assert report_server.received == []


@pytest.mark.timeout(30)
def test_credentials_in_the_endpoint_are_refused_without_echoing_them(report_server: ReportServer) -> None:
    done = run_timer(timer_env("http://timer:s3cret@control-plane:8080/reports"))

    assert done.code == 2, done
    assert "CONTROL_PLANE_ENDPOINT" in done.stderr
    assert "s3cret" not in done.stderr
    assert report_server.received == []


@pytest.mark.timeout(30)
def test_log_level_error_leaves_out_progress_and_every_other_routine_line(
    report_server: ReportServer,
) -> None:
    done = run_timer(timer_env(report_server.url, LOG_LEVEL="error"))

    assert done.code == 0, done
    assert len(report_server.received) == 1
    # A delivered report logs nothing at error level; progress alone would be ~4 lines at 0.2 s.
    assert done.log == []
