"""Schedules on the real cluster: CronJobs for cron (and cron-expressible intervals), the
leader-elected loop for other intervals with two replicas and a failover, run-now with an
idempotency key, pause/resume, concurrency, catch-up after an outage, statistics, update and
delete. `jobscheduler serve` runs as its own process(es) with the loop on, leading through a
Lease in the test's namespace; intervals of a few seconds keep the waits short (the one-minute
cases are marked slow)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import ServeProcess, free_port, start_serve

SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEVER_SOON = "0 0 1 1 *"


def job(duration: str = "1s", **annotations: str) -> pb.ScheduleJobRequest:
    return pb.ScheduleJobRequest(
        annotations={"sim.jobscheduler.io/duration": duration, **annotations},
        timer_job=pb.TimerJob(duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:50053"),
    )


def timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


@contextmanager
def replica(
    cluster: Cluster, tmp_path: Path, namespace: str, **env: str
) -> Iterator[tuple[ServeProcess, pb_grpc.JobSchedulerStub]]:
    server = start_serve(
        cluster,
        tmp_path,
        port=free_port(),
        env={
            "K8S_NAMESPACE": namespace,
            "WATCH_NAMESPACES": namespace,
            "MIN_SCHEDULE_INTERVAL_SECONDS": "1",
            "SCHEDULE_TICK_SECONDS": "0.2",
            "LEADER_LEASE_SECONDS": "3",
            **env,
        },
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, pb_grpc.JobSchedulerStub(channel)
    finally:
        channel.close()
        if server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(timeout=30)
    assert "rpc crashed" not in server.output()
    assert "schedule tick crashed" not in server.output()


def runs(cluster: Cluster, namespace: str, schedule: str) -> list[client.V1Job]:
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(
        namespace, label_selector=f"jobscheduler.io/schedule={schedule}"
    )
    return sorted(jobs.items, key=lambda j: j.metadata.annotations.get(SCHEDULED_AT, j.metadata.name))


def scheduled_times(jobs: list[client.V1Job]) -> list[datetime]:
    return sorted(
        datetime.fromisoformat(j.metadata.annotations[SCHEDULED_AT].replace("Z", "+00:00"))
        for j in jobs
        if SCHEDULED_AT in j.metadata.annotations
    )


def cronjob(cluster: Cluster, namespace: str, name: str) -> client.V1CronJob:
    return client.BatchV1Api(cluster.api).read_namespaced_cron_job(name, namespace)


def create(stub: pb_grpc.JobSchedulerStub, namespace: str, **spec: object) -> pb.Schedule:
    """CreateSchedule; runs are kept (history 100) unless the test says otherwise, so they can be
    counted."""
    spec.setdefault("successful_runs_history_limit", 100)
    spec.setdefault("failed_runs_history_limit", 100)
    return stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=pb.ScheduleSpec(namespace=namespace, **spec)),  # type: ignore[arg-type]
        timeout=10,
    )


def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), caught.value.details() or ""


def whole_second_after(now: datetime, offset: float) -> datetime:
    """A start time `offset` seconds ahead, off the whole second (so no cron expression fits)."""
    return now.replace(microsecond=0) + timedelta(seconds=offset, milliseconds=300)


# -- CronJobs ------------------------------------------------------------------------------------


def test_cron_schedule_is_a_cronjob_in_its_time_zone(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        made = create(
            stub,
            namespace,
            name="nightly",
            cron="30 2 * * *",
            time_zone="Europe/Berlin",
            concurrency_policy=pb.CONCURRENCY_POLICY_FORBID,
            successful_runs_history_limit=5,
            failed_runs_history_limit=2,
            catch_up=pb.CATCH_UP_POLICY_LATEST,
            job=job(),
        )
        skipping = create(stub, namespace, name="skipping", cron="@hourly", job=job())
        got = stub.GetSchedule(
            pb.GetScheduleRequest(namespace=namespace, name="nightly", next_runs=3), timeout=10
        )

    assert made.status.executor == "cronjob"
    cj = cronjob(cluster, namespace, "nightly")
    assert cj.spec.schedule == "30 2 * * *"
    assert cj.spec.time_zone == "Europe/Berlin"
    assert cj.spec.concurrency_policy == "Forbid"
    assert (cj.spec.successful_jobs_history_limit, cj.spec.failed_jobs_history_limit) == (5, 2)
    assert cj.spec.starting_deadline_seconds is None  # LATEST: the controller's own rule
    assert not cj.spec.suspend
    assert cj.spec.job_template.metadata.labels["jobscheduler.io/schedule"] == "nightly"
    assert cj.spec.job_template.spec.template.metadata.labels["jobscheduler.io/schedule"] == "nightly"
    assert cj.spec.job_template.spec.ttl_seconds_after_finished is None  # history limits keep runs
    # SKIP bounds how late the controller may start a run.
    assert cronjob(cluster, namespace, "skipping").spec.starting_deadline_seconds == 60
    assert skipping.status.cron == "@hourly"

    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.now(berlin).date()
    expected = []
    while len(expected) < 3:
        candidate = datetime(day.year, day.month, day.day, 2, 30, tzinfo=berlin)
        if candidate > datetime.now(UTC):
            expected.append(candidate.astimezone(UTC))
        day += timedelta(days=1)
    assert [t.ToDatetime(tzinfo=UTC) for t in got.status.next_runs] == expected
    assert got.spec.cron == "30 2 * * *"
    assert got.spec.job.timer_job.timer_name == "t"


def test_intervals_become_cronjobs_when_a_cron_expression_fits(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace, MIN_SCHEDULE_INTERVAL_SECONDS="60") as (_, stub):
        half_hour = create(stub, namespace, name="half-hour", interval="30m", job=job())
        odd = create(stub, namespace, name="odd", interval="45m", job=job())
    assert (half_hour.status.executor, half_hour.status.cron) == ("cronjob", "*/30 * * * *")
    cj = cronjob(cluster, namespace, "half-hour")
    assert (cj.spec.schedule, cj.spec.time_zone, cj.spec.suspend) == ("*/30 * * * *", "UTC", False)

    assert odd.status.executor == "service"
    stored = cronjob(cluster, namespace, "odd")
    assert stored.spec.suspend, "a service-run schedule's CronJob is storage only"
    step = 45 * 60
    first = (int(datetime.now(UTC).timestamp()) // step + 1) * step  # on the epoch grid
    assert [int(t.seconds) for t in odd.status.next_runs[:3]] == [first, first + step, first + 2 * step]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"cron": "* * * * *", "interval": "1h"}, "schedule.cron: set exactly one", id="both"),
        pytest.param({}, "schedule.cron: set exactly one", id="neither"),
        pytest.param({"cron": "61 * * * *"}, "schedule.cron:", id="bad-cron"),
        pytest.param({"cron": "0 0 30 2 *"}, "schedule.cron:", id="never-fires"),
        pytest.param({"cron": "@every 5m"}, "schedule.cron:", id="every-descriptor"),
        pytest.param({"cron": "* * * * *", "time_zone": "Mars/Olympus"}, "schedule.time_zone:", id="zone"),
        pytest.param({"interval": "10s"}, "schedule.interval:", id="interval-below-minimum"),
        pytest.param({"interval": "soon"}, "schedule.interval:", id="interval-text"),
        pytest.param({"cron": "* * * * *", "name": "x" * 53}, "schedule.name:", id="name-too-long"),
        pytest.param({"cron": "* * * * *", "name": "Not_A_Label"}, "schedule.name:", id="name-not-a-label"),
        pytest.param(
            {"cron": "* * * * *", "start_time": "now"}, "schedule.start_time:", id="start-with-cron"
        ),
        pytest.param(
            {"cron": "* * * * *", "catch_up_max_runs": 101}, "schedule.catch_up_max_runs:", id="cap"
        ),
        pytest.param({"cron": "* * * * *", "job": None}, "schedule.job: is required", id="no-job"),
        pytest.param({"cron": "* * * * *", "request_id": "r"}, "schedule.job.request_id:", id="request-id"),
        pytest.param(
            {"cron": "* * * * *", "duration": 0}, "schedule.job.timer_job.duration_seconds:", id="dur"
        ),
        pytest.param({"cron": "* * * * *", "job_ns": "other"}, "schedule.job.namespace:", id="job-namespace"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field_and_nothing_is_created(
    cluster: Cluster, namespace: str, tmp_path: Path, spec: dict[str, object], message: str
) -> None:
    template = job()
    if spec.pop("request_id", None):
        template.request_id = "r"
    if (duration := spec.pop("duration", None)) is not None:
        template.timer_job.duration_seconds = duration  # type: ignore[assignment]
    if job_ns := spec.pop("job_ns", None):
        template.namespace = str(job_ns)
    if spec.pop("start_time", None):
        spec["start_time"] = timestamp(datetime.now(UTC))
    with_job = spec.pop("job", template) is not None
    with replica(cluster, tmp_path, namespace, MIN_SCHEDULE_INTERVAL_SECONDS="60") as (_, stub):
        code, details = refused(
            lambda: create(
                stub, namespace, **{"name": "s", **spec, **({"job": template} if with_job else {})}
            )
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message), details
    assert client.BatchV1Api(cluster.api).list_namespaced_cron_job(namespace).items == []


def test_duplicate_and_unknown_schedules(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        create(stub, namespace, name="once", cron=NEVER_SOON, job=job())
        code, details = refused(lambda: create(stub, namespace, name="once", cron=NEVER_SOON, job=job()))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert "UpdateSchedule changes it" in details
        code, details = refused(
            lambda: stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name="nope"))
        )
        assert (code, details) == (
            grpc.StatusCode.NOT_FOUND,
            f"schedule 'nope' not found in namespace {namespace!r}",
        )
        code, _ = refused(
            lambda: stub.TriggerSchedule(pb.TriggerScheduleRequest(namespace=namespace, name="nope"))
        )
        assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_every_minute_cron_starts_a_run_within_70_seconds(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        create(stub, namespace, name="minutely", cron="*/1 * * * *", job=job())
        (first,) = wait_until(
            "the CronJob controller's first run", lambda: runs(cluster, namespace, "minutely"), timeout=70
        )[:1]
        got = stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name="minutely"), timeout=10)
        listed = stub.ListJobs(pb.ListJobsRequest(namespace=namespace, schedule="minutely"), timeout=10)
    scheduled = datetime.fromisoformat(first.metadata.annotations[SCHEDULED_AT].replace("Z", "+00:00"))
    assert first.metadata.name == f"minutely-{int(scheduled.timestamp()) // 60}"
    assert got.status.last_schedule_time.ToDatetime(tzinfo=UTC) == scheduled
    assert first.metadata.name in [j.job_id for j in listed.jobs]
    assert all(j.schedule == "minutely" for j in listed.jobs)


# -- run now ---------------------------------------------------------------------------------------


def test_trigger_runs_at_once_and_one_key_runs_once(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        made = create(stub, namespace, name="report", cron=NEVER_SOON, job=job())
        trigger = pb.TriggerScheduleRequest(namespace=namespace, name="report", idempotency_key="deploy-42")
        first = stub.TriggerSchedule(trigger, timeout=10)
        again = stub.TriggerSchedule(trigger, timeout=10)
        other = stub.TriggerSchedule(
            pb.TriggerScheduleRequest(namespace=namespace, name="report"), timeout=10
        )
        listed = stub.ListJobs(pb.ListJobsRequest(namespace=namespace, schedule="report"), timeout=10)

    assert first.created
    assert not again.created
    assert other.created
    assert first.status.job_id == again.status.job_id != other.status.job_id
    assert first.status.schedule == "report"
    assert sorted(j.job_id for j in listed.jobs) == sorted([first.status.job_id, other.status.job_id])
    jobs = runs(cluster, namespace, "report")
    assert len(jobs) == 2
    owner = cronjob(cluster, namespace, "report")
    for j in jobs:
        (ref,) = j.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == (
            "CronJob",
            "report",
            owner.metadata.uid,
            True,
        )
        assert j.metadata.annotations["cronjob.kubernetes.io/instantiate"] == "manual"
    assert made.status.executor == "cronjob"


# -- the service's loop ------------------------------------------------------------------------------


def _lease_holder(cluster: Cluster, namespace: str) -> str:
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(
            "jobscheduler-schedules", namespace
        )
    except client.ApiException as e:
        if e.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def test_interval_loop_runs_each_time_exactly_once_with_two_replicas_and_a_failover(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        a, stub = stack.enter_context(replica(cluster, tmp_path, namespace))
        b, _ = stack.enter_context(replica(cluster, tmp_path, namespace))
        # The start time is taken once a replica leads, never before the replicas are up: on a
        # slow machine their start-up alone can outlast a start time taken earlier, and the first
        # run would then be missed by design (no catch-up), not by the loop.
        wait_until("a replica leads", lambda: bool(_lease_holder(cluster, namespace)), timeout=30)
        start = whole_second_after(datetime.now(UTC), 2)
        made = create(stub, namespace, name="tick", interval="2s", start_time=timestamp(start), job=job("1s"))
        assert made.status.executor == "service"
        wait_until("three runs", lambda: len(runs(cluster, namespace, "tick")) >= 3, timeout=30)
        holder = _lease_holder(cluster, namespace)
        leader, follower = (a, b) if f"_{a.proc.pid}_" in holder else (b, a)
        assert f"_{leader.proc.pid}_" in holder
        leader.proc.terminate()  # releases the Lease: the follower takes over at once
        leader.proc.wait(timeout=30)
        before = len(runs(cluster, namespace, "tick"))
        wait_until(
            "three more runs after the failover",
            lambda: len(runs(cluster, namespace, "tick")) >= before + 3,
            timeout=30,
        )
        assert f"_{follower.proc.pid}_" in _lease_holder(cluster, namespace)
        ended = datetime.now(UTC)

    times = scheduled_times(runs(cluster, namespace, "tick"))
    names = [j.metadata.name for j in runs(cluster, namespace, "tick")]
    assert len(names) == len(set(names))
    assert len(times) == len(set(times)), "a run time started twice"
    assert times[0] == start.replace(microsecond=0), "the first run is the start time"
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert gaps == {2.0}, f"every interval ran exactly once, none missed, across the failover: {times}"
    assert times[-1] <= ended


@pytest.mark.slow
def test_one_minute_interval_at_17_seconds_runs_once_per_minute_with_two_replicas(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    start = now.replace(second=17, microsecond=0) - timedelta(minutes=1)
    with ExitStack() as stack:
        _, stub = stack.enter_context(
            replica(cluster, tmp_path, namespace, MIN_SCHEDULE_INTERVAL_SECONDS="60")
        )
        stack.enter_context(replica(cluster, tmp_path, namespace, MIN_SCHEDULE_INTERVAL_SECONDS="60"))
        made = create(stub, namespace, name="at17", interval="1m", start_time=timestamp(start), job=job("1s"))
        assert (made.status.executor, made.status.cron) == ("service", "0 0 1 1 *")
        wait_until("two runs", lambda: len(runs(cluster, namespace, "at17")) >= 2, timeout=130, interval=1)
        time.sleep(1)
        jobs = runs(cluster, namespace, "at17")
    times = scheduled_times(jobs)
    assert len(jobs) == 2, [j.metadata.name for j in jobs]
    assert [t.second for t in times] == [17, 17]
    assert (times[1] - times[0]) == timedelta(minutes=1)


def test_service_run_schedule_keeps_only_its_history_limit(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    seen: set[str] = set()
    with replica(cluster, tmp_path, namespace) as (_, stub):
        start = whole_second_after(datetime.now(UTC), 1)
        create(
            stub,
            namespace,
            name="trim",
            interval="1s",
            start_time=timestamp(start),
            successful_runs_history_limit=2,
            job=job("0s"),
        )

        def enough_runs() -> bool:
            seen.update(j.metadata.name for j in runs(cluster, namespace, "trim"))
            return len(seen) >= 8

        wait_until("eight runs", enough_runs, timeout=40)

        def trimmed() -> bool:
            kept = runs(cluster, namespace, "trim")
            done = [j for j in kept if j.status.succeeded]
            return len(done) <= 2 and len(kept) < len(seen)

        wait_until("the finished runs beyond the limit to be deleted", trimmed, timeout=20)
    kept = runs(cluster, namespace, "trim")
    assert len([j for j in kept if j.status.succeeded]) <= 2
    assert len(seen) >= 8


def test_pause_stops_new_runs_and_resume_starts_them_again(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        start = whole_second_after(datetime.now(UTC), 1)
        create(stub, namespace, name="loop", interval="2s", start_time=timestamp(start), job=job())
        create(stub, namespace, name="cron", cron=NEVER_SOON, job=job())
        wait_until("a first run", lambda: runs(cluster, namespace, "loop"), timeout=20)
        paused = stub.PauseSchedule(pb.PauseScheduleRequest(namespace=namespace, name="loop"), timeout=10)
        stub.PauseSchedule(pb.PauseScheduleRequest(namespace=namespace, name="cron"), timeout=10)
        assert paused.spec.paused
        assert list(paused.status.next_runs) == []
        assert cronjob(cluster, namespace, "cron").spec.suspend
        time.sleep(0.5)
        count = len(runs(cluster, namespace, "loop"))
        time.sleep(5)
        assert len(runs(cluster, namespace, "loop")) == count, "no run starts while paused"

        resumed_at = datetime.now(UTC)
        resumed = stub.ResumeSchedule(pb.ResumeScheduleRequest(namespace=namespace, name="loop"), timeout=10)
        stub.ResumeSchedule(pb.ResumeScheduleRequest(namespace=namespace, name="cron"), timeout=10)
        assert not resumed.spec.paused
        assert not cronjob(cluster, namespace, "cron").spec.suspend
        wait_until("a run after resuming", lambda: len(runs(cluster, namespace, "loop")) > count, timeout=10)
    new = scheduled_times(runs(cluster, namespace, "loop"))[count:]
    assert all(t >= resumed_at.replace(microsecond=0) for t in new), "the paused time is not caught up"


@pytest.mark.parametrize("policy", ["forbid", "replace"])
def test_concurrency_forbid_and_replace(
    cluster: Cluster, namespace: str, tmp_path: Path, policy: str
) -> None:
    concurrency = {"forbid": pb.CONCURRENCY_POLICY_FORBID, "replace": pb.CONCURRENCY_POLICY_REPLACE}[policy]
    seen: set[str] = set()
    most_at_once = 0
    with replica(cluster, tmp_path, namespace) as (_, stub):
        start = whole_second_after(datetime.now(UTC), 1)
        create(
            stub,
            namespace,
            name="long",
            interval="2s",
            start_time=timestamp(start),
            concurrency_policy=concurrency,
            job=job("10m"),
        )
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:
            current = [
                j.metadata.name for j in runs(cluster, namespace, "long") if not j.metadata.deletion_timestamp
            ]
            seen.update(current)
            most_at_once = max(most_at_once, len(current))
            time.sleep(0.1)
        got = stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name="long"), timeout=10)
    if policy == "forbid":
        assert len(seen) == 1, f"forbid never starts a second run while one is active: {seen}"
        assert list(got.status.active_runs) == sorted(seen)
    else:
        assert len(seen) >= 3, seen
        assert most_at_once <= 2  # the replaced run may linger a moment while it is deleted
        assert len(got.status.active_runs) == 1


def test_catch_up_after_an_outage_skip_latest_all(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    interval = 4
    policies = {
        "skip": pb.CATCH_UP_POLICY_SKIP,
        "latest": pb.CATCH_UP_POLICY_LATEST,
        "all": pb.CATCH_UP_POLICY_ALL,
    }
    # The outage: someone else holds the Lease, so the replica's loop starts no run until the
    # test releases it at a chosen moment.
    leases = client.CoordinationV1Api(cluster.api)
    leases.create_namespaced_lease(
        namespace,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="jobscheduler-schedules"),
            spec=client.V1LeaseSpec(holder_identity="elsewhere", lease_duration_seconds=3600),
        ),
    )
    start = whole_second_after(datetime.now(UTC), 1)
    with replica(cluster, tmp_path, namespace) as (_, stub):
        for name, policy in policies.items():
            create(
                stub,
                namespace,
                name=name,
                interval=f"{interval}s",
                start_time=timestamp(start),
                starting_deadline_seconds=1,
                catch_up=policy,
                catch_up_max_runs=2,
                job=job(),
            )
        # Four run times pass without a leader. Release 1.2 s after the fifth, so the newest due
        # run is already past its 1 s deadline (missed) and the next one is 2.8 s away.
        newest_due = start + timedelta(seconds=4 * interval)
        time.sleep(max(0.0, (newest_due + timedelta(seconds=1.2) - datetime.now(UTC)).total_seconds()))
        released = datetime.now(UTC)
        leases.patch_namespaced_lease("jobscheduler-schedules", namespace, {"spec": {"holderIdentity": ""}})
        wait_until(
            "the replica to lead",
            lambda: _lease_holder(cluster, namespace) not in ("", "elsewhere"),
            timeout=5,
        )
        time.sleep(1.0)
    caught_up = {
        name: [t for t in scheduled_times(runs(cluster, namespace, name)) if t < released]
        for name in policies
    }
    due = newest_due.replace(microsecond=0)
    assert caught_up["skip"] == []
    assert caught_up["latest"] == [due]
    assert caught_up["all"] == [due - timedelta(seconds=interval), due]


# -- statistics, update, delete ----------------------------------------------------------------------


def test_statistics_match_the_runs_on_the_cluster(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        create(stub, namespace, name="stats", cron=NEVER_SOON, job=job("2s"))
        ids = [
            stub.TriggerSchedule(
                pb.TriggerScheduleRequest(namespace=namespace, name="stats", idempotency_key=k), timeout=10
            ).status.job_id
            for k in ("a", "b", "c")
        ]
        stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=ids[2]), timeout=10)

        def all_finished() -> list[pb.JobStatus] | None:
            listed = stub.ListJobs(pb.ListJobsRequest(namespace=namespace, schedule="stats"), timeout=10).jobs
            done = [
                j
                for j in listed
                if j.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
            ]
            return list(listed) if len(done) == 3 else None

        statuses = wait_until("the three runs to finish", all_finished, timeout=60)
        got = stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name="stats"), timeout=10)

    jobs = runs(cluster, namespace, "stats")
    complete = [
        j for j in jobs if any(c.type == "Complete" and c.status == "True" for c in j.status.conditions or [])
    ]
    failed = [
        j for j in jobs if any(c.type == "Failed" and c.status == "True" for c in j.status.conditions or [])
    ]
    stats = got.status.stats
    assert (stats.runs, stats.succeeded, stats.cancelled, stats.failed, stats.active) == (
        3,
        len(complete),
        1,
        0,
        0,
    )
    assert len(complete) == 2
    assert len(failed) == 1
    assert stats.success_rate == pytest.approx(2 / 3)
    # A run cancelled before its container's start was recorded can end "before" it started
    # (node clock vs control plane clock): it counts as zero, as documented.
    durations = sorted(
        max(0.0, (s.finished_at.ToDatetime() - s.started_at.ToDatetime()).total_seconds())
        for s in statuses
        if s.HasField("started_at") and s.HasField("finished_at")
    )
    assert stats.mean_duration_seconds == pytest.approx(sum(durations) / len(durations))
    assert stats.p95_duration_seconds == pytest.approx(durations[-1])
    newest = max(statuses, key=lambda s: (s.created_at.ToDatetime(), s.job_id))
    assert got.status.last_run.job_id == newest.job_id


def test_update_keeps_runs_and_delete_removes_or_keeps_them(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        create(stub, namespace, name="keep", cron=NEVER_SOON, job=job())
        create(stub, namespace, name="drop", cron=NEVER_SOON, job=job())
        for name in ("keep", "drop"):
            stub.TriggerSchedule(
                pb.TriggerScheduleRequest(namespace=namespace, name=name, idempotency_key="k"), timeout=10
            )
        updated = stub.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    namespace=namespace,
                    name="keep",
                    cron="15 3 * * 1",
                    time_zone="America/New_York",
                    job=job("3s"),
                )
            ),
            timeout=10,
        )
        assert updated.spec.cron == "15 3 * * 1"
        cj = cronjob(cluster, namespace, "keep")
        assert (cj.spec.schedule, cj.spec.time_zone) == ("15 3 * * 1", "America/New_York")
        assert cj.spec.job_template.metadata.labels["jobscheduler.io/schedule"] == "keep"
        assert len(runs(cluster, namespace, "keep")) == 1, "an update keeps the runs"
        listed = stub.ListSchedules(pb.ListSchedulesRequest(namespace=namespace), timeout=10)
        assert [s.spec.name for s in listed.schedules] == ["drop", "keep"]
        assert [s.status.stats.runs for s in listed.schedules] == [1, 1]

        stub.DeleteSchedule(
            pb.DeleteScheduleRequest(namespace=namespace, name="keep", keep_runs=True), timeout=10
        )
        stub.DeleteSchedule(pb.DeleteScheduleRequest(namespace=namespace, name="drop"), timeout=10)
        code, _ = refused(lambda: stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name="keep")))
        assert code == grpc.StatusCode.NOT_FOUND
    wait_until(
        "the dropped schedule's runs to be deleted",
        lambda: runs(cluster, namespace, "drop") == [],
        timeout=60,
    )
    wait_until(
        "the kept run to be orphaned",
        lambda: [j for j in runs(cluster, namespace, "keep") if not j.metadata.owner_references],
        timeout=60,
    )
