"""The service's conditions (GetServiceStatus): the error window, each condition's thresholds,
and since when a condition has held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobscheduler.domain.servicehealth import (
    ERROR_WINDOW_SECONDS,
    NOTIFY_BACKLOG_AGE_SECONDS,
    WATCH_LAG_THRESHOLD_SECONDS,
    ApiFacts,
    Condition,
    ConditionLog,
    ErrorWindow,
    LeaderFacts,
    NotifyFacts,
    StreamFacts,
    assess,
    failed_status,
)

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HEALTHY_API = ApiFacts(reachable=True, version="v1.35.4", window_seconds=60, requests=100, errors=0)
NO_LEADER = LeaderFacts(enabled=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def by_type(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


def stream(**overrides: object) -> StreamFacts:
    fields: dict[str, object] = {
        "resource": "jobs",
        "namespace": "default",
        "synced": True,
        "healthy": True,
        "lag_seconds": 3.0,
    }
    fields.update(overrides)
    return StreamFacts(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "failed"),
    [
        (0, True),
        (429, True),
        (500, True),
        (503, True),
        (200, False),
        (201, False),
        (404, False),
        (409, False),
    ],
)
def test_only_no_answer_throttling_and_server_errors_count_as_failures(status: int, failed: bool) -> None:
    assert failed_status(status) is failed


def test_error_window_counts_the_last_minute_only() -> None:
    clock = Clock()
    window = ErrorWindow(clock)
    for _ in range(3):
        window.record(failed=True)
    window.record(failed=False)
    assert window.counts() == (4, 3)
    clock.now += ERROR_WINDOW_SECONDS - 1
    window.record(failed=False)
    assert window.counts() == (5, 3)  # the first second is still in the window
    clock.now += 1
    assert window.counts() == (1, 0)  # ... and now it has left it
    clock.now += 10 * ERROR_WINDOW_SECONDS
    window.record(failed=True)  # a bucket reused many windows later starts from zero
    assert window.counts() == (1, 1)


def test_a_reachable_api_with_few_errors_is_healthy() -> None:
    conditions = by_type(assess(HEALTHY_API, [], NO_LEADER, None))
    assert set(conditions) == {"KubernetesAPI", "APIErrors"}  # no cache, no election, no notifications
    assert all(c.ok for c in conditions.values())
    assert conditions["APIErrors"].message == "0 of 100 Kubernetes API calls failed in the last 60 s"


def test_an_unreachable_api_is_degraded_and_says_what_to_check() -> None:
    api = ApiFacts(reachable=False, version="", window_seconds=60, requests=0, errors=0)
    condition = by_type(assess(api, [], NO_LEADER, None))["KubernetesAPI"]
    assert (condition.ok, condition.reason) == (False, "Unreachable")
    assert "UNAVAILABLE" in condition.message


@pytest.mark.parametrize(
    ("requests", "errors", "ok"),
    [
        (100, 19, True),  # under 20 %
        (100, 20, False),  # 20 %: degraded
        (4, 4, True),  # 100 % of four calls is too few to judge
        (5, 5, False),
        (0, 0, True),
    ],
)
def test_api_error_rate_threshold(requests: int, errors: int, ok: bool) -> None:
    api = ApiFacts(reachable=True, version="", window_seconds=60, requests=requests, errors=errors)
    condition = by_type(assess(api, [], NO_LEADER, None))["APIErrors"]
    assert condition.ok is ok
    assert condition.reason == ("Normal" if ok else "HighErrorRate")


@pytest.mark.parametrize(
    ("streams", "reason"),
    [
        ([stream(), stream(resource="pods")], "Current"),
        ([stream(), stream(resource="pods", synced=False, healthy=False, lag_seconds=None)], "NotSynced"),
        ([stream(healthy=False), stream(resource="pods")], "StreamBroken"),
        ([stream(lag_seconds=WATCH_LAG_THRESHOLD_SECONDS + 1), stream(resource="pods")], "Lagging"),
        ([stream(lag_seconds=WATCH_LAG_THRESHOLD_SECONDS)], "Current"),
    ],
)
def test_watch_cache_condition(streams: list[StreamFacts], reason: str) -> None:
    condition = by_type(assess(HEALTHY_API, streams, NO_LEADER, None))["WatchCache"]
    assert condition.reason == reason
    assert condition.ok is (reason == "Current")


def test_a_lagging_stream_is_named_with_its_silence() -> None:
    lagging = stream(resource="pods", namespace="", lag_seconds=400.0)
    condition = by_type(assess(HEALTHY_API, [stream(), lagging], NO_LEADER, None))["WatchCache"]
    assert "400 s" in condition.message
    assert "pods in every namespace" in condition.message


@pytest.mark.parametrize(
    ("leader", "ok", "message"),
    [
        (LeaderFacts(True, "replica-a", True, T0), True, "this replica leads"),
        (LeaderFacts(True, "replica-b", False, T0), True, "replica-b leads"),
        (LeaderFacts(True), False, "no replica holds the schedule Lease"),
    ],
)
def test_leader_condition(leader: LeaderFacts, ok: bool, message: str) -> None:
    condition = by_type(assess(HEALTHY_API, [], leader, None))["Leader"]
    assert condition.ok is ok
    assert condition.message.startswith(message)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (NotifyFacts(pending=0), "Delivering"),
        (NotifyFacts(pending=3, oldest_pending_seconds=10.0), "Delivering"),
        (NotifyFacts(pending=3, oldest_pending_seconds=NOTIFY_BACKLOG_AGE_SECONDS + 1), "Backlog"),
        (NotifyFacts(pending=1, failing_sinks=("https://hooks.example/a",)), "SinksFailing"),
    ],
)
def test_notification_condition(facts: NotifyFacts, reason: str) -> None:
    condition = by_type(assess(HEALTHY_API, [], NO_LEADER, facts))["Notifications"]
    assert condition.reason == reason
    assert condition.ok is (reason == "Delivering")
    if facts.failing_sinks:
        assert "https://hooks.example/a" in condition.message


def test_condition_log_keeps_since_until_the_state_changes() -> None:
    log = ConditionLog()
    ok = Condition("Leader", True, "Elected", "a leads")
    first, changes = log.stamp([ok], T0)
    assert first[0].since == T0
    assert changes == []  # starting healthy is not news
    again, changes = log.stamp([Condition("Leader", True, "Elected", "b leads")], T0 + timedelta(seconds=5))
    assert again[0].since == T0  # a new message, the same state
    assert changes == []
    lost = Condition("Leader", False, "NoLeader", "nobody")
    later, changes = log.stamp([lost], T0 + timedelta(seconds=9))
    assert later[0].since == T0 + timedelta(seconds=9)
    assert [c.reason for c in changes] == ["NoLeader"]
    _, changes = log.stamp([ok], T0 + timedelta(seconds=12))
    assert [c.reason for c in changes] == ["Elected"]  # the recovery is logged too


def test_starting_degraded_is_news() -> None:
    _, changes = ConditionLog().stamp([Condition("KubernetesAPI", False, "Unreachable", "x")], T0)
    assert [c.type for c in changes] == ["KubernetesAPI"]
