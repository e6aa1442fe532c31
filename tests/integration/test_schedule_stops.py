"""Schedules that stop themselves and catch up on demand, on the real cluster:
pause_after_failures (both executors; resume starts a new streak), BackfillSchedule (10 past
runs once, also when repeated and from two replicas at once; runs the loop already started are
recognised; bad ranges create nothing) and the BUFFER_ONE concurrency policy (one run waits and
starts when the running one ends). `jobscheduler serve` runs as its own process(es), with the
leader loop on and short intervals."""

from __future__ import annotations

import concurrent.futures
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.app.schedules import ScheduleService
from jobscheduler.control.schedule_runs import ScheduleRunner
from jobscheduler.domain.schedule import PauseReason, ScheduleSpec
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import Service
from tests.integration.test_readme import readme_grpcurl_lines, run_grpcurl
from tests.integration.test_schedules import (
    NEVER_SOON,
    _lease_holder,
    create,
    cronjob,
    job,
    refused,
    replica,
    runs,
    scheduled_times,
    timestamp,
    whole_second_after,
)

FAILING = {"sim.jobscheduler.io/exit-code": "3"}


def get(stub: pb_grpc.JobSchedulerStub, namespace: str, name: str) -> pb.Schedule:
    return stub.GetSchedule(pb.GetScheduleRequest(namespace=namespace, name=name), timeout=10)


def trigger(stub: pb_grpc.JobSchedulerStub, namespace: str, name: str, key: str) -> str:
    request = pb.TriggerScheduleRequest(namespace=namespace, name=name, idempotency_key=key)
    return stub.TriggerSchedule(request, timeout=10).status.job_id


def finished(stub: pb_grpc.JobSchedulerStub, namespace: str, job_id: str) -> bool:
    status = stub.GetJobStatus(pb.GetJobStatusRequest(namespace=namespace, job_id=job_id), timeout=10)
    return status.status.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def backfill(
    stub: pb_grpc.JobSchedulerStub, namespace: str, name: str, start: datetime, end: datetime, **more: bool
) -> pb.BackfillScheduleResponse:
    request = pb.BackfillScheduleRequest(
        namespace=namespace, name=name, start=timestamp(start), end=timestamp(end), **more
    )
    return stub.BackfillSchedule(request, timeout=30)


# -- pause_after_failures ------------------------------------------------------------------------


def test_cron_schedule_pauses_after_three_failed_runs_and_resume_starts_a_new_streak(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        create(
            stub, namespace, name="flaky", cron=NEVER_SOON, pause_after_failures=3, job=job("0s", **FAILING)
        )
        assert cronjob(cluster, namespace, "flaky").spec.failed_jobs_history_limit >= 3
        first = [trigger(stub, namespace, "flaky", k) for k in ("a", "b")]
        wait_until("two failed runs", lambda: all(finished(stub, namespace, j) for j in first), timeout=30)
        time.sleep(1)  # a few leader ticks: two failures are not enough
        two = get(stub, namespace, "flaky")
        assert not two.spec.paused
        assert (two.status.consecutive_failures, two.status.paused_reason) == (2, "")

        third = trigger(stub, namespace, "flaky", "c")
        paused = wait_until(
            "the leader to pause it",
            lambda: (s := get(stub, namespace, "flaky")).spec.paused and s,
            timeout=30,
        )
        assert paused.status.paused_reason == "PausedAfterFailures"
        # Runs created in the same second are ordered by job id.
        shown = paused.status.paused_message.removeprefix("3 consecutive runs failed: ")
        assert sorted(shown.split(", ")) == sorted([*first, third])
        assert paused.status.consecutive_failures == 3
        assert paused.status.HasField("paused_at")
        assert cronjob(cluster, namespace, "flaky").spec.suspend, "paused as PauseSchedule pauses it"

        resumed = stub.ResumeSchedule(pb.ResumeScheduleRequest(namespace=namespace, name="flaky"), timeout=10)
        assert not resumed.spec.paused
        assert (resumed.status.paused_reason, resumed.status.paused_message) == ("", "")
        assert resumed.status.consecutive_failures == 0, "the streak starts again after a resume"
        assert not cronjob(cluster, namespace, "flaky").spec.suspend
        again = [trigger(stub, namespace, "flaky", k) for k in ("d", "e")]
        wait_until(
            "two more failed runs", lambda: all(finished(stub, namespace, j) for j in again), timeout=30
        )
        time.sleep(1)
        assert not get(stub, namespace, "flaky").spec.paused, "the failures before the resume no longer count"
        trigger(stub, namespace, "flaky", "f")
        wait_until("paused again", lambda: get(stub, namespace, "flaky").spec.paused, timeout=30)


def test_interval_schedule_run_by_the_service_pauses_after_failures_and_stops_starting_runs(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        start = whole_second_after(datetime.now(UTC), 1)
        made = create(
            stub,
            namespace,
            name="failing",
            interval="1s",
            start_time=timestamp(start),
            concurrency_policy=pb.CONCURRENCY_POLICY_FORBID,
            pause_after_failures=2,
            job=job("0s", **FAILING),
        )
        assert made.status.executor == "service"
        assert made.spec.pause_after_failures == 2
        paused = wait_until(
            "the leader to pause it",
            lambda: (s := get(stub, namespace, "failing")).spec.paused and s,
            timeout=30,
        )
        assert paused.status.paused_reason == "PausedAfterFailures"
        assert paused.status.paused_message.startswith("2 consecutive runs failed: failing-")
        time.sleep(0.5)
        count = len(runs(cluster, namespace, "failing"))
        time.sleep(3)
        assert len(runs(cluster, namespace, "failing")) == count, "no run starts once paused"


def test_a_success_or_a_cancelled_run_does_not_pause(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        create(
            stub, namespace, name="mixed", cron=NEVER_SOON, pause_after_failures=2, job=job("0s", **FAILING)
        )
        failed = trigger(stub, namespace, "mixed", "a")
        wait_until("a failed run", lambda: finished(stub, namespace, failed), timeout=30)
        # A run that someone cancels says nothing about the job: it counts neither way.
        stub.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    namespace=namespace,
                    name="mixed",
                    cron=NEVER_SOON,
                    pause_after_failures=2,
                    successful_runs_history_limit=100,
                    failed_runs_history_limit=100,
                    job=job("10m"),
                )
            ),
            timeout=10,
        )
        cancelled = trigger(stub, namespace, "mixed", "b")
        stub.CancelJob(pb.CancelJobRequest(namespace=namespace, job_id=cancelled), timeout=10)
        wait_until("the cancelled run", lambda: finished(stub, namespace, cancelled), timeout=30)
        time.sleep(1)
        got = get(stub, namespace, "mixed")
        assert not got.spec.paused
        assert got.status.consecutive_failures == 1


# -- BackfillSchedule ----------------------------------------------------------------------------


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def test_backfill_of_ten_past_runs_creates_ten_jobs_once_also_when_repeated_and_from_two_replicas(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    base = minute(datetime.now(UTC)) - timedelta(minutes=30)
    with ExitStack() as stack:
        _, a = stack.enter_context(replica(cluster, tmp_path, namespace))
        _, b = stack.enter_context(replica(cluster, tmp_path, namespace))
        # Paused: the CronJob controller starts nothing of its own, so every Job is a backfill's.
        create(a, namespace, name="minutely", cron="* * * * *", paused=True, job=job("0s"))

        dry = backfill(a, namespace, "minutely", base, base + timedelta(minutes=10), dry_run=True)
        assert [t.ToDatetime(tzinfo=UTC) for t in dry.run_times] == [
            base + timedelta(minutes=k) for k in range(10)
        ]
        assert (list(dry.created), list(dry.existing)) == ([], [])
        assert runs(cluster, namespace, "minutely") == []

        first = backfill(a, namespace, "minutely", base, base + timedelta(minutes=10))
        expected = [f"minutely-{int((base + timedelta(minutes=k)).timestamp()) // 60}" for k in range(10)]
        assert list(first.created) == expected, "named as the CronJob controller names its runs"
        assert list(first.existing) == []
        again = backfill(b, namespace, "minutely", base, base + timedelta(minutes=10))
        assert (list(again.created), list(again.existing)) == ([], expected)
        assert len(runs(cluster, namespace, "minutely")) == 10

        # Two replicas at once, over the next ten minutes: each run is created by exactly one.
        later = base + timedelta(minutes=10)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(backfill, s, namespace, "minutely", later, later + timedelta(minutes=10))
                for s in (a, b)
            ]
            answers = [c.result(timeout=60) for c in calls]
        created = [name for answer in answers for name in answer.created]
        assert len(created) == len(set(created)) == 10
        for answer in answers:
            assert sorted([*answer.created, *answer.existing]) == sorted(created)
        jobs = runs(cluster, namespace, "minutely")
        assert len(jobs) == 20
        assert scheduled_times(jobs) == [base + timedelta(minutes=k) for k in range(20)]
        assert all(j.metadata.labels["jobscheduler.io/backfilled"] == "true" for j in jobs)
        got = get(a, namespace, "minutely")
        assert (got.status.backfilled_runs, got.status.stats.runs) == (20, 20)


def test_backfill_recognises_runs_the_leader_already_started(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        # Started 6 s ago: the loop runs the times from now on; the earlier ones are the backfill's.
        start = whole_second_after(datetime.now(UTC), -6)
        create(stub, namespace, name="loop", interval="2s", start_time=timestamp(start), job=job("0s"))
        wait_until("two runs", lambda: len(runs(cluster, namespace, "loop")) >= 2, timeout=30)
        stub.PauseSchedule(pb.PauseScheduleRequest(namespace=namespace, name="loop"), timeout=10)
        started = scheduled_times(runs(cluster, namespace, "loop"))
        names = {j.metadata.name for j in runs(cluster, namespace, "loop")}
        end = started[-1] + timedelta(seconds=1)
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 0.1)  # a range in the past
        answer = backfill(stub, namespace, "loop", start, end)
    assert set(answer.existing) == names, "the loop's runs are the same runs"
    before = [t.ToDatetime(tzinfo=UTC) for t in answer.run_times if t.ToDatetime(tzinfo=UTC) < started[0]]
    assert len(before) >= 2
    assert len(answer.created) == len(before)
    assert len(runs(cluster, namespace, "loop")) == len(names) + len(before)
    assert scheduled_times(runs(cluster, namespace, "loop"))[0] == start.replace(microsecond=0)


def test_bad_backfill_ranges_are_refused_naming_the_field_and_create_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    now = minute(datetime.now(UTC))
    with replica(cluster, tmp_path, namespace, BACKFILL_MAX_RUNS="5") as (_, stub):
        create(stub, namespace, name="bf", cron="* * * * *", paused=True, job=job("0s"))
        cases = {
            "inverted": (now - timedelta(minutes=2), now - timedelta(minutes=5), "end"),
            "empty": (now - timedelta(minutes=2), now - timedelta(minutes=2), "end"),
            "future": (now - timedelta(minutes=2), now + timedelta(minutes=2), "end"),
            "too many": (now - timedelta(minutes=30), now - timedelta(minutes=20), "end"),
            "no run time": (
                now - timedelta(minutes=2, seconds=50),
                now - timedelta(minutes=2, seconds=10),
                "start",
            ),
        }
        for what, (start, end, field) in cases.items():
            code, details = refused(lambda s=start, e=end: backfill(stub, namespace, "bf", s, e))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, what
            assert field in details, (what, details)
        code, details = refused(
            lambda: stub.BackfillSchedule(
                pb.BackfillScheduleRequest(namespace=namespace, name="bf", end=timestamp(now)), timeout=10
            )
        )
        assert (code, "start" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True)
        code, details = refused(
            lambda: backfill(stub, namespace, "bf", now - timedelta(minutes=30), now - timedelta(minutes=20))
        )
        assert "10 run times, more than the 5" in details
        assert "split" in details
        code, _ = refused(lambda: backfill(stub, namespace, "nope", now - timedelta(minutes=3), now))
        assert code == grpc.StatusCode.NOT_FOUND
        time.sleep(0.5)
    assert runs(cluster, namespace, "bf") == []


# -- BUFFER_ONE ----------------------------------------------------------------------------------


def test_buffer_one_holds_one_waiting_run_and_starts_it_when_the_running_one_ends(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    most_active = 0
    buffered_seen: set[datetime] = set()
    with replica(cluster, tmp_path, namespace) as (_, stub):
        cron_made = create(
            stub,
            namespace,
            name="crony",
            cron="*/5 * * * *",
            concurrency_policy=pb.CONCURRENCY_POLICY_BUFFER_ONE,
            job=job(),
        )
        assert cron_made.status.executor == "service", "no CronJob buffers a run: the leader runs it"
        assert cronjob(cluster, namespace, "crony").spec.suspend
        assert cron_made.status.next_runs[0].ToDatetime(tzinfo=UTC).minute % 5 == 0

        start = whole_second_after(datetime.now(UTC), 1)
        create(
            stub,
            namespace,
            name="buf",
            interval="2s",
            start_time=timestamp(start),
            concurrency_policy=pb.CONCURRENCY_POLICY_BUFFER_ONE,
            job=job("5s"),
        )
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline:
            jobs = runs(cluster, namespace, "buf")
            active = [j for j in jobs if not (j.status.succeeded or j.status.failed)]
            most_active = max(most_active, len(active))
            status = get(stub, namespace, "buf").status
            if status.HasField("buffered_run"):
                buffered_seen.add(status.buffered_run.ToDatetime(tzinfo=UTC))
            time.sleep(0.2)
        jobs = runs(cluster, namespace, "buf")
    assert most_active == 1, "never two runs at once"
    times = scheduled_times(jobs)
    assert len(times) >= 2, times
    assert times[0] == start.replace(microsecond=0)
    assert times[1] == times[0] + timedelta(seconds=2), "the run due while the first ran waited, not skipped"
    assert times[1] in buffered_seen, "GetSchedule showed the waiting run"
    ordered = sorted(
        jobs, key=lambda j: j.metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    )
    first_end = max(
        c.last_transition_time
        for c in ordered[0].status.conditions
        if c.type in ("Complete", "SuccessCriteriaMet")
    )
    assert ordered[1].metadata.creation_timestamp >= first_end.replace(
        microsecond=0
    ), "started once the first ended"
    assert times[2] - times[1] > timedelta(seconds=2), "runs due while one waited were skipped"


# -- the guide's examples ------------------------------------------------------------------------


def test_the_guide_examples_work_as_written(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    lines = readme_grpcurl_lines(doc="docs/schedules.md", heading="Self-pausing, backfill and buffer_one")
    assert [line.rsplit("/", 1)[1] for line in lines] == [
        "CreateSchedule",
        *["BackfillSchedule"] * 3,
        "GetSchedule",
    ]
    with replica(cluster, tmp_path, namespace) as (server, _):
        replies = [
            run_grpcurl(line.replace("localhost:50054", f"127.0.0.1:{server.port}"))[1] for line in lines
        ]
    made, dry, first, again, got = replies
    assert made["spec"]["pause_after_failures"] == 3  # type: ignore[index]
    assert made["status"]["executor"] == "service"  # type: ignore[index]
    assert len(dry["run_times"]) == 10  # type: ignore[arg-type]
    assert "created" not in dry
    assert len(first["created"]) == 10  # type: ignore[arg-type]
    assert sorted(again["existing"]) == sorted(first["created"])  # type: ignore[type-var]
    assert got["status"]["backfilled_runs"] == 10  # type: ignore[index]
    assert len(runs(cluster, namespace, "hourly-report")) == 10


# -- the leader's pause, as two leaders see it ---------------------------------------------------


def test_two_leaders_acting_on_the_same_failures_pause_once_and_call_the_hook_once(
    api_service: Service, namespace: str
) -> None:
    """Two runners (the leader before and after a change of leader) reconcile the same version of
    the CronJob: the conditional write lets one pause it, and the hook runs once."""
    stub = api_service.stub
    service = api_service.app.service
    assert service is not None
    create(stub, namespace, name="twice", cron=NEVER_SOON, pause_after_failures=2, job=job("0s", **FAILING))
    failed = [trigger(stub, namespace, "twice", k) for k in ("a", "b")]
    wait_until("two failed runs", lambda: all(finished(stub, namespace, j) for j in failed), timeout=30)
    calls: list[tuple[str, str, str]] = []

    def hook(spec: ScheduleSpec, reason: PauseReason) -> None:
        calls.append((spec.name, reason.reason, reason.message))

    schedules = ScheduleService(service.gateway, service)
    seen = schedules.read_cronjob(namespace, "twice")
    for runner in (
        ScheduleRunner(schedules, on_schedule_paused=hook),
        ScheduleRunner(schedules, on_schedule_paused=hook),
    ):
        runner.reconcile(seen, datetime.now(UTC))
    assert [(name, reason) for name, reason, _ in calls] == [("twice", "PausedAfterFailures")]
    assert sorted(calls[0][2].removeprefix("2 consecutive runs failed: ").split(", ")) == sorted(failed)
    after = schedules.read_cronjob(namespace, "twice")
    assert after["spec"]["suspend"] is True
    ScheduleRunner(schedules, on_schedule_paused=hook).reconcile(after, datetime.now(UTC))
    assert len(calls) == 1, "a paused schedule is not paused again"


def test_the_waiting_run_survives_a_change_of_leader(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        a, stub = stack.enter_context(replica(cluster, tmp_path, namespace))
        b, _ = stack.enter_context(replica(cluster, tmp_path, namespace))
        wait_until("a replica leads", lambda: bool(_lease_holder(cluster, namespace)), timeout=30)
        start = whole_second_after(datetime.now(UTC), 1)
        create(
            stub,
            namespace,
            name="handover",
            interval="2s",
            start_time=timestamp(start),
            concurrency_policy=pb.CONCURRENCY_POLICY_BUFFER_ONE,
            job=job("6s"),
        )
        status = wait_until(
            "a run waiting",
            lambda: (s := get(stub, namespace, "handover").status).HasField("buffered_run") and s,
            timeout=20,
        )
        waiting = status.buffered_run.ToDatetime(tzinfo=UTC)
        holder = _lease_holder(cluster, namespace)
        leader, follower = (a, b) if f"_{a.proc.pid}_" in holder else (b, a)
        leader.proc.terminate()  # releases the Lease: the follower takes over at once
        leader.proc.wait(timeout=30)
        follower_stub = pb_grpc.JobSchedulerStub(
            stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{follower.port}"))
        )
        wait_until(
            "the waiting run to start under the new leader",
            lambda: waiting in scheduled_times(runs(cluster, namespace, "handover")),
            timeout=30,
        )
        assert f"_{follower.proc.pid}_" in _lease_holder(cluster, namespace)
        after = get(follower_stub, namespace, "handover").status
    times = scheduled_times(runs(cluster, namespace, "handover"))
    assert times.count(waiting) == 1
    assert len(after.active_runs) == 1


def test_bad_pause_after_failures_is_refused_and_an_update_to_buffer_one_moves_the_schedule_to_the_service(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with replica(cluster, tmp_path, namespace) as (_, stub):
        for bad in (-1, 1001):
            code, details = refused(
                lambda b=bad: create(
                    stub, namespace, name="bad", cron=NEVER_SOON, pause_after_failures=b, job=job()
                )
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "schedule.pause_after_failures" in details
        made = create(stub, namespace, name="moving", cron="*/5 * * * *", job=job())
        assert made.status.executor == "cronjob"
        moved = stub.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    namespace=namespace,
                    name="moving",
                    cron="*/5 * * * *",
                    concurrency_policy=pb.CONCURRENCY_POLICY_BUFFER_ONE,
                    job=job(),
                )
            ),
            timeout=10,
        )
        assert moved.status.executor == "service"
        assert moved.spec.concurrency_policy == pb.CONCURRENCY_POLICY_BUFFER_ONE
        stored = cronjob(cluster, namespace, "moving")
        assert stored.spec.suspend
        assert stored.spec.concurrency_policy == "Forbid"
        assert stored.metadata.labels["jobscheduler.io/executor"] == "service"
    assert [cj.metadata.name for cj in client_cronjobs(cluster, namespace)] == ["moving"]


def client_cronjobs(cluster: Cluster, namespace: str) -> list[Any]:
    return list(client.BatchV1Api(cluster.api).list_namespaced_cron_job(namespace).items)
