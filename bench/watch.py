"""Measurement 5: how long a change to a job's pod takes to reach a WatchJob stream.

One job runs unsuspended with the pod annotation sim.jobscheduler.io/waiting-reason, so kwok
holds its pod waiting in ImagePullBackOff (its waiting stage only fires while the pod has no
containerStatuses, so it never undoes the patches below). With a WatchJob stream open, the
pod's status subresource is merge-patched again and again, its container's waiting reason
alternating between ErrImagePull and ImagePullBackOff, which changes the job's derived reason.
t0 is when the PATCH response returned (the API server has recorded the change by then); t1
is when a reader thread received the stream's event carrying the new reason. delay = t1 - t0.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import grpc
from google.protobuf.json_format import ParseDict

from bench.harness import TIMER_REQUEST, Harness
from bench.kube import MERGE_PATCH_HEADERS, jobs_path, pods_path, with_query
from bench.load import say, summarize
from jobscheduler.api import scheduler_pb2 as pb

WAITING_ANNOTATION = "sim.jobscheduler.io/waiting-reason"
REASONS = ("ErrImagePull", "ImagePullBackOff")  # alternated; the pod starts in the second
EVENT_TIMEOUT = 5.0


def start_waiting_job(h: Harness) -> tuple[str, dict[str, Any]]:
    """Schedules the job (not suspended) and waits until kwok holds its pod in ImagePullBackOff
    and the service reports that reason; returns the job id and the pod."""
    request = {
        **TIMER_REQUEST,
        "name": "bench-watch",
        "suspend": False,
        "annotations": {WAITING_ANNOTATION: REASONS[1]},
    }
    reply = h.stub.ScheduleJob(ParseDict(request, pb.ScheduleJobRequest()), timeout=30)
    job_id = reply.job_id
    uid = h.kube.get_json(f"{jobs_path(h.namespace)}/{job_id}")["metadata"]["uid"]
    pods = with_query(pods_path(h.namespace), labelSelector=f"batch.kubernetes.io/controller-uid={uid}")
    say(f"WatchJob: job {job_id} scheduled; waiting for kwok to hold its pod in {REASONS[1]}")
    found: dict[str, Any] = {}

    def pod_waiting() -> bool:
        for pod in h.kube.get_json(pods)["items"]:
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if statuses and (statuses[0].get("state") or {}).get("waiting", {}).get("reason") == REASONS[1]:
                found.update(pod)
                return True
        return False

    h.kube.wait_for("the job's pod to be held waiting", pod_waiting, timeout=120)

    def service_sees_it() -> bool:
        status = h.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=5).status
        return bool(status.reason == REASONS[1])

    h.kube.wait_for("the service to report the waiting reason", service_sees_it, timeout=60)
    return job_id, found


def read_events(stream: Any, inbox: queue.Queue[tuple[float, str]]) -> None:
    """Puts (arrival time, reason) of every event on the inbox; ends with the stream."""
    try:
        for event in stream:
            inbox.put((time.perf_counter(), event.status.reason))
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            inbox.put((time.perf_counter(), f"stream error: {e.code().name}"))


def measure_watch_delay(h: Harness, *, changes: int) -> dict[str, Any]:
    job_id, pod = start_waiting_job(h)
    pod_name = pod["metadata"]["name"]
    status_path = f"{pods_path(h.namespace)}/{pod_name}/status"
    container = pod["status"]["containerStatuses"][0]
    stream = h.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, namespace=h.namespace))
    inbox: queue.Queue[tuple[float, str]] = queue.Queue()
    reader = threading.Thread(target=read_events, args=(stream, inbox), name="watch-reader", daemon=True)
    reader.start()
    _, initial = inbox.get(timeout=10)
    say(f"WatchJob: stream open (initial reason {initial}); {changes} pod status changes, one at a time")
    delays: list[float] = []
    missed = 0
    try:
        for i in range(changes):
            reason = REASONS[i % 2]
            state = {"waiting": {"reason": reason, "message": f"bench change {i}"}}
            patch = {"status": {"containerStatuses": [{**container, "state": state}]}}
            h.kube.send("PATCH", status_path, body=json.dumps(patch).encode(), headers=MERGE_PATCH_HEADERS)
            t0 = time.perf_counter()
            deadline = t0 + EVENT_TIMEOUT
            while True:
                try:
                    t1, seen = inbox.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    missed += 1
                    break
                if seen == reason:
                    delays.append(t1 - t0)
                    break
            if (i + 1) % 50 == 0:
                say(f"  {i + 1}/{changes} changes observed")
    finally:
        stream.cancel()
        reader.join(5)
    return {
        "job_id": job_id,
        "pod": pod_name,
        "changes": changes,
        "events_missed": missed,
        "negative_delays": sum(1 for d in delays if d < 0),
        **summarize(delays),
    }
