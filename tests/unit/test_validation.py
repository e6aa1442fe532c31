"""Kubernetes syntax rules checked before anything reaches the API server: quantities, DNS names,
label and annotation keys and values, and environment variable names."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.validation import (
    MAX_ANNOTATIONS_BYTES,
    MAX_LABELS_BYTES,
    check_annotations,
    check_dns_label,
    check_env,
    check_image,
    check_labels,
    image_reference_problem,
    is_dns1123_label,
    is_dns1123_subdomain,
    parse_quantity,
)


def rejected_field(check: Callable[[], None]) -> str | None:
    """The field of the InvalidArgumentError check raises, or None when it accepts."""
    try:
        check()
    except InvalidArgumentError as e:
        return e.field
    return None


# --- parse_quantity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        pytest.param("100m", Decimal("0.1"), id="milli"),
        pytest.param("0.5", Decimal("0.5"), id="decimal-fraction"),
        pytest.param(".5", Decimal("0.5"), id="leading-dot"),
        pytest.param("1.", Decimal(1), id="trailing-dot"),
        pytest.param("1.5", Decimal("1.5"), id="plain-decimal"),
        pytest.param("2", Decimal(2), id="plain-integer"),
        pytest.param("64Mi", Decimal(64 * 2**20), id="mebi"),
        pytest.param("1Ki", Decimal(1024), id="kibi"),
        pytest.param("1Gi", Decimal(2**30), id="gibi"),
        pytest.param("1Ei", Decimal(2**60), id="exbi"),
        pytest.param("2k", Decimal(2000), id="kilo-lower-case"),
        pytest.param("3M", Decimal(3_000_000), id="mega"),
        pytest.param("1G", Decimal(10**9), id="giga"),
        pytest.param("5n", Decimal("5e-9"), id="nano"),
        pytest.param("3u", Decimal("3e-6"), id="micro"),
        pytest.param("1e3", Decimal(1000), id="exponent"),
        pytest.param("1E3", Decimal(1000), id="exponent-upper-case"),
        pytest.param("1e-3", Decimal("0.001"), id="negative-exponent"),
        pytest.param("+1", Decimal(1), id="explicit-plus"),
        pytest.param("-1", Decimal(-1), id="negative-is-syntax-ok-callers-check-sign"),
        # Regression: "E" alone is exa, as in Kubernetes, not an exponent without digits.
        pytest.param("1E", Decimal(10**18), id="exa-alone"),
        pytest.param("2.5E", Decimal("2.5e18"), id="exa-fraction"),
    ],
)
def test_parse_quantity_value(quantity: str, expected: Decimal) -> None:
    assert parse_quantity(quantity) == expected


@pytest.mark.parametrize(
    "quantity",
    [
        pytest.param("100x", id="unknown-suffix"),
        pytest.param("", id="empty"),
        pytest.param("Mi", id="suffix-without-number"),
        pytest.param("1.2.3", id="two-dots"),
        pytest.param("--1", id="double-sign"),
        pytest.param("1K", id="upper-case-K-is-not-kilo"),
        pytest.param("1ki", id="lower-case-binary-suffix"),
        pytest.param("1mi", id="lower-case-mebi"),
        pytest.param("1e", id="exponent-without-digits"),
        pytest.param("0x10", id="hexadecimal"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1 Mi", id="space-before-suffix"),
        pytest.param("1MiB", id="trailing-B"),
    ],
)
def test_parse_quantity_rejects_malformed(quantity: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(quantity)


# --- DNS-1123 names ---------------------------------------------------------------------------

_SUBDOMAIN_253 = ".".join(["a" * 63] * 3) + "." + "b" * 61


@pytest.mark.parametrize(
    ("value", "label", "subdomain"),
    [
        pytest.param("a", True, True, id="one-char"),
        pytest.param("job-1", True, True, id="letters-digits-dash"),
        pytest.param("0abc", True, True, id="leading-digit"),
        pytest.param("a--b", True, True, id="double-dash-inside"),
        pytest.param("a" * 63, True, True, id="63-chars"),
        pytest.param("a" * 64, False, True, id="64-chars-label-too-long"),
        pytest.param("-abc", False, False, id="leading-dash"),
        pytest.param("abc-", False, False, id="trailing-dash"),
        pytest.param("Abc", False, False, id="upper-case"),
        pytest.param("a_b", False, False, id="underscore"),
        pytest.param("a b", False, False, id="space"),
        pytest.param("", False, False, id="empty"),
        pytest.param("a.b", False, True, id="dot-only-in-subdomain"),
        pytest.param("a..b", False, False, id="empty-subdomain-part"),
        pytest.param(".a", False, False, id="leading-dot"),
        pytest.param("a.", False, False, id="trailing-dot"),
        pytest.param("a.-b", False, False, id="subdomain-part-leading-dash"),
        pytest.param(_SUBDOMAIN_253, False, True, id="subdomain-253-chars"),
        pytest.param(_SUBDOMAIN_253 + "b", False, False, id="subdomain-254-chars"),
    ],
)
def test_dns1123_names(value: str, label: bool, subdomain: bool) -> None:
    assert (is_dns1123_label(value), is_dns1123_subdomain(value)) == (label, subdomain)


def test_check_dns_label_names_the_field() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_dns_label("namespace", "Team_A", what="namespace name")
    assert caught.value.field == "namespace"
    assert "Team_A" in caught.value.detail


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({}, id="none"),
        pytest.param({"team": "payments"}, id="plain-key"),
        pytest.param({"example.com/team": "a"}, id="prefixed-key"),
        pytest.param({"sim.jobscheduler.io/duration": "5"}, id="subdomain-of-reserved-prefix-is-allowed"),
        pytest.param({"app.kubernetes.io/name": "x"}, id="other-app-kubernetes-io-key"),
        pytest.param({"example.com/job-name": "x"}, id="job-name-under-own-prefix"),
        pytest.param({"Team.Name_1-x": "v"}, id="name-with-upper-dot-underscore-dash"),
        pytest.param({"k" * 63: "v"}, id="63-char-name"),
        pytest.param({"team": "v" * 63}, id="63-char-value"),
        pytest.param({"team": ""}, id="empty-value"),
        pytest.param({"team": "A.b_c-9"}, id="value-with-dot-underscore-dash"),
    ],
)
def test_check_labels_accepts(labels: dict[str, str]) -> None:
    assert rejected_field(lambda: check_labels("labels", labels)) is None


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        pytest.param({"Bad_Prefix/x": "v"}, "labels", id="prefix-not-dns-subdomain"),
        pytest.param({"EXAMPLE.COM/x": "v"}, "labels", id="prefix-upper-case"),
        pytest.param({"/x": "v"}, "labels", id="empty-prefix"),
        pytest.param({"a/b/c": "v"}, "labels", id="two-slashes"),
        pytest.param({"example.com/": "v"}, "labels", id="empty-name-after-prefix"),
        pytest.param({"": "v"}, "labels", id="empty-key"),
        pytest.param({"k" * 64: "v"}, "labels", id="64-char-name"),
        pytest.param({"_team": "v"}, "labels", id="name-leading-underscore"),
        pytest.param({"team-": "v"}, "labels", id="name-trailing-dash"),
        pytest.param({"te am": "v"}, "labels", id="name-with-space"),
        pytest.param({"team": "has space"}, "labels[team]", id="value-with-space"),
        pytest.param({"team": "-a"}, "labels[team]", id="value-leading-dash"),
        pytest.param({"team": "a/b"}, "labels[team]", id="value-with-slash"),
        pytest.param({"team": "v" * 64}, "labels[team]", id="64-char-value"),
        pytest.param({"jobscheduler.io/x": "v"}, "labels", id="reserved-jobscheduler-io-prefix"),
        pytest.param({"jobscheduler.io/name": "v"}, "labels", id="reserved-name-label"),
        pytest.param({"app.kubernetes.io/managed-by": "v"}, "labels", id="reserved-managed-by"),
        pytest.param({"batch.kubernetes.io/job-name": "v"}, "labels", id="reserved-batch-job-name"),
        pytest.param(
            {"batch.kubernetes.io/controller-uid": "v"}, "labels", id="reserved-batch-controller-uid"
        ),
        pytest.param({"job-name": "v"}, "labels", id="reserved-legacy-job-name"),
        pytest.param({"controller-uid": "v"}, "labels", id="reserved-legacy-controller-uid"),
        pytest.param({"team": "ok", "job-name": "v"}, "labels", id="one-bad-among-good"),
    ],
)
def test_check_labels_rejects_with_field(labels: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_labels("labels", labels)
    assert caught.value.field == field


# --- annotations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({"note": "any text, spaces / slashes: fine"}, id="free-text-value"),
        pytest.param({"example.com/owner": "a"}, id="prefixed-key"),
        pytest.param({"k": "x" * (MAX_ANNOTATIONS_BYTES - 1)}, id="exactly-at-size-limit"),
        pytest.param({"a": "x" * 1000, "b": "y" * (MAX_ANNOTATIONS_BYTES - 1002)}, id="sum-exactly-at-limit"),
    ],
)
def test_check_annotations_accepts(annotations: dict[str, str]) -> None:
    assert rejected_field(lambda: check_annotations("annotations", annotations)) is None


@pytest.mark.parametrize(
    "annotations",
    [
        pytest.param({"k": "x" * MAX_ANNOTATIONS_BYTES}, id="one-byte-over-limit"),
        pytest.param({"a": "x" * 1000, "b": "y" * (MAX_ANNOTATIONS_BYTES - 1001)}, id="sum-one-byte-over"),
        # 65537 characters, but "é" is two bytes in UTF-8: the limit is on bytes.
        pytest.param({"k": "é" * (MAX_ANNOTATIONS_BYTES // 2)}, id="multibyte-counted-in-bytes"),
        pytest.param({"Bad_Prefix/x": "v"}, id="bad-key"),
        pytest.param({"jobscheduler.io/request-id": "v"}, id="reserved-prefix"),
        pytest.param({"app.kubernetes.io/managed-by": "v"}, id="reserved-managed-by"),
        pytest.param({"job-name": "v"}, id="reserved-job-name"),
    ],
)
def test_check_annotations_rejects(annotations: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_annotations("annotations", annotations)
    assert caught.value.field == "annotations"


# --- environment variables --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("FOO", id="upper"),
        pytest.param("foo_bar", id="lower-with-underscore"),
        pytest.param("_X", id="leading-underscore"),
        pytest.param("A1", id="digit-after-first"),
    ],
)
def test_check_env_accepts_c_identifier(name: str) -> None:
    assert (
        rejected_field(lambda: check_env("env", {name: "value"}, reserved=frozenset({"TIMER_NAME"}))) is None
    )


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        pytest.param("1A", "not a valid variable name", id="leading-digit"),
        pytest.param("FOO-BAR", "not a valid variable name", id="dash"),
        pytest.param("FOO.BAR", "not a valid variable name", id="dot"),
        pytest.param("FOO BAR", "not a valid variable name", id="space"),
        pytest.param("", "not a valid variable name", id="empty"),
        pytest.param("Ä", "not a valid variable name", id="non-ascii-letter"),
        pytest.param("TIMER_NAME", "cannot be overridden", id="reserved"),
    ],
)
def test_check_env_rejects(name: str, detail: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_env("env", {name: "value"}, reserved=frozenset({"TIMER_NAME"}))
    assert caught.value.field == "env"
    assert detail in caught.value.detail


def test_check_env_reserved_names_are_only_the_given_ones() -> None:
    assert rejected_field(lambda: check_env("env", {"TIMER_NAME": "x"})) is None


# --- trailing newlines and non-ASCII digits (regressions) ---------------------------------------


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(lambda: is_dns1123_label("abc\n"), id="dns-label"),
        pytest.param(lambda: is_dns1123_subdomain("a.b\n"), id="dns-subdomain"),
    ],
)
def test_a_trailing_newline_is_not_a_valid_name(check: Any) -> None:
    assert check() is False


@pytest.mark.parametrize(
    ("fn", "arg"),
    [
        pytest.param(check_labels, {"team": "a\n"}, id="label-value"),
        pytest.param(check_labels, {"team\n": "a"}, id="label-key"),
        pytest.param(check_annotations, {"k\n": "v"}, id="annotation-key"),
        pytest.param(check_env, {"FOO\n": "x"}, id="env-name"),
    ],
)
def test_a_trailing_newline_in_a_key_or_value_is_refused(fn: Any, arg: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError):
        fn("f", arg)


@pytest.mark.parametrize(
    "value", ["1\n", "\u0661\u0660\u0660m", "\uff11"], ids=["newline", "arabic", "fullwidth"]
)
def test_quantities_are_ascii_digits_only(value: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(value)


# --- found by the gRPC fuzz test (tests/integration/test_fuzz.py): regressions ------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1e1000000", id="exponent-past-decimal-range"),
        pytest.param("1e99999999", id="huge-exponent"),
        pytest.param("1e" + "9" * 5000, id="exponent-of-5000-digits"),
        pytest.param("9" * 1_100_000, id="million-digit-number"),
        pytest.param("9" * 1_100_000 + "Ki", id="million-digit-number-binary-suffix"),
    ],
)
def test_parse_quantity_out_of_range_is_a_value_error(value: str) -> None:
    # Was decimal.Overflow (or int()'s digit limit) escaping: INTERNAL instead of INVALID_ARGUMENT.
    with pytest.raises(ValueError, match="out of range"):
        parse_quantity(value)


def test_labels_are_capped_in_total() -> None:
    def labels(n: int) -> dict[str, str]:
        return {f"{i:05d}.example.com/{'n' * 40}": "v" * 63 for i in range(n)}

    fits = MAX_LABELS_BYTES // sum(len(k) + len(v) for k, v in labels(1).items())
    assert rejected_field(lambda: check_labels("labels", labels(fits))) is None
    assert rejected_field(lambda: check_labels("labels", labels(fits + 1))) == "labels"


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(lambda big: check_dns_label("name", big, what="name"), id="dns-label"),
        pytest.param(lambda big: check_labels("labels", {big: "v"}), id="label-key"),
        pytest.param(lambda big: check_labels("labels", {"a/" + big: "v"}), id="label-key-name-part"),
        pytest.param(lambda big: check_labels("labels", {big + "/a": "v"}), id="label-key-prefix"),
        pytest.param(lambda big: check_labels("labels", {"k": big}), id="label-value"),
        pytest.param(lambda big: check_annotations("annotations", {big: "v"}), id="annotation-key"),
        pytest.param(lambda big: check_env("env", {big: "v"}), id="env-name"),
    ],
)
def test_an_error_message_quotes_at_most_the_start_of_a_huge_value(check: Callable[[str], None]) -> None:
    # Was the whole value: gRPC refuses a status message over 16 KiB, so the caller got
    # RESOURCE_EXHAUSTED ("received metadata size exceeds hard limit") instead of the field.
    with pytest.raises(InvalidArgumentError) as caught:
        check("\u00e9" * 100_000)
    assert len(str(caught.value)) < 400
    assert "characters)" in str(caught.value)


def test_a_quantity_error_quotes_at_most_the_start_of_a_huge_value() -> None:
    with pytest.raises(ValueError, match="characters") as caught:
        parse_quantity("x" * 100_000)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "busybox:Latest",  # tags may hold upper case
        "docker.io/library/busybox:latest",
        "ghcr.io/acme/tool:1",
        "localhost/x",
        "localhost:5000/team/app:v1.2.3",
        "registry.example.com:443/team/app@sha256:" + "a" * 64,
        "app:1@sha256:" + "0" * 64,
        "[::1]:5000/x",
        "a/b/c/d",
        "my_image",
        "my__image",
        "my-----image",
        "my.image",
        "Registry.Example/acme/tool",  # the host part may hold upper case
    ],
)
def test_image_references_the_runtime_accepts(image: str) -> None:
    assert image_reference_problem(image) is None
    check_image("container_job.image", image)


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("../../etc", "malformed registry host '..'"),
        ("GHCR.io/Acme/Tool:1", "path component 'Acme' (repository paths are lower case)"),
        ("Docker.IO/Library/BusyBox:Latest", "path component 'Library'"),
        ("BusyBox", "path component 'BusyBox'"),
        ("x/Y", "path component 'Y'"),
        ("busybox:", "malformed tag ''"),
        ("busybox:.hidden", "malformed tag '.hidden'"),
        ("busybox:" + "t" * 129, "malformed tag"),
        ("busybox@sha256:xyz", "malformed digest 'sha256:xyz'"),
        ("busybox@", "malformed digest"),
        ("a//b", "path component ''"),
        ("-a", "path component '-a'"),
        ("a_-b", "path component 'a_-b'"),
        ("a:b:c", "path component 'a:b'"),
        (":tag", "no repository name"),
        ("", "is empty"),
        ("reg.example/" + "a" * 250, "longer than 255"),
        ("bad_host.example/x", "malformed registry host"),
    ],
)
def test_image_references_the_runtime_refuses_are_named(image: str, problem: str) -> None:
    found = image_reference_problem(image)
    assert found is not None
    assert problem in found
    with pytest.raises(InvalidArgumentError) as caught:
        check_image("timer_job.image", image)
    assert caught.value.field == "timer_job.image"
    assert "is not an image reference" in str(caught.value)
