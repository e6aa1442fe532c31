"""Placement: which nodes a job's pods may run on (node selector, tolerations of node taints)
and how they rank against other pods (priority class), as a caller asks for them, checked as
the API server checks a pod spec and rendered into the Job's pod template.

This is how jobs reach GPU or dedicated nodes: those carry labels to select and taints that
keep every other pod away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import (
    check_label_value,
    check_qualified_key,
    is_dns1123_subdomain,
    shown,
)

OPERATORS = ("Equal", "Exists")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_NODE_SELECTOR = 64
MAX_TOLERATIONS = 64
MAX_PRIORITY_CLASS_NAME = 253


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod toleration, as Kubernetes spells it: `operator` "" is Equal, `effect` "" all effects."""

    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    priority_class_name: str = ""

    def is_empty(self) -> bool:
        return not (self.node_selector or self.tolerations or self.priority_class_name)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Placement:
        """The inverse of dataclasses.asdict (a schedule keeps its job as JSON)."""
        return cls(
            node_selector=dict(raw.get("node_selector") or {}),
            tolerations=tuple(Toleration(**t) for t in raw.get("tolerations") or ()),
            priority_class_name=str(raw.get("priority_class_name") or ""),
        )


def check_placement(placement: Placement) -> Placement:
    """The placement, checked as the API server checks a pod spec (errors name the request
    field: `tolerations[1].effect`), with each toleration's operator spelled out."""
    if len(placement.node_selector) > MAX_NODE_SELECTOR:
        raise InvalidArgumentError("node_selector", f"at most {MAX_NODE_SELECTOR} entries")
    for key, value in placement.node_selector.items():
        check_qualified_key("node_selector", key)
        check_label_value(f"node_selector[{key}]", value)
    if len(placement.tolerations) > MAX_TOLERATIONS:
        raise InvalidArgumentError("tolerations", f"at most {MAX_TOLERATIONS} entries")
    tolerations = tuple(
        _check_toleration(f"tolerations[{i}]", t) for i, t in enumerate(placement.tolerations)
    )
    name = placement.priority_class_name
    if name and (len(name) > MAX_PRIORITY_CLASS_NAME or not is_dns1123_subdomain(name)):
        raise InvalidArgumentError(
            "priority_class_name",
            f"{shown(name)} is not a PriorityClass name (a DNS subdomain: lower-case letters, digits, "
            "'-' and '.', at most 253 characters); `kubectl get priorityclasses` lists them",
        )
    return Placement(dict(placement.node_selector), tolerations, name)


def _check_toleration(where: str, t: Toleration) -> Toleration:
    operator = t.operator or "Equal"
    if operator not in OPERATORS:
        raise InvalidArgumentError(f"{where}.operator", f"{shown(t.operator)}: expected Equal or Exists")
    if t.key:
        check_qualified_key(f"{where}.key", t.key)
    elif operator != "Exists":
        raise InvalidArgumentError(
            f"{where}.operator", "must be Exists when key is empty (a toleration of every taint)"
        )
    if operator == "Exists" and t.value:
        raise InvalidArgumentError(f"{where}.value", "must be empty when operator is Exists")
    if operator == "Equal":
        check_label_value(f"{where}.value", t.value)
    if t.effect and t.effect not in EFFECTS:
        raise InvalidArgumentError(
            f"{where}.effect", f"{shown(t.effect)}: expected one of {', '.join(EFFECTS)}, or empty for all"
        )
    if t.toleration_seconds is not None and t.effect != "NoExecute":
        raise InvalidArgumentError(
            f"{where}.toleration_seconds", "only applies to the NoExecute effect (how long a pod stays)"
        )
    return Toleration(t.key, operator, t.value, t.effect, t.toleration_seconds)


def render_placement(placement: Placement) -> dict[str, Any]:
    """The pod spec fields of a checked placement (nothing for an empty one)."""
    spec: dict[str, Any] = {}
    if placement.node_selector:
        spec["nodeSelector"] = dict(sorted(placement.node_selector.items()))
    if placement.tolerations:
        spec["tolerations"] = [_render_toleration(t) for t in placement.tolerations]
    if placement.priority_class_name:
        spec["priorityClassName"] = placement.priority_class_name
    return spec


def _render_toleration(t: Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {"operator": t.operator or "Equal"}
    if t.key:
        out["key"] = t.key
    if t.value:
        out["value"] = t.value
    if t.effect:
        out["effect"] = t.effect
    if t.toleration_seconds is not None:
        out["tolerationSeconds"] = t.toleration_seconds
    return out


def placement_of(pod_spec: Mapping[str, Any]) -> Placement:
    """The placement a Job's pod template holds (what the status reports)."""
    selector = pod_spec.get("nodeSelector")
    tolerations: Sequence[Any] = pod_spec.get("tolerations") or ()
    return Placement(
        node_selector={str(k): str(v) for k, v in selector.items()} if isinstance(selector, Mapping) else {},
        tolerations=tuple(
            Toleration(
                key=str(t.get("key", "")),
                operator=str(t.get("operator", "")),
                value=str(t.get("value", "")),
                effect=str(t.get("effect", "")),
                toleration_seconds=t.get("tolerationSeconds")
                if isinstance(t.get("tolerationSeconds"), int)
                else None,
            )
            for t in tolerations
            if isinstance(t, Mapping)
        ),
        priority_class_name=str(pod_spec.get("priorityClassName") or ""),
    )
