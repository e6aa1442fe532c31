"""The service side of every comparison: ghz, a Go gRPC load generator, against the running service.

ghz gets the API from a protoset written from the service's own generated descriptors: the
server has reflection, but Python's reflection service cannot resolve a method symbol
("jobscheduler.JobScheduler.ScheduleJob"), which is what ghz asks for (grpcurl asks for the
service and works). ghz keeps `-c N` workers on one HTTP/2 connection, each sending its next
request when the previous one returned, and writes a JSON report with every request's
latency. The latencies are summarized with the same percentile function as the raw side
(bench/load.py), so both columns mean the same thing.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2

from bench.load import LoadResult
from jobscheduler.api import scheduler_pb2

SERVICE = "jobscheduler.JobScheduler"
# The transport floor every run measures beside the service's own RPCs: the same server's health check.
HEALTH_SERVICE = "grpc.health.v1.Health"


def write_protoset(path: Path) -> None:
    """A FileDescriptorSet of scheduler.proto, grpc.health.v1's health.proto and their imports,
    dependencies first."""
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(files.file.add())

    add(scheduler_pb2.DESCRIPTOR)
    add(health_pb2.DESCRIPTOR)
    path.write_bytes(files.SerializeToString())


def run_ghz(
    ghz: Path,
    address: str,
    method: str,
    *,
    requests: list[dict[str, Any]],
    count: int,
    concurrency: int,
    timeout_seconds: float = 30,
    service: str = SERVICE,
) -> tuple[LoadResult, dict[str, Any]]:
    """ghz --call <service>.<method> with `requests` cycled through (one request: sent every time).

    Returns the per-request latencies as a LoadResult and ghz's own summary (rps, its
    latencyDistribution, status codes) for the record.
    """
    with tempfile.TemporaryDirectory(prefix="bench-ghz-") as tmp:
        data_file = Path(tmp, "data.json")
        # A JSON array makes ghz send its elements round-robin: request i gets element i % len.
        data_file.write_text(json.dumps(requests if len(requests) > 1 else requests[0]))
        out_file = Path(tmp, "report.json")
        protoset = Path(tmp, "scheduler.protoset")
        write_protoset(protoset)
        command = [
            str(ghz),
            "--insecure",
            f"--protoset={protoset}",
            f"--call={service}.{method}",
            f"--data-file={data_file}",
            f"--concurrency={concurrency}",
            f"--total={count}",
            f"--timeout={timeout_seconds}s",
            "--connections=1",
            "--format=json",
            f"--output={out_file}",
            address,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
        if proc.returncode != 0 or not out_file.exists():
            raise RuntimeError(
                f"ghz failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
        report: dict[str, Any] = json.loads(out_file.read_text())
    details = report.get("details") or []
    latencies = [d["latency"] / 1e9 for d in details if d.get("status") == "OK"]
    failed = [d for d in details if d.get("status") != "OK"]
    result = LoadResult(
        latencies=latencies,
        wall_seconds=report["total"] / 1e9,
        concurrency=concurrency,
        errors=len(failed),
        error_samples=[f"{d.get('status')}: {d.get('error')}" for d in failed[:3]],
    )
    ghz_summary = {
        "rps": round(report.get("rps", 0.0), 1),
        "average_ms": round(report.get("average", 0) / 1e6, 3),
        "latency_distribution_ms": {
            f"p{d['percentage']}": round(d["latency"] / 1e6, 3)
            for d in report.get("latencyDistribution") or []
        },
        "status_codes": report.get("statusCodeDistribution") or {},
    }
    return result, ghz_summary
