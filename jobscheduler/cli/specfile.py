"""Reading a ScheduleSpec or a Template from a YAML or JSON file, as `-o yaml` printed it, so
that `get -o yaml > f; edit f; update --file f` is a read-modify-write from the shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import Message

from jobscheduler.cli.exits import EXIT_USAGE, ClientError

M = TypeVar("M", bound=Message)


def load_message(path: Path, message: M, *, wrapper: str = "") -> M:
    """The message in `path` (`-`: standard input); a document holding it under `wrapper` (a
    printed Schedule's `spec`) is unwrapped. Fields the service sets (a Template's version) may
    stay: requests ignore them."""
    try:
        text = Path(path).read_text(encoding="utf-8") if str(path) != "-" else _stdin()
        document: Any = yaml.safe_load(text)
    except OSError as e:
        raise ClientError(EXIT_USAGE, f"cannot read --file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ClientError(EXIT_USAGE, f"--file {path}: not YAML or JSON: {e}") from e
    if not isinstance(document, dict):
        raise ClientError(EXIT_USAGE, f"--file {path}: expected a mapping of fields")
    if wrapper and isinstance(document.get(wrapper), dict):
        document = document[wrapper]
    try:
        return ParseDict(document, message)
    except ParseError as e:
        raise ClientError(EXIT_USAGE, f"--file {path}: {e}") from e


def _stdin() -> str:
    return sys.stdin.read()
