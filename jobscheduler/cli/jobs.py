"""The job commands of the client: `schedule TYPE` (every job type, with --wait), `status`,
`list`, `cancel`, `resume`, `job-types` and `health`, over gRPC through the generated stubs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.channel import Context
from jobscheduler.cli.exits import (
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_NOT_SERVING,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ClientError,
    ExitStatus,
)
from jobscheduler.cli.flags import (
    STATE_NAMES,
    HelpFormatter,
    add_command,
    int32,
    parse_state,
    positive_seconds,
)
from jobscheduler.cli.jobspec import add_job_types, job_request
from jobscheduler.cli.output import (
    emit,
    now,
    render_job_types,
    render_service_status,
    render_statuses,
    state_name,
)

# GetJobStatus reads the Job and its pods from the API server: once a second is fresh enough
# for a person watching and cheap for the cluster.
POLL_INTERVAL_SECONDS = 1.0
TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})
COMMANDS = ("schedule", "status", "list", "cancel", "resume", "job-types", "health")


def run_schedule(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.wait_timeout is not None and not args.wait:
        raise ClientError(EXIT_USAGE, "--wait-timeout needs --wait")
    if args.wait and args.dry_run:
        raise ClientError(EXIT_USAGE, "--wait and --dry-run exclude each other: a dry run creates no job")
    request = job_request(args, namespace=ctx.options.namespace)
    response = ctx.stub.ScheduleJob(request, timeout=ctx.options.timeout)
    if ctx.options.output == "table":
        print(response.message, file=ctx.err)
    if args.dry_run:
        emit(response, ctx.options, lambda: response.manifest.rstrip("\n"), ctx.out)
        return EXIT_OK
    if args.wait:
        final = wait_for_job(
            ctx, response.status, namespace=response.namespace, wait_timeout=args.wait_timeout
        )
        response.status.CopyFrom(final)
    emit(
        response,
        ctx.options,
        lambda: render_statuses([response.status], now=now(), with_message=True),
        ctx.out,
    )
    if not args.wait or response.status.state == pb.JOB_STATE_SUCCEEDED:
        return EXIT_OK
    return EXIT_JOB_FAILED


def wait_for_job(
    ctx: Context,
    status: pb.JobStatus,
    *,
    namespace: str,
    wait_timeout: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> pb.JobStatus:
    """Polls the job until it is SUCCEEDED, FAILED or CANCELLED, printing each change on stderr."""
    job_id = status.job_id
    follow = f"`jobscheduler status {job_id} -n {namespace}`"
    started = clock()
    print(f"waiting for {job_id} (Ctrl-C stops waiting; the job keeps running)", file=ctx.err)
    shown: tuple[int, str] | None = None
    try:
        while True:
            elapsed = clock() - started
            # A new reason inside one state (PENDING: Created -> ImagePullBackOff) is news too.
            if (status.state, status.reason) != shown:
                shown = (status.state, status.reason)
                detail = f"{status.reason}: {status.message}" if status.message else status.reason
                print(f"{elapsed:7.1f}s  {state_name(status.state):<9}  {detail}".rstrip(), file=ctx.err)
            if status.state in TERMINAL_STATES:
                return status
            if wait_timeout is not None and elapsed >= wait_timeout:
                raise ClientError(
                    EXIT_UNAVAILABLE,
                    f"{job_id} is still {state_name(status.state)} after {wait_timeout:g}s (--wait-timeout)",
                    status=grpc.StatusCode.DEADLINE_EXCEEDED.name,
                    hint=f"it keeps running; follow it with {follow}",
                )
            pause = POLL_INTERVAL_SECONDS
            if wait_timeout is not None:
                pause = max(0.0, min(pause, wait_timeout - elapsed))
            sleep(pause)
            request = pb.GetJobStatusRequest(job_id=job_id, namespace=namespace)
            status = ctx.stub.GetJobStatus(request, timeout=ctx.options.timeout).status
    except KeyboardInterrupt:
        raise ClientError(
            EXIT_INTERRUPTED, f"stopped waiting; {job_id} keeps running", hint=f"follow it with {follow}"
        ) from None


def emit_status(
    ctx: Context, response: pb.GetJobStatusResponse | pb.CancelJobResponse | pb.ResumeJobResponse
) -> ExitStatus:
    """One job's status, as a table (with its message) or as the whole response."""
    emit(
        response,
        ctx.options,
        lambda: render_statuses([response.status], now=now(), with_message=True),
        ctx.out,
    )
    return EXIT_OK


def run_status(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.GetJobStatusRequest(job_id=args.job_id, namespace=ctx.options.namespace)
    return emit_status(ctx, ctx.stub.GetJobStatus(request, timeout=ctx.options.timeout))


def run_list(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.ListJobsRequest(
        namespace=ctx.options.namespace,
        states=args.states or [],
        job_type=args.job_type,
        label_selector=args.selector,
        name=args.name,
        page_size=args.page_size or 0,
        page_token=args.page_token,
        schedule=args.schedule,
    )
    response = ctx.stub.ListJobs(request, timeout=ctx.options.timeout)
    if args.all:
        jobs = list(response.jobs)
        while response.next_page_token:
            request.page_token = response.next_page_token
            response = ctx.stub.ListJobs(request, timeout=ctx.options.timeout)
            jobs += response.jobs
        response = pb.ListJobsResponse(jobs=jobs)
    if ctx.options.output == "table":
        if not response.jobs:
            where = f" in namespace {ctx.options.namespace}" if ctx.options.namespace else ""
            print(f"no jobs found{where}", file=ctx.err)
        if response.next_page_token:
            print(
                f"more jobs: pass --page-token {response.next_page_token} for the next page, or --all",
                file=ctx.err,
            )
    emit(
        response,
        ctx.options,
        lambda: render_statuses(response.jobs, now=now()) if response.jobs else "",
        ctx.out,
    )
    return EXIT_OK


def run_cancel(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.CancelJobRequest(job_id=args.job_id, namespace=ctx.options.namespace)
    return emit_status(ctx, ctx.stub.CancelJob(request, timeout=ctx.options.timeout))


def run_resume(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.ResumeJobRequest(job_id=args.job_id, namespace=ctx.options.namespace)
    return emit_status(ctx, ctx.stub.ResumeJob(request, timeout=ctx.options.timeout))


def run_job_types(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.ListJobTypesRequest(name=args.type_name or "")
    response = ctx.stub.ListJobTypes(request, timeout=ctx.options.timeout)
    emit(response, ctx.options, lambda: render_job_types(response.job_types), ctx.out)
    return EXIT_OK


def run_health(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.details:
        return _service_status(ctx)
    # types-grpcio-health-checking declares the stub without its generated methods.
    check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse] = (
        health_pb2_grpc.HealthStub(ctx.channel).Check  # type: ignore[attr-defined]
    )
    response = check(health_pb2.HealthCheckRequest(service=""), timeout=ctx.options.timeout)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    emit(response, ctx.options, lambda: status, ctx.out)
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return EXIT_OK
    raise ClientError(
        EXIT_NOT_SERVING,
        f"the server at {ctx.options.server} answers but reports {status}",
        status=status,
        hint="it serves again by itself once it reaches the Kubernetes API; see the server's log",
    )


def _service_status(ctx: Context) -> ExitStatus:
    status = ctx.stub.GetServiceStatus(pb.GetServiceStatusRequest(), timeout=ctx.options.timeout)
    emit(status, ctx.options, lambda: render_service_status(status, now=now()), ctx.out)
    if not status.serving:
        raise ClientError(
            EXIT_NOT_SERVING,
            f"the server at {ctx.options.server} answers but reports NOT_SERVING",
            status="NOT_SERVING",
            hint="it cannot reach the Kubernetes API; the KubernetesAPI condition above says more",
        )
    if status.degraded:
        failing = ", ".join(f"{c.type} ({c.reason})" for c in status.conditions if not c.ok)
        raise ClientError(
            EXIT_DEGRADED,
            f"the server at {ctx.options.server} serves but is degraded: {failing}",
            status="DEGRADED",
            hint="each condition's message above says what to check",
        )
    return EXIT_OK


# -- the parsers -----------------------------------------------------------------------------------


def _wait_flags(parser: argparse.ArgumentParser) -> None:
    w = parser.add_argument_group("waiting")
    w.add_argument(
        "--wait", action="store_true", help="follow the job until it ends, progress on stderr; exit 0 or 6"
    )
    w.add_argument(
        "--wait-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="with --wait: give up after this, exit 5 (default: no limit)",
    )


TIMER_EXAMPLES = """\
  jobscheduler schedule timer --duration 300 --timer-name build-timeout \\
      --endpoint http://control-plane:50053 --name my-timer
  jobscheduler schedule timer --duration 60 --timer-name t --endpoint http://cp:50053 \\
      -n team-a -l team=a --cpu-request 200m --memory-limit 128Mi --wait --wait-timeout 600
  jobscheduler schedule timer --duration 5 --timer-name t --endpoint http://cp:50053 --dry-run
  jobscheduler schedule timer ... --request-id deploy-42   # retried: the same job, never two
  jobscheduler schedule timer ... -o json | jq -r .job_id
"""


def _schedule_examples(name: str, flags: str) -> str:
    if name == "timer":
        return TIMER_EXAMPLES
    return f"""\
  jobscheduler schedule {name} {flags}
  jobscheduler schedule {name} ... --wait --wait-timeout 600
  jobscheduler schedule {name} ... --dry-run -n team-a
"""


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Adds the job commands (schedule, status, list, cancel, resume, job-types, health)."""

    def command(name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
        return add_command(sub, name, help_text, examples, common=common)

    schedule = sub.add_parser(
        "schedule",
        help="schedule a job of a registered type",
        description="Schedule a job of a registered type; each type is its own command.",
        formatter_class=HelpFormatter,
        epilog="examples:\n  jobscheduler schedule timer --help\n  jobscheduler job-types",
    )
    types = schedule.add_subparsers(dest="schedule_type", required=True, metavar="TYPE")
    add_job_types(
        types,
        purpose="schedule",
        common=common,
        within="schedule",
        handler=run_schedule,
        examples=_schedule_examples,
        extra=_wait_flags,
    )

    status = command(
        "status",
        "show one job's status",
        """\
  jobscheduler status job-7f3k2m9x1q
  jobscheduler status job-7f3k2m9x1q -n team-a -o json | jq -r .status.state
""",
    )
    status.add_argument("job_id", metavar="JOB_ID")
    status.set_defaults(handler=run_status)

    lister = command(
        "list",
        "list the service's jobs, newest first",
        """\
  jobscheduler list
  jobscheduler list --state running --state pending -n team-a
  jobscheduler list --type timer -l team=a,tier!=batch --name my-timer
  jobscheduler list --schedule nightly
  jobscheduler list --page-size 100 --all -o yaml
""",
    )
    lister.add_argument(
        "--state",
        dest="states",
        action="append",
        type=parse_state,
        metavar="STATE",
        help=f"only jobs in this state, any case: {', '.join(STATE_NAMES)} (repeatable)",
    )
    lister.add_argument("--type", dest="job_type", default="", metavar="TYPE", help="only jobs of this type")
    lister.add_argument(
        "-l",
        "--selector",
        default="",
        metavar="SELECTOR",
        help="label selector, Kubernetes syntax: team=a,tier!=batch",
    )
    lister.add_argument("--name", default="", help="only jobs with this name")
    lister.add_argument("--schedule", default="", metavar="NAME", help="only the runs of this schedule")
    lister.add_argument(
        "--page-size", type=int32, metavar="N", help="jobs per call (server default 50, at most 1000)"
    )
    lister.add_argument(
        "--page-token", default="", metavar="TOKEN", help="continue where a previous page stopped"
    )
    lister.add_argument("--all", action="store_true", help="follow the pages to the end")
    lister.set_defaults(handler=run_list)

    cancel = command(
        "cancel",
        "cancel a job: stop its pods; it then reads CANCELLED",
        """\
  jobscheduler cancel job-7f3k2m9x1q
  jobscheduler cancel job-7f3k2m9x1q -n team-a || [ $? -eq 4 ]   # 4: it had finished already
""",
    )
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(handler=run_cancel)

    resume = command(
        "resume",
        "release a job scheduled with --suspend: its pods start",
        """\
  id=$(jobscheduler schedule timer ... --suspend -o json | jq -r .job_id)
  jobscheduler resume "$id"
""",
    )
    resume.add_argument("job_id", metavar="JOB_ID")
    resume.set_defaults(handler=run_resume)

    job_types = command(
        "job-types",
        "list the job types the server runs, or one type's parameters",
        """\
  jobscheduler job-types
  jobscheduler job-types webhook
  jobscheduler job-types -o json | jq -r '.job_types[].name'
""",
    )
    job_types.add_argument("type_name", nargs="?", metavar="TYPE", help="only this type, with its parameters")
    job_types.set_defaults(handler=run_job_types)

    health = command(
        "health",
        "check the server's health (grpc.health.v1): SERVING while it reaches Kubernetes",
        """\
  jobscheduler health
  jobscheduler health --details      # GetServiceStatus: the API, watch lag, leader, notifications
  until jobscheduler health >/dev/null 2>&1; do sleep 1; done
  jobscheduler health --tls --ca-cert ca.pem --server scheduler.example:443
""",
    )
    health.add_argument(
        "--details",
        action="store_true",
        help="the service's conditions (GetServiceStatus); exit 8 when it serves but is degraded",
    )
    health.set_defaults(handler=run_health)
