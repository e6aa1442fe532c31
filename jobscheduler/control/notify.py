"""The leader's notifier: delivers jobs' completion notifications (ScheduleJob `notify`) at least
once, as CloudEvents signed with each sink's Secret.

It reacts to the watch cache's change feed, so an event leaves within moments of the job's end,
and sweeps the jobs still carrying NOTIFY_LABEL on every leader tick (retries, give-ups, a feed
event missed across a leader change). Each attempt is claimed on the Job first (a patch
conditional on its resourceVersion), then sent, then its outcome recorded the same way: a new
leader re-sends only attempts whose claim expired, so a leader change costs at most one extra
delivery per attempt in flight. When every due notification of an ended job is settled, the
finalizer that kept the Job from TTL deletion is dropped. The rules are jobscheduler.domain.notify's.
"""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
import urllib3

from jobscheduler.app.service import JobService
from jobscheduler.domain.errors import ConflictError, JobSchedulerError, NotFoundError
from jobscheduler.domain.models import MANAGED_SELECTOR, Delivery, JobState, JobStatus
from jobscheduler.domain.notify import (
    CONTENT_TYPE,
    DEFAULT_SECRET_KEY,
    DEFAULT_STATES,
    DEFAULT_TIMEOUT_SECONDS,
    NOTIFY_FINALIZER,
    NOTIFY_LABEL,
    NOTIFY_LABEL_VALUE,
    NOTIFY_STATE_ANNOTATION,
    SIGNATURE_HEADER,
    CloudEvent,
    Key,
    NotifySink,
    Plan,
    Record,
    Serializer,
    attempted,
    backoff_seconds,
    claimed,
    decode_records,
    decode_sinks,
    encode_records,
    given_up,
    job_event,
    plan,
    schedule_event,
    sign,
)
from jobscheduler.domain.schedule import PauseReason, ScheduleSpec
from jobscheduler.domain.selector import Requirement
from jobscheduler.domain.status import derive_status
from jobscheduler.kube.index import JobFilter
from jobscheduler.obs.metrics import NOTIFY_BACKLOG, NOTIFY_DELIVERIES, NOTIFY_LATENCY
from jobscheduler.timestamps import format_rfc3339

log = structlog.get_logger("jobscheduler.control.notify")
Obj = dict[str, Any]
# The jobs with notifications not yet settled, as the cache's label index answers it.
PENDING = JobFilter(requirements=(Requirement(NOTIFY_LABEL, "in", frozenset({NOTIFY_LABEL_VALUE})),))
MAX_JOBS_PER_SWEEP = 5000
CALL_SECONDS = 5.0
# A sink's answer is read up to this much (and dropped): it only has to say 2xx.
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "jobscheduler-notify/1"


@dataclass(frozen=True, slots=True)
class NotifyHealth:
    """For GetServiceStatus: due notifications not settled, and the sinks whose last attempt failed."""

    backlog: int
    failing_sinks: tuple[str, ...]
    oldest_pending_seconds: float | None = None  # since the oldest unsettled one became due


class Notifier:
    """A leader reconciler (jobscheduler.control.leader.Reconciler) that also follows the change
    feed on its own thread; `leading` says whether this replica may act now."""

    def __init__(
        self,
        jobs: JobService,
        *,
        serialize: Serializer,
        give_up_seconds: float,
        identity: str,
        leading: Callable[[], bool] = lambda: True,
        workers: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.jobs = jobs
        self.gateway = jobs.gateway
        self.serialize = serialize
        self.give_up_seconds = give_up_seconds
        self.identity = identity
        self.leading = leading
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify")
        self._lock = threading.Lock()
        self._busy: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self._backlog: dict[str, int] = {}  # by namespace ("" = all), as the last sweep counted
        self._stop = threading.Event()
        self._feed: threading.Thread | None = None
        # No redirects (a sink must not bounce the service elsewhere), no retries of urllib3's
        # own (ours are spaced and recorded), connections kept per sink host.
        self._http = urllib3.PoolManager(num_pools=64, maxsize=4, retries=False, block=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Follows the change feed: a job with notifications that changed is looked at at once."""
        if self.jobs.cache is None or self._feed is not None:
            return
        self._feed = threading.Thread(target=self._follow, name="notify-feed", daemon=True)
        self._feed.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _follow(self) -> None:
        cache = self.jobs.cache
        assert cache is not None
        sub = cache.subscribe(PENDING, initial=False, internal=True)
        try:
            while not self._stop.is_set():
                event = sub.next(0.5)
                if event is not None and event.kind != "DELETED":
                    self.poke(event.status.namespace, event.status.job_id)
        finally:
            cache.unsubscribe(sub)

    # -- the sweep (every leader tick) -------------------------------------------------------

    def __call__(self, namespace: str) -> None:
        backlog = 0
        now = self._clock()
        for job, status, exact in self._pending(namespace):
            annotations = job["metadata"].get("annotations") or {}
            decided = self._plan(annotations, status, now)
            backlog += decided.backlog
            # Read from the API without pods, a status may not show the job running yet: the
            # worker derives it with them.
            if not decided.idle or not exact:
                self.poke(status.namespace, status.job_id)
        with self._lock:
            self._backlog[namespace] = backlog
            NOTIFY_BACKLOG.set(sum(self._backlog.values()))

    def _pending(self, namespace: str) -> list[tuple[Obj, JobStatus, bool]]:
        """The jobs with notifications not settled, their statuses and whether those are exact
        (from the cache, pods included)."""
        cache = self.jobs.cached(namespace)  # "" too, when every namespace is watched
        if cache is not None:
            return [
                (
                    job,
                    cache.get(job["metadata"]["namespace"], job["metadata"]["name"]) or _status(job, pods),
                    True,
                )
                for job, pods in cache.jobs_with_pods(namespace, PENDING)[:MAX_JOBS_PER_SWEEP]
            ]
        jobs = self.gateway.list_jobs(
            namespace,
            label_selector=f"{MANAGED_SELECTOR},{NOTIFY_LABEL}={NOTIFY_LABEL_VALUE}",
            deadline=time.monotonic() + CALL_SECONDS,
        )
        return [(job, _status(job, []), False) for job in jobs[:MAX_JOBS_PER_SWEEP]]

    def _plan(self, annotations: Mapping[str, Any], status: JobStatus, now: datetime) -> Plan:
        return plan(
            decode_sinks(annotations),
            decode_records(annotations),
            job_state=status.state,
            started=status.started_at is not None,
            now=now,
            give_up_seconds=self.give_up_seconds,
        )

    # -- one job -----------------------------------------------------------------------------

    def poke(self, namespace: str, name: str) -> None:
        """Looks at one job's notifications soon, on a worker (one at a time per job)."""
        if self._stop.is_set() or not self.leading():
            return
        key = (namespace, name)
        with self._lock:
            if key in self._busy:
                self._again.add(key)
                return
            self._busy.add(key)
        try:
            self._pool.submit(self._work, key)
        except RuntimeError:  # shut down
            with self._lock:
                self._busy.discard(key)

    def _work(self, key: tuple[str, str]) -> None:
        try:
            while True:
                try:
                    self._settle(*key)
                except JobSchedulerError as e:
                    log.warning(
                        "notification round failed; retried", namespace=key[0], job_id=key[1], error=str(e)
                    )
                except Exception:
                    log.exception("notification round crashed", namespace=key[0], job_id=key[1])
                with self._lock:
                    if key not in self._again:
                        self._busy.discard(key)
                        return
                    self._again.discard(key)
        finally:
            with self._lock:
                self._busy.discard(key)

    def _settle(self, namespace: str, name: str) -> None:
        if self._nothing_to_do(namespace, name):
            return
        deadline = time.monotonic() + CALL_SECONDS
        try:
            job = self.gateway.get_job(namespace, name, deadline=deadline)
        except NotFoundError:
            return
        meta = job["metadata"]
        annotations = meta.get("annotations") or {}
        if (meta.get("labels") or {}).get(NOTIFY_LABEL) != NOTIFY_LABEL_VALUE:
            return
        status = self._status_of(job, deadline=deadline)
        sinks = decode_sinks(annotations)
        records = decode_records(annotations)
        now = self._clock()
        decided = self._plan(annotations, status, now)
        finalizers = list(meta.get("finalizers") or [])
        deleting = bool(meta.get("deletionTimestamp"))
        # A Job made by a CronJob lacks the finalizer (its template cannot carry one): adopted.
        adopt = NOTIFY_FINALIZER not in finalizers and not deleting and not decided.release
        # A Job deleted before it ended never will: nothing more is due, let it go.
        release = decided.release or (deleting and not status.state.terminal)
        if decided.idle and not adopt and not release:
            return
        claim = f"{self.identity}/{uuid.uuid4().hex[:8]}"
        new = dict(records)
        for k in decided.give_up:
            new[k] = given_up(records.get(k, Record()), give_up_seconds=self.give_up_seconds)
            NOTIFY_DELIVERIES.labels("given_up").inc()
            log.warning(
                "notification given up",
                namespace=namespace,
                job_id=name,
                url=sinks[k[0]].url,
                state=k[1].value,
                error=new[k].last_error,
            )
        for k in decided.send:
            new[k] = claimed(records.get(k, Record()), claim=claim, now=now)
        patch: Obj = {"metadata": {"resourceVersion": meta["resourceVersion"]}}
        if new != records:
            patch["metadata"]["annotations"] = {NOTIFY_STATE_ANNOTATION: encode_records(new)}
        if release:
            patch["metadata"]["finalizers"] = [f for f in finalizers if f != NOTIFY_FINALIZER]
            patch["metadata"]["labels"] = {NOTIFY_LABEL: None}
        elif adopt:
            patch["metadata"]["finalizers"] = [*finalizers, NOTIFY_FINALIZER]
        if not self.leading():
            return
        try:
            job = self._patch(namespace, name, patch)
        except ConflictError:
            self._retry_soon(namespace, name)
            return
        if release:
            log.info("notifications settled; job let go", namespace=namespace, job_id=name)
        if not decided.send:
            return
        data = self.serialize(status)
        outcomes: dict[Key, str] = {}
        for k in decided.send:
            sink = sinks[k[0]]
            event = job_event(
                uid=meta["uid"], namespace=namespace, job_id=name, state=k[1], data=data, now=self._clock()
            )
            outcomes[k] = self.deliver(namespace, sink, event)
        self._record(namespace, name, job, outcomes, claim=claim, status=status)

    def _nothing_to_do(self, namespace: str, name: str) -> bool:
        """Whether the cache shows nothing to do for the job: most feed events (those of the
        leader's own patches among them) then cost no API call. Any doubt: False."""
        cache = self.jobs.cached(namespace)
        job = cache.job(namespace, name) if cache is not None else None
        status = cache.get(namespace, name) if cache is not None else None
        if job is None or status is None:
            return False
        meta = job["metadata"]
        if meta["labels"].get(NOTIFY_LABEL) != NOTIFY_LABEL_VALUE:
            return True
        if meta.get("deletionTimestamp") or NOTIFY_FINALIZER not in (meta.get("finalizers") or ()):
            return False
        return self._plan(meta["annotations"], status, self._clock()).idle

    def _record(
        self,
        namespace: str,
        name: str,
        job: Obj,
        outcomes: Mapping[Key, str],
        *,
        claim: str,
        status: JobStatus,
    ) -> None:
        """Writes the attempts' outcomes, on a conflict again on a fresh read (only the records
        still holding our claim: another leader may have taken them over meanwhile)."""
        for _ in range(5):
            meta = job["metadata"]
            annotations = meta.get("annotations") or {}
            records = decode_records(annotations)
            now = self._clock()
            new = dict(records)
            for k, error in outcomes.items():
                r = records.get(k)
                if r is None or r.claim != claim:
                    continue
                new[k] = attempted(r, error=error, now=now, jitter=random.random())
            if new == records:
                return
            settled_plan = self._plan(
                {**annotations, NOTIFY_STATE_ANNOTATION: encode_records(new)}, status, now
            )
            patch: Obj = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {NOTIFY_STATE_ANNOTATION: encode_records(new)},
                }
            }
            if settled_plan.release:
                patch["metadata"]["finalizers"] = [
                    f for f in meta.get("finalizers") or [] if f != NOTIFY_FINALIZER
                ]
                patch["metadata"]["labels"] = {NOTIFY_LABEL: None}
            try:
                self._patch(namespace, name, patch)
            except ConflictError:
                try:
                    job = self.gateway.get_job(namespace, name, deadline=time.monotonic() + CALL_SECONDS)
                except NotFoundError:
                    return
                continue
            for k, error in outcomes.items():
                if new[k] is records.get(k):
                    continue
                if not error:
                    NOTIFY_DELIVERIES.labels("delivered").inc()
                    ended = (status.started_at if k[1].value == "RUNNING" else status.finished_at) or new[
                        k
                    ].due_at
                    if ended is not None:
                        NOTIFY_LATENCY.observe(max(0.0, (now - ended).total_seconds()))
                else:
                    NOTIFY_DELIVERIES.labels("retry").inc()
                    log.info(
                        "notification attempt failed; retried later",
                        namespace=namespace,
                        job_id=name,
                        state=k[1].value,
                        attempts=new[k].attempts,
                        error=error,
                    )
            return

    def _patch(self, namespace: str, name: str, patch: Obj) -> Obj:
        patched = self.gateway.patch_job(namespace, name, patch, deadline=time.monotonic() + CALL_SECONDS)
        if self.jobs.cache is not None:
            self.jobs.cache.observe_job(patched)
        return patched

    def _retry_soon(self, namespace: str, name: str) -> None:
        with self._lock:
            if (namespace, name) in self._busy:
                self._again.add((namespace, name))

    def _status_of(self, job: Obj, *, deadline: float) -> JobStatus:
        cache = self.jobs.cached(job["metadata"]["namespace"])
        status = (
            cache.get(job["metadata"]["namespace"], job["metadata"]["name"]) if cache is not None else None
        )
        if status is not None and status.state.terminal == _status(job, []).state.terminal:
            return status
        return self.jobs.status_of(job, deadline=deadline)

    # -- sending -----------------------------------------------------------------------------

    def deliver(self, namespace: str, sink: NotifySink, event: CloudEvent) -> str:
        """One attempt: the event POSTed to the sink, signed with its Secret's key. Returns ""
        when the sink answered 2xx, else what went wrong (never the key, never the body)."""
        try:
            key = self._key(namespace, sink)
        except JobSchedulerError as e:
            return str(e)
        body = event.body()
        timeout = float(sink.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)
        try:
            response = self._http.request(
                "POST",
                sink.url,
                body=body,
                headers={
                    "Content-Type": CONTENT_TYPE,
                    SIGNATURE_HEADER: sign(key, body),
                    "User-Agent": USER_AGENT,
                },
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=False,
                retries=False,
                preload_content=False,
            )
        except urllib3.exceptions.TimeoutError:
            return f"timed out after {timeout:g}s"
        except urllib3.exceptions.HTTPError as e:
            return f"could not reach the sink: {_reason(e)}"
        try:
            response.read(MAX_RESPONSE_BYTES)
        except urllib3.exceptions.HTTPError:
            pass
        finally:
            response.release_conn() if response.length_remaining in (0, None) else response.close()
        if 200 <= response.status < 300:
            return ""
        return f"HTTP {response.status} from the sink"

    def _key(self, namespace: str, sink: NotifySink) -> bytes:
        try:
            secret = self.gateway.get(
                "secrets", namespace, sink.secret, deadline=time.monotonic() + CALL_SECONDS
            )
        except NotFoundError:
            raise NotFoundError(f"Secret {sink.secret!r} not found in namespace {namespace!r}") from None
        key = sink.secret_key or DEFAULT_SECRET_KEY
        value = (secret.get("data") or {}).get(key)
        if not value:
            raise NotFoundError(f"Secret {sink.secret!r} has no key {key!r}")
        return base64.b64decode(value)

    def send_event(self, namespace: str, sinks: Sequence[NotifySink], event: CloudEvent) -> None:
        """Sends any CloudEvent (e.g. `io.jobscheduler.schedule.paused`) to the sinks of a job
        spec, in the background, retried with the same backoff until NOTIFY_GIVE_UP_SECONDS.
        Unlike a job's notifications its progress is kept in memory only: a leader change
        during the retries loses it."""

        def run(sink: NotifySink) -> None:
            started, attempts = time.monotonic(), 0
            while not self._stop.is_set():
                attempts += 1
                error = self.deliver(namespace, sink, event)
                NOTIFY_DELIVERIES.labels("delivered" if not error else "retry").inc()
                if not error:
                    return
                if time.monotonic() - started >= self.give_up_seconds:
                    NOTIFY_DELIVERIES.labels("given_up").inc()
                    log.warning("event given up", type=event.type, url=sink.url, error=error)
                    return
                self._stop.wait(backoff_seconds(attempts, jitter=random.random()))

        for sink in sinks:
            self._pool.submit(run, sink)

    # -- for GetServiceStatus ----------------------------------------------------------------

    def health(self, namespaces: Sequence[str]) -> NotifyHealth:
        """Backlog and failing sinks, as this replica's cache sees them (any replica can answer)."""
        backlog = 0
        failing: set[str] = set()
        oldest: datetime | None = None
        cache = self.jobs.cache
        if cache is None:
            return NotifyHealth(0, ())
        for namespace in namespaces:
            for job, _pods in cache.jobs_with_pods(namespace, PENDING):
                status = cache.get(job["metadata"]["namespace"], job["metadata"]["name"])
                if status is None:
                    continue
                for n in status.notifications:
                    if not n.delivery.settled:
                        backlog += 1
                        due = status.started_at if n.state is JobState.RUNNING else status.finished_at
                        if due is not None and (oldest is None or due < oldest):
                            oldest = due
                    if n.last_error and n.delivery is not Delivery.DELIVERED:
                        failing.add(n.url)
        age = (self._clock() - oldest).total_seconds() if oldest is not None else None
        return NotifyHealth(backlog, tuple(sorted(failing)), age)

    def schedule_paused(self, spec: ScheduleSpec, reason: PauseReason) -> None:
        """ScheduleLoop's on_schedule_paused: `io.jobscheduler.schedule.paused` to the sinks of
        the schedule's job that report FAILED (the default states do), as a pause follows
        failures."""
        sinks = [s for s in spec.job.notify if JobState.FAILED in (s.states or DEFAULT_STATES)]
        if not sinks:
            return
        event = schedule_event(
            uid=spec.name,
            namespace=spec.namespace,
            name=spec.name,
            kind="paused",
            at=reason.at,
            data={
                "schedule": spec.name,
                "namespace": spec.namespace,
                "reason": reason.reason,
                "message": reason.message,
                "consecutive_failures": reason.failures,
                "paused_at": format_rfc3339(reason.at),
            },
        )
        self.send_event(spec.namespace, sinks, event)


def _status(job: Obj, pods: list[Obj]) -> JobStatus:
    return derive_status(job, pods)


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e
    text = str(reason)
    # urllib3 repeats the pool and URL in its messages: keep only the cause.
    return text.rsplit(": ", 1)[-1][:200] if text else type(e).__name__
