"""The human command line of the JobScheduler API: `schedule`, `status`, `list`, `cancel` and
`health` over gRPC through the generated stubs, printed as a table, JSON or YAML.

Every outcome a script may branch on has one exit code, all in the EXIT_CODES table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc

DEFAULT_SERVER = "localhost:50054"
SERVER_ENV = "JOBSCHEDULER_SERVER"
TOKEN_ENV = "JOBSCHEDULER_TOKEN"  # noqa: S105 - the variable's name, not a token
DEFAULT_TIMEOUT_SECONDS = 10.0
# GetJobStatus reads the Job and its pods from the API server: once a second is fresh enough
# for a person watching and cheap for the cluster.
POLL_INTERVAL_SECONDS = 1.0
OUTPUTS = ("table", "json", "yaml")
TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})
STATE_NAMES = tuple(v.name.removeprefix("JOB_STATE_") for v in pb.JobState.DESCRIPTOR.values if v.number)


# -- exit codes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExitCode:
    """One exit status of a client command, and the gRPC status codes that end in it."""

    code: int
    meaning: str
    grpc_codes: frozenset[grpc.StatusCode] = frozenset()


_S = grpc.StatusCode
EXIT_OK = ExitCode(0, "success; with --wait: the job SUCCEEDED")
EXIT_ERROR = ExitCode(1, "any other error, INTERNAL and UNKNOWN included")
EXIT_USAGE = ExitCode(
    2, "usage error (bad flags), or INVALID_ARGUMENT: nothing was created", frozenset({_S.INVALID_ARGUMENT})
)
EXIT_NOT_FOUND = ExitCode(3, "NOT_FOUND: no such job", frozenset({_S.NOT_FOUND}))
EXIT_CONFLICT = ExitCode(
    4,
    "FAILED_PRECONDITION (cancel of a finished job) or ALREADY_EXISTS (--request-id reused)",
    frozenset({_S.FAILED_PRECONDITION, _S.ALREADY_EXISTS}),
)
EXIT_UNAVAILABLE = ExitCode(
    5,
    "UNAVAILABLE or DEADLINE_EXCEEDED: server or Kubernetes unreachable, or --wait-timeout passed",
    frozenset({_S.UNAVAILABLE, _S.DEADLINE_EXCEEDED}),
)
EXIT_JOB_FAILED = ExitCode(6, "--wait: the job ended FAILED or CANCELLED")
EXIT_NOT_SERVING = ExitCode(7, "health: the server answers but is not SERVING")
EXIT_INTERRUPTED = ExitCode(130, "interrupted (Ctrl-C); a job already scheduled keeps running")
EXIT_CODES = (
    EXIT_OK,
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_NOT_FOUND,
    EXIT_CONFLICT,
    EXIT_UNAVAILABLE,
    EXIT_JOB_FAILED,
    EXIT_NOT_SERVING,
    EXIT_INTERRUPTED,
)


def exit_code_for(status: grpc.StatusCode) -> ExitCode:
    """The exit code a failed RPC ends the command with."""
    for exit_code in EXIT_CODES:
        if status in exit_code.grpc_codes:
            return exit_code
    return EXIT_ERROR


def exit_codes_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {e.code:<3}  {e.meaning}" for e in EXIT_CODES)


class ClientError(Exception):
    """A command failed: printed as `jobscheduler: <STATUS>: <message>` and a hint, then exits.

    `status` is the gRPC status name (NOT_FOUND, ...) when there is one."""

    def __init__(self, exit_code: ExitCode, message: str, *, status: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.message = message
        self.hint = hint

    def report(self, out: TextIO) -> None:
        print(f"jobscheduler: {self.status + ': ' if self.status else ''}{self.message}", file=out)
        if self.hint:
            print(f"  hint: {self.hint}", file=out)


# -- flag values -----------------------------------------------------------------------------------


def parse_key_value(text: str) -> tuple[str, str]:
    """`KEY=VALUE` as a pair; the value may contain '=' and be empty, the key may not be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


class KeyValueAction(argparse.Action):
    """Collects repeated `--flag KEY=VALUE` into a dict; a key given twice is a usage error."""

    def __call__(
        self,
        _parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        _option_string: str | None = None,
    ) -> None:
        try:
            key, value = parse_key_value(str(values))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        pairs: dict[str, str] = dict(getattr(namespace, self.dest, None) or {})
        if key in pairs:
            raise argparse.ArgumentError(self, f"key {key!r} given twice")
        pairs[key] = value
        setattr(namespace, self.dest, pairs)


def parse_state(text: str) -> pb.JobState.ValueType:
    """A state name, any case, with or without the JOB_STATE_ prefix."""
    name = text.strip().upper().removeprefix("JOB_STATE_")
    if name not in STATE_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job state; one of {', '.join(STATE_NAMES)}")
    return pb.JobState.Value(f"JOB_STATE_{name}")


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    # Out-of-range numbers would otherwise fail inside protobuf with a traceback.
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low} .. {high})")
        return value

    parse.__name__ = "integer"
    return parse


int32 = _bounded_int(-(2**31), 2**31 - 1)
int64 = _bounded_int(-(2**63), 2**63 - 1)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (got {text})")
    return value


# -- connection ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The flags every client command shares, with their defaults applied."""

    server: str = DEFAULT_SERVER
    namespace: str = ""
    output: str = "table"
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    tls: bool = False
    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""
    token: str = field(default="", repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> ClientOptions:
        # The flags default to SUPPRESS so they may stand before or after the command name.
        def given(name: str) -> Any:
            return getattr(args, name, None)

        ca_cert, cert, key, server_name = given("ca_cert"), given("cert"), given("key"), given("server_name")
        if (cert is None) != (key is None):
            raise ClientError(EXIT_USAGE, "--cert and --key go together (mutual TLS needs both)")
        token = given("token") or environ.get(TOKEN_ENV) or ""
        # Never echoed: the message names where the token came from, not what it is.
        if token and not (token.isascii() and token.isprintable() and " " not in token):
            raise ClientError(
                EXIT_USAGE, f"--token (or ${TOKEN_ENV}): expected printable ASCII without spaces"
            )
        return cls(
            server=given("server") or environ.get(SERVER_ENV) or DEFAULT_SERVER,
            namespace=given("namespace") or "",
            output=given("output") or "table",
            timeout=given("timeout") or DEFAULT_TIMEOUT_SECONDS,
            tls=bool(given("tls") or ca_cert or cert or server_name),
            ca_cert=ca_cert,
            cert=cert,
            key=key,
            server_name=server_name or "",
            token=token,
        )

    def ns_flag(self) -> str:
        return f" -n {self.namespace}" if self.namespace else ""


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        raise ClientError(EXIT_USAGE, f"cannot read {flag} {path}: {e.strerror}") from e


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str | bytes], ...] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends `authorization: Bearer <token>` with every call. An interceptor rather than call
    credentials, which grpc sends over TLS only: a plaintext dev server takes tokens too."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerToken(...)"

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=(*(details.metadata or ()), self._header),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=details.compression,
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._with_token(client_call_details), request)


def open_channel(options: ClientOptions) -> grpc.Channel:
    if not options.tls:
        channel = grpc.insecure_channel(options.server)
    else:
        credentials = grpc.ssl_channel_credentials(
            # None: the system's trusted roots.
            root_certificates=_read(options.ca_cert, "--ca-cert"),
            private_key=_read(options.key, "--key"),
            certificate_chain=_read(options.cert, "--cert"),
        )
        channel_options = (
            [("grpc.ssl_target_name_override", options.server_name)] if options.server_name else []
        )
        channel = grpc.secure_channel(options.server, credentials, options=channel_options)
    return grpc.intercept_channel(channel, BearerToken(options.token)) if options.token else channel


def _hint(code: grpc.StatusCode, details: str, options: ClientOptions, args: argparse.Namespace) -> str:
    job = f" {args.job_id}" if getattr(args, "job_id", "") else ""
    lowered = details.lower()
    if code is _S.UNAVAILABLE:
        if "certificate" in lowered or "handshake" in lowered or "ssl" in lowered:
            return (
                f"the TLS handshake with {options.server} failed: trust its CA with --ca-cert, "
                "and pass --server-name if its certificate names another host"
            )
        if "failed to connect" in lowered or "connection refused" in lowered or "dns" in lowered:
            return (
                f"is the server running at {options.server}? start it with `hack/dev.sh run`, "
                f"or point --server (or {SERVER_ENV}) at it"
            )
        return "the service cannot reach Kubernetes right now; retry later, or see `jobscheduler health`"
    if code is _S.DEADLINE_EXCEEDED:
        return f"no answer from {options.server} within {options.timeout:g}s; raise --timeout or retry later"
    if code is _S.INVALID_ARGUMENT:
        return f"see `jobscheduler {args.command_name} --help`"
    if code is _S.NOT_FOUND:
        return f"`jobscheduler list{options.ns_flag()}` shows the jobs there are"
    if code is _S.ALREADY_EXISTS:
        return "repeat the first request exactly, or use a new --request-id"
    if code is _S.FAILED_PRECONDITION:
        return f"`jobscheduler status{job}{options.ns_flag()}` shows how it ended"
    if code is _S.UNAUTHENTICATED:
        if options.token:
            return f"the server does not accept this token; check --token (or ${TOKEN_ENV})"
        return f"the server wants a bearer token: pass --token, or set ${TOKEN_ENV}"
    if code is _S.PERMISSION_DENIED:
        if details.startswith("token "):
            return (
                "the token's scope (verbs, namespaces) does not cover this call; ask the service's operator"
            )
        return "the service's own Kubernetes identity lacks RBAC permissions; ask its operator"
    if code is _S.UNIMPLEMENTED:
        return f"is {options.server} a jobscheduler server?"
    return ""


def error_from_rpc(error: grpc.RpcError, options: ClientOptions, args: argparse.Namespace) -> ClientError:
    code = error.code()
    details = error.details() or ""
    return ClientError(
        exit_code_for(code),
        details or "(no message)",
        status=code.name,
        hint=_hint(code, details, options, args),
    )


# -- output ----------------------------------------------------------------------------------------

COLUMNS = ("JOB ID", "NAME", "TYPE", "STATE", "REASON", "ATTEMPTS", "AGE")


def state_name(state: pb.JobState.ValueType) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


def format_age(seconds: float) -> str:
    """Like kubectl's AGE column: 45s, 3m12s, 5h3m, 2d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def status_row(status: pb.JobStatus, *, now: datetime) -> list[str]:
    created = status.created_at.ToDatetime(tzinfo=UTC) if status.HasField("created_at") else None
    return [
        status.job_id,
        status.name,
        status.job_type,
        state_name(status.state),
        status.reason or "-",
        str(status.attempts),
        format_age((now - created).total_seconds()) if created else "-",
    ]


def render_statuses(statuses: Sequence[pb.JobStatus], *, now: datetime, with_message: bool = False) -> str:
    """The table of `list`; one job's views (`status`, `cancel`, `schedule`) add its message."""
    headers = list(COLUMNS) + (["MESSAGE"] if with_message else [])
    rows = [status_row(s, now=now) + ([s.message] if with_message else []) for s in statuses]
    return render_table(headers, rows)


def message_dict(message: Message) -> dict[str, Any]:
    # Fields at their default value are kept so that scripts find every field in every answer.
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def emit(message: Message, options: ClientOptions, table: Callable[[], str], out: TextIO) -> None:
    if options.output == "json":
        text = json.dumps(message_dict(message), indent=2)
    elif options.output == "yaml":
        text = yaml.safe_dump(message_dict(message), sort_keys=False).rstrip("\n")
    else:
        text = table()
    if text:
        print(text, file=out)


# -- commands --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What a command runs with: the options, an open channel, and where to print."""

    options: ClientOptions
    channel: grpc.Channel
    stub: pb_grpc.JobSchedulerStub
    out: TextIO
    err: TextIO


def _now() -> datetime:
    return datetime.now(UTC)


def run_schedule_timer(ctx: Context, args: argparse.Namespace) -> ExitCode:
    if args.wait_timeout is not None and not args.wait:
        raise ClientError(EXIT_USAGE, "--wait-timeout needs --wait")
    if args.wait and args.dry_run:
        raise ClientError(EXIT_USAGE, "--wait and --dry-run exclude each other: a dry run creates no job")
    request = pb.ScheduleJobRequest(
        name=args.name,
        namespace=ctx.options.namespace,
        labels=args.labels or {},
        annotations=args.annotations or {},
        resources=pb.Resources(
            cpu_request=args.cpu_request,
            memory_request=args.memory_request,
            cpu_limit=args.cpu_limit,
            memory_limit=args.memory_limit,
        ),
        request_id=args.request_id,
        dry_run=args.dry_run,
        timer_job=pb.TimerJob(
            duration_seconds=args.duration,
            timer_name=args.timer_name,
            control_plane_endpoint=args.endpoint,
            image=args.image,
            log_level=args.log_level,
            env=args.env or {},
        ),
    )
    # Optional in the proto: unset means "the service's default", which is not the same as 0.
    if args.backoff_limit is not None:
        request.backoff_limit = args.backoff_limit
    if args.active_deadline is not None:
        request.active_deadline_seconds = args.active_deadline
    if args.ttl is not None:
        request.ttl_seconds_after_finished = args.ttl

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
        lambda: render_statuses([response.status], now=_now(), with_message=True),
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
                    status=_S.DEADLINE_EXCEEDED.name,
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


def emit_status(ctx: Context, response: pb.GetJobStatusResponse | pb.CancelJobResponse) -> ExitCode:
    """One job's status, as a table (with its message) or as the whole response."""
    emit(
        response,
        ctx.options,
        lambda: render_statuses([response.status], now=_now(), with_message=True),
        ctx.out,
    )
    return EXIT_OK


def run_status(ctx: Context, args: argparse.Namespace) -> ExitCode:
    request = pb.GetJobStatusRequest(job_id=args.job_id, namespace=ctx.options.namespace)
    return emit_status(ctx, ctx.stub.GetJobStatus(request, timeout=ctx.options.timeout))


def run_list(ctx: Context, args: argparse.Namespace) -> ExitCode:
    request = pb.ListJobsRequest(
        namespace=ctx.options.namespace,
        states=args.states or [],
        job_type=args.job_type,
        label_selector=args.selector,
        name=args.name,
        page_size=args.page_size or 0,
        page_token=args.page_token,
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
        lambda: render_statuses(response.jobs, now=_now()) if response.jobs else "",
        ctx.out,
    )
    return EXIT_OK


def run_cancel(ctx: Context, args: argparse.Namespace) -> ExitCode:
    request = pb.CancelJobRequest(job_id=args.job_id, namespace=ctx.options.namespace)
    return emit_status(ctx, ctx.stub.CancelJob(request, timeout=ctx.options.timeout))


def run_health(ctx: Context, _args: argparse.Namespace) -> ExitCode:
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


def run(args: argparse.Namespace) -> int:
    """Runs the client command `args` was parsed for; returns the process exit code."""
    handler: Callable[[Context, argparse.Namespace], ExitCode] = args.handler
    try:
        options = ClientOptions.from_args(args, os.environ)
        with open_channel(options) as channel:
            stub = pb_grpc.JobSchedulerStub(channel)
            ctx = Context(options=options, channel=channel, stub=stub, out=sys.stdout, err=sys.stderr)
            try:
                return handler(ctx, args).code
            except grpc.RpcError as e:
                raise error_from_rpc(e, options, args) from e
    except ClientError as e:
        e.report(sys.stderr)
        return e.exit_code.code
    except KeyboardInterrupt:
        print("jobscheduler: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED.code


# -- the parsers -----------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The flags every client command shares. Defaults are applied in ClientOptions.from_args,
    so the flags may be given before the command name, after it, or both (the later wins)."""
    group = parser.add_argument_group("client options (before or after the command)")
    sup = argparse.SUPPRESS
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=sup,
        help=f"the jobscheduler server (default: ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    group.add_argument(
        "-n", "--namespace", default=sup, help="Kubernetes namespace (default: the server's K8S_NAMESPACE)"
    )
    group.add_argument("-o", "--output", choices=OUTPUTS, default=sup, help="output format (default: table)")
    group.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        default=sup,
        help=f"deadline of each call (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    group.add_argument(
        "--tls", action="store_true", default=sup, help="use TLS, trusting the system's CAs unless --ca-cert"
    )
    group.add_argument(
        "--ca-cert", type=Path, metavar="FILE", default=sup, help="PEM CA bundle to trust (implies --tls)"
    )
    group.add_argument(
        "--cert", type=Path, metavar="FILE", default=sup, help="PEM client certificate, for mutual TLS"
    )
    group.add_argument("--key", type=Path, metavar="FILE", default=sup, help="PEM private key of --cert")
    group.add_argument(
        "--server-name",
        metavar="NAME",
        default=sup,
        help="host name to verify the server's certificate against (implies --tls)",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=sup,
        help=f"bearer token sent with each call (default: ${TOKEN_ENV}; prefer it: flags show in `ps`)",
    )


def given_client_options(args: argparse.Namespace) -> list[str]:
    """The client flags present in args, for commands that take none."""
    names = (
        "server",
        "namespace",
        "output",
        "timeout",
        "tls",
        "ca_cert",
        "cert",
        "key",
        "server_name",
        "token",
    )
    return ["--" + n.replace("_", "-") for n in names if hasattr(args, n)]


def _epilog(examples: str) -> str:
    return f"examples:\n{examples.rstrip()}\n\n{exit_codes_help()}"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds schedule, status, list, cancel and health to the `jobscheduler` parser."""
    common = argparse.ArgumentParser(add_help=False)
    add_client_options(common)

    def command(
        parent: Any, name: str, help_text: str, examples: str, *, within: str = ""
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_text,
            description=help_text[:1].upper() + help_text[1:] + ".",
            epilog=_epilog(examples),
            formatter_class=_HelpFormatter,
            parents=[common],
        )
        parser.set_defaults(command_name=f"{within} {name}".strip())
        return parser

    schedule = sub.add_parser(
        "schedule",
        help="schedule a job of a registered type",
        description="Schedule a job of a registered type; each type is its own command.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n  jobscheduler schedule timer --help",
    )
    types = schedule.add_subparsers(dest="schedule_type", required=True, metavar="TYPE")
    timer = command(
        types,
        "timer",
        "schedule a timer job: wait --duration seconds, then report to --endpoint",
        """\
  jobscheduler schedule timer --duration 300 --timer-name build-timeout \\
      --endpoint http://control-plane:50053 --name my-timer
  jobscheduler schedule timer --duration 60 --timer-name t --endpoint http://cp:50053 \\
      -n team-a -l team=a --cpu-request 200m --memory-limit 128Mi --wait --wait-timeout 600
  jobscheduler schedule timer --duration 5 --timer-name t --endpoint http://cp:50053 --dry-run
  jobscheduler schedule timer ... --request-id deploy-42   # retried: the same job, never two
  jobscheduler schedule timer ... -o json | jq -r .job_id
""",
        within="schedule",
    )
    t = timer.add_argument_group("timer")
    t.add_argument(
        "--duration", type=int32, required=True, metavar="SECONDS", help="how long the timer waits"
    )
    t.add_argument("--timer-name", required=True, metavar="NAME", help="the timer's name in its report")
    t.add_argument(
        "--endpoint", required=True, metavar="URL", help="http(s) URL the completion report is POSTed to"
    )
    t.add_argument("--image", default="", help="container image (default: the server's TIMER_IMAGE)")
    t.add_argument(
        "--log-level", default="", metavar="LEVEL", help="trace, debug, info (default), warn or error"
    )
    t.add_argument(
        "--env", action=KeyValueAction, metavar="KEY=VALUE", help="extra container environment (repeatable)"
    )
    j = timer.add_argument_group("job")
    j.add_argument("--name", default="", help="human name, a DNS-1123 label (default: the job type)")
    j.add_argument(
        "-l",
        "--label",
        dest="labels",
        action=KeyValueAction,
        metavar="KEY=VALUE",
        help="label on the Job and its pods (repeatable)",
    )
    j.add_argument(
        "--annotation",
        dest="annotations",
        action=KeyValueAction,
        metavar="KEY=VALUE",
        help="annotation on the pod template (repeatable)",
    )
    for kind in ("cpu", "memory"):
        for which in ("request", "limit"):
            j.add_argument(
                f"--{kind}-{which}",
                default="",
                metavar="QUANTITY",
                help=f"{kind} {which}, a Kubernetes quantity"
                + (" (default: the server's)" if which == "request" else " (default: none)"),
            )
    j.add_argument(
        "--backoff-limit", type=int32, metavar="N", help="pod failures retried before FAILED (default 0)"
    )
    j.add_argument(
        "--active-deadline",
        type=int64,
        metavar="SECONDS",
        help="wall-clock limit; then FAILED (default: none)",
    )
    j.add_argument(
        "--ttl",
        type=int32,
        metavar="SECONDS",
        help="delete the finished Job after this (default: the server's)",
    )
    j.add_argument(
        "--request-id", default="", metavar="ID", help="idempotency key: the same key returns the same job"
    )
    j.add_argument(
        "--dry-run",
        action="store_true",
        help="print the manifest the API server admitted (YAML); create nothing",
    )
    w = timer.add_argument_group("waiting")
    w.add_argument(
        "--wait", action="store_true", help="follow the job until it ends, progress on stderr; exit 0 or 6"
    )
    w.add_argument(
        "--wait-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="with --wait: give up after this, exit 5 (default: no limit)",
    )
    timer.set_defaults(handler=run_schedule_timer)

    status = command(
        sub,
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
        sub,
        "list",
        "list the service's jobs, newest first",
        """\
  jobscheduler list
  jobscheduler list --state running --state pending -n team-a
  jobscheduler list --type timer -l team=a,tier!=batch --name my-timer
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
    lister.add_argument(
        "--page-size", type=int32, metavar="N", help="jobs per call (server default 50, at most 1000)"
    )
    lister.add_argument(
        "--page-token", default="", metavar="TOKEN", help="continue where a previous page stopped"
    )
    lister.add_argument("--all", action="store_true", help="follow the pages to the end")
    lister.set_defaults(handler=run_list)

    cancel = command(
        sub,
        "cancel",
        "cancel a job: stop its pods; it then reads CANCELLED",
        """\
  jobscheduler cancel job-7f3k2m9x1q
  jobscheduler cancel job-7f3k2m9x1q -n team-a || [ $? -eq 4 ]   # 4: it had finished already
""",
    )
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(handler=run_cancel)

    health = command(
        sub,
        "health",
        "check the server's health (grpc.health.v1): SERVING while it reaches Kubernetes",
        """\
  jobscheduler health
  until jobscheduler health >/dev/null 2>&1; do sleep 1; done
  jobscheduler health --tls --ca-cert ca.pem --server scheduler.example:443
""",
    )
    health.set_defaults(handler=run_health)
