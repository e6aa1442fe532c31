"""The pure part of completion notifications: sink validation, the annotations, what is due, the
leader's plan (send, wait, give up, let go), backoff, the event and its signature."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import FailedPreconditionError, InvalidArgumentError
from jobscheduler.domain.models import Delivery, JobState
from jobscheduler.domain.notify import (
    NOTIFY_ANNOTATION,
    NOTIFY_FINALIZER,
    NOTIFY_LABEL,
    NOTIFY_STATE_ANNOTATION,
    NotifySink,
    Record,
    attempted,
    backoff_seconds,
    check_notify,
    claimed,
    decode_records,
    decode_sinks,
    encode_records,
    encode_sinks,
    given_up,
    job_event,
    notification_statuses,
    plan,
    schedule_event,
    sign,
    url_allowed,
    verify,
)
from jobscheduler.domain.render import check_request, render_job
from jobscheduler.domain.status import derive_status
from tests.unit.test_render import TIMER, make_request, timer_params

ALLOWED = ("https://hooks.example.com/", "http://*.svc.cluster.local:8080/*")
URL = "https://hooks.example.com/jobs"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SINK = NotifySink(url=URL, secret="hooks")


def checked(**changes: Any) -> NotifySink:
    return check_notify([dataclasses.replace(SINK, **changes)], allowed=ALLOWED)[0]


def test_defaults_are_the_terminal_states_the_default_key_and_timeout() -> None:
    sink = checked()
    assert sink.states == (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
    assert (sink.secret_key, sink.timeout_seconds) == ("hmac-key", 10)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"url": ""}, "notify[0].url", id="no-url"),
        pytest.param({"url": "ftp://hooks.example.com/x"}, "notify[0].url", id="not-http"),
        pytest.param({"url": "file:///etc/passwd"}, "notify[0].url", id="file"),
        pytest.param({"url": "https://u:p@hooks.example.com/x"}, "notify[0].url", id="credentials"),
        pytest.param({"url": "https://hooks.example.com@evil.org/x"}, "notify[0].url", id="at-sign"),
        pytest.param({"url": "https://hooks.example.com.evil.org/x"}, "notify[0].url", id="not-allowed"),
        pytest.param({"url": "http://169.254.169.254/latest"}, "notify[0].url", id="metadata-address"),
        pytest.param({"url": "https://hooks.example.com/x#frag"}, "notify[0].url", id="fragment"),
        pytest.param({"url": "https://hooks.example.com:99999/x"}, "notify[0].url", id="bad-port"),
        pytest.param({"url": "https://hooks.example.com/a b"}, "notify[0].url", id="space"),
        pytest.param({"states": (JobState.PENDING,)}, "notify[0].states[0]", id="pending"),
        pytest.param({"states": (JobState.QUEUED,)}, "notify[0].states[0]", id="queued"),
        pytest.param({"states": (JobState.FAILED, JobState.FAILED)}, "notify[0].states", id="twice"),
        pytest.param({"secret": ""}, "notify[0].secret", id="no-secret"),
        pytest.param({"secret": "Not_A_Name"}, "notify[0].secret", id="bad-secret"),
        pytest.param({"secret_key": "a/b"}, "notify[0].secret_key", id="bad-key"),
        pytest.param({"timeout_seconds": 0}, "notify[0].timeout_seconds", id="timeout-0"),
        pytest.param({"timeout_seconds": 61}, "notify[0].timeout_seconds", id="timeout-61"),
    ],
)
def test_bad_sinks_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        checked(**changes)
    assert err.value.field == field


def test_too_many_sinks_are_refused() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        check_notify([SINK] * 6, allowed=ALLOWED)
    assert err.value.field == "notify"


def test_without_an_allowlist_notifications_are_off() -> None:
    assert check_notify([], allowed=()) == ()
    with pytest.raises(FailedPreconditionError, match="ALLOWED_NOTIFY_URLS"):
        check_notify([SINK], allowed=())


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/jobs", True),
        ("https://hooks.example.com/", True),
        ("https://hooks.example.com.evil.org/", False),
        ("http://hooks.example.com/jobs", False),  # the scheme is part of the prefix
        ("http://recv.team-a.svc.cluster.local:8080/x", True),
        ("http://recv.team-a.svc.cluster.local:8081/x", False),
    ],
)
def test_url_allowlist_prefixes_and_globs(url: str, allowed: bool) -> None:
    assert url_allowed(url, ALLOWED) is allowed


def test_sinks_and_records_survive_their_annotations() -> None:
    sinks = (checked(states=(JobState.RUNNING, JobState.FAILED), timeout_seconds=3),)
    assert decode_sinks({NOTIFY_ANNOTATION: encode_sinks(sinks)}) == sinks
    records = {
        (0, JobState.FAILED): Record(
            delivery=Delivery.PENDING,
            attempts=2,
            last_error="HTTP 500",
            due_at=NOW,
            last_attempt_at=NOW,
            next_attempt_at=NOW + timedelta(seconds=2),
            claim="",
        )
    }
    assert decode_records({NOTIFY_STATE_ANNOTATION: encode_records(records)}) == records


def test_unreadable_annotations_read_as_none() -> None:
    assert decode_sinks({NOTIFY_ANNOTATION: "{not json"}) == ()
    assert decode_records({NOTIFY_STATE_ANNOTATION: '{"x": 1}'}) == {}


def test_the_manifest_carries_sinks_label_and_finalizer_never_a_key() -> None:
    request = check_request(make_request(notify=(SINK,)), Settings(allowed_notify_urls=ALLOWED))
    manifest = render_job(
        request,
        job_type=TIMER,
        params=TIMER.validate(timer_params(), Settings()),
        job_id="job-1",
        settings=Settings(),
    )
    meta = manifest["metadata"]
    assert meta["finalizers"] == [NOTIFY_FINALIZER]
    assert meta["labels"][NOTIFY_LABEL] == "pending"
    assert NOTIFY_LABEL not in manifest["spec"]["template"]["metadata"]["labels"]
    assert json.loads(meta["annotations"][NOTIFY_ANNOTATION])[0]["secret"] == "hooks"
    plain = render_job(
        check_request(make_request(), Settings()),
        job_type=TIMER,
        params=TIMER.validate(timer_params(), Settings()),
        job_id="job-1",
        settings=Settings(),
    )
    assert "finalizers" not in plain["metadata"]
    assert NOTIFY_ANNOTATION not in plain["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("state", "job_state", "started", "due"),
    [
        (JobState.SUCCEEDED, JobState.SUCCEEDED, True, True),
        (JobState.SUCCEEDED, JobState.FAILED, True, False),
        (JobState.CANCELLED, JobState.CANCELLED, False, True),
        (JobState.RUNNING, JobState.PENDING, False, False),
        (JobState.RUNNING, JobState.RUNNING, True, True),
        (JobState.RUNNING, JobState.SUCCEEDED, True, True),  # ended after having run
        (JobState.RUNNING, JobState.CANCELLED, False, False),  # cancelled before it started
    ],
)
def test_which_notifications_are_due(state: JobState, job_state: JobState, started: bool, due: bool) -> None:
    sinks = [checked(states=(state,))]
    decided = plan(sinks, {}, job_state=job_state, started=started, now=NOW, give_up_seconds=60)
    assert decided.send == (((0, state),) if due else ())


def test_a_claimed_attempt_is_left_alone_until_its_claim_expires() -> None:
    sinks = [checked(timeout_seconds=10)]
    key = (0, JobState.SUCCEEDED)
    records = {key: claimed(Record(), claim="r1/x", now=NOW)}
    decided = plan(sinks, records, job_state=JobState.SUCCEEDED, started=True, now=NOW, give_up_seconds=600)
    assert decided.send == ()
    assert not decided.release
    assert decided.backlog == 1
    later = NOW + timedelta(seconds=16)  # timeout 10 s + grace 5 s passed: the claimer is gone
    decided = plan(sinks, records, job_state=JobState.SUCCEEDED, started=True, now=later, give_up_seconds=600)
    assert decided.send == (key,)


def test_a_failed_attempt_waits_for_its_backoff_then_gives_up() -> None:
    sinks = [checked()]
    key = (0, JobState.FAILED)
    record = attempted(claimed(Record(), claim="c", now=NOW), error="HTTP 500", now=NOW, jitter=0.0)
    assert record.delivery is Delivery.PENDING
    assert record.next_attempt_at == NOW + timedelta(seconds=0.5)
    args: dict[str, Any] = {"job_state": JobState.FAILED, "started": True, "give_up_seconds": 60}
    assert plan(sinks, {key: record}, now=NOW, **args).send == ()
    assert plan(sinks, {key: record}, now=NOW + timedelta(seconds=1), **args).send == (key,)
    decided = plan(sinks, {key: record}, now=NOW + timedelta(seconds=61), **args)
    assert decided.give_up == (key,)
    assert decided.release  # giving up settles it
    failed = given_up(record, give_up_seconds=60)
    assert failed.delivery is Delivery.FAILED
    assert failed.last_error == "gave up after 1 attempts in 60s: HTTP 500"


def test_delivered_notifications_of_an_ended_job_let_it_go() -> None:
    sinks = [checked()]
    key = (0, JobState.SUCCEEDED)
    done = attempted(claimed(Record(), claim="c", now=NOW), error="", now=NOW, jitter=0.5)
    assert (done.delivery, done.delivered_at, done.claim) == (Delivery.DELIVERED, NOW, "")
    decided = plan(
        sinks, {key: done}, job_state=JobState.SUCCEEDED, started=True, now=NOW, give_up_seconds=60
    )
    assert decided.idle is False
    assert decided.release
    running = plan(sinks, {}, job_state=JobState.RUNNING, started=True, now=NOW, give_up_seconds=60)
    assert running.idle  # nothing due yet, and a running job is never let go


def test_backoff_doubles_is_capped_and_jittered() -> None:
    assert [backoff_seconds(n, jitter=0.999999) for n in (1, 2, 3, 4)] == pytest.approx(
        [1, 2, 4, 8], rel=1e-5
    )
    assert backoff_seconds(1, jitter=0.0) == 0.5
    assert backoff_seconds(40, jitter=0.999999) == pytest.approx(60, rel=1e-5)


def test_job_status_reports_due_notifications() -> None:
    records = {(0, JobState.SUCCEEDED): Record(delivery=Delivery.DELIVERED, attempts=1, delivered_at=NOW)}
    annotations = {
        NOTIFY_ANNOTATION: encode_sinks([checked()]),
        NOTIFY_STATE_ANNOTATION: encode_records(records),
    }
    (shown,) = notification_statuses(annotations, job_state=JobState.SUCCEEDED, started=True)
    assert (shown.url, shown.state, shown.delivery, shown.attempts) == (
        URL,
        JobState.SUCCEEDED,
        Delivery.DELIVERED,
        1,
    )
    assert (
        notification_statuses(annotations, job_state=JobState.RUNNING, started=True)[0].state
        is JobState.SUCCEEDED
    )
    job = {
        "metadata": {
            "name": "job-1",
            "namespace": "ns",
            "annotations": {NOTIFY_ANNOTATION: encode_sinks([checked()])},
        },
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }
    status = derive_status(job, [])
    assert [(n.state, n.delivery) for n in status.notifications] == [(JobState.SUCCEEDED, Delivery.PENDING)]


def test_the_event_is_a_cloudevent_with_a_stable_id_and_a_verifiable_signature() -> None:
    event = job_event(
        uid="u-1", namespace="ns", job_id="job-1", state=JobState.FAILED, data={"a": 1}, now=NOW
    )
    body = event.body()
    parsed = json.loads(body)
    assert parsed == {
        "specversion": "1.0",
        "id": "u-1/failed",
        "source": "/jobscheduler/namespaces/ns/jobs/job-1",
        "type": "io.jobscheduler.job.failed",
        "subject": "job-1",
        "time": "2026-01-01T12:00:00.000Z",
        "datacontenttype": "application/json",
        "data": {"a": 1},
    }
    later = job_event(uid="u-1", namespace="ns", job_id="job-1", state=JobState.FAILED, data={}, now=NOW)
    assert later.id == event.id  # the same for every attempt: receivers dedupe on it
    signature = sign(b"key", body)
    assert signature == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert verify(b"key", body, signature)
    assert not verify(b"key", body + b" ", signature)
    assert not verify(b"other", body, signature)


def test_a_schedule_event_has_its_own_type_source_and_a_stable_id() -> None:
    event = schedule_event(
        uid="s-1", namespace="ns", name="nightly", kind="paused", at=NOW, data={"reason": "x"}
    )
    again = schedule_event(uid="s-1", namespace="ns", name="nightly", kind="paused", at=NOW, data={})
    parsed = json.loads(event.body())
    assert parsed["type"] == "io.jobscheduler.schedule.paused"
    assert parsed["source"] == "/jobscheduler/namespaces/ns/schedules/nightly"
    assert parsed["subject"] == "nightly"
    assert parsed["data"] == {"reason": "x"}
    assert event.id == again.id
    assert (
        event.id
        != schedule_event(
            uid="s-1", namespace="ns", name="nightly", kind="paused", at=NOW + timedelta(seconds=1), data={}
        ).id
    )
