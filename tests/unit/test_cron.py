"""Cron expressions, time zones and intervals: parsing, and the instants a schedule fires at.

Every expected instant is written out in UTC and was worked out by hand from robfig/cron v3's
rules (see the jobscheduler.domain.cron docstring): 2026 clock changes are Europe/Berlin 03-29 01:00Z
(02:00 CET -> 03:00 CEST) and 10-25 01:00Z (03:00 CEST -> 02:00 CET), America/New_York 03-08
07:00Z (02:00 EST -> 03:00 EDT) and 11-01 06:00Z (02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobscheduler.domain.cron import CronSpec, check_satisfiable, parse_cron, parse_time_zone
from jobscheduler.domain.cron_walk import next_runs
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.interval import interval_as_cron, next_interval_runs, parse_interval

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def iso(runs: list[datetime]) -> list[str]:
    assert all(run.utcoffset() == timedelta(0) for run in runs)
    return [run.strftime("%Y-%m-%dT%H:%M:%SZ") for run in runs]


# --- parse_cron ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param(
            "*/15 9-17 * * MON-FRI",
            (
                {0, 15, 30, 45},
                set(range(9, 18)),
                set(range(1, 32)),
                set(range(1, 13)),
                {1, 2, 3, 4, 5},
                True,
                False,
            ),
            id="steps-ranges-and-weekday-names",
        ),
        pytest.param(
            "0 0 * jan-Mar sun,SAT",
            ({0}, {0}, set(range(1, 32)), {1, 2, 3}, {0, 6}, True, False),
            id="names-are-case-insensitive",
        ),
        pytest.param(
            "10-40/15 5/6 1,15 * *",
            ({10, 25, 40}, {5, 11, 17, 23}, {1, 15}, set(range(1, 13)), set(range(7)), False, True),
            id="range-step-and-start-step",
        ),
        pytest.param(
            "0 0 ? * 0",
            ({0}, {0}, set(range(1, 32)), set(range(1, 13)), {0}, True, False),
            id="question-mark-is-any-day",
        ),
        pytest.param(
            "0 0 */2 * *",
            ({0}, {0}, set(range(1, 32, 2)), set(range(1, 13)), set(range(7)), False, True),
            id="star-with-step-above-1-restricts-the-day",
        ),
        pytest.param(
            "0 0 */1 * *",
            ({0}, {0}, set(range(1, 32)), set(range(1, 13)), set(range(7)), True, True),
            id="star-with-step-1-is-still-any-day",
        ),
        pytest.param(
            "@weekly",
            ({0}, {0}, set(range(1, 32)), set(range(1, 13)), {0}, True, False),
            id="weekly-is-sunday-midnight",
        ),
        pytest.param(
            "@yearly",
            ({0}, {0}, {1}, {1}, set(range(7)), False, True),
            id="yearly-is-january-first",
        ),
        pytest.param(
            "@hourly",
            ({0}, set(range(24)), set(range(1, 32)), set(range(1, 13)), set(range(7)), True, True),
            id="hourly",
        ),
        pytest.param(
            "0 0 29 2 *",
            ({0}, {0}, {29}, {2}, set(range(7)), False, True),
            id="leap-day-is-possible",
        ),
    ],
)
def test_parse_cron_reads_fields_as_robfig_does(
    expr: str, expected: tuple[set[int], set[int], set[int], set[int], set[int], bool, bool]
) -> None:
    spec = parse_cron(expr)

    assert (
        spec.minutes,
        spec.hours,
        spec.days_of_month,
        spec.months,
        spec.days_of_week,
        spec.any_day_of_month,
        spec.any_day_of_week,
    ) == expected


def test_parse_cron_keeps_the_expression_without_surrounding_space() -> None:
    assert parse_cron("  0 3 * * *\n").expression == "0 3 * * *"
    assert parse_cron(" @daily ").expression == "@daily"


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        pytest.param("", "must not be empty", id="empty"),
        pytest.param("   ", "must not be empty", id="blank"),
        pytest.param("0 0 * *", "expected 5 fields", id="four-fields"),
        pytest.param("0 0 0 * * *", "seconds and years are not supported", id="six-fields"),
        pytest.param("@every 1h", "use an interval schedule", id="every-descriptor"),
        pytest.param("TZ=Europe/Berlin 0 3 * * *", "set the time_zone field", id="tz-prefix"),
        pytest.param("CRON_TZ=UTC 0 3 * * *", "set the time_zone field", id="cron-tz-prefix"),
        pytest.param(
            "@fortnightly", "unknown descriptor '@fortnightly'; allowed: @yearly", id="unknown-descriptor"
        ),
        pytest.param("@DAILY", "unknown descriptor '@DAILY'", id="descriptor-in-upper-case"),
        pytest.param("60 * * * *", "minute 60 is out of range; allowed: 0-59", id="minute-60"),
        pytest.param("0 24 * * *", "hour 24 is out of range; allowed: 0-23", id="hour-24"),
        pytest.param("0 0 0 * *", "day-of-month 0 is out of range; allowed: 1-31", id="day-0"),
        pytest.param("0 0 * 13 *", "month 13 is out of range; allowed: 1-12 or JAN-DEC", id="month-13"),
        pytest.param("0 0 * * 7", "Kubernetes does not accept 7 for Sunday", id="weekday-7"),
        pytest.param("0 0 * * 1-7", "day-of-week 7 is out of range", id="weekday-range-to-7"),
        pytest.param(
            "*/0 * * * *",
            "step '0' in minute field item '*/0' must be a whole number from 1 to 59",
            id="step-0",
        ),
        pytest.param("*/90 * * * *", "for longer periods use an interval schedule", id="step-beyond-field"),
        pytest.param("*/x * * * *", "step 'x'", id="step-not-a-number"),
        pytest.param(
            "0 0 * * FRI-MON", "runs backwards; write the smaller value first", id="backwards-range"
        ),
        pytest.param(
            "0 0 * FOO *", "'FOO' in month field item 'FOO' is not a number or a name", id="unknown-name"
        ),
        pytest.param("JAN * * * *", "is not a number; allowed: 0-59", id="name-in-minute-field"),
        pytest.param(
            "? * * * *",
            "'?' is only allowed in the day-of-month and day-of-week fields",
            id="question-minute",
        ),
        pytest.param("1,,2 * * * *", "has an empty list item", id="empty-list-item"),
        pytest.param("*-5 * * * *", "'*' in minute field item '*-5' is not a number", id="star-in-range"),
        pytest.param("1/2/3 * * * *", "more than one '/'", id="two-slashes"),
        pytest.param("5- * * * *", "'' in minute field item '5-' is not a number", id="open-range"),
        pytest.param("+5 * * * *", "'+5' in minute field", id="signed-number"),
        pytest.param("0 0 30 2 *", "never runs: day-of-month 30 does not exist in FEB", id="february-30"),
        pytest.param("0 0 31 4,6,9,11 *", "does not exist in APR,JUN,SEP,NOV", id="31st-of-short-months"),
    ],
)
def test_parse_cron_rejects_with_field_and_reason(expr: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_cron(expr)

    assert caught.value.field == "cron"
    assert fragment in caught.value.detail


def test_check_satisfiable_accepts_a_restricted_weekday_with_any_day() -> None:
    # Day-of-month 30 OR Monday: Mondays happen in February.
    check_satisfiable(parse_cron("0 0 30 2 MON"))


def test_error_messages_quote_at_most_64_characters() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_cron("@" + "x" * 5000)

    assert len(caught.value.detail) < 200


# --- next_runs: ordinary schedules --------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        pytest.param(
            "*/15 9-17 * * MON-FRI",
            "2026-06-05T16:50:00+00:00",  # a Friday
            [
                "2026-06-05T17:00:00Z",
                "2026-06-05T17:15:00Z",
                "2026-06-05T17:30:00Z",
                "2026-06-05T17:45:00Z",
                "2026-06-08T09:00:00Z",
            ],
            id="working-hours-skip-the-weekend",
        ),
        pytest.param(
            "0 12 * * *",
            "2026-05-01T12:00:00+00:00",
            ["2026-05-02T12:00:00Z", "2026-05-03T12:00:00Z"],
            id="strictly-after-a-fire-time",
        ),
        pytest.param(
            "* * * * *",
            "2026-05-01T12:00:00.500000+00:00",
            ["2026-05-01T12:01:00Z"],
            id="fractional-second-after-a-minute",
        ),
        pytest.param(
            "* * * * *",
            "2026-05-01T11:59:59.999000+00:00",
            ["2026-05-01T12:00:00Z"],
            id="fractional-second-before-a-minute",
        ),
        pytest.param(
            "@monthly",
            "2026-01-15T00:00:00+00:00",
            ["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"],
            id="monthly",
        ),
        pytest.param(
            "@weekly",
            "2026-01-01T00:00:00+00:00",  # a Thursday
            ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z", "2026-01-18T00:00:00Z"],
            id="weekly-on-sundays",
        ),
        pytest.param(
            "@yearly",
            "2026-01-01T00:00:00+00:00",
            ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
            id="yearly",
        ),
        pytest.param(
            "0 0 13 * FRI",
            "2026-04-01T00:00:00+00:00",  # Fridays 3, 10, 17; the 13th is a Monday
            ["2026-04-03T00:00:00Z", "2026-04-10T00:00:00Z", "2026-04-13T00:00:00Z", "2026-04-17T00:00:00Z"],
            id="both-days-restricted-either-matches",
        ),
        pytest.param(
            "0 0 * 4 FRI",
            "2026-04-01T00:00:00+00:00",
            [
                "2026-04-03T00:00:00Z",
                "2026-04-10T00:00:00Z",
                "2026-04-17T00:00:00Z",
                "2026-04-24T00:00:00Z",
                "2027-04-02T00:00:00Z",
            ],
            id="any-day-of-month-both-must-match",
        ),
        pytest.param(
            "0 0 1 * */2",
            "2026-04-01T00:00:00+00:00",  # Thu 2 (4), Sat 4 (6), Sun 5 (0); the 1st is past
            ["2026-04-02T00:00:00Z", "2026-04-04T00:00:00Z", "2026-04-05T00:00:00Z"],
            id="weekday-step-counts-as-restricted",
        ),
        pytest.param(
            "0 6 1 JAN,jul *",
            "2026-03-01T00:00:00+00:00",
            ["2026-07-01T06:00:00Z", "2027-01-01T06:00:00Z"],
            id="month-names",
        ),
        pytest.param(
            "5/20 * * * *",
            "2026-05-01T10:00:00+00:00",
            ["2026-05-01T10:05:00Z", "2026-05-01T10:25:00Z", "2026-05-01T10:45:00Z", "2026-05-01T11:05:00Z"],
            id="start-with-step",
        ),
        pytest.param(
            "0 0 29 2 *",
            "2026-03-01T00:00:00+00:00",
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            id="leap-day-years-ahead",
        ),
        pytest.param(
            "0 0 29 2 *",
            "2097-03-01T00:00:00+00:00",  # 2100 is no leap year: the next is 2104, past robfig's 5 years
            [],
            id="leap-day-beyond-five-years-gives-up",
        ),
    ],
)
def test_next_runs_in_utc(expr: str, after: str, expected: list[str]) -> None:
    assert iso(next_runs(parse_cron(expr), UTC_ZONE, at(after), len(expected) or 3)) == expected


def test_next_runs_accepts_any_aware_after_and_returns_utc() -> None:
    runs = next_runs(parse_cron("0 9 * * *"), BERLIN, at("2026-05-01T10:00:00+02:00"), 1)

    assert iso(runs) == ["2026-05-02T07:00:00Z"]
    assert runs[0].tzinfo is UTC


def test_next_runs_finds_a_leap_day_in_a_time_zone() -> None:
    assert iso(next_runs(parse_cron("0 0 29 2 *"), BERLIN, at("2026-03-01T00:00:00+00:00"), 1)) == [
        "2028-02-28T23:00:00Z"
    ]


def test_next_runs_rejects_a_naive_after() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_runs(parse_cron("@daily"), UTC_ZONE, datetime(2026, 1, 1), 1)


# --- next_runs: daylight saving time --------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # Europe/Berlin, spring forward on 2026-03-29.
        pytest.param(
            "30 2 * * *",
            BERLIN,
            "2026-03-27T12:00:00+00:00",
            ["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"],
            id="berlin-spring-daily-02:30-skipped-not-moved",
        ),
        pytest.param(
            "0 * * * *",
            BERLIN,
            "2026-03-28T22:30:00+00:00",
            ["2026-03-28T23:00:00Z", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"],
            id="berlin-spring-hourly-steady-in-utc",
        ),
        pytest.param(
            "*/15 * * * *",
            BERLIN,
            "2026-03-29T00:30:00+00:00",
            ["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z", "2026-03-29T01:30:00Z"],
            id="berlin-spring-quarter-hourly-01:45-then-03:00",
        ),
        # Europe/Berlin, fall back on 2026-10-25.
        pytest.param(
            "30 2 * * *",
            BERLIN,
            "2026-10-23T12:00:00+00:00",
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"],
            id="berlin-fall-daily-02:30-runs-twice",
        ),
        pytest.param(
            "0 * * * *",
            BERLIN,
            "2026-10-24T22:30:00+00:00",
            ["2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"],
            id="berlin-fall-hourly-02:00-twice-steady-in-utc",
        ),
        pytest.param(
            "*/15 * * * *",
            BERLIN,
            "2026-10-25T00:40:00+00:00",
            ["2026-10-25T00:45:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z"],
            id="berlin-fall-quarter-hourly-02:45-cest-then-02:00-cet",
        ),
        # America/New_York, spring forward on 2026-03-08.
        pytest.param(
            "30 2 * * *",
            NEW_YORK,
            "2026-03-06T12:00:00+00:00",
            ["2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"],
            id="new-york-spring-daily-02:30-skipped-not-moved",
        ),
        pytest.param(
            "0 * * * *",
            NEW_YORK,
            "2026-03-08T05:30:00+00:00",
            ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z", "2026-03-08T09:00:00Z"],
            id="new-york-spring-hourly-steady-in-utc",
        ),
        pytest.param(
            "*/15 * * * *",
            NEW_YORK,
            "2026-03-08T06:40:00+00:00",
            ["2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z"],
            id="new-york-spring-quarter-hourly-01:45-then-03:00",
        ),
        # America/New_York, fall back on 2026-11-01; 01:00-01:59 happens twice.
        pytest.param(
            "30 2 * * *",
            NEW_YORK,
            "2026-10-30T12:00:00+00:00",
            ["2026-10-31T06:30:00Z", "2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"],
            id="new-york-fall-daily-02:30-once",
        ),
        pytest.param(
            "30 1 * * *",
            NEW_YORK,
            "2026-10-31T12:00:00+00:00",
            ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"],
            id="new-york-fall-daily-01:30-runs-twice",
        ),
        pytest.param(
            "0 * * * *",
            NEW_YORK,
            "2026-11-01T04:30:00+00:00",
            ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
            id="new-york-fall-hourly-01:00-twice-steady-in-utc",
        ),
        pytest.param(
            "*/15 * * * *",
            NEW_YORK,
            "2026-11-01T05:40:00+00:00",
            ["2026-11-01T05:45:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:15:00Z", "2026-11-01T06:30:00Z"],
            id="new-york-fall-quarter-hourly-01:45-edt-then-01:00-est",
        ),
        # UTC has no clock changes: the same schedule across Berlin's two changes.
        pytest.param(
            "30 2 * * *",
            UTC_ZONE,
            "2026-03-28T12:00:00+00:00",
            ["2026-03-29T02:30:00Z", "2026-03-30T02:30:00Z"],
            id="utc-unaffected-in-march",
        ),
        pytest.param(
            "30 2 * * *",
            UTC_ZONE,
            "2026-10-24T12:00:00+00:00",
            ["2026-10-25T02:30:00Z", "2026-10-26T02:30:00Z"],
            id="utc-unaffected-in-october",
        ),
    ],
)
def test_next_runs_across_clock_changes(expr: str, tz: ZoneInfo, after: str, expected: list[str]) -> None:
    assert iso(next_runs(parse_cron(expr), tz, at(after), len(expected))) == expected


# --- parse_time_zone ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        pytest.param("", "UTC", id="empty-is-utc"),
        pytest.param("UTC", "UTC", id="utc"),
        pytest.param("Etc/UTC", "Etc/UTC", id="etc-utc"),
        pytest.param("Europe/Berlin", "Europe/Berlin", id="berlin"),
        pytest.param("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires", id="three-parts"),
    ],
)
def test_parse_time_zone_accepts_iana_names(name: str, key: str) -> None:
    assert parse_time_zone(name).key == key


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        pytest.param("Europe/Nowhere", "unknown time zone 'Europe/Nowhere'", id="unknown"),
        pytest.param("europe/berlin", "names are case-sensitive", id="wrong-case"),
        pytest.param("Europe/Berlin ", "unknown time zone", id="trailing-space"),
        pytest.param("America", "unknown time zone", id="a-directory"),
        pytest.param("../etc/passwd", "unknown time zone", id="path-traversal"),
        pytest.param("Factory", "unknown time zone", id="placeholder-zone"),
        pytest.param("Local", "the cluster's own zone", id="local"),
        pytest.param("localtime", "the cluster's own zone", id="localtime"),
        pytest.param("+01:00", "such as Europe/Berlin", id="an-offset"),
    ],
)
def test_parse_time_zone_rejects_with_a_hint(name: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_time_zone(name)

    assert caught.value.field == "time_zone"
    assert fragment in caught.value.detail


# --- parse_interval -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30m", timedelta(minutes=30), id="minutes"),
        pytest.param("6h", timedelta(hours=6), id="hours"),
        pytest.param("1h30m", timedelta(minutes=90), id="hours-and-minutes"),
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("2d", timedelta(days=2), id="days"),
        pytest.param("1d12h", timedelta(hours=36), id="days-and-hours"),
        pytest.param("1m", timedelta(minutes=1), id="minimum"),
        pytest.param("366d", timedelta(days=366), id="maximum"),
        pytest.param("8784h", timedelta(days=366), id="maximum-in-hours"),
        pytest.param(" 5m ", timedelta(minutes=5), id="surrounding-space"),
    ],
)
def test_parse_interval_reads_periods(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "is not a period", id="empty"),
        pytest.param("1.5h", "write whole numbers with units d, h, m, s", id="fraction"),
        pytest.param("30", "is not a period", id="no-unit"),
        pytest.param("30m1h", "largest first", id="units-out-of-order"),
        pytest.param("1h1h", "is not a period", id="unit-twice"),
        pytest.param("-5m", "is not a period", id="negative"),
        pytest.param("1w", "is not a period", id="weeks"),
        pytest.param("100ms", "is not a period", id="milliseconds"),
        pytest.param("5 m", "is not a period", id="inner-space"),
        pytest.param("1H", "is not a period", id="upper-case-unit"),
        pytest.param("59s", "must be from 1m to 366d", id="below-minimum"),
        pytest.param("0m", "must be from 1m to 366d", id="zero"),
        pytest.param("367d", "must be from 1m to 366d", id="above-maximum"),
        pytest.param("9" * 5000 + "d", "must be from 1m to 366d", id="absurdly-many-digits"),
    ],
)
def test_parse_interval_rejects_with_the_format(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_interval(text)

    assert caught.value.field == "interval"
    assert fragment in caught.value.detail


# --- interval_as_cron and next_interval_runs -----------------------------------------------


@pytest.mark.parametrize(
    ("interval", "start", "expected"),
    [
        pytest.param(timedelta(minutes=30), None, "*/30 * * * *", id="30m-on-the-epoch-grid"),
        pytest.param(timedelta(minutes=1), None, "* * * * *", id="1m"),
        pytest.param(timedelta(hours=6), None, "0 */6 * * *", id="6h-on-the-epoch-grid"),
        pytest.param(timedelta(days=7), None, "0 0 * * 4", id="7d-from-the-epoch-a-thursday"),
        pytest.param(timedelta(hours=1), "2026-05-01T10:17:00+00:00", "17 * * * *", id="1h-at-17-past"),
        pytest.param(
            timedelta(hours=1), "2026-05-01T12:17:00+02:00", "17 * * * *", id="start-in-another-zone"
        ),
        pytest.param(timedelta(hours=24), "2026-05-01T02:00:00+00:00", "0 2 * * *", id="24h-at-02:00"),
        pytest.param(timedelta(days=1), "2026-05-01T02:00:00+02:00", "0 0 * * *", id="1d-start-read-in-utc"),
        pytest.param(timedelta(days=7), "2026-05-04T09:30:00+00:00", "30 9 * * 1", id="7d-from-a-monday"),
        pytest.param(
            timedelta(minutes=15), "2026-05-01T10:05:00+00:00", "5,20,35,50 * * * *", id="15m-at-05"
        ),
        pytest.param(timedelta(minutes=20), "2026-05-01T10:50:00+00:00", "10,30,50 * * * *", id="20m-at-50"),
        pytest.param(timedelta(minutes=5), "2026-05-01T10:03:00+00:00", "3-59/5 * * * *", id="5m-at-03"),
        pytest.param(timedelta(hours=8), "2026-05-01T02:17:00+00:00", "17 2,10,18 * * *", id="8h-at-02:17"),
        pytest.param(timedelta(hours=12), "2026-05-01T13:45:00+00:00", "45 1,13 * * *", id="12h-at-13:45"),
        pytest.param(timedelta(hours=3), "2026-05-01T22:00:00+00:00", "0 1-23/3 * * *", id="3h-at-22:00"),
        pytest.param(timedelta(minutes=45), None, None, id="45m-crosses-hours-unevenly"),
        pytest.param(timedelta(minutes=90), None, None, id="90m"),
        pytest.param(timedelta(hours=5), None, None, id="5h-does-not-divide-a-day"),
        pytest.param(timedelta(days=2), None, None, id="2d-months-are-uneven"),
        pytest.param(timedelta(days=14), None, None, id="14d"),
        pytest.param(timedelta(seconds=30), None, None, id="below-a-minute"),
        pytest.param(timedelta(seconds=90), None, None, id="not-whole-minutes"),
        pytest.param(timedelta(minutes=1), "2026-05-01T10:00:17+00:00", None, id="start-at-17-seconds"),
        pytest.param(timedelta(hours=1), "2026-05-01T10:00:00.5+00:00", None, id="start-with-a-fraction"),
    ],
)
def test_interval_as_cron(interval: timedelta, start: str | None, expected: str | None) -> None:
    assert interval_as_cron(interval, None if start is None else at(start)) == expected


@pytest.mark.parametrize(
    ("interval", "start", "after", "expected"),
    [
        pytest.param(
            timedelta(minutes=30),
            None,
            "2026-05-01T10:10:00+00:00",
            ["2026-05-01T10:30:00Z", "2026-05-01T11:00:00Z", "2026-05-01T11:30:00Z"],
            id="epoch-grid",
        ),
        pytest.param(
            timedelta(minutes=30),
            None,
            "2026-05-01T10:30:00+00:00",
            ["2026-05-01T11:00:00Z"],
            id="strictly-after-a-run",
        ),
        pytest.param(
            timedelta(seconds=90),
            None,
            "2026-01-01T00:00:00+00:00",  # 1767225600 s = 19635840 * 90
            ["2026-01-01T00:01:30Z", "2026-01-01T00:03:00Z"],
            id="seconds-on-the-epoch-grid",
        ),
        pytest.param(
            timedelta(hours=6),
            "2026-05-01T12:00:00+00:00",
            "2026-05-01T00:00:00+00:00",
            ["2026-05-01T12:00:00Z", "2026-05-01T18:00:00Z", "2026-05-02T00:00:00Z"],
            id="nothing-before-a-future-start",
        ),
        pytest.param(
            timedelta(hours=1),
            "2026-05-01T10:17:00+00:00",
            "2026-05-02T00:00:00+00:00",
            ["2026-05-02T00:17:00Z", "2026-05-02T01:17:00Z"],
            id="start-in-the-past",
        ),
        pytest.param(
            timedelta(days=1),
            "2026-03-28T02:30:00+01:00",
            "2026-03-28T12:00:00+00:00",
            ["2026-03-29T01:30:00Z", "2026-03-30T01:30:00Z"],
            id="a-day-is-24-hours-across-a-clock-change",
        ),
    ],
)
def test_next_interval_runs(interval: timedelta, start: str | None, after: str, expected: list[str]) -> None:
    runs = next_interval_runs(interval, None if start is None else at(start), at(after), len(expected))

    assert iso(runs) == expected


_MAPPABLE_MINUTES = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440, 10080]


@pytest.mark.parametrize("minutes", _MAPPABLE_MINUTES)
def test_every_interval_dividing_an_hour_or_a_day_or_a_week_maps(minutes: int) -> None:
    assert interval_as_cron(timedelta(minutes=minutes), at("2026-05-06T07:41:00+00:00")) is not None


_INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)).map(
    lambda moment: moment.replace(tzinfo=UTC)
)


@given(
    minutes=st.one_of(st.sampled_from(_MAPPABLE_MINUTES), st.integers(min_value=1, max_value=366 * 1440)),
    start=st.one_of(st.none(), _INSTANTS.map(lambda moment: moment.replace(second=0, microsecond=0))),
    offset=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
def test_mapped_cron_fires_exactly_when_the_interval_does(
    minutes: int, start: datetime | None, offset: timedelta
) -> None:
    interval = timedelta(minutes=minutes)
    cron = interval_as_cron(interval, start)
    if cron is None:
        return
    # A cron expression has no start: it agrees with the interval from one period before it on.
    after = (datetime(2026, 1, 1, tzinfo=UTC) if start is None else start - interval) + offset

    assert next_runs(parse_cron(cron), UTC_ZONE, after, 6) == next_interval_runs(interval, start, after, 6)


def test_cron_spec_is_a_frozen_value() -> None:
    spec = parse_cron("@daily")

    assert isinstance(spec, CronSpec)
    with pytest.raises(AttributeError):
        spec.expression = "@hourly"  # type: ignore[misc]
