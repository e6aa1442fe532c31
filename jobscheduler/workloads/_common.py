"""What the timer, webhook and healthcheck workloads share: exit codes, reading and checking environment
variables, HTTP requests and status sets, retry pauses, one-JSON-object-per-line logs, SIGTERM/SIGINT handling
and the entry point's boilerplate. Standard library only, like the workloads themselves."""

from __future__ import annotations

import enum
import re
import signal

LOG_LEVELS = {"trace": 5, "debug": 10, "info": 20, "warn": 30, "error": 40}
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Caps the exponential backoff and a server's Retry-After by default, so no answer can park the pod for long.
DEFAULT_MAX_BACKOFF_SECONDS = 30.0

WHOLE_NUMBER = re.compile(r"[0-9]+")


def package_version() -> str:
    try:
        from jobscheduler import __version__
    except ImportError:  # run from a copy of the workloads package
        return "unknown"
    return __version__


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    BAD_CONFIGURATION = 2
    # 128 + SIGTERM: what the kubelet would have recorded had the signal's default action killed us.
    ABORTED = 143


class WorkloadError(Exception):
    """Root of the errors these workloads raise."""


class WorkloadConfigError(WorkloadError):
    """An environment variable is missing or holds a value the workload cannot use.

    The message starts with the variable's name; it quotes the value only where that cannot leak a secret.
    """

    def __init__(self, variable: str, problem: str) -> None:
        # "X is not set; ...", "X has no host", but "X='1.5' is invalid; ..."
        super().__init__(f"{variable}{'' if problem.startswith('=') else ' '}{problem}")
        self.variable = variable

    @classmethod
    def unset(cls, variable: str, *, expected: str) -> WorkloadConfigError:
        return cls(variable, f"is not set; expected {expected}")

    @classmethod
    def invalid(cls, variable: str, value: str, *, expected: str) -> WorkloadConfigError:
        return cls(variable, f"={value!r} is invalid; expected {expected}")
