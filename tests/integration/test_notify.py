"""Completion notifications end to end: `jobscheduler serve` replicas (their leader covering the
test's namespace) against the real cluster, kwok playing the pods, and a real HTTP receiver on
127.0.0.1 that checks each event's signature and CloudEvents envelope (the `cloudevents` SDK
parses it, independently of the service's own code).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.app.service import JobService
from jobscheduler.control.leader import LEASE_NAME
from jobscheduler.control.notify import Notifier, NotifyHealth
from jobscheduler.domain.notify import NotifySink, schedule_event
from jobscheduler.transport.convert import job_request_from_proto
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import Service
from tests.integration.test_dependencies import grpc_error, k8s_job, replica, schedule, status, timer
from tests.integration.test_readme import doc_section, run_grpcurl, sh_blocks
from tests.integration.test_schedules import create as create_schedule
from tests.integration.test_schedules import job as schedule_job
from tests.integration.test_schedules import timestamp as schedule_timestamp

S = pb.JobState
D = pb.NotificationStatus
KEY = b"s3cret-hmac-key-for-tests"
FINALIZER = "jobscheduler.io/notify"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A real HTTP sink: records every POST; `plan` says what to answer to the n-th one
    (status code, seconds to wait first); after the plan: 200 at once."""

    plan: list[tuple[int, float]] = field(default_factory=list)
    delay: float = 0.0  # every answer waits this long (after the plan)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/jobs"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    n = len(receiver.received)
                    receiver.received.append(Received(dict(self.headers.items()), body, time.time()))
                    code, wait = receiver.plan[n] if n < len(receiver.plan) else (200, receiver.delay)
                time.sleep(wait)
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.event for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def make_secret(cluster: Cluster, namespace: str, name: str = "hooks", key: str = "hmac-key") -> None:
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), data={key: base64.b64encode(KEY).decode()}),
    )


def verified(r: Received) -> dict[str, Any]:
    """The event, after checking what any receiver should: the signature over the exact body,
    and the CloudEvents 1.0 structured-mode envelope (parsed by the cloudevents SDK)."""
    expected = "sha256=" + hmac.new(KEY, r.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(r.headers["X-Jobscheduler-Signature"], expected)
    assert r.headers["Content-Type"] == "application/cloudevents+json"
    ce = from_http_event(HTTPMessage(headers={"content-type": r.headers["Content-Type"]}, body=r.body))
    assert ce.get_specversion() == "1.0"
    assert ce.get_datacontenttype() == "application/json"
    assert ce.get_time() is not None
    event = r.event
    assert (ce.get_id(), ce.get_type(), ce.get_source(), ce.get_subject()) == (
        event["id"],
        event["type"],
        event["source"],
        event["subject"],
    )
    return event


def notify_request(
    namespace: str,
    name: str,
    url: str,
    *,
    states: tuple[int, ...] = (),
    timeout: int | None = None,
    **kw: Any,
) -> pb.ScheduleJobRequest:
    request = timer(namespace, name, **kw)
    sink = pb.NotifySink(url=url, secret="hooks", states=list(states))
    if timeout is not None:
        sink.timeout_seconds = timeout
    request.notify.append(sink)
    return request


def allow(receiver: Receiver) -> dict[str, str]:
    port = receiver.url.split(":")[2].split("/")[0]
    return {"ALLOWED_NOTIFY_URLS": f"http://127.0.0.1:{port}/hooks/"}


def settled(stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str, n: int) -> pb.JobStatus:
    """The job's status once it shows n notifications, each DELIVERED or FAILED."""

    def probe() -> pb.JobStatus | None:
        current = status(stub, namespace, job_id)
        done = [x for x in current.notifications if x.delivery in (D.DELIVERY_DELIVERED, D.DELIVERY_FAILED)]
        return current if len(current.notifications) == n and len(done) == n else None

    return wait_until(f"{job_id}'s notifications settled", probe, timeout=60)


def let_go(cluster: Cluster, namespace: str, job_id: str) -> None:
    """The leader dropped the finalizer and the label once every notification was settled."""

    def probe() -> bool:
        meta = k8s_job(cluster, namespace, job_id).metadata
        return FINALIZER not in (meta.finalizers or []) and "jobscheduler.io/notify" not in (
            meta.labels or {}
        )

    wait_until(f"{job_id} let go", probe, timeout=20)


def test_the_receiver_gets_exactly_the_expected_signed_events(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    make_secret(cluster, namespace)
    with replica(cluster, tmp_path, namespace, **allow(receiver)) as (_server, stub):
        ok = schedule(stub, notify_request(namespace, "ok", receiver.url))
        bad = schedule(
            stub,
            notify_request(
                namespace, "bad", receiver.url, states=(S.JOB_STATE_RUNNING, S.JOB_STATE_FAILED), exit_code=3
            ),
        )
        # Created with the finalizer that keeps them until their notifications are settled.
        assert FINALIZER in (k8s_job(cluster, namespace, ok).metadata.finalizers or [])
        ok_status = settled(stub, namespace, ok, 1)
        bad_status = settled(stub, namespace, bad, 2)
        let_go(cluster, namespace, ok)
        let_go(cluster, namespace, bad)
        time.sleep(2)  # a duplicate would come now, if any
    by_type = Counter((e["subject"], e["type"]) for e in map(verified, receiver.received))
    assert by_type == {
        (ok, "io.jobscheduler.job.succeeded"): 1,
        (bad, "io.jobscheduler.job.running"): 1,
        (bad, "io.jobscheduler.job.failed"): 1,
    }
    events = {(e["subject"], e["type"]): e for e in receiver.events()}
    succeeded = events[ok, "io.jobscheduler.job.succeeded"]
    uid = k8s_job(cluster, namespace, ok).metadata.uid
    assert succeeded["id"] == f"{uid}/succeeded"
    assert succeeded["source"] == f"/jobscheduler/namespaces/{namespace}/jobs/{ok}"
    # data: the JobStatus as grpcurl shows it (protobuf's JSON mapping, the .proto's field names).
    assert succeeded["data"]["job_id"] == ok
    assert succeeded["data"]["state"] == "JOB_STATE_SUCCEEDED"
    assert events[bad, "io.jobscheduler.job.failed"]["data"]["exit_code"] == 3
    assert [(n.state, n.delivery, n.attempts) for n in ok_status.notifications] == [
        (S.JOB_STATE_SUCCEEDED, D.DELIVERY_DELIVERED, 1)
    ]
    assert {n.state for n in bad_status.notifications} == {S.JOB_STATE_RUNNING, S.JOB_STATE_FAILED}
    assert all(n.url == receiver.url and n.HasField("delivered_at") for n in bad_status.notifications)


def test_a_failing_receiver_is_retried_until_it_recovers(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    make_secret(cluster, namespace)
    # Two answers too slow for the sink's 1 s timeout, two 500s, then 200.
    receiver.plan = [(200, 2.5), (200, 2.5), (500, 0), (500, 0)]
    with replica(cluster, tmp_path, namespace, **allow(receiver)) as (_server, stub):
        job_id = schedule(stub, notify_request(namespace, "flaky", receiver.url, timeout=1))

        def failing() -> pb.NotificationStatus | None:
            ns = status(stub, namespace, job_id).notifications
            return ns[0] if ns and ns[0].attempts >= 1 and ns[0].last_error else None

        seen = wait_until("a failed attempt shown", failing, timeout=60)
        assert seen.delivery in (D.DELIVERY_PENDING, D.DELIVERY_DELIVERING)
        assert "timed out after 1s" in seen.last_error
        # The service's own status names the failing sink meanwhile, and clears once delivered.
        degraded = stub.GetServiceStatus(pb.GetServiceStatusRequest(), timeout=10)
        [sinks] = [c for c in degraded.conditions if c.type == "Notifications"]
        assert (degraded.degraded, sinks.ok, sinks.reason) == (True, False, "SinksFailing")
        assert list(degraded.notifications.failing_sinks) == [receiver.url]
        assert degraded.notifications.pending == 1
        final = settled(stub, namespace, job_id, 1).notifications[0]
        let_go(cluster, namespace, job_id)
        healthy = stub.GetServiceStatus(pb.GetServiceStatusRequest(), timeout=10)
        assert (healthy.degraded, healthy.notifications.pending) == (False, 0)
    assert final.delivery == D.DELIVERY_DELIVERED
    assert final.attempts == 5
    assert final.last_error == "HTTP 500 from the sink"  # the last failure is kept for the record
    ids = {verified(r)["id"] for r in receiver.received}
    assert len(receiver.received) == 5  # five attempts
    assert len(ids) == 1  # of one event
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    # Backed off exponentially (1 s, 2 s, 4 s, 8 s, each times a jitter in [0.5, 1)).
    assert gaps[-1] >= 4.0 - 0.2
    assert gaps[-2] >= 2.0 - 0.2


def test_a_receiver_that_never_answers_well_is_given_up(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    make_secret(cluster, namespace)
    receiver.plan = [(503, 0)] * 100
    with replica(cluster, tmp_path, namespace, NOTIFY_GIVE_UP_SECONDS="4", **allow(receiver)) as (_s, stub):
        job_id = schedule(stub, notify_request(namespace, "doomed", receiver.url))
        final = settled(stub, namespace, job_id, 1).notifications[0]
        let_go(cluster, namespace, job_id)
    assert final.delivery == D.DELIVERY_FAILED
    assert final.last_error.startswith(f"gave up after {final.attempts} attempts in 4s: HTTP 503")
    assert final.attempts >= 2


def test_bad_notify_input_creates_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver, cached_service: Service
) -> None:
    batch = client.BatchV1Api(cluster.api)
    # Without ALLOWED_NOTIFY_URLS, notifications are off.
    err = grpc_error(lambda: schedule(cached_service.stub, notify_request(namespace, "x", receiver.url)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ALLOWED_NOTIFY_URLS" in (err.details() or "")
    make_secret(cluster, namespace)
    cases: list[tuple[Callable[[pb.NotifySink], None], grpc.StatusCode, str]] = [
        (
            lambda s: setattr(s, "url", "ftp://127.0.0.1/hooks/x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "notify[0].url",
        ),
        (
            lambda s: setattr(s, "url", s.url.replace("http://", "http://user:pw@")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "notify[0].url",
        ),
        (
            lambda s: setattr(s, "url", "http://169.254.169.254/latest/meta-data"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "notify[0].url",
        ),
        (lambda s: setattr(s, "secret", ""), grpc.StatusCode.INVALID_ARGUMENT, "notify[0].secret"),
        (lambda s: setattr(s, "secret", "missing"), grpc.StatusCode.FAILED_PRECONDITION, "notify[0].secret"),
        (
            lambda s: setattr(s, "secret_key", "other"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "notify[0].secret_key",
        ),
        (
            lambda s: s.states.append(S.JOB_STATE_PENDING),
            grpc.StatusCode.INVALID_ARGUMENT,
            "notify[0].states[0]",
        ),
        (
            lambda s: setattr(s, "timeout_seconds", 0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "notify[0].timeout_seconds",
        ),
    ]
    with replica(cluster, tmp_path, namespace, **allow(receiver)) as (_server, stub):
        for change, code, where in cases:
            request = notify_request(namespace, "bad", receiver.url)
            change(request.notify[0])
            err = grpc_error(lambda r=request: schedule(stub, r))  # type: ignore[misc]
            assert err.code() == code, (where, err.details())
            assert (err.details() or "").startswith(where), err.details()
        too_many = notify_request(namespace, "many", receiver.url)
        too_many.notify.extend([too_many.notify[0]] * 5)
        err = grpc_error(lambda: schedule(stub, too_many))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "notify" in (err.details() or "")
    assert batch.list_namespaced_job(namespace).items == []


def test_schedules_and_templates_carry_notify(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    make_secret(cluster, namespace)
    with replica(cluster, tmp_path, namespace, **allow(receiver)) as (_server, stub):
        job = notify_request(namespace, "tpl", receiver.url)
        job.ClearField("namespace")
        stub.CreateTemplate(
            pb.CreateTemplateRequest(template=pb.Template(name="hooked", namespace=namespace, job=job)),
            timeout=10,
        )
        from_template = stub.ScheduleJob(
            pb.ScheduleJobRequest(namespace=namespace, template="hooked"), timeout=10
        ).job_id
        settled(stub, namespace, from_template, 1)
        created = stub.CreateSchedule(
            pb.CreateScheduleRequest(
                schedule=pb.ScheduleSpec(name="hooked", namespace=namespace, cron="0 0 1 1 *", job=job)
            ),
            timeout=10,
        )
        assert [s.url for s in created.spec.job.notify] == [receiver.url]
        run = stub.TriggerSchedule(pb.TriggerScheduleRequest(name="hooked", namespace=namespace), timeout=10)
        settled(stub, namespace, run.status.job_id, 1)
    subjects = sorted(verified(r)["subject"] for r in receiver.received)
    assert subjects == sorted([from_template, run.status.job_id])


def lease_holder(cluster: Cluster, namespace: str) -> str:
    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE_NAME, namespace)
    return str(lease.spec.holder_identity or "")


def test_every_event_arrives_across_a_leader_kill(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Two replicas; the leader is killed (SIGKILL) while the receiver is slow to answer: the
    other takes over and every event still arrives, each at most once more than it should."""
    make_secret(cluster, namespace)
    receiver.delay = 1.5
    jobs = 6
    env = allow(receiver)
    with (
        replica(cluster, tmp_path, namespace, POD_NAME="r1", **env) as (one, stub1),
        replica(cluster, tmp_path, namespace, POD_NAME="r2", **env) as (two, _stub2),
    ):
        leader = wait_until("a leader", lambda: lease_holder(cluster, namespace) or None, timeout=20)
        victim, survivor = (one, two) if leader.startswith("r1_") else (two, one)
        ids = [schedule(stub1, notify_request(namespace, f"k{i}", receiver.url)) for i in range(jobs)]
        wait_until("deliveries under way", lambda: len(receiver.received) >= 1 or None, timeout=60)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        wait_until(
            "the other replica leads",
            lambda: lease_holder(cluster, namespace).startswith("r2_" if victim is one else "r1_") or None,
            timeout=30,
        )
        stub = _stub2 if victim is one else stub1
        for job_id in ids:
            settled(stub, namespace, job_id, 1)
            let_go(cluster, namespace, job_id)
        assert survivor.proc.poll() is None
    per_job = Counter(verified(r)["subject"] for r in receiver.received)
    assert set(per_job) == set(ids)  # every event arrived
    duplicates = sum(per_job.values()) - jobs
    # At most one extra per attempt in flight when the leader died (its claims expire).
    assert duplicates <= jobs
    print(f"leader kill: {jobs} events, {sum(per_job.values())} deliveries, {duplicates} duplicates")


def test_the_notifications_example_works_as_written(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    _, section = doc_section("Asking for notifications")
    lines = [
        line for block in sh_blocks(section) for line in block.splitlines() if line.startswith("grpcurl ")
    ]
    assert len(lines) == 2
    port = receiver.url.split(":")[2].split("/")[0]
    make_secret(cluster, namespace, name="build-hooks")
    env = {"ALLOWED_NOTIFY_URLS": f"http://127.0.0.1:{port}/hooks/"}
    with replica(cluster, tmp_path, namespace, **env) as (server, stub):

        def run(line: str) -> dict[str, Any]:
            line = line.replace("team-a", namespace).replace("localhost:50054", f"localhost:{server.port}")
            _, out = run_grpcurl(line.replace("127.0.0.1:8099", f"127.0.0.1:{port}"))
            return out

        job_id = str(run(lines[0])["job_id"])
        shown = run(lines[1].replace("job-7f3k2m9x1q", job_id))
        assert shown["status"]["job_id"] == job_id
        settled(stub, namespace, job_id, 2)
    # The documented verification recipe accepts what the service sent.
    (recipe,) = re.findall(r"```python\n(.*?)```", doc_section("Verifying the signature")[1], re.S)
    scope: dict[str, Any] = {}
    exec(recipe, scope)  # noqa: S102 - the doc's own snippet
    types = []
    for r in receiver.received:
        assert scope["verified"](KEY, r.body, r.headers["X-Jobscheduler-Signature"])
        assert not scope["verified"](b"wrong", r.body, r.headers["X-Jobscheduler-Signature"])
        types.append(verified(r)["type"])
    assert sorted(types) == ["io.jobscheduler.job.running", "io.jobscheduler.job.succeeded"]


def test_a_cancelled_job_notifies_and_ttl_waits_for_the_delivery(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    """CancelJob sends the cancelled event; a Job with ttl_seconds_after_finished 0 is kept by the
    finalizer until its notification is delivered (the receiver is slow), then TTL removes it."""
    make_secret(cluster, namespace)
    # Four attempts fail (backing off ~7 s in all): the TTL controller acts meanwhile.
    receiver.plan = [(500, 0)] * 4
    with replica(cluster, tmp_path, namespace, **allow(receiver)) as (_server, stub):
        request = notify_request(
            namespace, "long", receiver.url, duration="600s", ttl_seconds_after_finished=0
        )
        request.notify[0].states.append(S.JOB_STATE_CANCELLED)
        job_id = schedule(stub, request)
        wait_until(
            "running",
            lambda: status(stub, namespace, job_id).state == S.JOB_STATE_RUNNING or None,
            timeout=60,
        )
        stub.CancelJob(pb.CancelJobRequest(job_id=job_id, namespace=namespace), timeout=10)

        wait_until(
            "the TTL controller asked for its deletion",
            lambda: k8s_job(cluster, namespace, job_id).metadata.deletion_timestamp is not None or None,
            timeout=30,
        )
        # The finalizer holds it while the notification is still undelivered.
        (shown,) = status(stub, namespace, job_id).notifications
        assert shown.state == S.JOB_STATE_CANCELLED
        assert shown.delivery != D.DELIVERY_DELIVERED
        assert shown.last_error == "HTTP 500 from the sink"

        def gone() -> bool:
            try:
                k8s_job(cluster, namespace, job_id)
            except client.ApiException as e:
                return e.status == 404
            return False

        wait_until("the TTL controller removed it once delivered", gone, timeout=30)
    assert len(receiver.received) == 5  # four failures, then delivered: only then let go
    (event,) = {verified(r)["type"] for r in receiver.received}
    assert event == "io.jobscheduler.job.cancelled"


def test_send_event_delivers_any_cloudevent_to_a_jobs_sinks(
    cluster: Cluster, namespace: str, receiver: Receiver, cached_service: Service
) -> None:
    """What a schedule's pause uses: an arbitrary event, signed, retried until delivered."""
    make_secret(cluster, namespace)
    receiver.plan = [(503, 0)]
    assert cached_service.app.service is not None
    notifier = Notifier(
        cached_service.app.service, serialize=lambda _: {}, give_up_seconds=30, identity="test"
    )
    event = schedule_event(
        uid="u",
        namespace=namespace,
        name="nightly",
        kind="paused",
        at=datetime.now(UTC),
        data={"reason": "3 failed"},
    )
    try:
        notifier.send_event(
            namespace, [NotifySink(url=receiver.url, secret="hooks", secret_key="hmac-key")], event
        )
        wait_until("delivered after one retry", lambda: len(receiver.received) == 2 or None, timeout=20)
    finally:
        notifier.stop()
    first, second = (verified(r) for r in receiver.received)
    assert first == second
    assert second["type"] == "io.jobscheduler.schedule.paused"
    assert second["data"] == {"reason": "3 failed"}


def test_without_a_watch_cache_the_sweep_delivers(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    """WATCH_NAMESPACES=-: no change feed; the leader's sweep lists the pending jobs from the API."""
    make_secret(cluster, namespace)
    with replica(cluster, tmp_path, namespace, WATCH_NAMESPACES="-", **allow(receiver)) as (_server, stub):
        job_id = schedule(
            stub,
            notify_request(
                namespace, "uncached", receiver.url, states=(S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED)
            ),
        )
        wait_until("delivered", lambda: len(receiver.received) == 2 or None, timeout=60)
        let_go(cluster, namespace, job_id)
    # The started event left while the job ran (its data says so), before the job ended.
    assert [(e["type"], e["data"]["state"]) for e in map(verified, receiver.received)] == [
        ("io.jobscheduler.job.running", "JOB_STATE_RUNNING"),
        ("io.jobscheduler.job.succeeded", "JOB_STATE_SUCCEEDED"),
    ]


def test_health_reports_the_backlog_and_failing_sinks(
    cluster: Cluster, namespace: str, receiver: Receiver, cached_service: Service
) -> None:
    """Notifier.health (GetServiceStatus's view): a due notification failing at its sink is
    backlog and names the sink; once delivered, neither. Driven here by the sweep alone."""
    make_secret(cluster, namespace)
    base = cached_service.app.service
    assert base is not None
    jobs = JobService(
        base.gateway,
        base.registry,
        dataclasses.replace(base.settings, allowed_notify_urls=(receiver.url,)),
        cache=base.cache,
    )
    notifier = Notifier(jobs, serialize=lambda _: {}, give_up_seconds=600, identity="test")
    receiver.plan = [(500, 0)]
    try:
        request = job_request_from_proto(notify_request(namespace, "h", receiver.url), base.registry)
        job_id = jobs.submission.schedule(request).status.job_id

        def swept_until(what: str, check: Callable[[NotifyHealth], bool]) -> NotifyHealth:
            def probe() -> NotifyHealth | None:
                notifier(namespace)
                health = notifier.health([namespace])
                return health if check(health) else None

            return wait_until(what, probe, timeout=60)

        failing = swept_until("a failed attempt", lambda h: bool(h.failing_sinks))
        assert (failing.backlog, failing.failing_sinks) == (1, (receiver.url,))
        assert failing.oldest_pending_seconds is not None
        assert 0 <= failing.oldest_pending_seconds < 60
        swept_until("delivered", lambda h: h.backlog == 0 and not h.failing_sinks)
        let_go(cluster, namespace, job_id)
    finally:
        notifier.stop()
    assert len(receiver.received) == 2


def test_a_schedule_that_pauses_itself_tells_its_jobs_sinks(
    cluster: Cluster, namespace: str, tmp_path: Path, receiver: Receiver
) -> None:
    """pause_after_failures with the schedule's job notifying: besides each run's FAILED event,
    one signed `io.jobscheduler.schedule.paused` event saying why."""
    make_secret(cluster, namespace)
    run = schedule_job("0s", **{"sim.jobscheduler.io/exit-code": "3"})
    run.notify.append(pb.NotifySink(url=receiver.url, secret="hooks"))
    env = {**allow(receiver), "MIN_SCHEDULE_INTERVAL_SECONDS": "1"}
    with replica(cluster, tmp_path, namespace, **env) as (_server, stub):
        start = datetime.now(UTC).replace(microsecond=0)
        create_schedule(
            stub,
            namespace,
            name="flaky",
            interval="1s",
            start_time=schedule_timestamp(start),
            concurrency_policy=pb.CONCURRENCY_POLICY_FORBID,
            pause_after_failures=2,
            job=run,
        )
        paused = wait_until(
            "the paused event",
            lambda: [
                r for r in list(receiver.received) if r.event["type"] == "io.jobscheduler.schedule.paused"
            ],
            timeout=60,
        )
        got = stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name="flaky"), timeout=10)
    [event] = [verified(r) for r in paused]
    assert got.spec.paused
    assert got.status.paused_reason == "PausedAfterFailures"
    assert event["source"] == f"/jobscheduler/namespaces/{namespace}/schedules/flaky"
    assert event["subject"] == "flaky"
    data = event["data"]
    assert (data["schedule"], data["namespace"], data["reason"]) == (
        "flaky",
        namespace,
        "PausedAfterFailures",
    )
    assert data["message"] == got.status.paused_message
    assert data["consecutive_failures"] == 2
    failed = [e for e in receiver.events() if e["type"] == "io.jobscheduler.job.failed"]
    assert len(failed) >= 2  # the runs' own notifications still go out
