"""The healthcheck workload as the Job's container runs it: a real subprocess probing a real HTTP server, TCP
listener and gRPC server with the standard health service on 127.0.0.1, checked on its exit code, its JSON
log lines and the termination message it leaves for Kubernetes."""

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from jobscheduler.workloads import health_targets, healthcheck
from jobscheduler.workloads._common import WorkloadConfigError

SRC = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "jobscheduler.workloads.healthcheck"]

Record = dict[str, Any]
Target = dict[str, object]


class HealthServer:
    """Answers GET path with the next status scripted for it (the last one repeats), and counts the calls."""

    def __init__(self, routes: Mapping[str, Sequence[int]]) -> None:
        self.calls: dict[str, int] = {}
        self._routes = {path: list(statuses) for path, statuses in routes.items()}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- the name http.server dispatches on
                status = owner._next(urlsplit(self.path).path)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def _next(self, path: str) -> int:
        with self._lock:
            self.calls[path] = self.calls.get(path, 0) + 1
            statuses = self._routes.get(path, [404])
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[[Mapping[str, Sequence[int]]], HealthServer]]:
    servers: list[HealthServer] = []

    def start(routes: Mapping[str, Sequence[int]]) -> HealthServer:
        servers.append(HealthServer(routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def start_grpc_server(*, statuses: Mapping[str, int] | None) -> tuple[grpc.Server, int]:
    """A real gRPC server on 127.0.0.1; with the standard health service when statuses is given."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    if statuses is not None:
        servicer = health.HealthServicer()
        for service, status in statuses.items():
            servicer.set(service, status)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    """The whole server SERVING, service "ledger" SERVING, service "payments" NOT_SERVING."""
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    server, port = start_grpc_server(statuses={"": serving, "ledger": serving, "payments": not_serving})
    yield port
    server.stop(grace=None)


@pytest.fixture
def tcp_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def unused_port() -> int:
    """A port nothing listens on: bound and released at once, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def termination_log(tmp_path: Path) -> Path:
    return tmp_path / "termination-log"


def healthcheck_env(
    targets: Sequence[Target] | str | None, termination_log: Path, **overrides: str | None
) -> dict[str, str]:
    """The variables a Job manifest sets, tuned for tests; an override of None unsets the variable."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(SRC),
        "HEALTHCHECK_TERMINATION_LOG": str(termination_log),
        "HEALTHCHECK_INTERVAL_SECONDS": "0.05",
        "JOB_ID": "healthcheck-7f3k2",
    }
    if targets is not None:
        env["HEALTHCHECK_TARGETS"] = targets if isinstance(targets, str) else json.dumps(targets)
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
    log: list[Record]
    stderr: str
    seconds: float

    def events(self, name: str) -> list[Record]:
        return [r for r in self.log if r["event"] == name]

    def targets(self) -> dict[str, Record]:
        """The one healthcheck.target line of each target, by name."""
        lines = self.events("healthcheck.target")
        by_name = {r["target"]: r for r in lines}
        assert len(by_name) == len(lines), lines
        return by_name


def run_healthcheck(env: dict[str, str]) -> Finished:
    started = time.monotonic()
    proc = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=30, check=False)
    return Finished(
        code=proc.returncode,
        log=[parse_line(line) for line in proc.stdout.splitlines()],
        stderr=proc.stderr,
        seconds=time.monotonic() - started,
    )


@pytest.mark.timeout(30)
def test_all_healthy_exits_0_with_one_line_per_target_and_the_count_as_message(
    serve: Callable[..., HealthServer], grpc_port: int, tcp_port: int, termination_log: Path
) -> None:
    server = serve({"/healthz": [200], "/moved": [302]})
    targets: list[Target] = [
        {"name": "api", "type": "http", "url": server.url("/healthz")},
        {"name": "legacy", "type": "http", "url": server.url("/moved")},  # 3xx is healthy by default
        {"name": "db", "type": "tcp", "host": "127.0.0.1", "port": tcp_port},
        {"name": "grpc-server", "type": "grpc", "address": f"127.0.0.1:{grpc_port}"},
        {"name": "ledger", "type": "grpc", "address": f"127.0.0.1:{grpc_port}", "service": "ledger"},
    ]

    done = run_healthcheck(healthcheck_env(targets, termination_log))

    assert done.code == 0, done
    assert termination_log.read_text() == "5/5 healthy"
    lines = done.targets()
    assert set(lines) == {"api", "legacy", "db", "grpc-server", "ledger"}
    assert all(
        line["healthy"] and line["attempts"] == 1 and line["level"] == "info" for line in lines.values()
    )
    assert lines["api"]["detail"] == "status 200"
    assert lines["legacy"]["detail"] == "status 302"
    assert server.calls == {"/healthz": 1, "/moved": 1}  # the redirect was judged, not followed
    assert lines["db"]["detail"] == "connected"
    assert lines["db"]["address"] == f"127.0.0.1:{tcp_port}"
    assert lines["ledger"]["detail"] == "SERVING"
    [summary] = done.events("healthcheck.summary")
    assert summary["message"] == "5/5 healthy"
    assert summary["unhealthy"] == []
    assert summary["exit_code"] == 0
    assert summary["job_id"] == "healthcheck-7f3k2"


@pytest.mark.timeout(30)
def test_mixed_targets_exit_1_and_the_termination_message_names_each_unhealthy_one(
    serve: Callable[..., HealthServer], grpc_port: int, termination_log: Path
) -> None:
    server = serve({"/healthz": [200], "/down": [503]})
    refused = unused_port()
    targets: list[Target] = [
        {"name": "api", "type": "http", "url": server.url("/healthz")},
        {"name": "db", "type": "tcp", "host": "127.0.0.1", "port": refused},
        {"name": "search", "type": "http", "url": server.url("/down?verbose=1")},
        {"name": "payments", "type": "grpc", "address": f"127.0.0.1:{grpc_port}", "service": "payments"},
    ]

    done = run_healthcheck(healthcheck_env(targets, termination_log))

    assert done.code == 1, done
    expected = (
        "1/4 healthy; unhealthy: "
        f"db (tcp 127.0.0.1:{refused}: connection refused), "
        f"search (http {server.url('/down')}: status 503, expected 200-399), "
        f"payments (grpc 127.0.0.1:{grpc_port} service 'payments': NOT_SERVING)"
    )
    assert termination_log.read_text() == expected
    lines = done.targets()
    assert [name for name, line in lines.items() if line["healthy"]] == ["api"]
    assert lines["db"]["level"] == "error"
    assert lines["db"]["detail"] == "connection refused"
    assert lines["payments"]["detail"] == "NOT_SERVING"
    [summary] = done.events("healthcheck.summary")
    assert summary["message"] == expected
    assert summary["healthy"] == 1
    assert summary["total"] == 4
    assert summary["unhealthy"] == ["db", "search", "payments"]
    assert summary["exit_code"] == 1


@pytest.mark.timeout(30)
def test_expected_status_of_an_http_target_replaces_200_399(
    serve: Callable[..., HealthServer], termination_log: Path
) -> None:
    server = serve({"/moved": [302], "/teapot": [418]})
    targets: list[Target] = [
        {"name": "strict", "type": "http", "url": server.url("/moved"), "expected_status": "200-299"},
        {"name": "teapot", "type": "http", "url": server.url("/teapot"), "expected_status": 418},
    ]

    done = run_healthcheck(healthcheck_env(targets, termination_log))

    assert done.code == 1, done
    lines = done.targets()
    assert lines["strict"]["detail"] == "status 302, expected 200-299"
    assert lines["teapot"]["healthy"]
    assert termination_log.read_text().startswith("1/2 healthy; unhealthy: strict ")


@pytest.mark.timeout(30)
def test_grpc_failures_say_what_the_server_answered(grpc_port: int, termination_log: Path) -> None:
    bare_server, bare_port = start_grpc_server(statuses=None)
    try:
        refused = unused_port()
        targets: list[Target] = [
            {"name": "unknown", "type": "grpc", "address": f"127.0.0.1:{grpc_port}", "service": "nope"},
            {"name": "no-health", "type": "grpc", "address": f"127.0.0.1:{bare_port}"},
            {"type": "grpc", "address": f"127.0.0.1:{refused}"},  # named by its address
        ]

        done = run_healthcheck(healthcheck_env(targets, termination_log))
    finally:
        bare_server.stop(grace=None)

    assert done.code == 1, done
    lines = done.targets()
    assert lines["unknown"]["detail"].startswith("NOT_FOUND")
    assert lines["no-health"]["detail"].startswith("UNIMPLEMENTED")
    assert lines[f"127.0.0.1:{refused}"]["detail"].startswith("UNAVAILABLE")
    message = termination_log.read_text()
    assert message.startswith("0/3 healthy; unhealthy: unknown (grpc ")
    assert f", 127.0.0.1:{refused} (grpc: UNAVAILABLE" in message  # the address is not said twice


@pytest.mark.timeout(30)
def test_attempts_retry_an_unhealthy_target_until_it_recovers(
    serve: Callable[..., HealthServer], termination_log: Path
) -> None:
    server = serve({"/warming-up": [503, 503, 200], "/broken": [500]})
    targets: list[Target] = [
        {"name": "warming", "type": "http", "url": server.url("/warming-up")},
        {"name": "broken", "type": "http", "url": server.url("/broken")},
    ]

    done = run_healthcheck(healthcheck_env(targets, termination_log, HEALTHCHECK_ATTEMPTS="3"))

    assert done.code == 1, done
    assert server.calls == {"/warming-up": 3, "/broken": 3}
    lines = done.targets()
    assert lines["warming"]["healthy"]
    assert lines["warming"]["attempts"] == 3
    assert not lines["broken"]["healthy"]
    assert lines["broken"]["attempts"] == 3
    assert termination_log.read_text() == (
        f"1/2 healthy; unhealthy: broken (http {server.url('/broken')}: status 500, expected 200-399)"
    )


@pytest.mark.timeout(30)
def test_targets_are_checked_in_parallel_each_within_its_timeout(
    tcp_port: int, termination_log: Path
) -> None:
    silent = f"127.0.0.1:{tcp_port}"  # accepts the connection, never answers
    targets: list[Target] = [
        {"name": "web-1", "type": "http", "url": f"http://{silent}/healthz"},
        {"name": "web-2", "type": "http", "url": f"http://{silent}/healthz", "timeout_seconds": 0.5},
        {"name": "rpc", "type": "grpc", "address": silent},
    ]

    done = run_healthcheck(healthcheck_env(targets, termination_log, HEALTHCHECK_TIMEOUT_SECONDS="1"))

    assert done.code == 1, done
    assert done.seconds < 2.5  # one timeout's worth, not three
    lines = done.targets()
    assert lines["web-1"]["detail"] == "no answer within 1s"
    assert lines["web-2"]["detail"] == "no answer within 0.5s"
    assert lines["rpc"]["detail"] == "no answer within 1s"
    assert lines["web-2"]["took_seconds"] < lines["web-1"]["took_seconds"]


@pytest.mark.timeout(30)
def test_termination_message_is_cut_to_the_kubernetes_limit(termination_log: Path) -> None:
    refused = unused_port()
    targets: list[Target] = [
        {"name": f"replica-{n:02}-" + "x" * 120, "type": "tcp", "host": "127.0.0.1", "port": refused}
        for n in range(40)
    ]

    done = run_healthcheck(healthcheck_env(targets, termination_log))

    assert done.code == 1, done
    message = termination_log.read_bytes()
    assert len(message) == 4096
    assert message.decode().startswith("0/40 healthy; unhealthy: replica-00-")
    assert message.decode().endswith("…")
    assert len(done.targets()) == 40  # the log keeps every target


@pytest.mark.timeout(30)
def test_missing_termination_log_directory_is_no_reason_to_fail(tmp_path: Path, tcp_port: int) -> None:
    targets: list[Target] = [{"type": "tcp", "host": "127.0.0.1", "port": tcp_port}]

    done = run_healthcheck(healthcheck_env(targets, tmp_path / "missing" / "termination-log"))

    assert done.code == 0, done
    assert not (tmp_path / "missing").exists()
    assert done.stderr == ""


class RunningHealthcheck:
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

    def finish(self, *, since: float) -> Finished:
        code = self.proc.wait(timeout=10)
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
def spawn() -> Iterator[Callable[[dict[str, str]], RunningHealthcheck]]:
    running: list[RunningHealthcheck] = []

    def start(env: dict[str, str]) -> RunningHealthcheck:
        running.append(RunningHealthcheck(env))
        return running[-1]

    yield start
    for process in running:
        process.kill()


def slow_targets(tcp_port: int) -> list[Target]:
    """One target waiting between attempts, one stuck in a request for 30 s."""
    return [
        {"name": "db", "type": "tcp", "host": "127.0.0.1", "port": unused_port()},
        {"name": "api", "type": "http", "url": f"http://127.0.0.1:{tcp_port}/healthz", "timeout_seconds": 30},
    ]


@pytest.mark.timeout(30)
def test_first_sigterm_stops_retries_and_reports_what_is_known(
    spawn: Callable[[dict[str, str]], RunningHealthcheck], tcp_port: int, termination_log: Path
) -> None:
    env = healthcheck_env(
        slow_targets(tcp_port), termination_log, HEALTHCHECK_ATTEMPTS="5", HEALTHCHECK_INTERVAL_SECONDS="10"
    )
    check = spawn(env)
    check.wait_for("healthcheck.started")  # logged once the signal handlers are in place
    time.sleep(0.3)  # db has failed its first attempt and waits; api waits for an answer

    done = check.finish(since=check.signal(signal.SIGTERM))

    assert done.code == 1, done
    assert done.seconds < 3  # neither the 10 s pause nor the 30 s timeout
    lines = done.targets()
    assert lines["db"]["detail"] == "connection refused; retries stopped by SIGTERM"
    assert lines["db"]["attempts"] == 1
    assert lines["api"]["detail"] == "still running when SIGTERM arrived"
    assert lines["api"]["attempts"] is None
    assert termination_log.read_text() == (
        "0/2 healthy; unhealthy: "
        f"db (tcp 127.0.0.1:{lines['db']['address'].rpartition(':')[2]}: "
        "connection refused; retries stopped by SIGTERM), "
        f"api (http http://127.0.0.1:{tcp_port}/healthz: still running when SIGTERM arrived)"
    )


@pytest.mark.timeout(30)
def test_second_signal_aborts_with_143(
    spawn: Callable[[dict[str, str]], RunningHealthcheck], tcp_port: int, termination_log: Path
) -> None:
    check = spawn(healthcheck_env(slow_targets(tcp_port), termination_log, HEALTHCHECK_ATTEMPTS="5"))
    check.wait_for("healthcheck.started")
    check.signal(signal.SIGINT)
    time.sleep(0.1)

    done = check.finish(since=check.signal(signal.SIGTERM))

    assert done.code == 143, done
    assert done.seconds < 3
    assert done.log[-1]["event"] == "healthcheck.aborted"
    assert done.log[-1]["signal"] == "SIGTERM"
    assert termination_log.read_text() == "aborted by a second SIGTERM before the checks finished"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HEALTHCHECK_TARGETS", None),
        ("HEALTHCHECK_TARGETS", '[{"type": "tcp", "host": "db", "port": "5432"}]'),
        ("HEALTHCHECK_ATTEMPTS", "0"),
        ("HEALTHCHECK_TIMEOUT_SECONDS", "soon"),
        ("HEALTHCHECK_INTERVAL_SECONDS", "-1"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable_in_stderr_and_the_termination_message(
    termination_log: Path, variable: str, value: str | None
) -> None:
    targets: list[Target] = [{"type": "tcp", "host": "127.0.0.1", "port": unused_port()}]
    env = healthcheck_env(targets, termination_log, **{variable: value})

    done = run_healthcheck(env)

    assert done.code == 2, done
    [line] = done.stderr.splitlines()
    assert line.startswith(f"jobscheduler-healthcheck: configuration error: {variable}")
    assert done.log == []
    assert termination_log.read_text().startswith(f"configuration error: {variable}")


# The finer rules of HEALTHCHECK_TARGETS, checked on load_settings itself: a process per value would add
# seconds and prove nothing the test above does not.


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ("nope", "HEALTHCHECK_TARGETS is not valid JSON"),
        ('{"type": "tcp"}', "HEALTHCHECK_TARGETS must be a JSON list"),
        ("[]", "HEALTHCHECK_TARGETS is an empty list"),
        ('["db:5432"]', "HEALTHCHECK_TARGETS[0] must be a JSON object"),
        ('[{"host": "db", "port": 5432}]', 'HEALTHCHECK_TARGETS[0] has no "type"'),
        (
            '[{"type": "udp"}]',
            "HEALTHCHECK_TARGETS[0] has \"type\" 'udp'; expected one of 'http', 'tcp', 'grpc'",
        ),
        ('[{"type": "tcp", "host": "db", "port": 5432, "timeout": 3}]', "has unknown key(s) 'timeout'"),
        ('[{"type": "tcp", "host": "db", "port": 0}]', "has port 0; expected a whole number from 1 to 65535"),
        ('[{"type": "tcp", "host": "db", "port": 70000}]', "has port 70000"),
        ('[{"type": "tcp", "host": "db", "port": true}]', "has port True"),
        ('[{"type": "tcp", "host": "db:5432", "port": 5432}]', "has \"host\" 'db:5432'"),
        ('[{"type": "tcp", "port": 5432}]', 'has "host" None'),
        ('[{"type": "tcp", "host": "db", "port": 1, "timeout_seconds": 0}]', 'has "timeout_seconds" 0'),
        ('[{"type": "http", "url": "ftp://x/"}]', 'HEALTHCHECK_TARGETS[0] "url" must start with http://'),
        ('[{"type": "http"}]', 'has no "url"'),
        ('[{"type": "http", "url": "http://x/", "expected_status": "2xx"}]', "'2xx' is not a status code"),
        ('[{"type": "grpc", "address": "api"}]', "has \"address\" 'api'; expected host:port"),
        ('[{"type": "grpc", "address": "api:50051", "service": 1}]', 'has "service" 1'),
        ('[{"type": "tcp", "host": "db", "port": 1, "name": " "}]', "has \"name\" ' '"),
        (
            '[{"type": "tcp", "host": "db", "port": 1}, {"type": "tcp", "host": "db", "port": 1}]',
            "HEALTHCHECK_TARGETS[1] repeats the name 'db:1'",
        ),
    ],
)
def test_load_settings_names_the_target_and_the_rule(
    targets: str, message: str, termination_log: Path
) -> None:
    with pytest.raises(WorkloadConfigError) as caught:
        health_targets.load_settings(healthcheck_env(targets, termination_log))

    assert caught.value.variable.startswith("HEALTHCHECK_TARGETS")
    assert message in str(caught.value)


def test_load_settings_fills_names_and_timeouts_from_the_defaults(termination_log: Path) -> None:
    targets: list[Target] = [
        {"type": "http", "url": "https://api.team-a.svc/healthz?token=t0ken#x"},
        {"type": "tcp", "host": "[::1]", "port": 5432, "timeout_seconds": 2.5},
        {"type": "grpc", "address": "rpc.team-a.svc:50051", "service": "ledger"},
    ]

    settings = health_targets.load_settings(
        healthcheck_env(targets, termination_log, HEALTHCHECK_TIMEOUT_SECONDS="7")
    )

    assert [t.name for t in settings.targets] == [
        "https://api.team-a.svc/healthz",  # no query: it may hold a token
        "[::1]:5432",
        "rpc.team-a.svc:50051/ledger",
    ]
    assert [t.timeout_seconds for t in settings.targets] == [7.0, 2.5, 7.0]
    assert settings.attempts == 1
    assert settings.interval_seconds == 0.05


def test_fit_termination_message_cuts_on_a_character_boundary() -> None:
    message = "é" * 3000  # 6000 bytes of UTF-8

    fitted = healthcheck.fit_termination_message(message)

    assert len(fitted.encode()) <= 4096
    assert fitted.endswith("…")
    assert fitted[:-1] == "é" * len(fitted[:-1])
