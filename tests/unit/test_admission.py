"""Admission guards without a cluster: image and namespace allowlists, caller names as labels,
and the per-caller token bucket on a clock the test moves."""

from __future__ import annotations

import re
from typing import Any

import pytest

from jobscheduler.domain.admission import (
    Admission,
    AdmissionPolicy,
    caller_label,
    image_allowed,
    normalize_image,
)
from jobscheduler.domain.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("acme/tool:1", "docker.io/acme/tool:1"),
        ("ghcr.io/acme/tool:1", "ghcr.io/acme/tool:1"),
        ("localhost/tool", "localhost/tool"),
        ("registry:5000/tool", "registry:5000/tool"),
        ("docker.io/library/busybox", "docker.io/library/busybox"),
    ],
)
def test_normalize_image_qualifies_like_the_container_runtime(image: str, expected: str) -> None:
    assert normalize_image(image) == expected


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        pytest.param("ghcr.io/acme/tool:1", ("ghcr.io/acme/",), True, id="prefix"),
        pytest.param(
            "ghcr.io/acme-evil/tool:1", ("ghcr.io/acme/",), False, id="prefix-is-not-a-string-prefix"
        ),
        pytest.param("ghcr.io/other/tool:1", ("ghcr.io/acme/",), False, id="other-org"),
        pytest.param("busybox:1.36", ("docker.io/library/busybox:*",), True, id="short-name-qualified"),
        pytest.param("busybox:1.36", ("busybox:*",), True, id="short-name-as-written"),
        pytest.param(
            "evil.io/library/busybox:1", ("docker.io/library/busybox:*",), False, id="other-registry"
        ),
        pytest.param("ghcr.io/acme/a/b:2", ("ghcr.io/acme/*",), True, id="glob-crosses-slashes"),
        pytest.param("ghcr.io/acme/tool@sha256:ab", ("ghcr.io/acme/tool@sha256:*",), True, id="digest"),
        pytest.param("x", ("a/", "b/", "docker.io/library/x"), True, id="any-pattern"),
    ],
)
def test_image_allowed(image: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert image_allowed(image, patterns) is allowed


def _manifest(*images: str) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {"spec": {"template": {"spec": {"containers": containers}}}}


def test_check_images_names_the_field_the_image_and_the_patterns() -> None:
    admission = Admission(AdmissionPolicy(allowed_images=("ghcr.io/acme/",)), trusted_images=["timer:1"])
    admission.check_images(_manifest("ghcr.io/acme/a:1", "timer:1"), field="timer_job.image")
    with pytest.raises(InvalidArgumentError) as caught:
        admission.check_images(_manifest("ghcr.io/acme/a:1", "evil.io/x:1"), field="timer_job.image")
    assert caught.value.field == "timer_job.image"
    assert "'evil.io/x:1' is not allowed here" in str(caught.value)
    assert "ghcr.io/acme/ (ALLOWED_IMAGES)" in str(caught.value)


def test_no_image_patterns_allow_any_image() -> None:
    Admission(AdmissionPolicy()).check_images(_manifest("anything/at:all"), field="image")


def test_namespace_allowlist_globs_and_refusal_names_the_allowed() -> None:
    admission = Admission(AdmissionPolicy(allowed_namespaces=("team-*", "ops")))
    admission.check_namespace("team-a")
    admission.check_namespace("ops")
    with pytest.raises(PermissionDeniedError, match=r"namespace 'kube-system' is not served .*team-\*, ops"):
        admission.check_namespace("kube-system")
    Admission(AdmissionPolicy()).check_namespace("anything-else")


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease", "kube-anything"])
def test_system_namespaces_are_refused_without_an_explicit_pattern(namespace: str) -> None:
    for policy in (AdmissionPolicy(), AdmissionPolicy(allowed_namespaces=("*",))):
        with pytest.raises(PermissionDeniedError, match=r"Kubernetes system namespace.*ALLOWED_NAMESPACES"):
            Admission(policy).check_namespace(namespace)


def test_system_namespaces_listed_by_the_operator_are_served() -> None:
    Admission(AdmissionPolicy(allowed_namespaces=("kube-system",))).check_namespace("kube-system")
    admission = Admission(AdmissionPolicy(allowed_namespaces=("kube-*", "team-*")))
    admission.check_namespace("kube-jobs")
    admission.check_namespace("team-a")
    # Named, but not that one: still refused.
    with pytest.raises(PermissionDeniedError):
        Admission(AdmissionPolicy(allowed_namespaces=("kube-jobs", "*"))).check_namespace("kube-system")


@pytest.mark.parametrize(
    "caller",
    ["admin", "10.0.0.7", "::1", "team a/ci", "x" * 100, "-weird-", "", "日本"],
)
def test_caller_label_is_a_valid_label_value_and_distinct(caller: str) -> None:
    label = caller_label(caller)
    assert len(label) <= 63
    assert re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", label), label
    assert label


def test_caller_label_keeps_simple_names_and_separates_lookalikes() -> None:
    assert caller_label("admin") == "admin"
    assert caller_label("10.0.0.7") == "10.0.0.7"
    assert caller_label("team a") != caller_label("team-a")
    assert caller_label("team a") == caller_label("team a")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_refuses_with_the_exact_wait() -> None:
    clock = Clock()
    admission = Admission(AdmissionPolicy(schedule_rate=2.0, schedule_burst=3), clock=clock)
    for _ in range(3):
        admission.take("a")
    with pytest.raises(ResourceExhaustedError) as caught:
        admission.take("a")
    assert caught.value.retry_after == pytest.approx(0.5)
    assert "retry in 0.50s" in str(caught.value)
    admission.take("b")  # callers have their own buckets
    clock.now += 0.25
    with pytest.raises(ResourceExhaustedError) as again:
        admission.take("a")
    assert again.value.retry_after == pytest.approx(0.25)
    clock.now += 0.25
    admission.take("a")
    clock.now += 60  # a long pause refills to the burst, not beyond
    for _ in range(3):
        admission.take("a")
    with pytest.raises(ResourceExhaustedError):
        admission.take("a")


def test_burst_defaults_to_the_rate_and_at_least_one() -> None:
    clock = Clock()
    slow = Admission(AdmissionPolicy(schedule_rate=0.5), clock=clock)
    slow.take("a")
    with pytest.raises(ResourceExhaustedError) as caught:
        slow.take("a")
    assert caught.value.retry_after == pytest.approx(2.0)
    fast = Admission(AdmissionPolicy(schedule_rate=5), clock=clock)
    for _ in range(5):
        fast.take("a")
    with pytest.raises(ResourceExhaustedError):
        fast.take("a")


def test_zero_rate_never_limits() -> None:
    admission = Admission(AdmissionPolicy(), clock=Clock())
    for _ in range(10_000):
        admission.take("a")
