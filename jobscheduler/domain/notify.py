"""Completion notifications (ScheduleJob `notify`), the pure part: validating sinks, the
annotations that carry them and their delivery state on the Job, which notifications are due,
what the leader does next (send, retry later, give up, let the Job go), the CloudEvent and its
signature. The I/O is jobscheduler.control.notify's.

Delivery state lives on the Job (NOTIFY_STATE_ANNOTATION), one record per (sink, state), written
by the leader with patches conditional on the resourceVersion: an attempt is claimed (DELIVERING,
with the claim's time) before it is sent, so a new leader re-sends only an attempt whose claim
has expired, at most once per attempt in flight when the old leader died.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from jobscheduler.domain.errors import FailedPreconditionError, InvalidArgumentError
from jobscheduler.domain.models import Delivery, JobState, NotificationStatus

# The sinks as the request gave them (validated), and the delivery record of each due one.
NOTIFY_ANNOTATION = "jobscheduler.io/notify"
NOTIFY_STATE_ANNOTATION = "jobscheduler.io/notify-state"
# On a Job with notifications not yet settled: the leader's sweep selects on it.
NOTIFY_LABEL = "jobscheduler.io/notify"
NOTIFY_LABEL_VALUE = "pending"
# Keeps the Job (TTL deletion, a `kubectl delete`) until its notifications are settled.
NOTIFY_FINALIZER = "jobscheduler.io/notify"
SIGNATURE_HEADER = "X-Jobscheduler-Signature"
CONTENT_TYPE = "application/cloudevents+json"
EVENT_TYPE_PREFIX = "io.jobscheduler.job."

MAX_SINKS = 5
MAX_URL_LENGTH = 2048
DEFAULT_SECRET_KEY = "hmac-key"  # noqa: S105 - a key's name, no secret
DEFAULT_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 60
NOTIFIABLE = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.RUNNING)
DEFAULT_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
# Backoff between attempts: BASE * 2^(attempts-1), capped, times a jitter factor in [0.5, 1).
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# An attempt claimed this long after its timeout ran out is taken for dead (its leader is gone).
CLAIM_GRACE_SECONDS = 5.0
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class NotifySink:
    url: str
    states: tuple[JobState, ...] = ()  # empty: DEFAULT_STATES
    secret: str = ""
    secret_key: str = ""  # empty: DEFAULT_SECRET_KEY
    timeout_seconds: int | None = None  # None: DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class Record:
    """One notification's delivery, as kept in NOTIFY_STATE_ANNOTATION."""

    delivery: Delivery = Delivery.PENDING
    attempts: int = 0
    last_error: str = ""
    due_at: datetime | None = None  # when it first became due (give-up counts from here)
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    claim: str = ""  # who made the attempt in flight


Key = tuple[int, JobState]  # (sink index, state)


# -- validation ------------------------------------------------------------------------------


def url_allowed(url: str, patterns: Sequence[str]) -> bool:
    """ALLOWED_NOTIFY_URLS: a pattern ending in `/` is a prefix; any other is a glob of the whole URL."""
    return any(url.startswith(p) if p.endswith("/") else fnmatch.fnmatchcase(url, p) for p in patterns)


def check_notify(sinks: Sequence[NotifySink], *, allowed: Sequence[str]) -> tuple[NotifySink, ...]:
    """The request's sinks, checked, with defaults applied; errors name `notify[i].<field>`."""
    if not sinks:
        return ()
    if not allowed:
        raise FailedPreconditionError(
            "notify: notifications are turned off here: the operator must list the sink URLs jobs may "
            "notify in ALLOWED_NOTIFY_URLS"
        )
    if len(sinks) > MAX_SINKS:
        raise InvalidArgumentError("notify", f"at most {MAX_SINKS} sinks (got {len(sinks)})")
    checked = []
    for i, sink in enumerate(sinks):
        where = f"notify[{i}]"
        _check_url(f"{where}.url", sink.url, allowed)
        states = sink.states or DEFAULT_STATES
        for j, state in enumerate(states):
            if state not in NOTIFIABLE:
                raise InvalidArgumentError(
                    f"{where}.states[{j}]",
                    f"{state.value} cannot be notified; "
                    "use SUCCEEDED, FAILED, CANCELLED or RUNNING (started)",
                )
        if len(set(states)) != len(states):
            raise InvalidArgumentError(f"{where}.states", "lists a state twice")
        if not sink.secret:
            raise InvalidArgumentError(
                f"{where}.secret",
                "is required: the name of a Secret in the job's namespace holding the HMAC key",
            )
        _check_name(f"{where}.secret", sink.secret, 253)
        key = sink.secret_key or DEFAULT_SECRET_KEY
        if len(key) > 253 or not all(c.isalnum() or c in "-._" for c in key):
            raise InvalidArgumentError(
                f"{where}.secret_key", "must be a Secret data key (letters, digits, - . _)"
            )
        timeout = sink.timeout_seconds
        if timeout is not None and not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
            raise InvalidArgumentError(
                f"{where}.timeout_seconds", f"must be between 1 and {MAX_TIMEOUT_SECONDS} (got {timeout})"
            )
        checked.append(
            NotifySink(
                url=sink.url,
                states=tuple(sorted(states, key=NOTIFIABLE.index)),
                secret=sink.secret,
                secret_key=key,
                timeout_seconds=timeout if timeout is not None else DEFAULT_TIMEOUT_SECONDS,
            )
        )
    return tuple(checked)


def _check_url(where: str, url: str, allowed: Sequence[str]) -> None:
    if not url:
        raise InvalidArgumentError(where, "is required: the http(s) URL to POST the events to")
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidArgumentError(where, f"must be a URL of at most {MAX_URL_LENGTH} characters, no spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise InvalidArgumentError(where, f"is not a URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgumentError(where, f"must be http:// or https:// (got {parts.scheme or 'no'} scheme)")
    if "@" in parts.netloc:
        raise InvalidArgumentError(
            where, "must not carry credentials (user:password@); the events are signed with the sink's secret"
        )
    if not parts.hostname:
        raise InvalidArgumentError(where, "has no host")
    if parts.fragment:
        raise InvalidArgumentError(where, "must not have a #fragment")
    if not url_allowed(url, allowed):
        raise InvalidArgumentError(
            where, f"{url!r} is not an allowed sink here; allowed: {', '.join(allowed)} (ALLOWED_NOTIFY_URLS)"
        )


def _check_name(where: str, name: str, limit: int) -> None:
    ok = (
        len(name) <= limit
        and all(c.islower() or c.isdigit() or c in "-." for c in name)
        and name[0].isalnum()
        and name[-1].isalnum()
    )
    if not ok:
        raise InvalidArgumentError(where, f"{name!r} is not a Kubernetes object name (DNS-1123 subdomain)")


# -- the annotations --------------------------------------------------------------------------


def encode_sinks(sinks: Sequence[NotifySink]) -> str:
    return json.dumps(
        [
            {
                "url": s.url,
                "states": [state.value for state in s.states],
                "secret": s.secret,
                "secretKey": s.secret_key,
                "timeoutSeconds": s.timeout_seconds,
            }
            for s in sinks
        ],
        separators=(",", ":"),
    )


def decode_sinks(annotations: Mapping[str, Any]) -> tuple[NotifySink, ...]:
    """The sinks stored on a Job; () when it has none or the annotation is not ours to read."""
    try:
        raw = json.loads(annotations.get(NOTIFY_ANNOTATION) or "[]")
        return tuple(
            NotifySink(
                url=str(s["url"]),
                states=tuple(JobState(v) for v in s["states"]),
                secret=str(s["secret"]),
                secret_key=str(s.get("secretKey") or DEFAULT_SECRET_KEY),
                timeout_seconds=int(s.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS),
            )
            for s in raw
        )
    except (ValueError, TypeError, KeyError):
        return ()


def _time(value: Any) -> datetime | None:
    if not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value, UTC)


def _stamp(value: datetime | None) -> float | None:
    return round(value.timestamp(), 3) if value is not None else None


def decode_records(annotations: Mapping[str, Any]) -> dict[Key, Record]:
    try:
        raw = json.loads(annotations.get(NOTIFY_STATE_ANNOTATION) or "{}")
        records = {}
        for key, r in raw.items():
            index, state = key.split("/", 1)
            records[int(index), JobState(state)] = Record(
                delivery=Delivery(r.get("d", "PENDING")),
                attempts=int(r.get("n", 0)),
                last_error=str(r.get("e", "")),
                due_at=_time(r.get("due")),
                last_attempt_at=_time(r.get("t")),
                next_attempt_at=_time(r.get("next")),
                delivered_at=_time(r.get("at")),
                claim=str(r.get("c", "")),
            )
        return records
    except (ValueError, TypeError, AttributeError):
        return {}


def encode_records(records: Mapping[Key, Record]) -> str:
    out = {}
    for (index, state), r in sorted(records.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        fields: dict[str, Any] = {
            "d": r.delivery.value,
            "n": r.attempts,
            "e": r.last_error,
            "due": _stamp(r.due_at),
            "t": _stamp(r.last_attempt_at),
            "next": _stamp(r.next_attempt_at),
            "at": _stamp(r.delivered_at),
            "c": r.claim,
        }
        out[f"{index}/{state.value}"] = {k: v for k, v in fields.items() if v not in (None, "", 0)}
    return json.dumps(out, separators=(",", ":"), sort_keys=True)


# -- what is due, and what to do -----------------------------------------------------------------


def is_due(state: JobState, *, job_state: JobState, started: bool) -> bool:
    """A terminal state's notification is due once the job is in it; RUNNING's ("started") once
    it runs, or ended after having run."""
    if state is JobState.RUNNING:
        return job_state is JobState.RUNNING or (job_state.terminal and started)
    return job_state is state


def due_keys(sinks: Sequence[NotifySink], *, job_state: JobState, started: bool) -> list[Key]:
    return [
        (i, state)
        for i, sink in enumerate(sinks)
        for state in sink.states
        if is_due(state, job_state=job_state, started=started)
    ]


def notification_statuses(
    annotations: Mapping[str, Any], *, job_state: JobState, started: bool
) -> tuple[NotificationStatus, ...]:
    """JobStatus.notifications: each due notification (and any recorded) and its delivery."""
    sinks = decode_sinks(annotations)
    if not sinks:
        return ()
    records = decode_records(annotations)
    keys = due_keys(sinks, job_state=job_state, started=started)
    keys += [k for k in records if k not in keys and k[0] < len(sinks)]
    out = []
    for index, state in keys:
        r = records.get((index, state), Record())
        out.append(
            NotificationStatus(
                url=sinks[index].url,
                state=state,
                delivery=r.delivery,
                attempts=r.attempts,
                last_error=r.last_error,
                last_attempt_at=r.last_attempt_at,
                delivered_at=r.delivered_at,
            )
        )
    return tuple(out)


def backoff_seconds(attempts: int, *, jitter: float) -> float:
    """Wait before the next attempt after `attempts` failed ones; jitter in [0, 1)."""
    exponent = min(max(attempts - 1, 0), 30)
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * math.pow(2, exponent)) * (0.5 + jitter / 2)


@dataclass(frozen=True, slots=True)
class Plan:
    send: tuple[Key, ...] = ()  # attempt now
    give_up: tuple[Key, ...] = ()  # mark FAILED (no attempt left within NOTIFY_GIVE_UP_SECONDS)
    release: bool = False  # every due notification settled and the job ended: drop label and finalizer
    next_at: datetime | None = None  # the earliest later attempt, if any
    backlog: int = 0  # due notifications not settled

    @property
    def idle(self) -> bool:
        return not self.send and not self.give_up and not self.release


def plan(
    sinks: Sequence[NotifySink],
    records: Mapping[Key, Record],
    *,
    job_state: JobState,
    started: bool,
    now: datetime,
    give_up_seconds: float,
) -> Plan:
    """What the leader does with a job's notifications now."""
    send: list[Key] = []
    give_up: list[Key] = []
    later: list[datetime] = []
    backlog = 0
    for key in due_keys(sinks, job_state=job_state, started=started):
        r = records.get(key, Record())
        if r.delivery.settled:
            continue
        backlog += 1
        if r.delivery is Delivery.DELIVERING and r.last_attempt_at is not None:
            expires = r.last_attempt_at + timedelta(
                seconds=(sinks[key[0]].timeout_seconds or DEFAULT_TIMEOUT_SECONDS) + CLAIM_GRACE_SECONDS
            )
            if now < expires:
                later.append(expires)
                continue
        due_at = r.due_at or now
        if r.attempts and (now - due_at).total_seconds() >= give_up_seconds:
            give_up.append(key)
        elif r.next_attempt_at is not None and now < r.next_attempt_at:
            later.append(r.next_attempt_at)
        else:
            send.append(key)
    release = job_state.terminal and backlog == len(give_up) and not send
    return Plan(
        send=tuple(send),
        give_up=tuple(give_up),
        release=release,
        next_at=min(later) if later else None,
        backlog=backlog,
    )


def claimed(record: Record, *, claim: str, now: datetime) -> Record:
    return replace(
        record,
        delivery=Delivery.DELIVERING,
        attempts=record.attempts + 1,
        due_at=record.due_at or now,
        last_attempt_at=now,
        next_attempt_at=None,
        claim=claim,
    )


def attempted(record: Record, *, error: str, now: datetime, jitter: float) -> Record:
    """The record after an attempt: DELIVERED, or PENDING with the error and the next try's time."""
    if not error:
        return replace(record, delivery=Delivery.DELIVERED, delivered_at=now, claim="", next_attempt_at=None)
    return replace(
        record,
        delivery=Delivery.PENDING,
        last_error=error[:MAX_ERROR_CHARS],
        claim="",
        next_attempt_at=now + timedelta(seconds=backoff_seconds(record.attempts, jitter=jitter)),
    )


def given_up(record: Record, *, give_up_seconds: float) -> Record:
    error = record.last_error or "no attempt succeeded"
    return replace(
        record,
        delivery=Delivery.FAILED,
        claim="",
        next_attempt_at=None,
        last_error=f"gave up after {record.attempts} attempts in {give_up_seconds:g}s: {error}"[
            :MAX_ERROR_CHARS
        ],
    )


# -- the event ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvents 1.0 event in structured mode (JSON)."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps(
            {
                "specversion": "1.0",
                "id": self.id,
                "source": self.source,
                "type": self.type,
                "subject": self.subject,
                "time": self.time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "data": self.data,
            },
            separators=(",", ":"),
        ).encode()


def job_source(namespace: str, job_id: str) -> str:
    return f"/jobscheduler/namespaces/{namespace}/jobs/{job_id}"


def job_event(
    *, uid: str, namespace: str, job_id: str, state: JobState, data: Mapping[str, Any], now: datetime
) -> CloudEvent:
    """The notification of a job reaching `state`; its id is the same for every attempt and
    every sink, so a receiver dedupes on it."""
    return CloudEvent(
        id=f"{uid}/{state.value.lower()}",
        source=job_source(namespace, job_id),
        type=EVENT_TYPE_PREFIX + state.value.lower(),
        subject=job_id,
        time=now,
        data=data,
    )


def schedule_event(
    *, uid: str, namespace: str, name: str, kind: str, at: datetime, data: Mapping[str, Any]
) -> CloudEvent:
    """An event about a schedule (e.g. kind "paused": type `io.jobscheduler.schedule.paused`),
    for Notifier.send_event to the sinks of the schedule's job; its id is the schedule's uid, the
    kind and the moment it happened, so the same pause reported twice has one id."""
    return CloudEvent(
        id=f"{uid}/{kind}/{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}",
        source=f"/jobscheduler/namespaces/{namespace}/schedules/{name}",
        type=f"io.jobscheduler.schedule.{kind}",
        subject=name,
        time=at,
        data=data,
    )


def sign(key: bytes, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(key: bytes, body: bytes, header: str) -> bool:
    """What a receiver does (docs/notifications.md): constant-time compare of the header."""
    return hmac.compare_digest(sign(key, body), header)


# Serializer of a JobStatus to its canonical JSON (protobuf's, as grpcurl shows it): given by the
# transport layer at wiring time, the one place that knows the proto.
Serializer = Callable[[Any], Mapping[str, Any]]
