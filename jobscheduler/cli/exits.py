"""The exit codes of the client commands: one table, EXIT_CODES, from which the help text,
docs/cli.md and the mapping from a failed RPC's gRPC status are all derived.

Every outcome a script may branch on has one exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

import grpc


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """One exit status of a client command, and the gRPC status codes that end in it."""

    code: int
    meaning: str
    grpc_codes: frozenset[grpc.StatusCode] = frozenset()


_S = grpc.StatusCode
EXIT_OK = ExitStatus(0, "success; with --wait: the job SUCCEEDED")
EXIT_ERROR = ExitStatus(1, "any other error, INTERNAL and UNKNOWN included")
EXIT_USAGE = ExitStatus(
    2, "usage error (bad flags), or INVALID_ARGUMENT: nothing was created", frozenset({_S.INVALID_ARGUMENT})
)
EXIT_NOT_FOUND = ExitStatus(3, "NOT_FOUND: no such job", frozenset({_S.NOT_FOUND}))
EXIT_CONFLICT = ExitStatus(
    4,
    "FAILED_PRECONDITION (cancel of a finished job) or ALREADY_EXISTS (--request-id reused)",
    frozenset({_S.FAILED_PRECONDITION, _S.ALREADY_EXISTS}),
)
EXIT_UNAVAILABLE = ExitStatus(
    5,
    "UNAVAILABLE or DEADLINE_EXCEEDED: server or Kubernetes unreachable, or --wait-timeout passed",
    frozenset({_S.UNAVAILABLE, _S.DEADLINE_EXCEEDED}),
)
EXIT_JOB_FAILED = ExitStatus(6, "--wait: the job ended FAILED or CANCELLED")
EXIT_NOT_SERVING = ExitStatus(7, "health: the server answers but is not SERVING")
EXIT_DEGRADED = ExitStatus(8, "health --details: SERVING, but a condition of the service is not ok")
EXIT_INTERRUPTED = ExitStatus(130, "interrupted (Ctrl-C); a job already scheduled keeps running")
EXIT_CODES = (
    EXIT_OK,
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_NOT_FOUND,
    EXIT_CONFLICT,
    EXIT_UNAVAILABLE,
    EXIT_JOB_FAILED,
    EXIT_NOT_SERVING,
    EXIT_DEGRADED,
    EXIT_INTERRUPTED,
)


def exit_code_for(status: grpc.StatusCode) -> ExitStatus:
    """The exit status a failed RPC ends the command with."""
    for exit_status in EXIT_CODES:
        if status in exit_status.grpc_codes:
            return exit_status
    return EXIT_ERROR


def exit_codes_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {e.code:<3}  {e.meaning}" for e in EXIT_CODES)


class ClientError(Exception):
    """A command failed: printed as `jobscheduler: <STATUS>: <message>` and a hint, then exits.

    `status` is the gRPC status name (NOT_FOUND, ...) when there is one."""

    def __init__(self, exit_status: ExitStatus, message: str, *, status: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.status = status
        self.message = message
        self.hint = hint

    def report(self, out: TextIO) -> None:
        print(f"jobscheduler: {self.status + ': ' if self.status else ''}{self.message}", file=out)
        if self.hint:
            print(f"  hint: {self.hint}", file=out)
