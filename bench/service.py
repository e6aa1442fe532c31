"""The service under test, run as a real `python -m jobscheduler.cli.main serve` subprocess.

It gets its configuration from the environment exactly as in production (IN_CLUSTER=false and
the dev cluster's admin kubeconfig), serves on a free loopback port, and is only measured
once it answers health checks and its watch cache serves the benchmark namespace. Memory and
CPU are read from /proc/<pid>.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pick_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_rss_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class ServiceProcess:
    """`jobscheduler serve` in its own process, and a gRPC channel to it."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        profile_path: Path | None = None,
    ) -> None:
        self.port = pick_free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.namespace = namespace
        self.log_path = log_path
        self.env = {
            "IN_CLUSTER": "false",
            "KUBECONFIG": str(kubeconfig),
            "GRPC_PORT": str(self.port),
            "GRPC_HOST": "127.0.0.1",
            "METRICS_PORT": "0",
            "K8S_NAMESPACE": namespace,
            "WATCH_NAMESPACES": namespace,
            "LOG_LEVEL": "warn",
        }
        # Under a profiler the service runs through bench/profiled_serve.py, same code and settings.
        module = "jobscheduler.cli.main" if profile_path is None else "bench.profiled_serve"
        if profile_path is not None:
            self.env["BENCH_PROFILE_OUT"] = str(profile_path)
        self.command = [sys.executable, "-m", module, "serve"]
        # The installed console script (the operators' entry point, same code) when there is
        # one: on a shared machine ad-hoc clean-ups run `pkill -f "cli.main serve"`, which
        # must not end a measured service in the middle of a run.
        script = Path(sys.executable).parent / "jobscheduler"
        if profile_path is None and script.exists():
            self.command = [sys.executable, str(script), "serve"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.stub: pb_grpc.JobSchedulerStub | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, timeout: float = 60) -> None:
        """Starts the process and waits until it is SERVING and its cache covers the namespace."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.JobSchedulerStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service was not ready within {timeout:.0f}s; see {self.log_path}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING and self.cache_serves():
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)

    def cache_serves(self) -> bool:
        """Whether the watch cache answers for the namespace: WatchJobs is refused
        (FAILED_PRECONDITION) until it has listed the namespace, and otherwise just waits."""
        assert self.stub is not None
        stream = self.stub.WatchJobs(
            pb.WatchJobsRequest(namespace=self.namespace, skip_initial=True), timeout=0.3
        )
        try:
            for _ in stream:
                break
        except grpc.RpcError as e:
            return bool(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
        return True

    def count_jobs(self, *, label_selector: str = "") -> int:
        """How many jobs ListJobs sees (served from the cache), following every page."""
        assert self.stub is not None
        total, token = 0, ""
        while True:
            page = self.stub.ListJobs(
                pb.ListJobsRequest(page_size=1000, page_token=token, label_selector=label_selector),
                timeout=30,
            )
            total += len(page.jobs)
            token = page.next_page_token
            if not token:
                return total

    def wait_for_jobs(self, expected: int, *, timeout: float) -> Iterator[int]:
        """Polls count_jobs until it reaches `expected`; yields each count seen (for progress)."""
        deadline = time.monotonic() + timeout
        while (seen := self.count_jobs()) < expected:
            yield seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service's cache holds {seen} jobs, expected {expected}")
            time.sleep(0.5)
        yield seen

    def stop(self, *, timeout: float = 30) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it is still there after `timeout`."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
