"""Schedules as pure values: what a caller asks for (ScheduleSpec), when its runs start
(Timing), what is reported (ScheduleView), and how all of it is kept on the schedule's CronJob
(annotations, the run Jobs' names and manifests). No I/O: jobscheduler.app.schedules reads and
writes the CronJobs, jobscheduler.control.schedule_runs starts the runs the leader owns.
"""

from __future__ import annotations

import json
import string
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from jobscheduler.domain.catchup import (
    CatchUp,
    Concurrency,
)
from jobscheduler.domain.cron import CronSpec, parse_cron, parse_time_zone
from jobscheduler.domain.cron_walk import next_runs
from jobscheduler.domain.errors import (
    InvalidArgumentError,
)
from jobscheduler.domain.interval import interval_as_cron, next_interval_runs, parse_interval
from jobscheduler.domain.models import (
    JobState,
    JobStatus,
)
from jobscheduler.domain.notify import NotifySink
from jobscheduler.domain.placement import Placement
from jobscheduler.domain.queueing import Queueing
from jobscheduler.domain.render import JobRequest, Resources
from jobscheduler.domain.retry import RetryPolicy
from jobscheduler.domain.runstats import RunStats
from jobscheduler.timestamps import parse_rfc3339

Obj = dict[str, Any]

SPEC_ANNOTATION = "jobscheduler.io/schedule-spec"
NEXT_RUN_ANNOTATION = "jobscheduler.io/next-run"
LAST_RUN_ANNOTATION = "jobscheduler.io/last-run"
PAUSED_ANNOTATION = "jobscheduler.io/paused"
BACKFILLED_ANNOTATION = "jobscheduler.io/backfilled-through"
# pause_after_failures: why the leader paused the schedule (JSON: reason, message, at, failures),
# and since when failures count (set by ResumeSchedule: a resumed schedule starts a new streak).
PAUSED_REASON_ANNOTATION = "jobscheduler.io/paused-reason"
FAILURES_SINCE_ANNOTATION = "jobscheduler.io/failures-since"
# BUFFER_ONE: the run time that waits for the active run to end (kept on the CronJob, so a
# leader change keeps it).
BUFFERED_ANNOTATION = "jobscheduler.io/buffered-run"
# On the runs BackfillSchedule creates.
BACKFILL_LABEL = "jobscheduler.io/backfilled"
EXECUTOR_LABEL = "jobscheduler.io/executor"
# Set on every run by the CronJob controller; the service sets them on the runs it starts too.
SCHEDULED_AT_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"  # as `kubectl create job --from=cronjob/…`
# A service-run schedule's CronJob is storage only: suspended, with a schedule that never matters.
PLACEHOLDER_CRON = "0 0 1 1 *"
MAX_SCHEDULE_NAME = 52  # CronJob names: the controller appends "-<minutes>" to make Job names
DEFAULT_NEXT_RUNS = 5
MAX_NEXT_RUNS = 100
DEFAULT_CATCH_UP_MAX_RUNS = 10
BASE36 = string.digits + string.ascii_lowercase


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule as the caller describes it (ScheduleSpec in the proto)."""

    name: str
    namespace: str = ""
    cron: str = ""
    time_zone: str = ""
    interval: str = ""
    start_time: datetime | None = None
    concurrency: Concurrency = Concurrency.ALLOW
    starting_deadline_seconds: int | None = None
    successful_runs_history_limit: int | None = None
    failed_runs_history_limit: int | None = None
    paused: bool = False
    catch_up: CatchUp = CatchUp.SKIP
    catch_up_max_runs: int = 0
    pause_after_failures: int | None = None  # None/0: never
    job: JobRequest = field(default_factory=lambda: JobRequest(job_type="", params={}))


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule runs, parsed: a cron expression in a zone, or an interval from a start."""

    cron: CronSpec | None
    zone: zoneinfo.ZoneInfo
    interval: timedelta | None
    start: datetime | None
    executor: str  # "cronjob" or "service"
    cronjob_schedule: str  # the CronJob's spec.schedule

    def runs_after(self, after: datetime, count: int) -> list[datetime]:
        if self.cron is not None:
            return next_runs(self.cron, self.zone, after, count)
        assert self.interval is not None
        return next_interval_runs(self.interval, self.start, after, count)


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule with what the cluster says about it (Schedule in the proto)."""

    spec: ScheduleSpec
    executor: str
    cronjob_schedule: str
    next_runs: Sequence[datetime]
    last_run: JobStatus | None
    active_runs: Sequence[str]
    stats: RunStats
    created_at: datetime | None
    last_schedule_time: datetime | None
    paused_reason: str = ""
    paused_message: str = ""
    paused_at: datetime | None = None
    consecutive_failures: int = 0
    buffered_run: datetime | None = None
    backfilled_runs: int = 0


@dataclass(frozen=True, slots=True)
class PauseReason:
    """Why the service (not a caller) paused a schedule; kept in PAUSED_REASON_ANNOTATION."""

    reason: str
    message: str
    at: datetime
    failures: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "reason": self.reason,
                "message": self.message,
                "at": self.at.isoformat(),
                "failures": self.failures,
            },
            sort_keys=True,
        )

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> PauseReason | None:
        raw = annotations.get(PAUSED_REASON_ANNOTATION)
        if not raw:
            return None
        try:
            body = json.loads(raw)
            return cls(
                str(body["reason"]),
                str(body["message"]),
                datetime.fromisoformat(body["at"]),
                int(body["failures"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def parse_timing(spec: ScheduleSpec, *, min_interval: timedelta, now: datetime) -> Timing:
    """The schedule's timing, or InvalidArgumentError naming the field."""
    if bool(spec.cron) == bool(spec.interval):
        raise InvalidArgumentError("cron", "set exactly one of cron and interval")
    # No CronJob buffers a run: the leader runs BUFFER_ONE schedules, cron ones too.
    buffered = spec.concurrency is Concurrency.BUFFER_ONE
    if spec.cron:
        if spec.start_time is not None:
            raise InvalidArgumentError("start_time", "applies to interval schedules only")
        cron = parse_cron(spec.cron)
        zone = parse_time_zone(spec.time_zone)
        return Timing(cron, zone, None, None, "service" if buffered else "cronjob", cron.expression)
    if spec.time_zone:
        raise InvalidArgumentError("time_zone", "applies to cron schedules only (an interval is zone-free)")
    interval = parse_interval(spec.interval, minimum=min_interval)
    start = spec.start_time
    # A cron expression also fires before a start still to come, so only a past start maps.
    as_cron = interval_as_cron(interval, start) if start is None or start <= now else None
    utc = zoneinfo.ZoneInfo("UTC")
    if as_cron is not None and not buffered:
        return Timing(parse_cron(as_cron), utc, interval, start, "cronjob", as_cron)
    return Timing(None, utc, interval, start, "service", PLACEHOLDER_CRON)


def timing_of(cronjob: Obj, spec: ScheduleSpec) -> Timing:
    """A stored schedule's timing; who runs it is what was decided at creation (its label)."""
    created = parse_rfc3339(cronjob["metadata"].get("creationTimestamp")) or datetime.now(UTC)
    timing = parse_timing(spec, min_interval=timedelta(seconds=1), now=created)
    if executor_of(cronjob) == "service" and timing.executor != "service":
        if not spec.interval:
            return replace(timing, executor="service")
        return replace(timing, cron=None, executor="service", cronjob_schedule=PLACEHOLDER_CRON)
    return timing


def run_name_at(schedule: str, at: datetime) -> str:
    """A service-started run's Job name: the schedule's and its run time in base-36 seconds."""
    seconds = int(at.timestamp())
    digits = ""
    while True:
        seconds, digit = divmod(seconds, 36)
        digits = BASE36[digit] + digits
        if not seconds:
            return f"{schedule}-{digits}"


def controller_run_name(schedule: str, at: datetime) -> str:
    """The Job name the CronJob controller gives the run at `at` (name-<Unix minutes>)."""
    return f"{schedule}-{int(at.timestamp()) // 60}"


def scheduled_run_name(timing: Timing, schedule: str, at: datetime) -> str:
    """The name of the run at `at` as its executor names it (the CronJob controller, or the
    leader), so a run created by anyone else for that time (catch-up, backfill) is the same Job."""
    return controller_run_name(schedule, at) if timing.executor == "cronjob" else run_name_at(schedule, at)


def successful_history(spec: ScheduleSpec) -> int:
    """Finished runs kept; 3 unless set, the CronJob's own default."""
    return 3 if spec.successful_runs_history_limit is None else spec.successful_runs_history_limit


def failed_history(spec: ScheduleSpec) -> int:
    """Failed runs kept; 1 unless set, the CronJob's own default."""
    return 1 if spec.failed_runs_history_limit is None else spec.failed_runs_history_limit


def failures_since(cronjob: Obj) -> datetime | None:
    """Since when failed runs count towards pause_after_failures: the last ResumeSchedule, or the
    schedule's creation (runs kept from an earlier schedule of the same name do not count)."""
    marks = [
        parse_rfc3339(cronjob["metadata"].get("creationTimestamp")),
        parse_rfc3339(annotations_of(cronjob).get(FAILURES_SINCE_ANNOTATION)),
    ]
    return max((m for m in marks if m is not None), default=None)


def annotations_of(obj: Obj) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def executor_of(cronjob: Obj) -> str:
    return str((cronjob["metadata"].get("labels") or {}).get(EXECUTOR_LABEL, "cronjob"))


def same_timing(a: ScheduleSpec, b: ScheduleSpec) -> bool:
    return (a.interval, a.start_time, a.cron, a.time_zone) == (b.interval, b.start_time, b.cron, b.time_zone)


def run_job(
    cronjob: Obj, job_name: str, *, annotations: Mapping[str, str], labels: Mapping[str, str] | None = None
) -> Obj:
    """A Job from the CronJob's template, owned by it as its controller (so the controller counts
    it among the schedule's active runs and history, and deleting the schedule deletes it)."""
    template = cronjob["spec"]["jobTemplate"]
    meta = cronjob["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": meta["namespace"],
            "labels": {**(template["metadata"].get("labels") or {}), **(labels or {})},
            "annotations": {**(template["metadata"].get("annotations") or {}), **annotations},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }


# -- the spec annotation: what the caller asked for, as given -------------------------------------


def spec_json(spec: ScheduleSpec) -> str:
    job = asdict(spec.job)
    job.pop("secret_env", None)
    job["notify"] = [{**n, "states": [s.value for s in n["states"]]} for n in job["notify"]]
    body = {
        "name": spec.name,
        "namespace": spec.namespace,
        "cron": spec.cron,
        "time_zone": spec.time_zone,
        "interval": spec.interval,
        "start_time": spec.start_time.astimezone(UTC).isoformat() if spec.start_time else None,
        "concurrency": spec.concurrency.value,
        "starting_deadline_seconds": spec.starting_deadline_seconds,
        "successful_runs_history_limit": spec.successful_runs_history_limit,
        "failed_runs_history_limit": spec.failed_runs_history_limit,
        "paused": spec.paused,
        "catch_up": spec.catch_up.value,
        "catch_up_max_runs": spec.catch_up_max_runs,
        "pause_after_failures": spec.pause_after_failures,
        "job": job,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def spec_from(cronjob: Obj) -> ScheduleSpec:
    raw = json.loads(annotations_of(cronjob)[SPEC_ANNOTATION])
    job = dict(raw["job"])
    job["resources"] = Resources(**job.get("resources") or {})
    if job.get("retry") is not None:
        job["retry"] = RetryPolicy.from_dict(job["retry"])
    if job.get("placement") is not None:
        job["placement"] = Placement.from_dict(job["placement"])
    if job.get("queueing") is not None:
        job["queueing"] = Queueing.from_dict(job["queueing"])
    job["notify"] = tuple(
        NotifySink(**{**n, "states": tuple(JobState(s) for s in n["states"])})
        for n in job.get("notify") or ()
    )
    spec = ScheduleSpec(
        name=raw["name"],
        namespace=raw["namespace"],
        cron=raw["cron"],
        time_zone=raw["time_zone"],
        interval=raw["interval"],
        start_time=parse_rfc3339(raw["start_time"]),
        concurrency=Concurrency(raw["concurrency"]),
        starting_deadline_seconds=raw["starting_deadline_seconds"],
        successful_runs_history_limit=raw["successful_runs_history_limit"],
        failed_runs_history_limit=raw["failed_runs_history_limit"],
        paused=bool(raw["paused"]),
        catch_up=CatchUp(raw["catch_up"]),
        catch_up_max_runs=raw["catch_up_max_runs"],
        pause_after_failures=raw.get("pause_after_failures"),  # absent on schedules made before it
        job=JobRequest(**job),
    )
    # The CronJob itself is the truth about pausing: kubectl patch … suspend works too.
    if executor_of(cronjob) == "service":
        paused = annotations_of(cronjob).get(PAUSED_ANNOTATION) == "true"
    else:
        paused = bool(cronjob["spec"].get("suspend"))
    return replace(spec, paused=paused)
