"""`jobscheduler schedules VERB`: recurring jobs (CronJobs, or the leader's interval loop) —
create, get, list, update, delete, pause, resume, trigger and backfill.

A schedule's job is given as `schedule` gives one (a job-type subcommand and its flags), or
with its timing in a YAML/JSON file (--file) as `schedules get -o yaml` prints it.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.channel import Context
from jobscheduler.cli.exits import EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE, ClientError, ExitStatus
from jobscheduler.cli.flags import (
    add_command,
    add_group,
    add_named_verb,
    choice_of,
    int32,
    int64,
    positive_seconds,
)
from jobscheduler.cli.jobs import wait_for_job
from jobscheduler.cli.jobspec import add_job_types, job_request, type_examples
from jobscheduler.cli.output import emit, now, render_schedule, render_statuses, schedule_rows
from jobscheduler.cli.specfile import load_message

CONCURRENCY = ("allow", "forbid", "replace", "buffer-one")
CATCH_UP = ("skip", "latest", "all")


def _start_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone offset (Z, +02:00)")
    return value


def _timing_flags(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: given before the job type or after it, whichever parser reads them keeps them.
    sup = argparse.SUPPRESS
    t = parser.add_argument_group("timing (before or after the job type)")
    t.add_argument("--cron", default=sup, metavar="EXPR", help='five fields ("0 2 * * *") or @daily, ...')
    t.add_argument("--time-zone", default=sup, metavar="TZ", help="IANA name for --cron (default UTC)")
    t.add_argument("--interval", default=sup, metavar="DURATION", help='"6h", "1h30m", "90s", "2d"')
    t.add_argument(
        "--start-time", type=_start_time, default=sup, metavar="TIME",
        help="with --interval: runs at this RFC 3339 time + k*interval",
    )  # fmt: skip
    t.add_argument(
        "--concurrency", type=choice_of(CONCURRENCY), default=sup, metavar="POLICY",
        help="while a run is running: allow (default), forbid, replace or buffer-one (one run waits)",
    )  # fmt: skip
    t.add_argument(
        "--starting-deadline", type=int64, default=sup, metavar="SECONDS", help="a later start is missed"
    )
    t.add_argument("--keep-succeeded", type=int32, default=sup, metavar="N", help="runs kept (default 3)")
    t.add_argument("--keep-failed", type=int32, default=sup, metavar="N", help="failed runs kept (default 1)")
    t.add_argument("--paused", action="store_true", default=sup, help="create it paused")
    t.add_argument(
        "--catch-up", type=choice_of(CATCH_UP), default=sup, metavar="POLICY",
        help="missed runs: skip (default), latest or all",
    )  # fmt: skip
    t.add_argument("--catch-up-max-runs", type=int32, default=sup, metavar="N", help="with all (default 10)")
    t.add_argument(
        "--pause-after-failures", type=int32, default=sup, metavar="N",
        help="pause after N consecutive failed runs (0: never, the default)",
    )  # fmt: skip


def schedule_spec(args: argparse.Namespace, *, namespace: str) -> pb.ScheduleSpec:
    """The spec the flags describe, over the one in --file when given."""
    spec = pb.ScheduleSpec()
    if args.file is not None:
        spec = load_message(args.file, spec, wrapper="spec")
    elif getattr(args, "fill_job", None) is None:
        raise ClientError(EXIT_USAGE, "the job: a job type (`timer`, ... see --help) or --file")
    spec.name = args.resource_name
    spec.namespace = namespace or spec.namespace
    given = vars(args)
    if "cron" in given:
        spec.cron, spec.interval = args.cron, ""
    if "interval" in given:
        spec.interval = args.interval
        spec.cron = "" if "cron" not in given else spec.cron
    if "time_zone" in given:
        spec.time_zone = args.time_zone
    if "start_time" in given:
        spec.start_time.FromDatetime(args.start_time)
    if "concurrency" in given:
        spec.concurrency_policy = pb.ConcurrencyPolicy.Value(
            f"CONCURRENCY_POLICY_{args.concurrency.upper().replace('-', '_')}"
        )
    if "starting_deadline" in given:
        spec.starting_deadline_seconds = args.starting_deadline
    if "keep_succeeded" in given:
        spec.successful_runs_history_limit = args.keep_succeeded
    if "keep_failed" in given:
        spec.failed_runs_history_limit = args.keep_failed
    if "paused" in given:
        spec.paused = True
    if "catch_up" in given:
        spec.catch_up = pb.CatchUpPolicy.Value(f"CATCH_UP_POLICY_{args.catch_up.upper()}")
    if "catch_up_max_runs" in given:
        spec.catch_up_max_runs = args.catch_up_max_runs
    if "pause_after_failures" in given:
        spec.pause_after_failures = args.pause_after_failures
    if getattr(args, "fill_job", None) is not None:
        spec.job.CopyFrom(job_request(args))
    return spec


def _emit_one(ctx: Context, schedule: pb.Schedule, *, full: bool = False) -> ExitStatus:
    table = (
        (lambda: render_schedule(schedule, now=now()))
        if full
        else (lambda: schedule_rows([schedule], now=now()))
    )
    emit(schedule, ctx.options, table, ctx.out)
    return EXIT_OK


def run_create(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.CreateScheduleRequest(schedule=schedule_spec(args, namespace=ctx.options.namespace))
    return _emit_one(ctx, ctx.stub.CreateSchedule(request, timeout=ctx.options.timeout))


def run_update(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.UpdateScheduleRequest(schedule=schedule_spec(args, namespace=ctx.options.namespace))
    return _emit_one(ctx, ctx.stub.UpdateSchedule(request, timeout=ctx.options.timeout))


def run_get(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.GetScheduleRequest(
        name=args.resource_name, namespace=ctx.options.namespace, next_runs=args.next_runs or 0
    )
    return _emit_one(ctx, ctx.stub.GetSchedule(request, timeout=ctx.options.timeout), full=True)


def run_list(ctx: Context, _args: argparse.Namespace) -> ExitStatus:
    response = ctx.stub.ListSchedules(
        pb.ListSchedulesRequest(namespace=ctx.options.namespace), timeout=ctx.options.timeout
    )
    if ctx.options.output == "table" and not response.schedules:
        where = f" in namespace {ctx.options.namespace}" if ctx.options.namespace else ""
        print(f"no schedules found{where}", file=ctx.err)
    emit(
        response,
        ctx.options,
        lambda: schedule_rows(response.schedules, now=now()) if response.schedules else "",
        ctx.out,
    )
    return EXIT_OK


def run_delete(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.DeleteScheduleRequest(
        name=args.resource_name, namespace=ctx.options.namespace, keep_runs=args.keep_runs
    )
    response = ctx.stub.DeleteSchedule(request, timeout=ctx.options.timeout)
    runs = "its runs are kept" if args.keep_runs else "its runs are deleted with it"
    emit(response, ctx.options, lambda: f"schedule {args.resource_name} deleted; {runs}", ctx.out)
    return EXIT_OK


def run_pause(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.PauseScheduleRequest(name=args.resource_name, namespace=ctx.options.namespace)
    return _emit_one(ctx, ctx.stub.PauseSchedule(request, timeout=ctx.options.timeout))


def run_resume(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.ResumeScheduleRequest(name=args.resource_name, namespace=ctx.options.namespace)
    return _emit_one(ctx, ctx.stub.ResumeSchedule(request, timeout=ctx.options.timeout))


def run_trigger(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    if args.wait_timeout is not None and not args.wait:
        raise ClientError(EXIT_USAGE, "--wait-timeout needs --wait")
    request = pb.TriggerScheduleRequest(
        name=args.resource_name, namespace=ctx.options.namespace, idempotency_key=args.idempotency_key
    )
    response = ctx.stub.TriggerSchedule(request, timeout=ctx.options.timeout)
    if ctx.options.output == "table":
        started = "run started" if response.created else "the run of this --idempotency-key, started before"
        print(f"{started}: {response.status.job_id}", file=ctx.err)
    if args.wait:
        final = wait_for_job(
            ctx, response.status, namespace=response.status.namespace, wait_timeout=args.wait_timeout
        )
        response.status.CopyFrom(final)
    emit(
        response,
        ctx.options,
        lambda: render_statuses([response.status], now=now(), with_message=True),
        ctx.out,
    )
    if args.wait and response.status.state != pb.JOB_STATE_SUCCEEDED:
        return EXIT_JOB_FAILED
    return EXIT_OK


def run_backfill(ctx: Context, args: argparse.Namespace) -> ExitStatus:
    request = pb.BackfillScheduleRequest(
        name=args.resource_name, namespace=ctx.options.namespace, dry_run=args.dry_run
    )
    request.start.FromDatetime(args.start)
    request.end.FromDatetime(args.end)
    response = ctx.stub.BackfillSchedule(request, timeout=ctx.options.timeout)

    def table() -> str:
        times = ", ".join(t.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ") for t in response.run_times)
        if args.dry_run:
            return f"{len(response.run_times)} run times (nothing created): {times}"
        lines = [f"{len(response.created)} runs created, {len(response.existing)} already there"]
        lines += [f"created:  {job_id}" for job_id in response.created]
        lines += [f"existing: {job_id}" for job_id in response.existing]
        return "\n".join(lines)

    emit(response, ctx.options, table, ctx.out)
    return EXIT_OK


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Adds `schedules` and its verbs."""
    verbs = add_group(
        sub,
        "schedules",
        "recurring jobs: create, get, list, update, delete, pause, resume, trigger, backfill",
        """\
  jobscheduler schedules create nightly --cron "0 2 * * *" --time-zone Europe/Berlin \\
      timer --duration 60 --timer-name nightly --endpoint http://cp:50053
  jobscheduler schedules list
  jobscheduler schedules trigger nightly --wait
""",
    )

    def verb(name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
        return add_named_verb(
            verbs, name, help_text, examples, common=common, within="schedules", what="schedule"
        )

    for name, handler, help_text in (
        ("create", run_create, "create a schedule: its timing, then its job as `schedule` takes one"),
        ("update", run_update, "replace a schedule's whole spec; its runs and state are kept"),
    ):
        parser = verb(
            name,
            help_text,
            f"""\
  jobscheduler schedules {name} nightly --cron "0 2 * * *" timer --duration 60 --timer-name t \\
      --endpoint http://cp:50053
  jobscheduler schedules {name} every-6h --interval 6h --concurrency forbid \\
      container --image busybox:1.36 --command date
  jobscheduler schedules get nightly -o yaml > s.yaml   # edit, then:
  jobscheduler schedules {name} nightly --file s.yaml
""",
        )
        parser.add_argument(
            "--file", type=Path, metavar="FILE", help="the spec as YAML or JSON (as `get -o yaml` prints it)"
        )
        _timing_flags(parser)
        parser.set_defaults(handler=handler, fill_job=None)
        types = parser.add_subparsers(dest="job_type_command", metavar="TYPE")
        add_job_types(
            types,
            purpose="schedules",
            common=common,
            within=f"schedules {name}",
            handler=handler,
            examples=type_examples(f"schedules {name} NAME --cron '@daily'"),
            extra=_timing_flags,
        )
        for choice in types.choices.values():
            choice.add_argument("--file", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    get = verb("get", "show a schedule: next runs, last run, active runs, statistics", """\
  jobscheduler schedules get nightly
  jobscheduler schedules get nightly --next-runs 10 -o json | jq -r '.status.next_runs[]'
""")  # fmt: skip
    get.add_argument("--next-runs", type=int32, metavar="N", help="next run times to show (default 5)")
    get.set_defaults(handler=run_get)
    lister = add_command(
        verbs, "list", "list the schedules, by name", "  jobscheduler schedules list -n team-a\n",
        common=common, within="schedules",
    )  # fmt: skip
    lister.set_defaults(handler=run_list)
    delete = verb("delete", "delete a schedule, and its runs unless --keep-runs", """\
  jobscheduler schedules delete nightly
  jobscheduler schedules delete nightly --keep-runs
""")  # fmt: skip
    delete.add_argument("--keep-runs", action="store_true", help="leave its Jobs (orphaned)")
    delete.set_defaults(handler=run_delete)
    pause = verb(
        "pause",
        "start no new runs until resume; running ones go on",
        "  jobscheduler schedules pause nightly\n",
    )
    pause.set_defaults(handler=run_pause)
    resume = verb("resume", "start runs again after pause", "  jobscheduler schedules resume nightly\n")
    resume.set_defaults(handler=run_resume)
    trigger = verb("trigger", "run the schedule's job now, as a run of the schedule", """\
  jobscheduler schedules trigger nightly
  jobscheduler schedules trigger nightly --idempotency-key deploy-42 --wait
""")  # fmt: skip
    trigger.add_argument("--idempotency-key", default="", metavar="KEY", help="the same key never runs twice")
    trigger.add_argument("--wait", action="store_true", help="follow the run until it ends; exit 0 or 6")
    trigger.add_argument(
        "--wait-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="with --wait: give up after this, exit 5",
    )
    trigger.set_defaults(handler=run_trigger)
    backfill = verb("backfill", "create the runs of a past range of run times, each once", """\
  jobscheduler schedules backfill nightly --start 2026-05-01T00:00:00Z --end 2026-05-08T00:00:00Z
  jobscheduler schedules backfill nightly --start 2026-05-01T00:00:00Z --end 2026-05-02T00:00:00Z --dry-run
""")  # fmt: skip
    backfill.add_argument(
        "--start",
        type=_start_time,
        required=True,
        metavar="TIME",
        help="RFC 3339; the first run time included",
    )
    backfill.add_argument(
        "--end", type=_start_time, required=True, metavar="TIME", help="RFC 3339; excluded; not after now"
    )
    backfill.add_argument("--dry-run", action="store_true", help="print the run times, create nothing")
    backfill.set_defaults(handler=run_backfill)
