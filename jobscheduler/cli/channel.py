"""How a client command reaches the server: the flags every client command shares (server
address, TLS, token, namespace, output, deadline), the gRPC channel they open, and what a
failed call is blamed on (the one-line hint under an error).

`run` is where every client command starts: it opens the channel, runs the command's handler
and turns a failed RPC into its exit status.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc

from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.cli.exits import EXIT_INTERRUPTED, EXIT_USAGE, ClientError, ExitStatus, exit_code_for
from jobscheduler.cli.flags import positive_seconds

DEFAULT_SERVER = "localhost:50054"
SERVER_ENV = "JOBSCHEDULER_SERVER"
TOKEN_ENV = "JOBSCHEDULER_TOKEN"  # noqa: S105 - the variable's name, not a token
DEFAULT_TIMEOUT_SECONDS = 10.0
OUTPUTS = ("table", "json", "yaml")
# gRPC target schemes whose address is grpc's to check (https://grpc.github.io/grpc/core/md_doc_naming.html).
_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")

_S = grpc.StatusCode


def check_server_address(address: str, *, source: str) -> None:
    """Refuses an address grpc could only fail to resolve (`localhost:notaport`), before any
    call, naming where it came from; `source` is the flag or variable it was given by."""
    if address.startswith(_SCHEMES):
        return
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad_address(address, source, "an IPv6 address goes in brackets: [::1]:50054")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad_address(address, source, f"{host!r} is not an IPv6 address") from None
        port = rest[1:] if rest else None
    elif address.count(":") > 1:
        raise _bad_address(address, source, "an IPv6 address goes in brackets: [::1]:50054")
    else:
        host, colon, port_text = address.partition(":")
        port = port_text if colon else None
        if not host.strip() or any(c.isspace() for c in host):
            raise _bad_address(address, source, "expected HOST:PORT, e.g. localhost:50054")
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _bad_address(address, source, f"the port {port!r} is not a number from 1 to 65535")


def _bad_address(address: str, source: str, why: str) -> ClientError:
    return ClientError(
        EXIT_USAGE,
        f"{source} {address}: {why}",
        hint=f"point --server (or ${SERVER_ENV}) at the jobscheduler server, e.g. {DEFAULT_SERVER}",
    )


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
        if given("server"):
            server, source = given("server"), "--server"
        elif environ.get(SERVER_ENV):
            server, source = environ[SERVER_ENV], f"${SERVER_ENV}"
        else:
            server, source = DEFAULT_SERVER, "the default server"
        check_server_address(server, source=source)
        return cls(
            server=server,
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


# -- what a failed call is blamed on ---------------------------------------------------------------

# The object a command group's NOT_FOUND is about, and the command that lists them.
_LISTS = {"schedules": ("schedule", "schedules list"), "templates": ("template", "templates list")}


def _hint(code: grpc.StatusCode, details: str, options: ClientOptions, args: argparse.Namespace) -> str:
    job = f" {args.job_id}" if getattr(args, "job_id", "") else ""
    command = getattr(args, "command_name", "")
    group = command.split(" ", 1)[0]
    lowered = details.lower()
    if code is _S.UNAVAILABLE:
        if "certificate" in lowered or "handshake" in lowered or "ssl" in lowered:
            return (
                f"the TLS handshake with {options.server} failed: trust its CA with --ca-cert, "
                "and pass --server-name if its certificate names another host"
            )
        if "errors resolving" in lowered or "lookup" in lowered:
            return (
                f"the client cannot resolve the address {options.server}: check the host name in "
                f"--server (or ${SERVER_ENV})"
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
        return f"see `jobscheduler {command} --help`"
    if code is _S.NOT_FOUND:
        if group in _LISTS:
            what, lister = _LISTS[group]
            return f"`jobscheduler {lister}{options.ns_flag()}` shows the {what}s there are"
        if group == "job-types":
            return "`jobscheduler job-types` shows the job types the server knows"
        return f"`jobscheduler list{options.ns_flag()}` shows the jobs there are"
    if code is _S.ALREADY_EXISTS:
        if group in _LISTS:
            what = _LISTS[group][0]
            return f"a {what} of that name exists: `jobscheduler {group} update` replaces it"
        return "repeat the first request exactly, or use a new --request-id"
    if code is _S.FAILED_PRECONDITION:
        if group == "templates":
            name = getattr(args, "resource_name", "")
            return f"`jobscheduler templates get {name}{options.ns_flag()}` shows the latest version"
        if group == "schedules" or job == "":
            return ""
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


# -- running a command -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What a command runs with: the options, an open channel, and where to print."""

    options: ClientOptions
    channel: grpc.Channel
    stub: pb_grpc.JobSchedulerStub
    out: TextIO
    err: TextIO


Handler = Callable[[Context, argparse.Namespace], ExitStatus]


def run(args: argparse.Namespace) -> int:
    """Runs the client command `args` was parsed for; returns the process exit code."""
    handler: Handler = args.handler
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
        return e.exit_status.code
    except KeyboardInterrupt:
        print("jobscheduler: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED.code
