"""What every phase shares: the namespace, the set-up client, the running service, both load
drivers (ghz for the service, vegeta for the API server) and the Job template.

The raw side's Jobs are the service's own manifest (from a ScheduleJob dry run) with a unique
name, so both sides create the same object but for its name, one the service recognises as
its own. Each measured run is one call to `measure_vegeta` or `measure_service`, which also
record the CPU every process spent on it (`measure_raw` drives Python threads; it is kept for
set-up-like loads and is not used for a measured side).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.json_format import ParseDict

from bench.ghz import SERVICE, run_ghz
from bench.kube import RawKube
from bench.load import LoadResult, drive, say
from bench.machine import CpuMeter, wait_until_quiet
from bench.service import ServiceProcess
from bench.vegeta import Request, VegetaDriver, VegetaRun
from jobscheduler.api import scheduler_pb2 as pb

Obj = dict[str, Any]
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=jobscheduler"
# The bench's ScheduleJob: a timer that would run for an hour, held suspended so no pod starts.
TIMER_REQUEST: Obj = {
    "name": "bench",
    "suspend": True,
    "timer_job": {
        "duration_seconds": 3600,
        "timer_name": "bench",
        "control_plane_endpoint": "http://127.0.0.1:9/unused",
    },
}


@dataclass
class Harness:
    root: Path
    kubeconfig: Path
    namespace: str
    ghz: Path
    kube: RawKube
    cpu: CpuMeter
    logs_dir: Path  # service logs and profiles of this run
    service: ServiceProcess | None = None
    template: Obj = field(default_factory=dict)
    vegeta: VegetaDriver | None = None  # the raw side's driver
    settle_timeout: float = 20.0  # the longest wait for a quiet machine before a measured run

    # -- the service -----------------------------------------------------------------------------

    def start_service(self, *, profile_path: Path | None = None, label: str = "service") -> ServiceProcess:
        service = ServiceProcess(
            kubeconfig=self.kubeconfig,
            namespace=self.namespace,
            log_path=self.logs_dir / f"{label}.log",
            profile_path=profile_path,
        )
        service.start()
        self.service = service
        self.cpu.pids["service"] = service.pid
        return service

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
            self.cpu.pids.pop("service", None)

    @property
    def stub(self) -> Any:
        assert self.service is not None
        assert self.service.stub is not None
        return self.service.stub

    def load_template(self) -> Obj:
        """The Job the service renders for TIMER_REQUEST, from a server-side dry run."""
        request = ParseDict({**TIMER_REQUEST, "dry_run": True}, pb.ScheduleJobRequest())
        reply = self.stub.ScheduleJob(request, timeout=30)
        manifest: Obj = yaml.safe_load(reply.manifest)
        manifest["spec"]["suspend"] = True
        self.template = manifest
        return manifest

    # -- raw Jobs ----------------------------------------------------------------------------------

    def render_raw_job(self, name: str, *, extra_labels: dict[str, str] | None = None) -> bytes:
        """The template under a new name (and the JOB_ID its container is told), serialized."""
        job = copy.deepcopy(self.template)
        job["metadata"]["name"] = name
        job["metadata"].pop("namespace", None)
        if extra_labels:
            job["metadata"]["labels"].update(extra_labels)
        for container in job["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env") or []:
                # JOB_ID comes from the pod's job-name label (valueFrom) since the Job names
                # itself; an older template carried the name as a literal value.
                if env["name"] == "JOB_ID" and "value" in env:
                    env["value"] = name
        return json.dumps(job, separators=(",", ":")).encode()

    # -- measured runs -------------------------------------------------------------------------

    # Both start on a quiet machine and return the run and the CPU each process spent on it.
    # With deferred_work (writes), the CPU window stays open until the machine is quiet again:
    # what a request causes elsewhere (the service's watch cache, the Job controller's status
    # update) lags behind the request itself, and must neither be missed nor spill into the
    # next run. Reads cause nothing later, and do not wait.

    def settle(self, *, timeout: float | None = None) -> None:
        """Waits until the machine is quiet (at most `timeout`, by default settle_timeout): the
        Job controller writes a status (the Suspended condition) to every new Job, and lags
        behind fast creation."""
        waited = wait_until_quiet(timeout=self.settle_timeout if timeout is None else timeout)
        if waited > 3:
            say(f"  (waited {waited:.0f}s for the cluster to settle)")

    def measure_raw(
        self, op: Callable[[int], object], *, count: int, concurrency: int, deferred_work: bool = False
    ) -> tuple[LoadResult, dict[str, float]]:
        self.settle()
        self.cpu.start()
        result = drive(op, count=count, concurrency=concurrency)
        if deferred_work:
            self.settle()
        return result, self.cpu.stop()

    def measure_vegeta(
        self, requests: list[Request], *, concurrency: int, deferred_work: bool = False
    ) -> tuple[VegetaRun, dict[str, float]]:
        """The raw side: vegeta sends every request once, `concurrency` in flight."""
        self.settle()
        self.cpu.start()
        run = self.call_vegeta(requests, concurrency=concurrency)
        if deferred_work:
            self.settle()
        return run, self.cpu.stop()

    def call_vegeta(self, requests: list[Request], *, concurrency: int) -> VegetaRun:
        """vegeta against the API server, without waiting for anything (warm-ups)."""
        assert self.vegeta is not None
        return self.vegeta.attack(requests, concurrency=concurrency)

    def measure_service(
        self,
        method: str,
        requests: list[Obj],
        *,
        count: int,
        concurrency: int,
        deferred_work: bool = False,
        service: str = SERVICE,
    ) -> tuple[LoadResult, dict[str, float]]:
        self.settle()
        self.cpu.start()
        result = self.call_service(method, requests, count=count, concurrency=concurrency, service=service)
        if deferred_work:
            self.settle()
        return result, self.cpu.stop()

    def call_service(
        self, method: str, requests: list[Obj], *, count: int, concurrency: int, service: str = SERVICE
    ) -> LoadResult:
        """ghz against the service, without waiting for anything (warm-ups, profiling)."""
        assert self.service is not None
        result, _ = run_ghz(
            self.ghz,
            self.service.address,
            method,
            requests=requests,
            count=count,
            concurrency=concurrency,
            service=service,
        )
        return result
