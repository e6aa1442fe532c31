"""Flag values of the client commands (KEY=VALUE pairs, job states, bounded integers, seconds,
JSON) checked as argparse parses them, so a bad value is a usage error naming its flag, and the
help layout every command shares."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import Message

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.exits import exit_codes_help

M = TypeVar("M", bound=Message)
STATE_NAMES = tuple(v.name.removeprefix("JOB_STATE_") for v in pb.JobState.DESCRIPTOR.values if v.number)


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


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline, or `@FILE` for one read from a file (`@-`: standard input)."""
    source = text
    if text.startswith("@"):
        path = text[1:]
        try:
            if path == "-":
                source = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as f:
                    source = f.read()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot read {path}: {e.strerror}") from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def choice_of(values: Sequence[str]) -> Callable[[str], str]:
    """Any case, with `-` or `_`: the canonical lower-case spelling from `values`."""

    def parse(text: str) -> str:
        canonical = text.strip().lower().replace("_", "-")
        if canonical not in values:
            raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(values)}")
        return canonical

    parse.__name__ = "choice"
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def epilog(examples: str) -> str:
    return f"examples:\n{examples.rstrip()}\n\n{exit_codes_help()}"


def add_command(
    parent: Any,
    name: str,
    help_text: str,
    examples: str,
    *,
    common: argparse.ArgumentParser,
    within: str = "",
) -> argparse.ArgumentParser:
    """A client command's parser: its help, examples, the exit codes and the client options;
    `command_name` ("schedules create") is what its hints and help references name."""
    parser: argparse.ArgumentParser = parent.add_parser(
        name,
        help=help_text,
        description=help_text[:1].upper() + help_text[1:] + ".",
        epilog=epilog(examples),
        formatter_class=HelpFormatter,
        parents=[common],
    )
    parser.set_defaults(command_name=f"{within} {name}".strip())
    return parser


def add_named_verb(
    verbs: Any,
    name: str,
    help_text: str,
    examples: str,
    *,
    common: argparse.ArgumentParser,
    within: str,
    what: str,
) -> argparse.ArgumentParser:
    """A verb of a command group that names one resource (`schedules get NAME`)."""
    parser = add_command(verbs, name, help_text, examples, common=common, within=within)
    parser.add_argument("resource_name", metavar="NAME", help=f"the {what}'s name")
    return parser


def add_group(
    sub: Any, name: str, help_text: str, examples: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A command group (`schedules`, `templates`): a parser whose subcommands are the verbs."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text[:1].upper() + help_text[1:] + "; each verb is its own command.",
        formatter_class=HelpFormatter,
        epilog=epilog(examples),
    )
    return parser.add_subparsers(dest=f"{name}_verb", required=True, metavar="VERB")


def json_message(text: str, message: M) -> M:
    """A protobuf message from a JSON object (inline or @FILE), its fields named as in the .proto."""
    try:
        return ParseDict(json_object(text), message)
    except ParseError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
