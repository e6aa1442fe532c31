"""Fuzzing the public API over the real gRPC stack: 10,000 generated requests (valid and not,
across every RPC) against an in-process server and the real cluster.

Every outcome must be one the API documents for that input: OK, or INVALID_ARGUMENT whose
message starts with the offending field, or NOT_FOUND / FAILED_PRECONDITION / ALREADY_EXISTS
where the input is well-formed but the job's state says no, or RESOURCE_EXHAUSTED for a
message above the server's size limit. Never INTERNAL, UNKNOWN or UNAVAILABLE, and a rejected
ScheduleJob creates nothing: the Jobs in the namespace at the end are exactly those the
successful calls reported, carrying exactly the labels and annotations they were sent.

Outcomes are collected rather than raised, so one run reports every kind of breach at once
(with a shortened request for each); the test fails at the end if there was any. Generation is
derandomized, so a failure reproduces run after run.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.config import LOG_LEVELS
from jobscheduler.domain.models import CALLER_LABEL, JOB_TYPE_LABEL, MANAGED_BY_LABEL, NAME_LABEL
from jobscheduler.domain.validation import RESERVED_KEYS, RESERVED_PREFIXES
from jobscheduler.jobtypes.timer import RESERVED_ENV
from jobscheduler.transport.server import MAX_MESSAGE_BYTES
from tests.conftest import Cluster
from tests.integration.conftest import Service

# How the 10,000 examples are shared out between the RPCs (and ScheduleJob's kinds of request).
EXAMPLES = {
    "ScheduleJob valid": 600,
    "ScheduleJob fuzz": 5376,
    "ScheduleJob oversized": 24,
    "ListJobs": 1400,
    "GetJobStatus": 800,
    "CancelJob": 500,
    "ResumeJob": 400,
    "WatchJob": 300,
    "WatchJobs": 600,
}
# JOBSCHEDULER_FUZZ_SCALE=0.1 runs a tenth of them (a quick local check); CI runs them all.
SCALE = float(os.environ.get("JOBSCHEDULER_FUZZ_SCALE", "1"))
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# Set by the service on every Job (the caller label: who scheduled it, for MAX_ACTIVE_JOBS_PER_CALLER).
SERVICE_LABELS = frozenset({MANAGED_BY_LABEL, JOB_TYPE_LABEL, NAME_LABEL, CALLER_LABEL})
# A watch stream that passed validation stays open: how long to wait for it to say anything.
STREAM_WAIT = 0.5
OPEN = "OPEN"  # pseudo status: a watch stream was accepted and kept open

# -- strings -------------------------------------------------------------------------------------

# Protobuf strings must be valid UTF-8, so no surrogates; everything else goes, controls included.
ANY_CHAR = st.characters(codec="utf-8")
CONTROLS = "".join(map(chr, [*range(32), *range(127, 160)])) + "\u2028\u200b\ufeff\u00a0\u3000"
TRICKY = st.sampled_from(
    [
        "",
        " ",
        "a\n",
        "\na",
        "A",
        "-a",
        "a-",
        "a..b",
        "a/",
        "/a",
        "a/b/c",
        "a" * 63,
        "a" * 64,
        "a" * 254,
        "\uff11",  # FULLWIDTH DIGIT ONE
        "\u212a",  # KELVIN SIGN, lower-cases to ASCII k
        "\u0130",  # I WITH DOT, lower-cases to two characters
        "\x00",
        "a\x00b",
        "x\u200b",
        "NaN",
        "-1",
        "0",
        "1e400",
        "..",
        "%00",
        "${HOME}",
        "'; DROP TABLE jobs; --",
        "\U0001f600",
    ]
)


@st.composite
def pick(draw: st.DrawFn, *options: tuple[int, st.SearchStrategy[Any]]) -> Any:
    """One of the strategies, chosen with the given relative weights. (sampled_from, not
    integers: hypothesis draws the ends of an integer range far more often than the middle.)"""
    n = draw(st.sampled_from(range(sum(weight for weight, _ in options))))
    for weight, strategy in options:
        if n < weight:
            return draw(strategy)
        n -= weight
    raise AssertionError("unreachable")


def repeated(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """A long string, built by repetition (hypothesis cannot draw 100k characters one by one)."""
    return st.builds(
        lambda unit, n: (unit * (n // len(unit) + 1))[:n],
        st.text(ANY_CHAR, min_size=1, max_size=4),
        st.integers(min_size, max_size),
    )


DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
SHORT_DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
DNS_SUBDOMAIN = st.lists(SHORT_DNS_LABEL, min_size=1, max_size=4).map(".".join)
QUALIFIED_NAME = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True)
FUZZ_TEXT: st.SearchStrategy[str] = pick(
    (30, st.text(ANY_CHAR, max_size=40)),
    (10, st.text(st.sampled_from(CONTROLS + "aA0-._/ "), max_size=20)),
    (20, TRICKY),
    (15, DNS_LABEL),
    (5, QUALIFIED_NAME.map(str.upper)),
    (2, repeated(300, 5000)),
    (1, repeated(60_000, 100_000)),
)


def chance(percent: int) -> st.SearchStrategy[bool]:
    return st.sampled_from(range(100)).map(lambda n: n < percent)


def mostly(valid: st.SearchStrategy[Any], fuzz: st.SearchStrategy[Any], *, valid_pct: int) -> Any:
    return pick((valid_pct, valid), (100 - valid_pct, fuzz))


# -- ScheduleJob ---------------------------------------------------------------------------------


def _label_key(prefix: str | None, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _not_reserved(key: str) -> bool:
    return key not in RESERVED_KEYS and key.rpartition("/")[0] not in RESERVED_PREFIXES


LABEL_KEY = st.builds(_label_key, st.none() | DNS_SUBDOMAIN, QUALIFIED_NAME).filter(_not_reserved)
LABEL_VALUE = st.just("") | QUALIFIED_NAME


def _many(n: int, value: str) -> dict[str, str]:
    """Hundreds of entries without drawing each (drawing them one by one is slow)."""
    return {f"k{i}.example.com/key-{i}": f"{value}{i}" for i in range(n)}


VALID_LABELS = pick(
    (70, st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=5)),
    (5, st.builds(_many, st.integers(100, 400), st.sampled_from(["v", "value-", ""]))),
)
FUZZ_LABELS = pick(
    (50, st.dictionaries(FUZZ_TEXT, FUZZ_TEXT, min_size=1, max_size=4)),
    (30, st.dictionaries(LABEL_KEY, FUZZ_TEXT, min_size=1, max_size=3)),
    (20, st.dictionaries(FUZZ_TEXT, LABEL_VALUE, min_size=1, max_size=3)),
    (
        5,
        st.builds(
            lambda m, k, v: {**m, k: v},
            st.builds(_many, st.integers(100, 400), st.just("v")),
            FUZZ_TEXT,
            FUZZ_TEXT,
        ),
    ),
)
VALID_ANNOTATIONS = pick(
    (70, st.dictionaries(LABEL_KEY, st.text(ANY_CHAR, max_size=60), max_size=5)),
    (3, st.dictionaries(LABEL_KEY, repeated(1000, 30_000), min_size=1, max_size=1)),  # ≤ 128 KiB
    (5, st.builds(_many, st.integers(100, 300), st.text(ANY_CHAR, max_size=30))),
)
FUZZ_ANNOTATIONS = pick(
    (60, st.dictionaries(FUZZ_TEXT, FUZZ_TEXT, min_size=1, max_size=4)),
    (10, st.dictionaries(LABEL_KEY, repeated(140_000, 200_000), min_size=1, max_size=2)),
    (5, st.builds(_many, st.integers(1000, 3000), repeated(50, 200))),
)

POSITIVE_QUANTITY = pick(
    (
        60,
        st.from_regex(
            r"\+?[1-9][0-9]{0,3}(\.[0-9]{1,3})?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]|E[0-9]|e-[0-3])?",
            fullmatch=True,
        ),
    ),
    (
        40,
        st.sampled_from(
            ["100m", "0.5", ".5", "1.", "1E", "1Ei", "64Mi", "1e3", "1e400", "1e-400", "99Ei", "9" * 40, "1n"]
        ),
    ),
)
FUZZ_QUANTITY = pick(
    (
        40,
        st.sampled_from(
            [
                "-1",
                "0",
                "0.0",
                "-0",
                "\uff11",
                "NaN",
                "Inf",
                "1e",
                "1 m",
                "1mi",
                "m",
                "1e99999999",
                "1e-99999999",
                "1e" + "9" * 5000,
                "9" * 1_100_000,
                "0x10",
                "1_000",
                "1,5",
                "--1",
            ]
        ),
    ),
    (30, st.from_regex(r"[-+]?[0-9]{0,4}(\.[0-9]{0,3})?([a-zA-Z]{0,2}|[eE][-+]?[0-9]{1,8})", fullmatch=True)),
    (30, FUZZ_TEXT),
)


@st.composite
def valid_resources(draw: st.DrawFn) -> pb.Resources:
    kind = draw(st.sampled_from(["none", "request", "limit", "both"]))
    res = pb.Resources()
    for resource in ("cpu", "memory"):
        value = draw(POSITIVE_QUANTITY)
        if kind in ("request", "both"):
            setattr(res, f"{resource}_request", value)
        if kind in ("limit", "both"):
            setattr(res, f"{resource}_limit", value)  # equal to the request: always allowed
    return res


@st.composite
def fuzz_resources(draw: st.DrawFn) -> pb.Resources:
    fields = ("cpu_request", "memory_request", "cpu_limit", "memory_limit")
    return pb.Resources(
        **{f: draw(mostly(POSITIVE_QUANTITY, FUZZ_QUANTITY, valid_pct=40) | st.just("")) for f in fields}
    )


ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True).filter(
    lambda n: n not in RESERVED_ENV
)
VALID_ENV = pick(
    (80, st.dictionaries(ENV_NAME, st.text(ANY_CHAR, max_size=60), max_size=4)),
    (3, st.dictionaries(ENV_NAME, repeated(1000, 7000), min_size=1, max_size=2)),  # ≤ 64 KiB
)
FUZZ_ENV = pick(
    (50, st.dictionaries(FUZZ_TEXT, FUZZ_TEXT, min_size=1, max_size=4)),
    (20, st.dictionaries(st.sampled_from(sorted(RESERVED_ENV)), FUZZ_TEXT, min_size=1, max_size=2)),
    (10, st.dictionaries(ENV_NAME, repeated(200_000, 700_000), min_size=1, max_size=3)),
)
VALID_ENDPOINT = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "HTTP"]),
    DNS_SUBDOMAIN,
    st.just("") | st.integers(1, 65535).map(lambda p: f":{p}"),
    st.from_regex(r"(/[a-z0-9._-]{0,20}){0,3}", fullmatch=True),
)
FUZZ_ENDPOINT = pick(
    (30, FUZZ_TEXT),
    (
        20,
        st.sampled_from(
            [
                "http://[::1",
                "http://[abc]/",
                "http://[",
                "https://]",
                "http://:80",
                "ftp://x",
                "http://a:99999999/",
                "http://a:-1",
                "//host",
                "http:///x",
                "http://[::1]:80/",
            ]
        ),
    ),
    (20, st.builds(lambda s, t: f"{s}://{t}", st.sampled_from(["http", "https"]), FUZZ_TEXT)),
    (10, st.builds(lambda h, p: f"http://{h}/{p}", DNS_LABEL, repeated(2000, 400_000))),
)
VALID_TIMER_NAME = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=100
).filter(lambda s: bool(s.strip()))
# The image reference grammar (jobscheduler.domain.validation): path components are lower-case
# alphanumerics joined by ".", "_", "__" or dashes; a tag does not start with "." or "-".
VALID_IMAGE = st.just("") | st.from_regex(
    r"[a-z0-9]+(\.[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*){0,2}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,19})?",
    fullmatch=True,
).filter(lambda image: len(image) <= 255)  # the grammar's limit on a name
VALID_LOG_LEVEL = st.just("") | st.builds(
    lambda level, upper, pad: f"{pad}{level.upper() if upper else level}{pad}",
    st.sampled_from(LOG_LEVELS),
    st.booleans(),
    st.sampled_from(["", " "]),
)


@st.composite
def timer_jobs(draw: st.DrawFn, *, valid: bool) -> pb.TimerJob:
    pct = 100 if valid else 70

    def of(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(mostly(good, bad, valid_pct=pct))

    return pb.TimerJob(
        duration_seconds=of(
            st.integers(1, 86400), st.integers(*INT32) | st.sampled_from([0, -1, 86401, *INT32])
        ),
        timer_name=of(VALID_TIMER_NAME, FUZZ_TEXT),
        control_plane_endpoint=of(VALID_ENDPOINT, FUZZ_ENDPOINT),
        image=of(VALID_IMAGE, FUZZ_TEXT),
        log_level=of(VALID_LOG_LEVEL, FUZZ_TEXT),
        env=of(VALID_ENV, FUZZ_ENV),
    )


@dataclass(frozen=True)
class Namespace:
    """Where a request goes: the test's namespace, or a literal (garbage, or one that does not exist)."""

    literal: str | None = None

    def resolve(self, test_namespace: str, existing: frozenset[str]) -> str:
        if self.literal is None:
            return test_namespace
        if self.literal and self.literal in existing:
            return f"nx-{self.literal}"[:63].rstrip("-")  # a real namespace only by accident
        return self.literal


NAMESPACE = pick(
    (70, st.just(Namespace())),
    (12, FUZZ_TEXT.map(Namespace)),
    (13, DNS_LABEL.map(Namespace)),
    (5, st.just(Namespace(""))),  # the server's default: dry runs only (see schedule_cases)
)


@dataclass(frozen=True)
class ScheduleCase:
    valid: bool
    namespace: Namespace
    fields: Mapping[str, Any]

    def request(self, namespace: str) -> pb.ScheduleJobRequest:
        return pb.ScheduleJobRequest(namespace=namespace, **self.fields)


@st.composite
def schedule_cases(draw: st.DrawFn, kind: str) -> ScheduleCase:
    """kind: "valid" (every field valid), "fuzz" (each field valid or not), "oversized" (a fuzzed
    request with one field above the server's receive limit)."""
    valid = kind == "valid"
    pct = 100 if valid else 70

    def of(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(mostly(good, bad, valid_pct=pct))

    namespace = Namespace() if valid else draw(NAMESPACE)
    fields: dict[str, Any] = {
        "name": of(st.just("") | DNS_LABEL | DNS_LABEL.map(lambda s: f" {s.upper()} "), FUZZ_TEXT),
        "labels": of(VALID_LABELS, FUZZ_LABELS),
        "annotations": of(VALID_ANNOTATIONS, FUZZ_ANNOTATIONS),
        "resources": of(valid_resources(), fuzz_resources()),
        "request_id": of(
            st.just("")
            | st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=256),
            FUZZ_TEXT,
        ),
        # Mostly dry runs and held jobs: the API server still validates and admits them.
        "dry_run": draw(chance(80)),
        "suspend": draw(chance(80)),
    }
    for name, low, bounds in (
        ("backoff_limit", 0, (0, 1000)),
        ("active_deadline_seconds", 1, (1, INT32[1])),
        ("ttl_seconds_after_finished", 0, (0, INT32[1])),
    ):
        extremes = INT64 if name == "active_deadline_seconds" else INT32
        value = of(
            st.none() | st.integers(*bounds) | st.just(low),
            st.integers(*extremes) | st.sampled_from([low - 1, -1, 1001, 2**31, *extremes]),
        )
        if value is not None and (name == "active_deadline_seconds" or INT32[0] <= value <= INT32[1]):
            fields[name] = value
    if valid or draw(chance(93)):  # otherwise: no job type at all
        fields["timer_job"] = draw(timer_jobs(valid=valid))
    if namespace.literal == "":
        fields["dry_run"] = True  # never create jobs in the server's default namespace
    if kind == "oversized":
        where = draw(st.sampled_from(["annotations", "labels", "env", "name"]))
        blob = draw(repeated(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 300_000))
        if where == "env":
            fields["timer_job"] = pb.TimerJob(duration_seconds=1, timer_name="t", env={"BLOB": blob})
        elif where == "name":
            fields["name"] = blob
        else:
            fields[where] = {"blob": blob}
    return ScheduleCase(valid=valid, namespace=namespace, fields=fields)


# -- the read and cancel RPCs --------------------------------------------------------------------


@dataclass(frozen=True)
class JobRef:
    """A job id: one of the jobs this test created (by index), or a literal."""

    known: int | None = None
    literal: str = ""

    def resolve(self, created: list[str]) -> str:
        if self.known is not None and created:
            return created[self.known % len(created)]
        return self.literal


JOB_REF = pick(
    (30, st.integers(0, 10_000).map(lambda i: JobRef(known=i))),
    (25, st.from_regex(r"job-[a-z0-9]{10}", fullmatch=True).map(lambda s: JobRef(literal=s))),
    (10, DNS_LABEL.map(lambda s: JobRef(literal=s))),
    (35, FUZZ_TEXT.map(lambda s: JobRef(literal=s))),
)
REAL_STATES = st.sampled_from([v for v in pb.JobState.values() if v != pb.JOB_STATE_UNSPECIFIED])
VALID_STATES = st.lists(REAL_STATES, max_size=3)
FUZZ_STATES = st.lists(
    pick((50, REAL_STATES), (50, st.integers(*INT32) | st.sampled_from([0, 6, 7, -1, *INT32]))),
    min_size=1,
    max_size=4,
)


def _token_raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _token(obj: Any) -> str:
    return _token_raw(json.dumps(obj))


# Nesting depths for JSON in page tokens: shallow, and deeper than Python's recursion limit.
DEPTHS = st.sampled_from([10, 5000, 100_000])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(ANY_CHAR, max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)
VALID_PAGE_TOKEN = pick(
    (50, st.just("")),
    (50, st.integers(0, 10_000).map(lambda i: f"known:{i}")),  # a token an earlier ListJobs returned
)
FUZZ_PAGE_TOKEN = pick(
    (20, FUZZ_TEXT),
    (15, JSON_VALUES.map(_token)),
    (10, st.fixed_dictionaries({"c": JSON_VALUES, "n": JSON_VALUES}).map(_token)),
    (
        5,
        st.sampled_from([{"c": "nan", "n": "x"}, {"c": "1e999", "n": ""}, {"c": 1, "n": "\U0010ffff"}]).map(
            _token
        ),
    ),
    (
        5,
        st.builds(lambda bracket, depth: _token_raw(bracket * depth), st.sampled_from("[{"), DEPTHS),
    ),
)


VALID_SELECTOR = pick(
    (15, st.just("")),
    (
        25,
        st.lists(
            st.builds(
                lambda k, op, v: f"{k}{op}{v}", LABEL_KEY, st.sampled_from(["=", "==", "!="]), LABEL_VALUE
            ),
            max_size=3,
        ).map(",".join),
    ),
    (
        10,
        st.builds(
            lambda k, op, vs: f"{k} {op} ({','.join(vs)})",
            LABEL_KEY,
            st.sampled_from(["in", "notin"]),
            st.lists(LABEL_VALUE, max_size=3),
        ),
    ),
    (10, st.builds(lambda neg, k: f"{neg}{k}", st.sampled_from(["", "!"]), LABEL_KEY)),
)
FUZZ_SELECTOR = pick(
    (
        30,
        st.sampled_from(
            [
                "a in (",
                "a in )",
                "(",
                ")",
                ",",
                "a,,b",
                "a=b=c",
                "!",
                "a!",
                "=a",
                "a in ((b))",
                "a notin",
                "a =",
                "a==",
                "a in ()",
                "a in (b c)",
                "a, b",
                "  ",
            ]
        ),
    ),
    (30, FUZZ_TEXT),
    (2, repeated(20_000, 100_000)),
    (
        2,
        st.builds(
            lambda head, n: head + "b" * n,
            st.sampled_from(["(", "a=", "a in (", ",", "a!="]),
            st.integers(20_000, 100_000),
        ),
    ),
    (1, repeated(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 1000)),
)
VALID_JOB_TYPE = st.sampled_from(["", "timer"])
VALID_NAME = st.just("") | DNS_LABEL
VALID_PAGE_SIZE = st.integers(0, 1000)
FUZZ_PAGE_SIZE = st.integers(*INT32) | st.sampled_from([-1, 1001, *INT32])
READ_NAMESPACE = pick((60, st.just(Namespace())), (20, st.just(Namespace(""))), (20, NAMESPACE))


@st.composite
def filters(draw: st.DrawFn, fields: tuple[str, ...]) -> dict[str, Any]:
    """ListJobsRequest / WatchJobsRequest fields, each valid or not (most valid, so that the
    checks behind the first ones are reached too)."""
    choices = {
        "namespace": (st.just(Namespace()), READ_NAMESPACE),
        "states": (VALID_STATES, FUZZ_STATES),
        "job_type": (VALID_JOB_TYPE, FUZZ_TEXT),
        "label_selector": (VALID_SELECTOR, FUZZ_SELECTOR),
        "name": (VALID_NAME, FUZZ_TEXT),
        "page_size": (VALID_PAGE_SIZE, FUZZ_PAGE_SIZE),
        "page_token": (VALID_PAGE_TOKEN, FUZZ_PAGE_TOKEN),
        "skip_initial": (st.booleans(), st.booleans()),
        "schedule": (st.sampled_from(["", "nightly", "scan-1"]), FUZZ_TEXT),
        "queue": (st.sampled_from(["", "team-a", "batch.low"]), FUZZ_TEXT),
    }
    return {f: draw(mostly(*choices[f], valid_pct=80)) for f in fields}


# -- calling and judging -------------------------------------------------------------------------


@dataclass
class Tally:
    """What the fuzzing saw: outcomes by RPC and code, breaches, and the jobs it created."""

    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    breaches: dict[str, list[str]] = field(default_factory=dict)
    created: dict[str, pb.ScheduleJobRequest] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    calls: int = 0

    def breach(self, kind: str, request: Message, detail: str) -> None:
        examples = self.breaches.setdefault(kind, [])
        if len(examples) < 3:
            examples.append(f"{_short(detail, 300)}\n      request: {describe(request)}")

    def summary(self) -> str:
        by_rpc: dict[str, Counter[str]] = {}
        for (rpc, code), n in sorted(self.codes.items()):
            by_rpc.setdefault(rpc, Counter())[code] += n
        lines = [f"{self.calls} fuzzed calls; jobs created: {len(self.created)}"]
        lines += [
            f"  {rpc}: {', '.join(f'{c} {n}' for c, n in sorted(cs.items()))}" for rpc, cs in by_rpc.items()
        ]
        total = Counter[str]()
        for (_, code), n in self.codes.items():
            total[code] += n
        lines.append(f"  all: {', '.join(f'{c} {n}' for c, n in total.most_common())}")
        lines.append("  seconds: " + ", ".join(f"{name} {t:.0f}" for name, t in self.seconds.items()))
        return "\n".join(lines)

    def report(self) -> str:
        lines = [f"{len(self.breaches)} kinds of breach:"]
        for kind, examples in self.breaches.items():
            lines.append(f"- {kind}")
            lines += [f"    {e}" for e in examples]
        return "\n".join(lines)


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else f"{value[:limit]}…(+{len(value) - limit})"


def describe(message: Message) -> str:
    """The request as JSON, long strings and maps cut down so a report stays readable."""

    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return _short(value)
        if isinstance(value, dict):
            items = list(value.items())
            out = {_short(k, 60): cut(v) for k, v in items[:4]}
            if len(items) > 4:
                out["…"] = f"{len(items) - 4} more"
            return out
        if isinstance(value, list):
            return [cut(v) for v in value[:6]]
        return value

    body = MessageToDict(message, preserving_proto_field_name=True)
    return f"{type(message).__name__} {json.dumps(cut(body), ensure_ascii=False)}"


def unary(method: Callable[..., Any], request: Message, *, timeout: float) -> tuple[str, Any, str]:
    try:
        return "OK", method(request, timeout=timeout), ""
    except grpc.RpcError as e:
        return e.code().name, None, e.details() or ""


def open_stream(method: Callable[..., Any], request: Message) -> Any:
    """Starts a watch; it runs in the background until its deadline. (A message of megabytes
    takes a while to send, and would otherwise pass for a stream left open.)"""
    return method(request, timeout=STREAM_WAIT if request.ByteSize() < 2**20 else 30)


def stream_outcome(call: Any) -> tuple[str, str]:
    """A watch's first outcome: an error, its end (OK), or OPEN once it sent an event or stayed
    open until its deadline (a watch that passed validation may well never end by itself)."""
    try:
        for _ in call:
            call.cancel()
            return OPEN, ""
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            return OPEN, ""
        return e.code().name, e.details() or ""
    return "OK", ""


class Judge:
    """Decides whether an outcome is one the API documents for the request that got it."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def outcome(self, rpc: str, request: Message, code: str, details: str, allowed: set[str]) -> None:
        """Records one call; a breach unless `code` is allowed (for a request the server can receive)."""
        if request.ByteSize() > MAX_MESSAGE_BYTES:
            allowed = {"RESOURCE_EXHAUSTED"}
        self.tally.calls += 1
        self.tally.codes[rpc, code] += 1
        if code not in allowed:
            self.tally.breach(f"{rpc} returned {code}", request, details)
            return
        if code == "INVALID_ARGUMENT":
            self._check_invalid_argument(rpc, request, details)

    def _check_invalid_argument(self, rpc: str, request: Message, details: str) -> None:
        fields = {f.name for f in request.DESCRIPTOR.fields} | {"job_type"}
        head = details.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0]
        # A ScheduleJob is checked before the API server sees it ("nothing is created"); a ListJobs
        # on a server without a cache leaves selector syntax to the API server, naming the field.
        if rpc == "ScheduleJob" and "Kubernetes rejected" in details:
            self.tally.breach(
                f"{rpc}: INVALID_ARGUMENT from the API server, not the service", request, details
            )
        elif head not in fields:
            self.tally.breach(f"{rpc}: INVALID_ARGUMENT not naming a request field", request, details)
        elif len(details) > 4096:
            self.tally.breach(
                f"{rpc}: INVALID_ARGUMENT message of {len(details)} characters", request, details
            )


@dataclass
class Streams:
    """Watches in flight, a few at a time: each one that passes validation takes STREAM_WAIT to
    give up on, so waiting for them one by one would take minutes. Small batches keep the open
    ones (and those the server has not yet noticed are gone) well within its worker threads."""

    judge: Judge
    batch: int = 8
    pending: list[tuple[str, Message, Any, set[str]]] = field(default_factory=list)

    def add(self, rpc: str, method: Callable[..., Any], request: Message, allowed: set[str]) -> None:
        self.pending.append((rpc, request, open_stream(method, request), allowed))
        if len(self.pending) >= self.batch:
            self.drain()

    def drain(self) -> None:
        for rpc, request, call, allowed in self.pending:
            code, details = stream_outcome(call)
            self.judge.outcome(rpc, request, code, details, allowed)
        self.pending.clear()


def check_manifest_round_trip(tally: Tally, request: pb.ScheduleJobRequest, manifest: str) -> None:
    try:
        job = yaml.safe_load(manifest)
    except yaml.YAMLError as e:
        tally.breach("ScheduleJob: dry-run manifest is not YAML", request, str(e))
        return
    labels = {k: v for k, v in job["metadata"]["labels"].items() if k not in SERVICE_LABELS}
    if labels != dict(request.labels):
        tally.breach("ScheduleJob: dry-run manifest labels differ from the request's", request, repr(labels))
    annotations = job["spec"]["template"]["metadata"].get("annotations") or {}
    if annotations != dict(request.annotations):
        tally.breach(
            "ScheduleJob: dry-run manifest annotations differ from the request's", request, repr(annotations)
        )


# -- the test ------------------------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


def examples(kind: str, share: float) -> int:
    return max(1, round(EXAMPLES[kind] * share * SCALE))


def namespaces_now(cluster: Cluster) -> frozenset[str]:
    return frozenset(ns.metadata.name for ns in client.CoreV1Api(cluster.api).list_namespace().items)


def managed_jobs_in(cluster: Cluster, namespace: str) -> dict[str, client.V1Job]:
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace, label_selector=MANAGED_BY_LABEL)
    return {job.metadata.name: job for job in jobs.items}


@pytest.fixture(params=[pytest.param(1.0, id="cache"), pytest.param(0.25, id="api")])
def fuzz_target(request: pytest.FixtureRequest) -> tuple[Service, float]:
    """The server to fuzz, and its share of the examples: the issue's 10,000 against the
    cache-backed server, a quarter as many against the one that reads only from the API (its
    read paths differ: selectors go to the API server, WatchJobs is refused)."""
    name = "cached_service" if request.param == 1.0 else "api_service"
    return request.getfixturevalue(name), request.param


@pytest.mark.timeout(1200)
def test_fuzzed_requests_get_documented_answers_and_create_nothing_when_rejected(
    fuzz_target: tuple[Service, float], cluster: Cluster, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fuzz_service, share = fuzz_target
    stub = fuzz_service.stub
    tally = Tally()
    judge = Judge(tally)
    streams = Streams(judge)
    existing = namespaces_now(cluster)
    default_jobs_before = set(managed_jobs_in(cluster, "default"))
    created_ids: list[str] = []
    started = time.monotonic()

    def fuzz(
        kind: str, strategy: st.SearchStrategy[Any]
    ) -> Callable[[Callable[[Any], None]], Callable[[], None]]:
        """@fuzz(kind, strategy): the body, run on this server's share of EXAMPLES[kind]."""
        return lambda body: settings(FUZZ_SETTINGS, max_examples=examples(kind, share))(given(strategy)(body))

    def schedule(case: ScheduleCase) -> None:
        request = case.request(case.namespace.resolve(namespace, existing))
        code, response, details = unary(stub.ScheduleJob, request, timeout=60)
        allowed = {"OK", "INVALID_ARGUMENT"}
        if request.request_id:
            allowed.add("ALREADY_EXISTS")  # the same key drawn twice for different requests
        if case.valid:
            allowed -= {"INVALID_ARGUMENT"}
        judge.outcome("ScheduleJob", request, code, details, allowed)
        if code != "OK":
            return
        if request.dry_run:
            check_manifest_round_trip(tally, request, response.manifest)
        elif response.created:
            if response.namespace != namespace:
                tally.breach(
                    "ScheduleJob: created a job outside the test namespace", request, response.namespace
                )
            tally.created[response.job_id] = request
            created_ids.append(response.job_id)

    @fuzz("ListJobs", filters(tuple(pb.ListJobsRequest.DESCRIPTOR.fields_by_name)))
    def list_jobs(fields: dict[str, Any]) -> None:
        token = fields.pop("page_token")
        if token.startswith("known:"):
            token = tally.tokens[int(token[6:]) % len(tally.tokens)] if tally.tokens else ""
        ns = fields.pop("namespace").resolve(namespace, existing)
        request = pb.ListJobsRequest(namespace=ns, page_token=token, **fields)
        code, response, details = unary(stub.ListJobs, request, timeout=30)
        judge.outcome("ListJobs", request, code, details, {"OK", "INVALID_ARGUMENT"})
        if code == "OK" and response.next_page_token:
            tally.tokens.append(response.next_page_token)

    def by_id(rpc: str, make: Callable[[str, str], Message], allowed: set[str]) -> Callable[[], None]:
        @fuzz(rpc, st.tuples(READ_NAMESPACE, JOB_REF))
        def run(args: tuple[Namespace, JobRef]) -> None:
            ns, ref = args
            request = make(ns.resolve(namespace, existing), ref.resolve(created_ids))
            code, _, details = unary(getattr(stub, rpc), request, timeout=30)
            judge.outcome(rpc, request, code, details, allowed)

        return run

    @fuzz("WatchJob", st.tuples(READ_NAMESPACE, JOB_REF))
    def watch_job(args: tuple[Namespace, JobRef]) -> None:
        ns, ref = args
        request = pb.WatchJobRequest(
            namespace=ns.resolve(namespace, existing), job_id=ref.resolve(created_ids)
        )
        streams.add("WatchJob", stub.WatchJob, request, {OPEN, "OK", "INVALID_ARGUMENT", "NOT_FOUND"})

    @fuzz("WatchJobs", filters(tuple(pb.WatchJobsRequest.DESCRIPTOR.fields_by_name)))
    def watch_jobs(fields: dict[str, Any]) -> None:
        ns = fields.pop("namespace").resolve(namespace, existing)
        request = pb.WatchJobsRequest(namespace=ns, **fields)
        allowed = {OPEN, "INVALID_ARGUMENT", "FAILED_PRECONDITION"}  # the latter: a namespace not watched
        streams.add("WatchJobs", stub.WatchJobs, request, allowed)

    phases: list[tuple[str, Callable[[], None]]] = [
        *(
            (f"ScheduleJob {kind}", fuzz(f"ScheduleJob {kind}", schedule_cases(kind))(schedule))
            for kind in ("valid", "fuzz", "oversized")
        ),
        ("ListJobs", list_jobs),
        (
            "GetJobStatus",
            by_id(
                "GetJobStatus",
                lambda ns, job_id: pb.GetJobStatusRequest(namespace=ns, job_id=job_id),
                {"OK", "INVALID_ARGUMENT", "NOT_FOUND"},
            ),
        ),
        (
            "ResumeJob",
            by_id(  # before CancelJob, so that some held jobs are still there to release
                "ResumeJob",
                lambda ns, job_id: pb.ResumeJobRequest(namespace=ns, job_id=job_id),
                {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"},
            ),
        ),
        (
            "CancelJob",
            by_id(
                "CancelJob",
                lambda ns, job_id: pb.CancelJobRequest(namespace=ns, job_id=job_id),
                {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"},
            ),
        ),
        ("WatchJob", watch_job),
        ("WatchJobs", watch_jobs),
    ]
    for name, run in phases:
        phase_started = time.monotonic()
        run()
        streams.drain()
        tally.seconds[name] = time.monotonic() - phase_started

    # Nothing was created for a rejected request, and what was created is what was asked for.
    jobs = managed_jobs_in(cluster, namespace)
    if unexpected := set(jobs) - set(tally.created):
        tally.breaches.setdefault("Jobs no successful ScheduleJob reported", []).append(
            str(sorted(unexpected))
        )
    elapsed = time.monotonic() - started
    for job_id in set(tally.created) - set(jobs):
        # Gone only if retention may have removed it: a short TTL, after a cancel or a deadline.
        request = tally.created[job_id]
        if not request.HasField("ttl_seconds_after_finished") or request.ttl_seconds_after_finished > elapsed:
            tally.breach("a created Job is gone", request, job_id)
    for job_id, request in tally.created.items():
        job = jobs.get(job_id)
        if job is None:
            continue
        labels = {k: v for k, v in (job.metadata.labels or {}).items() if k not in SERVICE_LABELS}
        if labels != dict(request.labels):
            tally.breach("created Job's labels differ from the request's", request, repr(labels))
        annotations = job.spec.template.metadata.annotations or {}
        if annotations != dict(request.annotations):
            tally.breach(
                "created Job's pod annotations differ from the request's", request, repr(annotations)
            )
    if set(managed_jobs_in(cluster, "default")) - default_jobs_before:
        tally.breaches.setdefault("a job was created in the default namespace", []).append("")
    # No crash, and no bad request taken for an outage of the Kubernetes API.
    if fuzz_service.health_status() != health_pb2.HealthCheckResponse.SERVING:
        tally.breaches.setdefault("the server is not SERVING after the fuzzing", []).append("")

    summary = f"{tally.summary()}\n  {elapsed:.0f}s"
    with capsys.disabled():
        print(f"\nfuzz ({fuzz_service.address}):\n{summary}")
    assert not tally.breaches, f"{summary}\n{tally.report()}"
    assert tally.calls == sum(examples(kind, share) for kind in EXAMPLES), summary


# -- bugs the fuzzing found (and two it cannot reach), each pinned down as a regression -----------


def test_a_deeply_nested_page_token_is_invalid_argument(service: Service, namespace: str) -> None:
    request = pb.ListJobsRequest(namespace=namespace, page_token=_token_raw("[" * 5000))
    code, _, details = unary(service.stub.ListJobs, request, timeout=10)
    assert (code, details.split(":")[0]) == ("INVALID_ARGUMENT", "page_token")


@pytest.mark.parametrize("selector", ["(" * 100_000, "a=" + "b" * 100_000], ids=["parens", "long-value"])
def test_an_unparseable_huge_label_selector_is_invalid_argument_with_a_short_message(
    service: Service, namespace: str, selector: str
) -> None:
    request = pb.ListJobsRequest(namespace=namespace, label_selector=selector)
    code, _, details = unary(service.stub.ListJobs, request, timeout=10)
    assert (code, details.split(":")[0]) == ("INVALID_ARGUMENT", "label_selector")
    assert len(details) < 1000


def test_bytes_that_are_not_a_request_message_are_invalid_argument(cached_service: Service) -> None:
    not_utf8 = b"\x0a\x01\xff"  # field 1, one byte that is not UTF-8
    payloads = [
        b"\xff\xff\xff",  # not protobuf
        not_utf8,
        b"\x08" + b"\xff" * 10 + b"\x01",  # a varint longer than 64 bits
        b"\x0a\x05ab",  # a string cut short
    ]
    codes = Counter[str]()
    unknown_fields = Counter[str]()  # by method
    for method in pb.DESCRIPTOR.services_by_name["JobScheduler"].methods:
        path = f"/{method.containing_service.full_name}/{method.name}"
        first = method.input_type.fields_by_number.get(1)
        # Where field 1 is not a string (GetServiceStatusRequest has no field), those bytes are a
        # well-formed unknown field, which proto3 keeps and ignores: the call is valid.
        kept = first is None or first.type != first.TYPE_STRING
        make = (
            cached_service.channel.unary_stream
            if method.server_streaming
            else cached_service.channel.unary_unary
        )
        call = make(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for payload in payloads:
            try:
                result = call(payload, timeout=5)
                if method.server_streaming:
                    next(iter(result))
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            codes[code] += 1
            if code == "OK" and kept and payload == not_utf8:
                unknown_fields[method.name] += 1
                codes[code] -= 1
    assert set(+codes) == {"INVALID_ARGUMENT"}, codes
    # Only a request without fields of its own takes these bytes, and answers.
    assert unknown_fields == Counter({"GetServiceStatus": 1}), unknown_fields


def test_a_list_page_always_fits_in_one_grpc_message(service: Service, namespace: str) -> None:
    labels = {f"k{i:04d}.example.com/{'n' * 40}": "v" * 63 for i in range(500)}  # 60 KB: allowed
    timer = pb.TimerJob(duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:1")
    for _ in range(70):
        request = pb.ScheduleJobRequest(namespace=namespace, suspend=True, labels=labels, timer_job=timer)
        service.stub.ScheduleJob(request, timeout=30)
    code, response, details = unary(
        service.stub.ListJobs, pb.ListJobsRequest(namespace=namespace, page_size=1000), timeout=30
    )
    assert code == "OK", details
    assert response.jobs
