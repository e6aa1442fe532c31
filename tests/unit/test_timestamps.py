"""The one RFC 3339 module: what it writes at each precision and what it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobscheduler.timestamps import format_rfc3339, parse_rfc3339

MOMENT = datetime(2026, 3, 29, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("seconds", "2026-03-29T01:02:03Z"),
        ("milliseconds", "2026-03-29T01:02:03.456Z"),
        ("microseconds", "2026-03-29T01:02:03.456789Z"),
    ],
)
def test_format_writes_utc_with_z_at_the_asked_precision(precision: str, expected: str) -> None:
    assert format_rfc3339(MOMENT, precision=precision) == expected  # type: ignore[arg-type]


def test_format_converts_other_offsets_to_utc_and_reads_naive_values_as_utc() -> None:
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert format_rfc3339(plus_two) == "2026-03-29T01:02:03Z"
    assert format_rfc3339(MOMENT.replace(tzinfo=None)) == "2026-03-29T01:02:03Z"


def test_microseconds_are_written_even_when_zero() -> None:
    assert format_rfc3339(MOMENT.replace(microsecond=0), precision="microseconds").endswith(".000000Z")


@pytest.mark.parametrize(
    "text",
    ["2026-03-29T01:02:03Z", "2026-03-29t01:02:03z", "2026-03-29T03:02:03+02:00", "2026-03-29T01:02:03"],
)
def test_parse_reads_rfc3339_forms_as_aware_utc(text: str) -> None:
    assert parse_rfc3339(text) == MOMENT.replace(microsecond=0)


def test_parse_keeps_fractions_and_round_trips() -> None:
    for precision in ("seconds", "milliseconds", "microseconds"):
        text = format_rfc3339(MOMENT, precision=precision)  # type: ignore[arg-type]
        parsed = parse_rfc3339(text)
        assert parsed is not None
        assert parsed.tzinfo is not None
        assert format_rfc3339(parsed, precision=precision) == text  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-01T00:00:00Z", 1767225600])
def test_parse_returns_none_for_absent_or_malformed_values(value: object) -> None:
    assert parse_rfc3339(value) is None
