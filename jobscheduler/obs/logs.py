"""structlog, configured once: JSON lines in the cluster, a readable console locally.

Context (rpc, namespace, job_id) is bound through contextvars by the transport layer, so
every line an RPC logs carries it; values always travel as fields, never inside the event.
"""

from __future__ import annotations

import logging
import re
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
# Values under these keys are never written out (tokens, credentials, gRPC metadata, caller
# env values), nor under keys ending in one of them after an underscore (`auth_token`).
REDACTED_KEYS = frozenset(
    {
        "authorization",
        "bearer",
        "token",
        "tokens",
        "token_sha256",
        "password",
        "secret",
        "credentials",
        "private_key",
        "metadata",
        "invocation_metadata",
        "env",
    }
)
# Whatever the key: an `authorization: Bearer <token>` value inside any text (an error message,
# a traceback). Case-sensitive, so prose about "bearer tokens" is left alone.
BEARER = re.compile(r"\bBearer\s+[^\s\"',;\]\)]+")


def _redacted_key(key: str) -> bool:
    key = key.lower()
    return key in REDACTED_KEYS or any(key.endswith("_" + k) for k in REDACTED_KEYS)


def redact(_logger: object, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for key, value in list(event.items()):
        if _redacted_key(key):
            event[key] = "[redacted]"
        elif isinstance(value, str) and BEARER.search(value):
            event[key] = BEARER.sub("Bearer [redacted]", value)
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
            # After format_exc_info, so a traceback's text is redacted too.
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        # structlog filters on the standard levels only: trace shows everything debug does.
        wrapper_class=structlog.make_filtering_bound_logger(max(LEVELS[level], logging.DEBUG)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # The kubernetes client and grpc log through the standard library; keep them quiet but visible.
    # Never lower: the kubernetes client logs whole response bodies (Secrets included) at debug.
    logging.basicConfig(level=max(LEVELS[level], logging.WARNING), stream=sys.stderr)
