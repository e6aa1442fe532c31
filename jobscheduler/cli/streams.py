"""The streaming commands: `watch` (one job until it ends, or every job matching a filter,
until Ctrl-C) and `logs` (a job's container logs, with --follow until its containers end).

A stream has no deadline: it ends when the server ends it, or on Ctrl-C (exit 130).
"""

from __future__ import annotations

import argparse

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.channel import Context
from jobscheduler.cli.exits import EXIT_OK, EXIT_USAGE, ClientError, ExitStatus
from jobscheduler.cli.flags import STATE_NAMES, add_command, int64, parse_state
from jobscheduler.cli.output import emit_streamed, event_header, event_row

COMMANDS = ("watch", "logs")


def run_watch(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.job_id and (args.states or args.job_type or args.selector or args.skip_initial):
        raise ClientError(
            EXIT_USAGE, "a JOB_ID or the filters (--state, --type, -l, --skip-initial), not both"
        )
    if args.job_id:
        events = ctx.stub.WatchJob(pb.WatchJobRequest(job_id=args.job_id, namespace=ctx.options.namespace))
    else:
        request = pb.WatchJobsRequest(
            namespace=ctx.options.namespace,
            job_type=args.job_type,
            label_selector=args.selector,
            states=args.states or [],
            skip_initial=args.skip_initial,
        )
        events = ctx.stub.WatchJobs(request)
        print("watching; Ctrl-C stops", file=ctx.err, flush=True)
    if ctx.options.output == "table":
        print(event_header(), file=ctx.out, flush=True)
    for event in events:
        emit_streamed(event, ctx.options, lambda e=event: event_row(e), ctx.out)  # type: ignore[misc]
    return EXIT_OK


def run_logs(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.GetJobLogsRequest(
        job_id=args.job_id,
        namespace=ctx.options.namespace,
        pod=args.pod,
        container=args.container,
        follow=args.follow,
        timestamps=args.timestamps,
    )
    if args.tail is not None:
        request.tail_lines = args.tail
    if args.since is not None:
        request.since_seconds = args.since
    # Following has no end the client could bound; without it, --timeout bounds the whole read.
    chunks = ctx.stub.GetJobLogs(request, timeout=None if args.follow else ctx.options.timeout)
    for chunk in chunks:
        if ctx.options.output == "table":
            prefix = f"[{chunk.pod}/{chunk.container}] " if args.prefix else ""
            for line in chunk.lines:
                print(prefix + line, file=ctx.out)
            ctx.out.flush()
        else:
            emit_streamed(chunk, ctx.options, str, ctx.out)
    return EXIT_OK


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Adds `watch` and `logs`."""
    watch = add_command(
        sub,
        "watch",
        "print a job's status on every change until it ends, or every job's matching the filters",
        """\
  jobscheduler watch job-7f3k2m9x1q                 # ends when the job does
  jobscheduler watch -l team=a --state failed       # every failure in team a, until Ctrl-C
  jobscheduler watch --type timer --skip-initial -o json | jq -r .status.job_id
""",
        common=common,
    )
    watch.add_argument("job_id", nargs="?", default="", metavar="JOB_ID", help="one job (WatchJob)")
    f = watch.add_argument_group("filters, without JOB_ID (WatchJobs)")
    f.add_argument(
        "--state",
        dest="states",
        action="append",
        type=parse_state,
        metavar="STATE",
        help=f"only changes to this state: {', '.join(STATE_NAMES)} (repeatable)",
    )
    f.add_argument("--type", dest="job_type", default="", metavar="TYPE", help="only jobs of this type")
    f.add_argument(
        "-l", "--selector", default="", metavar="SELECTOR", help="equality-based label selector: team=a"
    )
    f.add_argument(
        "--skip-initial", action="store_true", help="only changes, not the current status of each job"
    )
    watch.set_defaults(handler=run_watch)

    logs = add_command(
        sub,
        "logs",
        "print a job's container logs, its pods oldest first",
        """\
  jobscheduler logs job-7f3k2m9x1q
  jobscheduler logs job-7f3k2m9x1q -f                 # until its containers end
  jobscheduler logs job-7f3k2m9x1q --tail 20 --timestamps --prefix
  jobscheduler logs job-7f3k2m9x1q --pod job-7f3k2m9x1q-abcde -o json
""",
        common=common,
    )
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the containers end"
    )
    logs.add_argument("--pod", default="", help="only this pod of the job (default: every pod)")
    logs.add_argument("--container", default="", help="default: the pod's first container")
    logs.add_argument("--tail", type=int64, metavar="N", help="only the last N lines of each pod")
    logs.add_argument("--since", type=int64, metavar="SECONDS", help="only lines of the last N seconds")
    logs.add_argument("--timestamps", action="store_true", help="prefix each line with its RFC 3339 time")
    logs.add_argument("--prefix", action="store_true", help="prefix each line with [pod/container]")
    logs.set_defaults(handler=run_logs)
