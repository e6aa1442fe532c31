"""The simulation held against reality: every pod outcome that hack/kwok/stages.yaml simulates is
produced once by a real container on the real node and once by kwok from the sim annotations,
both as the same job through the service, and the two JobStatuses must agree (state, reason,
exit code, counts, the message's shape). Where they differ, the stages are what is wrong.

docs/simulation.md has the table of what is compared and what the comparison changed. The
cluster's kwok must run this checkout's stages (the first test checks it, and says how to
restart kwok when it does not)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.realnode.simcompare import (
    KWOK_PLACEMENT,
    REAL_PLACEMENT,
    STAGES,
    TERMINAL,
    Outcome,
    S,
    digest,
    restart_kwok_hint,
    running_kwok_stages,
    seen,
    serve,
    settled,
    wait_status,
)
from tests.realnode.support import STATE, node_info

MISSING_IMAGE = "localhost/jobscheduler-missing:1"  # pulled from loopback only: refused at once
# What the scheduler says differs with the nodes each job may use; the shape does not.
NODES_DETAIL = (r"0/\d+ nodes are available: .*", "0/<n> nodes are available: <why>")
# With terminationMessagePolicy FallbackToLogsOnError a failed container without a termination
# message gets its log's tail as one: each run's own log lines.
LOG_DETAIL = (r"(exited with code \d+ \(\w+\)): .+$", r"\1: <log tail>")
# A pull error ends with whatever the runtime met on its way to the registry.
PULL_DETAIL = (r'(failed to pull and unpack image "[^"]+": ).*$', r"\1<why>")


def container(*command: str, **fields: Any) -> Any:
    return lambda image: {"container_job": pb.ContainerJob(image=image, command=list(command)), **fields}


def sh(script: str, **fields: Any) -> Any:
    return container("sh", "-c", script, **fields)


def reason_is(reason: str) -> Any:
    return lambda status: status.reason == reason


def running(status: pb.JobStatus) -> bool:
    return status.state == S.JOB_STATE_RUNNING and status.reason == "Running"


def over(status: pb.JobStatus) -> bool:
    """Ended, and its pods deleted: what a cancel or a deadline leaves once the kubelet has
    stopped the container."""
    return status.state in TERMINAL and not status.pods


# A workload that ends on SIGTERM, as the service's own do; a bare `sleep` as PID 1 ignores it and
# holds the pod for the whole grace period.
TERM_ENDS_IT = sh("trap 'exit 143' TERM; sleep 600 & wait")

OUTCOMES = [
    Outcome(
        "succeeds",
        sh("exit 0"),
        {"sim.jobscheduler.io/duration": "1s"},
        real_does="`sh -c 'exit 0'`",
        kwok_does="`duration: 1s` (stage pod-complete)",
    ),
    Outcome(
        "exit-code",
        sh("echo 'step 1 of 3 done'; echo 'warning: disk almost full' >&2; exit 3"),
        {"sim.jobscheduler.io/exit-code": "3", "sim.jobscheduler.io/duration": "1s"},
        detail=(LOG_DETAIL,),
        real_does="`sh -c` logging two lines, then `exit 3`",
        kwok_does="`exit-code: 3` (stage pod-fail)",
    ),
    Outcome(
        "oom-killed",
        container(
            "python",
            "-c",
            "print('loading', flush=True); x = 'x' * (200 * 1024 * 1024)",
            resources=pb.Resources(memory_limit="20Mi"),
        ),
        {
            "sim.jobscheduler.io/exit-code": "137",
            "sim.jobscheduler.io/reason": "OOMKilled",
            "sim.jobscheduler.io/duration": "1s",
        },
        detail=(LOG_DETAIL,),
        real_does="python logging a line, then allocating 200 MB under a 20Mi memory limit",
        kwok_does="`exit-code: 137`, `reason: OOMKilled`",
    ),
    Outcome(
        "termination-message",
        sh("printf 'target db: connection refused\\n' > /dev/termination-log; exit 1"),
        {
            "sim.jobscheduler.io/exit-code": "1",
            "sim.jobscheduler.io/message": "target db: connection refused",
            "sim.jobscheduler.io/duration": "1s",
        },
        real_does="writes `target db: connection refused` to /dev/termination-log, exits 1",
        kwok_does="`exit-code: 1`, `message: target db: connection refused`",
    ),
    Outcome(
        "failed-index",
        lambda image: {
            "batch_job": pb.BatchJob(
                image=image,
                command=[
                    "sh",
                    "-c",
                    'if [ "$JOB_COMPLETION_INDEX" = 1 ]; then '
                    "echo 'shard 1: corrupt input' > /dev/termination-log; exit 1; fi",
                ],
                completions=3,
                parallelism=3,
                backoff_limit_per_index=0,
            )
        },
        {
            "sim.jobscheduler.io/fail-indexes": "1",
            "sim.jobscheduler.io/message": "shard 1: corrupt input",
            "sim.jobscheduler.io/duration": "1s",
        },
        real_does="batch of 3, index 1 writes a termination message and exits 1",
        kwok_does="`fail-indexes: 1`, `message: shard 1: corrupt input` (stage pod-finish-by-index)",
    ),
    Outcome(
        "err-image-pull",
        container("true", pending_timeout_seconds=0),
        {"sim.jobscheduler.io/waiting-reason": "ErrImagePull"},
        until=reason_is("ErrImagePull"),
        detail=(PULL_DETAIL,),
        image=MISSING_IMAGE,
        real_does=f"image `{MISSING_IMAGE}`: nothing listens on loopback's 443",
        kwok_does="`waiting-reason: ErrImagePull` (stage pod-waiting)",
    ),
    Outcome(
        "image-pull-back-off",
        container("true", pending_timeout_seconds=0),
        {"sim.jobscheduler.io/waiting-reason": "ErrImagePull"},
        until=reason_is("ImagePullBackOff"),
        detail=(PULL_DETAIL,),
        image=MISSING_IMAGE,
        real_does=f"image `{MISSING_IMAGE}`, ~15 s later",
        kwok_does="`waiting-reason: ErrImagePull`, 14-15 s later (stage pod-image-pull-back-off)",
    ),
    Outcome(
        "held-in-image-pull-back-off",
        container("true", pending_timeout_seconds=0),
        {"sim.jobscheduler.io/waiting-reason": "ImagePullBackOff"},
        until=reason_is("ImagePullBackOff"),
        detail=(PULL_DETAIL,),
        image=MISSING_IMAGE,
        real_does=f"image `{MISSING_IMAGE}`, ~15 s later",
        kwok_does="`waiting-reason: ImagePullBackOff`, at once",
    ),
    Outcome(
        "pending-timeout",
        container("true", pending_timeout_seconds=4),
        {"sim.jobscheduler.io/waiting-reason": "ErrImagePull"},
        detail=(PULL_DETAIL,),
        image=MISSING_IMAGE,
        real_does=f"image `{MISSING_IMAGE}`, `pending_timeout_seconds: 4`",
        kwok_does="`waiting-reason: ErrImagePull`, the same timeout",
    ),
    Outcome(
        "unschedulable",
        sh("exit 0", resources=pb.Resources(cpu_request="64")),
        {},
        until=reason_is("Unschedulable"),
        detail=(NODES_DETAIL,),
        real_does="asks for 64 CPUs (the scheduler, not the node)",
        kwok_does="the same: the real scheduler decides",
    ),
    Outcome(
        "running",
        container("sleep", "600"),
        {"sim.jobscheduler.io/duration": "10m"},
        until=running,
        real_does="`sleep 600`",
        kwok_does="`duration: 10m` (stage pod-ready)",
    ),
    Outcome(
        "cancelled",
        TERM_ENDS_IT,
        {"sim.jobscheduler.io/duration": "10m"},
        until=over,
        cancel_when_running=True,
        real_does="a shell that exits 143 on SIGTERM, then CancelJob",
        kwok_does="`duration: 10m`, then CancelJob (stage pod-delete)",
    ),
    Outcome(
        "deadline-exceeded",
        lambda image: {**TERM_ENDS_IT(image), "active_deadline_seconds": 5},
        {"sim.jobscheduler.io/duration": "10m"},
        until=over,
        real_does="the same shell with `active_deadline_seconds: 5`",
        kwok_does="`duration: 10m`, the same deadline (stage pod-delete)",
    ),
]


@pytest.fixture(scope="module")
def kwok_runs_these_stages() -> None:
    stages = running_kwok_stages(STATE)
    if digest(stages) != digest(STAGES):
        pytest.fail(
            f"kwok runs {stages}, which differs from {STAGES}: restart it with `{restart_kwok_hint(STATE)}`"
        )


@pytest.fixture(scope="module")
def sim_namespace(cluster: Any, real_node: str) -> Iterator[str]:  # noqa: ARG001
    api = client.CoreV1Api(cluster.api)
    name = f"sim-{secrets.token_hex(3)}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        if not os.environ.get("JOBSCHEDULER_SIM_KEEP"):
            api.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture(scope="module")
def stub(
    cluster: Any,
    sim_namespace: str,
    kwok_runs_these_stages: None,  # noqa: ARG001
) -> Iterator[pb_grpc.JobSchedulerStub]:
    with serve(cluster.kubeconfig, sim_namespace) as s:
        yield s


def run(
    stub: pb_grpc.JobSchedulerStub, namespace: str, outcome: Outcome, *, on: str, image: str
) -> pb.JobStatus:
    """Schedules the outcome's job on the real node (`on="real"`) or a kwok node, and returns
    its status once the outcome shows and the status has settled."""
    fields = outcome.job(image)
    if on == "real":
        request = pb.ScheduleJobRequest(
            name=f"{outcome.id}-real", namespace=namespace, **REAL_PLACEMENT, **fields
        )
    else:
        request = pb.ScheduleJobRequest(
            name=f"{outcome.id}-kwok",
            namespace=namespace,
            annotations=dict(outcome.sim),
            **KWOK_PLACEMENT,
            **fields,
        )
    job_id = stub.ScheduleJob(request, timeout=15).job_id
    if outcome.cancel_when_running:
        wait_status(stub, namespace, job_id, "RUNNING", running, timeout=outcome.timeout)
        stub.CancelJob(pb.CancelJobRequest(job_id=job_id, namespace=namespace), timeout=15)
    wait_status(stub, namespace, job_id, "the outcome", outcome.until, timeout=outcome.timeout)
    return settled(stub, namespace, job_id, outcome.until)


@pytest.mark.parametrize("outcome", OUTCOMES, ids=[o.id for o in OUTCOMES])
def test_kwok_reports_what_the_real_node_reports(
    stub: pb_grpc.JobSchedulerStub, sim_namespace: str, outcome: Outcome
) -> None:
    image = outcome.image or str(node_info()["image"])
    with ThreadPoolExecutor(2) as pool:
        real_f = pool.submit(run, stub, sim_namespace, outcome, on="real", image=image)
        kwok_f = pool.submit(run, stub, sim_namespace, outcome, on="kwok", image=image)
        real, kwok = real_f.result(), kwok_f.result()
    real_seen = seen(real, image=image, detail=outcome.detail)
    kwok_seen = seen(kwok, image=image, detail=outcome.detail)
    print(f"\n[{outcome.id}] real: {real_seen}\n  {real.message!r}\n[{outcome.id}] kwok: {kwok.message!r}")
    assert kwok_seen == real_seen


def test_every_simulated_outcome_is_compared() -> None:
    """Each sim annotation the stages read is used by some outcome above, so a stage added without
    a comparison fails here."""
    annotations = set(re.findall(r"sim\.jobscheduler\.io/[a-z-]+", STAGES.read_text()))
    used = {key for o in OUTCOMES for key in o.sim}
    # start-delay only delays the start: a real pod's start-up time is its own (bench/podstart.py).
    assert annotations - used == {"sim.jobscheduler.io/start-delay"}


def test_the_simulated_log_tail_is_the_simulated_log() -> None:
    """kwok's fallback termination message is the text of hack/kwok/pod.log, the log every kwok
    pod serves, as the kubelet would read it (CRI prefix off, newline-terminated)."""
    lines = [line.split(" ", 3)[3] for line in (STAGES.parent / "pod.log").read_text().splitlines()]
    tails = re.findall(r'\$logTail := "([^"]*)"', STAGES.read_text())
    assert len(tails) == 2
    assert set(tails) == {"\\n".join(lines) + "\\n"}
