"""Placement (node selector, tolerations, priority class): checked as the API server checks a pod
spec, errors naming the request field, rendered into the pod template and read back from it."""

from __future__ import annotations

import pytest

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.placement import (
    Placement,
    Toleration,
    check_placement,
    placement_of,
    render_placement,
)


def test_an_empty_placement_renders_nothing() -> None:
    assert check_placement(Placement()).is_empty()
    assert render_placement(check_placement(Placement())) == {}


def test_a_full_placement_renders_the_pod_spec_fields_and_reads_back_the_same() -> None:
    placement = check_placement(
        Placement(
            node_selector={"accelerator": "nvidia-a100", "kubernetes.io/arch": "amd64"},
            tolerations=(
                Toleration(key="gpu", value="true", effect="NoSchedule"),
                Toleration(key="dedicated", operator="Exists"),
                Toleration(operator="Exists", effect="NoExecute", toleration_seconds=30),
            ),
            priority_class_name="batch-high",
        )
    )
    spec = render_placement(placement)
    assert spec == {
        "nodeSelector": {"accelerator": "nvidia-a100", "kubernetes.io/arch": "amd64"},
        "tolerations": [
            {"operator": "Equal", "key": "gpu", "value": "true", "effect": "NoSchedule"},
            {"operator": "Exists", "key": "dedicated"},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        ],
        "priorityClassName": "batch-high",
    }
    assert placement_of(spec) == placement


@pytest.mark.parametrize(
    ("placement", "field", "words"),
    [
        (Placement(node_selector={"bad key!": "x"}), "node_selector", "key 'bad key!'"),
        (Placement(node_selector={"zone": "not ok"}), "node_selector[zone]", "value 'not ok'"),
        (Placement(node_selector={"zone": "x" * 64}), "node_selector[zone]", "at most 63"),
        (
            Placement(tolerations=(Toleration(key="gpu", operator="In"),)),
            "tolerations[0].operator",
            "Equal or",
        ),
        (Placement(tolerations=(Toleration(value="x"),)), "tolerations[0].operator", "must be Exists"),
        (
            Placement(tolerations=(Toleration(), Toleration(key="a", operator="Exists", value="v"))),
            "tolerations[0].operator",
            "must be Exists",
        ),
        (
            Placement(tolerations=(Toleration(key="a", operator="Exists", value="v"),)),
            "tolerations[0].value",
            "must be empty",
        ),
        (Placement(tolerations=(Toleration(key="a", effect="NoRun"),)), "tolerations[0].effect", "NoRun"),
        (
            Placement(tolerations=(Toleration(key="a", effect="NoSchedule", toleration_seconds=5),)),
            "tolerations[0].toleration_seconds",
            "NoExecute",
        ),
        (Placement(tolerations=(Toleration(key="a/b/c"),)), "tolerations[0].key", "a/b/c"),
        (
            Placement(tolerations=(Toleration(key="k", value="bad value"),)),
            "tolerations[0].value",
            "bad value",
        ),
        (Placement(tolerations=tuple(Toleration(key=f"k{i}") for i in range(65))), "tolerations", "64"),
        (Placement(priority_class_name="High"), "priority_class_name", "'High'"),
        (Placement(priority_class_name="a" * 254), "priority_class_name", "PriorityClass name"),
    ],
)
def test_bad_placements_are_refused_naming_the_field(placement: Placement, field: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_placement(placement)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_reading_a_pod_spec_tolerates_junk() -> None:
    junk = {"nodeSelector": "x", "tolerations": ["x", {"key": "a", "tolerationSeconds": "soon"}]}
    assert placement_of(junk) == Placement(tolerations=(Toleration(key="a"),))
