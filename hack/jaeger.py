#!/usr/bin/env python3
"""Jaeger v2 all-in-one (in-memory storage) on free loopback ports: the real OTLP receiver of the
tracing tests and of bench/tracing.py, and a way to look at a trace by hand.

    python3 hack/jaeger.py          runs it in the foreground, printing its OTLP and UI addresses

The binary comes from hack/tools.sh (`hack/tools.sh jaeger`, built once per version); it is
built here when missing, so `hack/dev.sh test` sets it up itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hack import toolversions  # noqa: E402

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary() -> Path:
    """The pinned Jaeger, built by hack/tools.sh when this machine has none yet."""
    path = toolversions.bin_dir() / "jaeger"
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "hack" / "tools.sh"), "jaeger"], check=True)
    return path


class Jaeger:
    """One Jaeger process; `with Jaeger() as j:` starts it and waits until its query API answers."""

    def __init__(self) -> None:
        self.otlp_port, self.query_port, self.query_grpc_port = free_port(), free_port(), free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jaeger-"))
        self.log = self.dir / "jaeger.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT for an exporter sending here (OTLP/gRPC, plaintext)."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def start(self, *, timeout: float = 60) -> Jaeger:
        config = self.dir / "config.yaml"
        config.write_text(
            CONFIG.format(
                otlp_port=self.otlp_port, query_port=self.query_port, query_grpc_port=self.query_grpc_port
            )
        )
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(binary()), "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jaeger exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                self._get("/api/services")
                with socket.create_connection(("127.0.0.1", self.otlp_port), timeout=0.5):
                    return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"jaeger did not answer within {timeout:.0f}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Jaeger:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.ui + path, timeout=5) as reply:
            return json.loads(reply.read())

    def services(self) -> list[str]:
        return list(self._get("/api/services").get("data") or [])

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans Jaeger holds of one trace (its v1 JSON API), each with its `serviceName`;
        empty while it has none."""
        try:
            data = self._get(f"/api/traces/{trace_id}").get("data") or []
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        spans = []
        for trace in data:
            processes = trace.get("processes") or {}
            for span in trace.get("spans") or []:
                service = (processes.get(span.get("processID")) or {}).get("serviceName", "")
                spans.append({**span, "serviceName": service})
        return spans

    def wait_spans(self, trace_id: str, *, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        """The trace's spans once Jaeger holds at least `count` of them (exports are batched)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


def main() -> int:
    with Jaeger() as jaeger:
        print(f"OTEL_EXPORTER_OTLP_ENDPOINT={jaeger.otlp_endpoint}")
        print(f"Jaeger UI and query API: {jaeger.ui}  (Ctrl-C stops it)")
        try:
            assert jaeger.proc is not None
            jaeger.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
