"""The flags of each job type (timer, container, webhook, health-check, batch, generic, and
from-template) and how they fill the type's field of a ScheduleJobRequest: the JOB_TYPES table
that jobspec turns into one subcommand per type.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from google.protobuf.struct_pb2 import Struct

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.flags import KeyValueAction, int32, json_message, json_object, number


def _fill_timer(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    request.timer_job.CopyFrom(
        pb.TimerJob(
            duration_seconds=args.duration,
            timer_name=args.timer_name,
            control_plane_endpoint=args.endpoint,
            image=args.image,
            log_level=args.log_level,
            env=args.env or {},
        )
    )


def _fill_container(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    request.container_job.CopyFrom(
        pb.ContainerJob(
            image=args.image,
            command=args.entrypoint or [],
            args=[*(args.arg or []), *args.words],
            env=args.env or {},
            working_dir=args.workdir,
        )
    )


def _fill_webhook(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    job = pb.WebhookJob(
        url=args.url,
        method=args.method,
        headers=args.header or {},
        body=args.body,
        expected_status=args.expected_status,
        timeout_seconds=args.request_timeout or 0,
        attempts=args.attempts or 0,
    )
    if args.backoff is not None:
        job.backoff_seconds = args.backoff
    if args.max_backoff is not None:
        job.max_backoff_seconds = args.max_backoff
    request.webhook_job.CopyFrom(job)


def _target(kind: str) -> Callable[[str], pb.HealthCheckTarget]:
    def parse(text: str) -> pb.HealthCheckTarget:
        if kind == "http":
            return pb.HealthCheckTarget(type="http", url=text)
        if kind == "grpc":
            return pb.HealthCheckTarget(type="grpc", address=text)
        if kind == "tcp":
            host, _, port = text.rpartition(":")
            if not host or not port.isdigit():
                raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
            return pb.HealthCheckTarget(type="tcp", host=host.strip("[]"), port=int(port))
        target: pb.HealthCheckTarget = json_message(text, pb.HealthCheckTarget())
        return target

    parse.__name__ = f"{kind} target"
    return parse


def _fill_health_check(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    job = pb.HealthCheckJob(
        targets=args.targets or [], attempts=args.attempts or 0, timeout_seconds=args.check_timeout or 0
    )
    if args.attempt_interval is not None:
        job.interval_seconds = args.attempt_interval
    request.health_check_job.CopyFrom(job)


def _fill_batch(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    job = pb.BatchJob(
        image=args.image,
        command=args.entrypoint or [],
        args=[*(args.arg or []), *args.words],
        env=args.env or {},
        working_dir=args.workdir,
        completions=args.completions,
        parallelism=args.parallelism or 0,
    )
    if args.backoff_limit_per_index is not None:
        job.backoff_limit_per_index = args.backoff_limit_per_index
    if args.max_failed_indexes is not None:
        job.max_failed_indexes = args.max_failed_indexes
    request.batch_job.CopyFrom(job)


def param_value(text: str) -> Any:
    """A --param value: JSON when it parses as JSON (5, true, [1,2], "quoted"), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _fill_generic(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    params = dict(args.params or {})
    params.update({k: param_value(v) for k, v in (args.param or {}).items()})
    struct = Struct()
    struct.update(params)
    request.generic_job.CopyFrom(pb.GenericJob(type=args.job_type_name, params=struct))


def _fill_from_template(args: argparse.Namespace, request: pb.ScheduleJobRequest) -> None:
    request.template = args.template
    request.template_version = args.template_version or 0
    request.template_unset.extend(args.unset or [])


def _image_flags(group: argparse._ArgumentGroup, *, required: bool) -> None:
    group.add_argument("--image", required=required, default="", help="container image")
    group.add_argument(
        "--command",
        dest="entrypoint",
        action="append",
        metavar="WORD",
        help="entrypoint, one word per flag (default: the image's)",
    )
    group.add_argument(
        "--arg", action="append", metavar="WORD", help="an argument, one per flag (default: the image's CMD)"
    )
    group.add_argument("--env", action=KeyValueAction, metavar="KEY=VALUE", help="environment (repeatable)")
    group.add_argument("--workdir", default="", metavar="PATH", help="working directory, absolute")
    group.add_argument(
        "words",
        nargs="*",
        metavar="-- ARG",
        help="arguments after --, appended to --arg's: -- sh -c 'echo hi'",
    )


def _timer(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--duration", type=int32, required=True, metavar="SECONDS", help="how long the timer waits"
    )
    group.add_argument("--timer-name", required=True, metavar="NAME", help="the timer's name in its report")
    group.add_argument(
        "--endpoint", required=True, metavar="URL", help="http(s) URL the completion report is POSTed to"
    )
    group.add_argument("--image", default="", help="container image (default: the server's TIMER_IMAGE)")
    group.add_argument(
        "--log-level", default="", metavar="LEVEL", help="trace, debug, info (default), warn or error"
    )
    group.add_argument(
        "--env", action=KeyValueAction, metavar="KEY=VALUE", help="extra container environment (repeatable)"
    )


def _webhook(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--url", required=True, help="http(s) URL to call")
    group.add_argument("--method", default="", help="GET, POST (default), PUT, PATCH, DELETE or HEAD")
    group.add_argument(
        "--header", action=KeyValueAction, metavar="NAME=VALUE", help="request header (repeatable)"
    )
    group.add_argument("--body", default="", help="request body, UTF-8, at most 64 KiB")
    group.add_argument(
        "--expected-status", default="", metavar="CODES", help='codes and ranges that succeed ("200-299")'
    )
    group.add_argument(
        "--request-timeout", type=number, metavar="SECONDS", help="one attempt's limit (default 10)"
    )
    group.add_argument("--attempts", type=int32, metavar="N", help="attempts in all (default 5)")
    group.add_argument("--backoff", type=number, metavar="SECONDS", help="first retry pause (default 1)")
    group.add_argument("--max-backoff", type=number, metavar="SECONDS", help="longest pause (default 30)")


def _health_check(group: argparse._ArgumentGroup) -> None:
    kinds = (
        ("http", "URL", "GET this URL"),
        ("tcp", "HOST:PORT", "connect"),
        ("grpc", "HOST:PORT", "ask grpc.health.v1"),
    )
    for kind, metavar, what in kinds:
        group.add_argument(
            f"--{kind}", dest="targets", action="append", type=_target(kind), metavar=metavar,
            help=f"a {kind} target: {what} (repeatable)",
        )  # fmt: skip
    group.add_argument(
        "--target", dest="targets", action="append", type=_target("json"), metavar="JSON",
        help='a target with every field: {"type": "http", "name": "api", "url": ..., "expected_status": ...}',
    )  # fmt: skip
    group.add_argument("--attempts", type=int32, metavar="N", help="attempts per target (default 1)")
    group.add_argument("--check-timeout", type=number, metavar="SECONDS", help="one attempt (default 5)")
    group.add_argument(
        "--attempt-interval", type=number, metavar="SECONDS", help="between attempts (default 1)"
    )


def _batch(group: argparse._ArgumentGroup) -> None:
    _image_flags(group, required=True)
    group.add_argument("--completions", type=int32, required=True, metavar="N", help="indexes 0 .. N-1")
    group.add_argument("--parallelism", type=int32, metavar="N", help="pods at once (default 1)")
    group.add_argument("--backoff-limit-per-index", type=int32, metavar="N", help="retries of each index")
    group.add_argument("--max-failed-indexes", type=int32, metavar="N", help="fail the job past this many")


def _generic(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--type", dest="job_type_name", required=True, metavar="NAME", help="a type from `job-types`"
    )
    group.add_argument(
        "--param", action=KeyValueAction, metavar="KEY=VALUE",
        help="a parameter; the value is JSON when it parses (5, true, [1]), else text (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--params", type=json_object, metavar="JSON|@FILE", help="parameters as a JSON object; --param wins"
    )


def _from_template(group: argparse._ArgumentGroup) -> None:
    group.add_argument("template", metavar="TEMPLATE", help="the template's name")
    group.add_argument("--template-version", type=int32, metavar="N", help="default: the latest")
    group.add_argument(
        "--unset",
        action="append",
        metavar="FIELD",
        help='template field to drop ("labels.team") (repeatable)',
    )


# name, help, its flags, how it fills the request, an example's flags
JOB_TYPES: tuple[tuple[str, str, Callable[[argparse._ArgumentGroup], None], Any, str], ...] = (
    ("timer", "a timer job: wait --duration seconds, then report to --endpoint", _timer, _fill_timer,
     "--duration 300 --timer-name build-timeout --endpoint http://control-plane:50053"),
    ("container", "run a container image once", lambda g: _image_flags(g, required=True), _fill_container,
     "--image busybox:1.36 --command sh -- -c 'echo hello'"),
    ("webhook", "one HTTP request from inside the cluster, retried while it looks temporary", _webhook,
     _fill_webhook, "--url https://hooks.example/deploy --method POST --body '{}'"),
    ("health-check", "probe HTTP, TCP and gRPC endpoints; FAILED when one is unhealthy", _health_check,
     _fill_health_check, "--http http://api:8080/healthz --tcp db:5432"),
    ("batch", "an indexed batch: one pod per index 0 .. --completions-1", _batch, _fill_batch,
     "--image busybox:1.36 --completions 10 --command sh -- -c 'echo $JOB_COMPLETION_INDEX'"),
    ("generic", "any registered type by name (plugins), its parameters as --param or JSON", _generic,
     _fill_generic, "--type timer --param duration_seconds=5 --param timer_name=t --param ..."),
)  # fmt: skip
FROM_TEMPLATE = (
    "from-template",
    "a job from a stored template; the flags given override it",
    _from_template,
    _fill_from_template,
    "nightly-report -l run=manual",
)
