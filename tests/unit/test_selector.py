"""Label selectors parsed and matched in process, as the API server's labels.Parse
(k8s.io/apimachinery/pkg/labels) would parse and match them for a list request."""

from __future__ import annotations

import pytest

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.selector import Requirement, compile_selector, parse_selector

ML = {"team": "ml"}
WEB = {"team": "web"}
NONE: dict[str, str] = {}
FULL = {"team": "ml", "tier": "gold", "example.com/team": "ml"}

MATCHES: list[tuple[str, dict[str, str], bool]] = [
    # empty selector: everything
    ("", NONE, True),
    ("", FULL, True),
    ("   ", FULL, True),
    # equality, both spellings
    ("team=ml", ML, True),
    ("team=ml", WEB, False),
    ("team=ml", NONE, False),
    ("team==ml", ML, True),
    ("team==ml", WEB, False),
    ("team==ml", NONE, False),
    ("team=ml", {"team": "ML"}, False),  # values are case-sensitive
    ("Team=ml", ML, False),  # and so are keys
    # inequality: an absent key matches, as in Kubernetes
    ("team!=ml", WEB, True),
    ("team!=ml", ML, False),
    ("team!=ml", NONE, True),
    # set membership
    ("tier in (gold,silver)", {"tier": "gold"}, True),
    ("tier in (gold,silver)", {"tier": "silver"}, True),
    ("tier in (gold,silver)", {"tier": "bronze"}, False),
    ("tier in (gold,silver)", NONE, False),
    ("tier in (gold)", {"tier": "gold"}, True),
    ("tier notin (gold,silver)", {"tier": "bronze"}, True),
    ("tier notin (gold,silver)", {"tier": "gold"}, False),
    ("tier notin (gold,silver)", NONE, True),  # absent key matches notin
    # existence
    ("gpu", {"gpu": ""}, True),
    ("gpu", {"gpu": "a100"}, True),
    ("gpu", NONE, False),
    ("!gpu", NONE, True),
    ("!gpu", {"gpu": ""}, False),
    ("!gpu", {"gpus": "1"}, True),
    # empty values: "key=" is key with an empty value; "()" is the set {""}
    ("team=", {"team": ""}, True),
    ("team=", ML, False),
    ("team=", NONE, False),
    ("team!=", NONE, True),
    ("team!=", {"team": ""}, False),
    ("tier in ()", {"tier": ""}, True),
    ("tier in ()", {"tier": "gold"}, False),
    ("tier in (gold,,silver)", {"tier": ""}, True),
    # prefixed keys are distinct from unprefixed ones
    ("example.com/team=ml", {"example.com/team": "ml"}, True),
    ("example.com/team=ml", ML, False),
    ("!example.com/team", ML, True),
    ("example.com/team", {"example.com/team": ""}, True),
    ("example.com/team in (ml,web)", {"example.com/team": "web"}, True),
    # combinations: every requirement must hold
    ("team=ml,tier in (gold,silver),!gpu", FULL, True),
    ("team=ml,tier in (gold,silver),!gpu", {**FULL, "gpu": "1"}, False),
    ("team=ml,tier notin (gold)", FULL, False),
    ("team=ml,team=web", ML, False),
    ("team=ml,team", ML, True),
    # whitespace around tokens
    (" team = ml , tier in ( gold , silver ) , ! gpu ", FULL, True),
    ("team\t==\tml", ML, True),
    ("tier   notin   (gold)", {"tier": "silver"}, True),
    # "in" and "notin" are identifiers outside operator position (labels.Parse's lookahead)
    ("in=notin", {"in": "notin"}, True),
    ("tier in (in,notin)", {"tier": "notin"}, True),
    # longest legal key and value
    ("k" * 63 + "=" + "v" * 63, {"k" * 63: "v" * 63}, True),
    ("a.b-c_d.E=X-y_z.0", {"a.b-c_d.E": "X-y_z.0"}, True),
]


@pytest.mark.parametrize(("selector", "labels", "expected"), MATCHES)
def test_selector_matches_as_kubernetes_does(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert compile_selector(selector)(labels) is expected


PARSED: list[tuple[str, tuple[Requirement, ...]]] = [
    ("", ()),
    ("a=1", (Requirement("a", "in", frozenset({"1"})),)),
    ("a==1", (Requirement("a", "in", frozenset({"1"})),)),
    ("a!=1", (Requirement("a", "notin", frozenset({"1"})),)),
    ("a in (x, y)", (Requirement("a", "in", frozenset({"x", "y"})),)),
    ("a notin (x)", (Requirement("a", "notin", frozenset({"x"})),)),
    ("a", (Requirement("a", "exists"),)),
    ("!a", (Requirement("a", "!exists"),)),
    (
        "x in (foo,,baz),y,z notin ()",  # the example in labels.Parse's documentation
        (
            Requirement("x", "in", frozenset({"foo", "", "baz"})),
            Requirement("y", "exists"),
            Requirement("z", "notin", frozenset({""})),
        ),
    ),
]


@pytest.mark.parametrize(("selector", "requirements"), PARSED)
def test_parse_selector_returns_requirements_in_order(
    selector: str, requirements: tuple[Requirement, ...]
) -> None:
    assert parse_selector(selector) == requirements


MALFORMED: list[tuple[str, str]] = [
    ("tier in (gold,silver", "unbalanced: no closing parenthesis"),
    ("tier in gold,silver)", "unbalanced: no opening parenthesis"),
    ("tier in ((gold))", "nested parentheses"),
    ("tier in (gold))", "extra closing parenthesis"),
    ("tier in (gold)x", "text after the value set"),
    ("tier in gold", "in without parentheses"),
    ("tier notin gold", "notin without parentheses"),
    ("team=(ml)", "parentheses after ="),
    ("a=1,,b=2", "empty requirement"),
    ("a=1,", "trailing comma"),
    (",a=1", "leading comma"),
    (",", "only a comma"),
    ("team=ml tier=gold", "missing comma"),
    ("team ml", "missing operator"),
    ("=ml", "missing key"),
    ("!", "negation without a key"),
    ("!team=ml", "negation with a value"),
    ("team=ml=web", "two operators"),
    ("team===ml", "unknown operator"),
    ("in (a)", "no key before in"),
    ("-team=ml", "key starts with a dash"),
    ("team-=ml", "key ends with a dash"),
    ("te am=ml", "space in key"),
    ("Example.com/team=ml", "upper-case key prefix"),
    ("example_com/team=ml", "underscore in key prefix"),
    ("/team=ml", "empty key prefix"),
    ("example.com/=ml", "empty key name"),
    ("a/b/c=1", "two slashes in key"),
    ("k" * 64 + "=1", "key name of 64 characters"),
    ("example.com/" + "k" * 64, "prefixed key name of 64 characters"),
    ("team=" + "v" * 64, "value of 64 characters"),
    ("tier in (gold," + "v" * 64 + ")", "set value of 64 characters"),
    ("team=-ml", "value starts with a dash"),
    ("team=ml_", "value ends with an underscore"),
    ("team=m/l", "slash in value"),
    ("team=m:l", "colon in value"),
    ("team=ml!", "bang in value"),
    ("team=m l", "space in value"),
    ("tier in (gold,sil ver)", "space in set value"),
    ("team=mé", "non-ASCII value"),
]


@pytest.mark.parametrize(("selector", "why"), MALFORMED)
def test_malformed_selector_raises_naming_the_field(selector: str, why: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        parse_selector(selector)
    assert raised.value.field == "label_selector", why


@pytest.mark.parametrize("field", ["filter.label_selector", "selector"])
@pytest.mark.parametrize("selector", ["tier in (gold", "a=1,,b=2", "team=" + "v" * 64, "-team"])
def test_error_names_the_field_given(field: str, selector: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        parse_selector(selector, field=field)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_compile_selector_rejects_at_compile_time() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        compile_selector("tier in gold", field="filter.label_selector")
    assert raised.value.field == "filter.label_selector"


@pytest.mark.parametrize("selector", ["tier in(gold)", "tier notin(gold)"])
def test_set_operators_need_no_space_before_the_parenthesis(selector: str) -> None:
    # The API server's lexer ends a token at '(' as it does at a space.
    assert len(parse_selector(selector)) == 1
