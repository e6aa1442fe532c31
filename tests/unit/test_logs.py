"""Logging configuration: every documented LOG_LEVEL starts, and redaction holds at the lowest."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from jobscheduler.domain.config import LOG_LEVELS
from jobscheduler.obs.logs import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_every_documented_level_configures(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level, "json")
    log = structlog.get_logger("t")
    log.debug("debug line")
    log.error("error line")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [line["event"] for line in lines]
    assert "error line" in events
    assert ("debug line" in events) is (level in ("trace", "debug"))


def test_trace_redacts_and_keeps_library_loggers_at_warning(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("trace", "json")
    structlog.get_logger("t").debug("call", token="abc123", detail="Bearer abc123 refused", env={"K": "v"})
    out = capsys.readouterr().out
    assert "abc123" not in out
    assert '"env": "[redacted]"' in out
    # The kubernetes client logs response bodies (Secrets too) at debug: never let that through.
    assert logging.getLogger().getEffectiveLevel() >= logging.WARNING
