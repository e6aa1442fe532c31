"""The raw side's driver: vegeta targets written, its JSON results read, status reads paired."""

from __future__ import annotations

import base64
import json

import pytest

from bench.load import LoadResult
from bench.vegeta import (
    Hit,
    Request,
    count_http2_requests,
    interleave,
    pair_reads,
    parse_results,
    parse_timestamp,
    target_line,
    to_load_result,
)

SERVER = "https://127.0.0.1:6443"


def result_line(**fields: object) -> str:
    base = {
        "attack": "",
        "seq": 0,
        "code": 200,
        "timestamp": "2026-12-07T08:56:18.000000000Z",
        "latency": 1_000_000,
        "bytes_out": 0,
        "bytes_in": 0,
        "error": "",
        "body": None,
        "method": "GET",
        "url": SERVER + "/x",
        "headers": {},
    }
    return json.dumps(base | fields)


def hit(url: str, *, started: float, latency: float, code: int = 200) -> Hit:
    return Hit(method="GET", url=url, code=code, error="", started=started, latency=latency)


def test_a_post_target_carries_its_own_body_base64_encoded_and_json_headers() -> None:
    line = json.loads(target_line(SERVER, Request("POST", "/apis/batch/v1/namespaces/n/jobs", b'{"a":1}')))
    assert line["url"] == SERVER + "/apis/batch/v1/namespaces/n/jobs"
    assert base64.b64decode(line["body"]) == b'{"a":1}'
    assert line["header"]["Content-Type"] == ["application/json"]
    assert line["header"]["Accept-Encoding"] == ["identity"]


def test_a_get_target_has_no_body() -> None:
    line = json.loads(target_line(SERVER, Request("GET", "/api/v1/pods?limit=1")))
    assert "body" not in line
    assert line["method"] == "GET"
    assert "Content-Type" not in line["header"]


@pytest.mark.parametrize(
    ("stamp", "expected_fraction"),
    [
        ("2026-12-07T08:56:18.070707427Z", 0.070707427),
        ("2026-12-07T08:56:18.5Z", 0.5),
        ("2026-12-07T08:56:18Z", 0.0),
        ("2026-12-07T09:56:18.25+01:00", 0.25),
    ],
)
def test_timestamps_keep_go_nanoseconds_and_zone(stamp: str, expected_fraction: float) -> None:
    whole = parse_timestamp("2026-12-07T08:56:18Z")
    assert parse_timestamp(stamp) - whole == pytest.approx(expected_fraction, abs=1e-6)


def test_parse_drops_the_end_of_targets_entries_and_reads_latency_in_seconds() -> None:
    lines = [
        result_line(latency=2_500_000),
        result_line(code=0, method="", url="", error="no targets to attack", latency=3000),
        "",
        result_line(code=503, error="503 Service Unavailable"),
    ]
    hits = parse_results(lines)
    assert len(hits) == 2
    assert hits[0].latency == pytest.approx(0.0025)
    assert hits[0].ok
    assert not hits[1].ok


def test_a_transport_error_fails_the_request_even_without_a_status() -> None:
    (h,) = parse_results([result_line(code=0, error="dial tcp: connection refused")])
    assert not h.ok


def test_to_load_result_counts_errors_and_takes_wall_time_from_first_start_to_last_end() -> None:
    hits = [
        hit("a", started=100.0, latency=0.010),
        hit("b", started=100.005, latency=0.020),  # ends last, at 100.025
        hit("c", started=100.001, latency=0.001, code=422),
    ]
    result = to_load_result(hits, concurrency=2)
    assert result.count == 3
    assert result.errors == 1
    assert sorted(result.latencies) == [0.010, 0.020]
    assert result.wall_seconds == pytest.approx(0.025)
    assert "422" in result.error_samples[0]


def test_a_status_read_is_the_sum_of_its_job_get_and_pod_list_paired_per_job_in_start_order() -> None:
    table = {"get-a": ("job", "a"), "list-a": ("pods", "a"), "get-b": ("job", "b"), "list-b": ("pods", "b")}
    hits = [
        hit("get-a", started=1.0, latency=0.001),
        hit("list-a", started=1.0005, latency=0.002),
        hit("get-a", started=2.0, latency=0.003),
        hit("list-a", started=2.0005, latency=0.004),
        hit("get-b", started=1.5, latency=0.005),
        hit("list-b", started=1.6, latency=0.006),
    ]
    result = pair_reads(hits, classify=lambda h: table[h.url], kinds=("job", "pods"), concurrency=1)
    assert result.count == 3
    assert sorted(round(x, 6) for x in result.latencies) == [0.003, 0.007, 0.011]
    assert result.errors == 0


def test_a_status_read_fails_when_either_request_failed_or_one_is_missing() -> None:
    table = {"get-a": ("job", "a"), "list-a": ("pods", "a"), "get-b": ("job", "b")}
    hits = [
        hit("get-a", started=1.0, latency=0.001),
        hit("list-a", started=1.1, latency=0.001, code=503),
        hit("get-b", started=1.2, latency=0.001),
    ]
    result = pair_reads(hits, classify=lambda h: table[h.url], kinds=("job", "pods"), concurrency=1)
    assert result.latencies == []
    assert result.errors == 2


def test_interleave_puts_each_reads_two_requests_side_by_side() -> None:
    a = [Request("GET", f"/a{i}") for i in range(3)]
    b = [Request("GET", f"/b{i}") for i in range(3)]
    assert [r.path for r in interleave(a, b)] == ["/a0", "/b0", "/a1", "/b1", "/a2", "/b2"]


def test_load_result_summary_of_vegeta_hits_uses_the_shared_percentiles() -> None:
    hits = [hit(str(i), started=float(i), latency=i / 1000) for i in range(1, 101)]
    summary = to_load_result(hits, concurrency=1).summary()
    assert summary["p50_ms"] == 50.0
    assert summary["p99_ms"] == 99.0
    assert isinstance(to_load_result(hits, concurrency=1), LoadResult)


def test_http2_requests_are_counted_from_gos_debug_log() -> None:
    log = "\n".join(
        [
            '2026/12/07 09:17:28 http2: Transport encoding header ":authority" = "127.0.0.1:46279"',
            '2026/12/07 09:17:28 http2: Transport encoding header ":method" = "GET"',
            '2026/12/07 09:17:28 http2: Transport encoding header ":method" = "POST"',
            "2026/12/07 09:17:28 http2: Transport received SETTINGS len=30",
        ]
    )
    assert count_http2_requests(log) == 2
