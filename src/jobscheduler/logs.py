"""structlog, configured once: JSON lines in the cluster, a readable console locally.

Context (rpc, namespace, job_id) is bound through contextvars by the transport layer, so
every line an RPC logs carries it; values always travel as fields, never inside the event.
"""

from __future__ import annotations

import logging
import sys

import structlog

TRACE = 5
LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
# Values under these keys are never written out (tokens, credentials, caller env values).
REDACTED_KEYS = frozenset({"authorization", "token", "password", "secret", "env"})


def _redact(_logger: object, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for key in list(event):
        if key.lower() in REDACTED_KEYS:
            event[key] = "[redacted]"
    return event


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # The kubernetes client and grpc log through the standard library; keep them quiet but visible.
    logging.basicConfig(level=max(LEVELS[level], logging.WARNING), stream=sys.stderr)
