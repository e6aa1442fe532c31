"""Kubernetes label selectors, parsed and matched in process, so ListJobs and WatchJobs can
filter the watch cache exactly as the API server would filter a list.

Grammar (as kubectl accepts it): comma-separated requirements, each one of `key`, `!key`,
`key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import check_qualified_key, shown

_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_BINARY = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=()]*)$")
_EXISTS = re.compile(r"^(?P<neg>!?)\s*(?P<key>[^\s!=()]+)$")

Labels = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Labels) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin: absent keys match, as in Kubernetes


def _split(selector: str) -> list[str]:
    """Splits on commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _values(field: str, raw: list[str]) -> frozenset[str]:
    for value in raw:
        if len(value) > 63 or not _VALUE.fullmatch(value):
            raise InvalidArgumentError(field, f"{shown(value)} is not a valid label value")
    return frozenset(raw)


def parse_selector(selector: str, *, field: str = "label_selector") -> tuple[Requirement, ...]:
    """The requirements of a selector; InvalidArgumentError naming `field` when malformed."""
    if not selector.strip():
        return ()
    requirements = []
    for part in _split(selector):
        if not part:
            raise InvalidArgumentError(field, f"{shown(selector)}: empty requirement")
        if m := _SET.fullmatch(part):
            values = [v.strip() for v in m["values"].split(",")]
            req = Requirement(m["key"], m["op"], _values(field, values))
        elif m := _BINARY.fullmatch(part):
            op = "notin" if m["op"] == "!=" else "in"
            req = Requirement(m["key"], op, _values(field, [m["value"]]))
        elif m := _EXISTS.fullmatch(part):
            req = Requirement(m["key"], "!exists" if m["neg"] else "exists")
        else:
            raise InvalidArgumentError(field, f"{shown(selector)}: cannot parse {shown(part)}")
        check_qualified_key(field, req.key)
        requirements.append(req)
    return tuple(requirements)


def compile_selector(selector: str, *, field: str = "label_selector") -> Callable[[Labels], bool]:
    requirements = parse_selector(selector, field=field)
    return lambda labels: all(r.matches(labels) for r in requirements)
