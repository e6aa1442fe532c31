"""Domain values shared by every layer: job states, statuses and the names of the labels and
annotations that tie Kubernetes objects to this service."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# Re-exported: its home is jobscheduler.domain.audit, with the other audit annotations.
from jobscheduler.domain.audit import CANCELLED_AT_ANNOTATION as CANCELLED_AT_ANNOTATION
from jobscheduler.domain.audit import JobAudit
from jobscheduler.domain.placement import Placement
from jobscheduler.domain.queueing import Queueing, QueueStatus

# Every object the service creates carries these; the watch cache and ListJobs select on them.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "jobscheduler"
JOB_TYPE_LABEL = "jobscheduler.io/job-type"
NAME_LABEL = "jobscheduler.io/name"
# Label values are limited to 63 characters; the request id itself is kept in an annotation.
REQUEST_ID_ANNOTATION = "jobscheduler.io/request-id"
# The job's pending timeout in seconds (ScheduleJob pending_timeout_seconds, or the default);
# absent: none. Read by the leader's pending check (jobscheduler.control.pending).
PENDING_TIMEOUT_ANNOTATION = "jobscheduler.io/pending-timeout-seconds"
# Set when the service itself ends a job as FAILED (a pending timeout, a failed dependency): the
# reason reported, the message and when, written with the same shortened deadline a cancel uses.
FAILED_REASON_ANNOTATION = "jobscheduler.io/failed-reason"
FAILED_MESSAGE_ANNOTATION = "jobscheduler.io/failed-message"
FAILED_AT_ANNOTATION = "jobscheduler.io/failed-at"
PARAMETERS_ANNOTATION = "jobscheduler.io/parameters"
# The schedule whose run a Job is (on the Job, its pods and the schedule's CronJob).
SCHEDULE_LABEL = "jobscheduler.io/schedule"
# The template a Job was made from and its version (on the Job and its pods; the template's
# ConfigMap carries TEMPLATE_LABEL too).
TEMPLATE_LABEL = "jobscheduler.io/template"
TEMPLATE_VERSION_LABEL = "jobscheduler.io/template-version"
# Who scheduled the job (admission.caller_label): counted by MAX_ACTIVE_JOBS_PER_CALLER.
CALLER_LABEL = "jobscheduler.io/caller"
# Set while a Job waits, suspended, for the Secret holding its secret_env to be stored.
SECRET_ENV_PENDING_ANNOTATION = "jobscheduler.io/secret-env-pending"  # noqa: S105 - a name, no secret

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


class JobState(enum.Enum):
    PENDING = "PENDING"  # accepted, no pod running yet
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    QUEUED = "QUEUED"  # waiting in its queue for Kueue to admit it

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Delivery(enum.Enum):
    """Where one notification (one sink, one job state) stands (jobscheduler.domain.notify)."""

    PENDING = "PENDING"  # due, not attempted yet, or waiting for its next attempt
    DELIVERING = "DELIVERING"  # an attempt is in flight
    DELIVERED = "DELIVERED"  # the sink answered 2xx
    FAILED = "FAILED"  # given up after NOTIFY_GIVE_UP_SECONDS

    @property
    def settled(self) -> bool:
        return self in (Delivery.DELIVERED, Delivery.FAILED)


@dataclass(frozen=True, slots=True)
class NotificationStatus:
    """A due notification of a job as JobStatus reports it."""

    url: str
    state: JobState  # the job state it reports
    delivery: Delivery
    attempts: int = 0
    last_error: str = ""
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class DependencyCondition(enum.Enum):
    """When a job scheduled `after` others is released (jobscheduler.domain.dependencies)."""

    SUCCEEDED = "SUCCEEDED"  # every dependency succeeded; one failing fails the job
    FINISHED = "FINISHED"  # every dependency ended, whatever its outcome


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What the service reports about one job; derived from the Job and its pods."""

    job_id: str
    namespace: str
    name: str
    job_type: str
    state: JobState
    reason: str = ""  # machine-readable: Unschedulable, ImagePullBackOff, OOMKilled, ...
    message: str = ""  # for people
    attempts: int = 0  # pods that failed
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pods: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    request_id: str = ""
    schedule: str = ""  # the schedule that started it
    # Indexed Jobs: the indexes that succeeded and those that failed, as Kubernetes writes them
    # ("0-2,4"); empty for other Jobs.
    completed_indexes: str = ""
    failed_indexes: str = ""
    template: str = ""  # the template it was made from
    template_version: int = 0  # that template's version
    # Dependencies (ScheduleJob `after`): the job ids it was scheduled after, their condition,
    # and, while it is held by them, those not yet seen to end.
    after: tuple[str, ...] = ()
    after_condition: DependencyCondition | None = None
    waiting_for: tuple[str, ...] = ()
    placement: Placement = field(default_factory=Placement)  # where its pods may run
    queueing: Queueing = field(default_factory=Queueing)  # its queue and priority (Kueue)
    # Kueue's view (Workload, positions): read for GetJobStatus only, None elsewhere.
    queue_status: QueueStatus | None = None
    # Its due notifications (ScheduleJob `notify`), with their delivery (jobscheduler.domain.notify).
    notifications: tuple[NotificationStatus, ...] = ()
    audit: JobAudit = field(default_factory=JobAudit)  # who scheduled, cancelled, resumed, triggered it
    traceparent: str = ""  # the W3C trace context it was created in (jobscheduler.domain.audit)
