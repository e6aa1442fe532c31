"""The audit log: one JSON line per mutating RPC (who, what, which object, outcome), under the
logger name `jobscheduler.audit`, apart from the debug logs.

It is written whatever LOG_LEVEL is, to its own destination (AUDIT_LOG: stdout, stderr, a file,
or off), and carries only the fields it is given, redacted like every log line (never a token,
a secret_env value or another credential: the transport passes none).
"""

from __future__ import annotations

import sys
from typing import IO, Any

import structlog

from jobscheduler.obs.logs import redact

LOGGER_NAME = "jobscheduler.audit"


class AuditLog:
    """Writes audit records to one stream; `off` writes nothing."""

    def __init__(self, destination: str = "stdout") -> None:
        self.destination = destination
        stream: IO[str] | None
        if destination == "off":
            stream = None
        elif destination == "stdout":
            stream = sys.stdout
        elif destination == "stderr":
            stream = sys.stderr
        else:
            # Line-buffered: each record reaches the file whole, as soon as it is written.
            stream = open(destination, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives with the process
        self._logger: Any = (
            None
            if stream is None
            else structlog.wrap_logger(
                structlog.PrintLogger(stream),
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                    redact,
                    structlog.processors.JSONRenderer(),
                ],
                # Independent of LOG_LEVEL and of structlog's global configuration.
                wrapper_class=structlog.BoundLogger,
                logger_name=LOGGER_NAME,
            )
        )

    def record(self, **fields: Any) -> None:
        if self._logger is not None:
            self._logger.info("audit", logger=LOGGER_NAME, **{k: v for k, v in fields.items() if v != ""})
