"""Syntax rules Kubernetes imposes on names, labels, quantities, environment variables and
container image references.

Checked before anything is sent to the API server, so a caller learns which field is wrong
from the service instead of from a 422, and nothing is created for a bad request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from jobscheduler.domain.errors import InvalidArgumentError

# Always used with fullmatch: `$` would also match before a trailing newline.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = _QUALIFIED_NAME
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
# The image reference grammar the container runtimes parse (github.com/distribution/reference):
# [host[:port]/]path[:tag][@digest], the path in lower case. The host is the first component
# when it holds a "." or ":" or is "localhost"; otherwise the reference names a Docker Hub image.
_IMAGE_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE_HOST = re.compile(
    rf"^(?:{_IMAGE_HOST_COMPONENT}(?:\.{_IMAGE_HOST_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_IMAGE_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IMAGE_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
MAX_IMAGE_NAME = 255  # the grammar's limit on host and path together
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

# Keys the service or the Job controller owns on the objects it creates; callers may not set
# them, or a caller could forge another job's identity or break the Job's pod selector.
RESERVED_PREFIXES = frozenset({"jobscheduler.io", "batch.kubernetes.io"})
RESERVED_KEYS = frozenset({"app.kubernetes.io/managed-by", "job-name", "controller-uid"})
MAX_ANNOTATIONS_BYTES = 128 * 1024
# Kubernetes sets no total for labels, but they are stored twice (the Job and its pod template)
# and reported with every status: past this a Job nears etcd's object limit and a ListJobs page
# the gRPC message limit.
MAX_LABELS_BYTES = 64 * 1024
# How much of a caller's value an error message quotes: gRPC refuses status messages over
# 16 KiB, and nobody reads the rest.
MAX_SHOWN_CHARS = 64


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 and DEL
_CONTROL_C1 = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1
_WHITESPACE = re.compile(r"\s")  # what str.isspace() calls whitespace


def has_control(value: str, *, c1: bool = False) -> bool:
    """Whether the text holds a control character (C0 or DEL; with c1, C1 too)."""
    return (_CONTROL_C1 if c1 else _CONTROL).search(value) is not None


def has_whitespace(value: str) -> bool:
    return _WHITESPACE.search(value) is not None


def shown(value: str) -> str:
    """A caller's value quoted for an error message, cut short when long."""
    if len(value) <= MAX_SHOWN_CHARS:
        return repr(value)
    return f"{value[:MAX_SHOWN_CHARS]!r}... ({len(value)} characters)"


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.fullmatch(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity ("100m", "0.5", "64Mi", "1e3") as a number; ValueError if malformed
    or beyond what a Decimal holds (an exponent of a million digits, say)."""
    match = _QUANTITY.fullmatch(value)
    if not match:
        raise ValueError(f"{shown(value)} is not a Kubernetes quantity (e.g. 100m, 0.5, 64Mi, 1Gi)")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["num"])
        if suffix in _BINARY:
            return number * _BINARY[suffix]
        # "E" alone is exa (10^18), as in Kubernetes; only "e"/"E" with digits is an exponent.
        if suffix in _DECIMAL:
            return number * _DECIMAL[suffix]
        return number * (Decimal(10) ** int(suffix[1:]))
    except (ArithmeticError, ValueError):  # decimal.Overflow; int() of over 4300 digits
        raise ValueError(f"{shown(value)} is out of range for a Kubernetes quantity") from None


def check_qualified_key(field: str, key: str) -> None:
    """A label or annotation key: optional DNS-subdomain prefix, '/', and a name of ≤63 chars."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        raise InvalidArgumentError(field, f"key {shown(key)}: the prefix before '/' is empty")
    if prefix and not is_dns1123_subdomain(prefix):
        raise InvalidArgumentError(
            field,
            f"key {shown(key)}: prefix {shown(prefix)} must be a DNS subdomain "
            "(lower-case letters, digits, '-' and '.')",
        )
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        raise InvalidArgumentError(
            field,
            f"key {shown(key)}: name part must be 1-63 characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit",
        )


def check_label_value(field: str, value: str) -> None:
    """A label value: empty, or at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    if len(value) > 63 or (value and not _LABEL_VALUE.fullmatch(value)):
        raise InvalidArgumentError(
            field,
            f"value {shown(value)} must be at most 63 characters of "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        )


def check_not_reserved(field: str, key: str) -> None:
    prefix = key.rpartition("/")[0]
    if key in RESERVED_KEYS or prefix in RESERVED_PREFIXES:
        raise InvalidArgumentError(field, f"key {key!r} is reserved for the service and Kubernetes")


def check_labels(field: str, labels: Mapping[str, str]) -> None:
    size = 0
    for key, value in labels.items():
        check_qualified_key(field, key)
        check_not_reserved(field, key)
        check_label_value(f"{field}[{key}]", value)
        size += len(key) + len(value)  # both ASCII once checked
    if size > MAX_LABELS_BYTES:
        raise InvalidArgumentError(field, f"labels total {size} bytes; at most {MAX_LABELS_BYTES}")


def check_annotations(field: str, annotations: Mapping[str, str]) -> None:
    size = 0
    for key, value in annotations.items():
        check_qualified_key(field, key)
        check_not_reserved(field, key)
        size += len(key.encode()) + len(value.encode())
    if size > MAX_ANNOTATIONS_BYTES:
        raise InvalidArgumentError(field, f"annotations total {size} bytes; at most {MAX_ANNOTATIONS_BYTES}")


def check_env(field: str, env: Mapping[str, str], *, reserved: frozenset[str] = frozenset()) -> None:
    for name in env:
        if not _C_IDENTIFIER.fullmatch(name):
            raise InvalidArgumentError(
                field,
                f"{shown(name)} is not a valid variable name "
                "(letters, digits and '_', not starting with a digit)",
            )
        if name in reserved:
            raise InvalidArgumentError(field, f"{name!r} is set by the service and cannot be overridden")


def check_dns_label(field: str, value: str, *, what: str) -> None:
    if not is_dns1123_label(value):
        raise InvalidArgumentError(
            field,
            f"{shown(value)} is not a valid {what}: at most 63 lower-case letters, "
            "digits or '-', starting and ending with a letter or digit",
        )


def image_reference_problem(image: str) -> str | None:
    """What is wrong with `image` as a container image reference, or None when it is one.

    Checked as the container runtime parses it, so a reference a node could only fail with
    InvalidImageName is refused at submit: `GHCR.io/Acme/Tool:1` (the path must be lower case),
    `../../etc`, `busybox:` or a digest that is not hex."""
    if not image:
        return "is empty"
    rest, at, digest = image.partition("@")
    if at and _IMAGE_DIGEST.fullmatch(digest) is None:
        return (
            f"has a malformed digest {shown(digest)} (expected ALGORITHM:HEX such as sha256:<64 hex digits>)"
        )
    name, tag = rest, ""
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
        if _IMAGE_TAG.fullmatch(tag) is None:
            return f"has a malformed tag {shown(tag)} (at most 128 of A-Z a-z 0-9 _ . -, not first . or -)"
    if not name:
        return "has no repository name"
    if len(name) > MAX_IMAGE_NAME:
        return f"has a name longer than {MAX_IMAGE_NAME} characters"
    first, sep, remainder = name.partition("/")
    components = name.split("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if _IMAGE_HOST.fullmatch(first) is None:
            return f"has a malformed registry host {shown(first)}"
        components = remainder.split("/")
    for component in components:
        if _IMAGE_PATH_COMPONENT.fullmatch(component) is None:
            hint = " (repository paths are lower case)" if component.lower() != component else ""
            return f"has a malformed repository path component {shown(component)}{hint}"
    return None


def check_image(field: str, image: str) -> None:
    """Raises InvalidArgumentError naming `field` unless `image` is a valid image reference."""
    problem = image_reference_problem(image)
    if problem is not None:
        raise InvalidArgumentError(
            field, f"{shown(image)} is not an image reference: it {problem}; e.g. ghcr.io/acme/tool:1.2"
        )
