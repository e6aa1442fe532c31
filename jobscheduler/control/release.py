"""The leader's dependency reconciler: finds jobs held by their dependencies (ScheduleJob `after`)
and, as those end, records progress, releases the job, or fails it with the reason.

It runs on the elected leader only (jobscheduler.control.leader calls it every tick), reads through the
watch cache where it serves the namespace and the API elsewhere, and writes only with patches
conditional on the resourceVersion it decided on, so a stale read or a replica that has just
lost the lease changes nothing: the next tick decides again. The rules are in
jobscheduler.domain.dependencies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from jobscheduler.app.service import JobService
from jobscheduler.domain.dependencies import (
    HELD_LABEL,
    HELD_VALUE,
    Action,
    Lookup,
    cleanup_patch,
    decide,
    fail_patch,
    is_held,
    progress_patch,
    release_patch,
)
from jobscheduler.domain.errors import ConflictError, NotFoundError
from jobscheduler.domain.models import MANAGED_SELECTOR, SECRET_ENV_PENDING_ANNOTATION, JobStatus
from jobscheduler.domain.selector import Requirement
from jobscheduler.domain.status import derive_status
from jobscheduler.kube.index import JobFilter

log = structlog.get_logger("jobscheduler.control.release")
Obj = dict[str, Any]
# Held jobs looked at per namespace and tick; any beyond wait for the next tick.
MAX_HELD_PER_TICK = 1000
# Budget of each Kubernetes call the reconciler makes.
CALL_SECONDS = 5.0
# The held jobs, as the cache's label index answers it: a tick reads only them.
HELD = JobFilter(requirements=(Requirement(HELD_LABEL, "in", frozenset({HELD_VALUE})),))


class DependencyReleaser:
    """A leader reconciler (jobscheduler.control.leader.Reconciler): call it with a namespace, "" for all."""

    def __init__(
        self, jobs: JobService, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.jobs = jobs
        self.gateway = jobs.gateway
        self._clock = clock

    def __call__(self, namespace: str) -> None:
        lookups: dict[str, Lookup] = {}  # per namespace, each dependency read once per tick
        for held, job in self._held(namespace):
            if held.namespace not in lookups:
                lookups[held.namespace] = self.jobs.job_lookup(held.namespace)
            lookup = lookups[held.namespace]
            if (
                not held.state.terminal
                and decide(held.after_condition, held.waiting_for, lookup).action is Action.WAIT
            ):
                continue
            self._settle(held.namespace, held.job_id, job, lookup)

    def _held(self, namespace: str) -> list[tuple[JobStatus, Obj | None]]:
        """The held jobs: their statuses and, when read from the API, the Jobs themselves."""
        cache = self.jobs.cache
        if namespace and cache is not None and cache.covers(namespace) and self.jobs.api_reachable():
            statuses, _ = cache.query(namespace, HELD, after=None, limit=MAX_HELD_PER_TICK)
            return [(status, None) for status in statuses]
        jobs = self.gateway.list_jobs(
            namespace,
            label_selector=f"{MANAGED_SELECTOR},{HELD_LABEL}={HELD_VALUE}",
            deadline=time.monotonic() + CALL_SECONDS,
        )
        return [(derive_status(job, []), job) for job in jobs[:MAX_HELD_PER_TICK]]

    def _settle(self, namespace: str, name: str, job: Obj | None, lookup: Lookup) -> None:
        """Decides again on the Job as the API has it now (the cache may lag behind) and writes
        the outcome, conditional on that version."""
        deadline = time.monotonic() + CALL_SECONDS
        if job is None:
            try:
                job = self.gateway.get_job(namespace, name, deadline=deadline)
            except NotFoundError:
                return
        meta = job["metadata"]
        if not is_held(job) and (meta.get("labels") or {}).get(HELD_LABEL) != HELD_VALUE:
            return
        status = derive_status(job, [])
        fields: dict[str, Any] = {"namespace": namespace, "job_id": name}
        if status.state.terminal:
            # Ended otherwise while held (cancelled): only the hold is left to drop.
            patch, event = cleanup_patch(job), "hold dropped from a job that ended while held"
        else:
            decision = decide(status.after_condition, status.waiting_for, lookup)
            if decision.action is Action.WAIT:
                return
            if decision.action is Action.RELEASE:
                if (meta.get("annotations") or {}).get(SECRET_ENV_PENDING_ANNOTATION):
                    return  # released once its secret_env is stored (JobService finishes that)
                patch, event = release_patch(job), "dependencies met; job released"
            elif decision.action is Action.FAIL:
                patch = fail_patch(job, decision.message, now=self._clock())
                event = "dependency failed; job failed"
                fields["reason"] = decision.message
            else:
                patch, event = progress_patch(job, decision.waiting), "dependencies progressed"
                fields["waiting_for"] = list(decision.waiting)
        try:
            patched = self.gateway.patch_job(namespace, name, patch, deadline=deadline)
        except (ConflictError, NotFoundError):
            log.debug("held job changed while being decided; next tick", namespace=namespace, job_id=name)
            return
        if self.jobs.cache is not None:
            self.jobs.cache.observe_job(patched)
        log.info(event, **fields)
