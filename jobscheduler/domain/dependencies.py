"""Job dependencies (ScheduleJob `after`): how they are recorded on a Job, what a new job's list
must pass at submit, and the rule that decides from the dependencies' states whether a held job
keeps waiting, is released, or fails.

Pure: the service supplies a lookup of jobs by id, and the leader's DependencyReleaser
(jobscheduler.control.release) does the reads and the writes. Dependencies live in the job's own
namespace; the Job records them in annotations, so every replica reads the same truth.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.models import (
    FAILED_AT_ANNOTATION,
    FAILED_MESSAGE_ANNOTATION,
    FAILED_REASON_ANNOTATION,
    DependencyCondition,
    JobState,
    JobStatus,
)
from jobscheduler.domain.queueing import with_release
from jobscheduler.domain.validation import check_dns_label
from jobscheduler.timestamps import format_rfc3339

__all__ = [
    "AFTER_ANNOTATION",
    "AFTER_CONDITION_ANNOTATION",
    "FAILED_REASON",
    "HELD_LABEL",
    "HELD_VALUE",
    "MAX_DEPENDENCIES",
    "MAX_GRAPH_WALK",
    "SUSPEND_AFTER_ANNOTATION",
    "WAITING_FOR_ANNOTATION",
    "WAITING_REASON",
    "Action",
    "Decision",
    "Dependencies",
    "Lookup",
    "cleanup_patch",
    "decide",
    "fail_patch",
    "find_cycle",
    "hold_manifest",
    "is_held",
    "plan",
    "progress_patch",
    "read_dependencies",
    "release_patch",
    "waiting_message",
]

MAX_DEPENDENCIES = 32
# Jobs visited when looking for a cycle back to the new job; a larger graph upstream of its
# dependencies is refused rather than walked (on a namespace without a cache, each is one read).
MAX_GRAPH_WALK = 500

# What the job was scheduled after (comma-separated job ids) and on which condition.
AFTER_ANNOTATION = "jobscheduler.io/after"
AFTER_CONDITION_ANNOTATION = "jobscheduler.io/after-condition"
# Present exactly while the Job is held by its dependencies: those not yet seen to end
# (comma-separated, possibly empty). The leader narrows it as they end, which is also how a
# dependency that succeeded and was then deleted (TTL) is remembered as succeeded.
WAITING_FOR_ANNOTATION = "jobscheduler.io/waiting-for"
# On a held Job's labels too, so that held jobs are found by a label selector where no cache
# serves the namespace. Distinct from a caller's suspend, which ResumeJob lifts.
HELD_LABEL = "jobscheduler.io/held"
HELD_VALUE = "dependencies"
# The caller asked for suspend as well: released by its dependencies, the Job stays suspended
# until ResumeJob.
SUSPEND_AFTER_ANNOTATION = "jobscheduler.io/suspend-after-dependencies"

WAITING_REASON = "WaitingForDependencies"
FAILED_REASON = "DependencyFailed"

# A managed job's status by id in the job's namespace; None when there is no such managed job.
Lookup = Callable[[str], JobStatus | None]
Obj = dict[str, Any]


class Action(enum.Enum):
    WAIT = "wait"  # nothing new
    PROGRESS = "progress"  # some ended as needed, others still run: record who is left
    RELEASE = "release"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    waiting: tuple[str, ...]  # the dependencies still waited for
    message: str = ""  # FAIL: why, for the job's status


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What a Job's annotations say about its dependencies."""

    after: tuple[str, ...] = ()
    condition: DependencyCondition | None = None
    waiting: tuple[str, ...] | None = None  # None: not held by them
    suspend_after: bool = False


def read_dependencies(annotations: Mapping[str, Any]) -> Dependencies:
    """The dependencies recorded in a Job's annotations; tolerates malformed values."""
    condition = None
    raw = annotations.get(AFTER_CONDITION_ANNOTATION)
    if isinstance(raw, str):
        try:
            condition = DependencyCondition(raw)
        except ValueError:
            condition = DependencyCondition.SUCCEEDED  # the stricter reading of a damaged value
    waiting = annotations.get(WAITING_FOR_ANNOTATION)
    return Dependencies(
        after=_ids(annotations.get(AFTER_ANNOTATION)),
        condition=condition,
        waiting=_ids(waiting) if isinstance(waiting, str) else None,
        suspend_after=annotations.get(SUSPEND_AFTER_ANNOTATION) == "true",
    )


def is_held(job: Mapping[str, Any]) -> bool:
    """Whether a Job (API JSON) is held by its dependencies."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return WAITING_FOR_ANNOTATION in annotations


def waiting_message(deps: Dependencies) -> str:
    verb = "finish" if deps.condition is DependencyCondition.FINISHED else "succeed"
    if deps.waiting:
        message = f"waiting for {', '.join(deps.waiting)} to {verb}"
    else:
        message = "its dependencies have ended; waiting for the service's leader to release it"
    if deps.suspend_after:
        message += "; then suspended until ResumeJob"
    return message


# -- at submit ------------------------------------------------------------------------------------


def plan(
    after: Sequence[str],
    condition: DependencyCondition,
    *,
    job_id: str,
    namespace: str,
    lookup: Lookup,
) -> Decision:
    """Checks a new job's dependencies (INVALID_ARGUMENT naming `after[i]`) and decides where
    it starts: RELEASE when they are already met (the Job is created as usual), else held
    waiting for `waiting` (a FAIL is left for the leader to record, as for any held job)."""
    if len(after) > MAX_DEPENDENCIES:
        raise InvalidArgumentError("after", f"at most {MAX_DEPENDENCIES} dependencies (got {len(after)})")
    first: dict[str, int] = {}
    for i, dep in enumerate(after):
        check_dns_label(f"after[{i}]", dep, what="job id")
        if dep == job_id:
            raise InvalidArgumentError(f"after[{i}]", f"a job cannot depend on itself ({dep})")
        if dep in first:
            raise InvalidArgumentError(f"after[{i}]", f"{dep} is already after[{first[dep]}]")
        first[dep] = i
    for i, dep in enumerate(after):
        if lookup(dep) is None:
            raise InvalidArgumentError(
                f"after[{i}]",
                f"no job {dep!r} in namespace {namespace!r}; dependencies must be jobs of this "
                "service in the job's own namespace",
            )
    cycle = find_cycle(job_id, after, lookup)
    if cycle is not None:
        index, path = cycle
        raise InvalidArgumentError(
            f"after[{index}]",
            f"{after[index]} already waits for {job_id}, so this would be a cycle: {' → '.join(path)}",
        )
    return decide(condition, after, lookup)


def find_cycle(
    job_id: str, after: Sequence[str], lookup: Lookup, *, limit: int = MAX_GRAPH_WALK
) -> tuple[int, list[str]] | None:
    """When a job in `after` depends, directly or through others, on `job_id`: the index of that
    entry and the path from job_id back to itself. Only a job named by its request_id can be
    part of one (every existing job's dependencies existed before it), but that is enough."""
    parent: dict[str, str] = {}
    origin: dict[str, int] = {}
    queue: deque[str] = deque()
    for i, dep in enumerate(after):
        if dep not in origin:
            origin[dep] = i
            queue.append(dep)
    while queue:
        node = queue.popleft()
        status = lookup(node)
        for upstream in status.after if status is not None else ():
            if upstream == job_id:
                path = [node]
                while path[-1] in parent:
                    path.append(parent[path[-1]])
                start = path[-1]
                return origin[start], [job_id, *reversed(path), job_id]
            if upstream in origin:
                continue
            if len(origin) >= limit:
                raise InvalidArgumentError(
                    "after",
                    f"more than {limit} jobs lie upstream of these dependencies; the service does not "
                    "walk a dependency graph that large",
                )
            origin[upstream] = origin[node]
            parent[upstream] = node
            queue.append(upstream)
    return None


def hold_manifest(
    manifest: Obj,
    *,
    after: Sequence[str],
    condition: DependencyCondition,
    decision: Decision,
    suspend: bool,
) -> None:
    """Records the dependencies on a rendered Job and, unless they are already met, holds it:
    suspended, labelled and annotated with the ones it waits for."""
    meta = manifest["metadata"]
    meta["annotations"][AFTER_ANNOTATION] = ",".join(after)
    meta["annotations"][AFTER_CONDITION_ANNOTATION] = condition.value
    if decision.action is Action.RELEASE:
        return
    meta["annotations"][WAITING_FOR_ANNOTATION] = ",".join(decision.waiting)
    meta["labels"][HELD_LABEL] = HELD_VALUE
    if suspend:
        meta["annotations"][SUSPEND_AFTER_ANNOTATION] = "true"
    manifest["spec"]["suspend"] = True


# -- the leader's rule ----------------------------------------------------------------------------


def decide(condition: DependencyCondition | None, waiting: Sequence[str], lookup: Lookup) -> Decision:
    """What to do with a job held by `waiting` (in declared order), given their statuses.

    A dependency that no longer exists (deleted, e.g. by TTL retention) while still waited
    for fails a SUCCEEDED job (its success was never seen) and counts as ended for FINISHED.
    Dependencies seen to end are no longer in `waiting`, so their later deletion changes nothing.
    """
    left: list[str] = []
    for dep in waiting:
        status = lookup(dep)
        if status is None:
            if condition is not DependencyCondition.FINISHED:
                return Decision(
                    Action.FAIL, tuple(waiting), f"dependency {dep} was deleted before it was seen to succeed"
                )
            continue
        if not status.state.terminal:
            left.append(dep)
        elif condition is not DependencyCondition.FINISHED and status.state is not JobState.SUCCEEDED:
            return Decision(Action.FAIL, tuple(waiting), _failure(dep, status))
    if not left:
        return Decision(Action.RELEASE, ())
    if len(left) < len(waiting):
        return Decision(Action.PROGRESS, tuple(left))
    return Decision(Action.WAIT, tuple(left))


def _failure(dep: str, status: JobStatus) -> str:
    detail = f" ({status.reason})" if status.reason and status.reason != "Cancelled" else ""
    return f"dependency {dep} {status.state.value}{detail}"


def release_patch(job: Mapping[str, Any]) -> Obj:
    """Lets a held Job run (or, with the caller's suspend, wait for ResumeJob); conditional on
    the resourceVersion it was decided on."""
    meta = job["metadata"]
    suspend_after = (meta.get("annotations") or {}).get(SUSPEND_AFTER_ANNOTATION) == "true"
    patch: Obj = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "labels": {HELD_LABEL: None},
            "annotations": {WAITING_FOR_ANNOTATION: None, SUSPEND_AFTER_ANNOTATION: None},
        }
    }
    if not suspend_after:
        with_release(patch, job)  # to run, or into its Kueue queue
    return patch


def fail_patch(job: Mapping[str, Any], message: str, *, now: datetime) -> Obj:
    """Ends a held Job as FAILED (reason DependencyFailed), the way the service ends any job
    itself: reason, message and time in annotations (status.py reports them), and a one-second
    activeDeadlineSeconds so that the Job controller marks it Failed and TTL retention applies.
    parallelism 0 because a resumed Job would otherwise start a pod within that second."""
    return {
        "metadata": {
            "resourceVersion": job["metadata"]["resourceVersion"],
            "labels": {HELD_LABEL: None},
            "annotations": {
                WAITING_FOR_ANNOTATION: None,
                SUSPEND_AFTER_ANNOTATION: None,
                FAILED_REASON_ANNOTATION: FAILED_REASON,
                FAILED_MESSAGE_ANNOTATION: message,
                FAILED_AT_ANNOTATION: format_rfc3339(now),
            },
        },
        "spec": {"suspend": False, "parallelism": 0, "activeDeadlineSeconds": 1},
    }


def progress_patch(job: Mapping[str, Any], waiting: Sequence[str]) -> Obj:
    """Records which dependencies are still waited for (the status's waiting_for)."""
    return {
        "metadata": {
            "resourceVersion": job["metadata"]["resourceVersion"],
            "annotations": {WAITING_FOR_ANNOTATION: ",".join(waiting)},
        }
    }


def cleanup_patch(job: Mapping[str, Any]) -> Obj:
    """Drops the hold from a Job that ended otherwise (cancelled while held)."""
    return {
        "metadata": {
            "resourceVersion": job["metadata"]["resourceVersion"],
            "labels": {HELD_LABEL: None},
            "annotations": {WAITING_FOR_ANNOTATION: None, SUSPEND_AFTER_ANNOTATION: None},
        }
    }


def _ids(value: object) -> tuple[str, ...]:
    if not isinstance(value, str):
        return ()
    return tuple(part for part in (p.strip() for p in value.split(",")) if part)
