"""The audit trail against the real cluster and a real `jobscheduler serve` with bearer tokens:
who scheduled, resumed, cancelled and triggered a job is recorded on the Job and reported in
JobStatus, and every mutating RPC leaves one audit log line (AUDIT_LOG), whatever its outcome,
without a token or a secret value in it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.audit import (
    CANCELLED_BY_ANNOTATION,
    RESUMED_BY_ANNOTATION,
    SCHEDULED_BY_ANNOTATION,
    TRIGGERED_BY_ANNOTATION,
)
from tests.conftest import Cluster
from tests.integration.test_dependencies import timer
from tests.integration.test_security import pki, serving, tls_channel, token_serving
from tests.unit.test_security import Pki

__all__ = ["pki"]  # the module-scoped fixture, shared with test_security

SECRET_VALUE = "hunter2-must-never-be-logged"


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def annotations(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    job = client.BatchV1Api(cluster.api).read_namespaced_job(name, namespace)
    return dict(job.metadata.annotations or {})


def test_who_scheduled_resumed_cancelled_and_triggered_is_recorded_and_audited(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    with token_serving(cluster, namespace, tmp_path, AUDIT_LOG=str(audit_file), LOG_LEVEL="error") as s:
        stub = s.stub
        request = timer(
            namespace, "audited", request_id="audit-1", suspend=True, secret_env={"API_KEY": SECRET_VALUE}
        )
        first = stub.ScheduleJob(request, timeout=15, metadata=s.as_("team"))
        job_id = first.job_id
        # A retry by someone else finds the job: it does not become theirs.
        again = stub.ScheduleJob(request, timeout=15, metadata=s.as_("admin"))
        assert not again.created
        assert again.status.audit.scheduled_by == "token:team"

        resumed = stub.ResumeJob(
            pb.ResumeJobRequest(job_id=job_id), timeout=10, metadata=s.as_("admin")
        ).status
        assert resumed.audit.resumed_by == "token:admin"
        assert resumed.audit.HasField("resumed_at")

        with pytest.raises(grpc.RpcError) as refused:
            stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10, metadata=s.as_("reader"))
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        cancelled = stub.CancelJob(
            pb.CancelJobRequest(job_id=job_id), timeout=10, metadata=s.as_("team")
        ).status
        assert cancelled.audit.cancelled_by == "token:team"
        assert cancelled.audit.HasField("cancelled_at")
        read = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10, metadata=s.as_("reader"))
        assert read.status.audit.scheduled_by == "token:team"
        assert read.status.audit.cancelled_by == "token:team"

        stub.CreateSchedule(
            pb.CreateScheduleRequest(
                schedule=pb.ScheduleSpec(
                    name="nightly", namespace=namespace, cron="0 3 1 1 *", job=timer(namespace, "nightly")
                )
            ),
            timeout=10,
            metadata=s.as_("team"),
        )
        triggered = stub.TriggerSchedule(
            pb.TriggerScheduleRequest(name="nightly", idempotency_key="k1"),
            timeout=10,
            metadata=s.as_("admin"),
        )
        assert triggered.status.audit.triggered_by == "token:admin"
        run_id = triggered.status.job_id
        start, end = Timestamp(), Timestamp()
        start.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
        end.FromDatetime(datetime(2026, 1, 2, tzinfo=UTC))
        backfilled = stub.BackfillSchedule(
            pb.BackfillScheduleRequest(name="nightly", start=start, end=end),
            timeout=10,
            metadata=s.as_("team"),
        )
        [backfilled_id] = backfilled.created  # the run of 2026-01-01 03:00

    recorded = annotations(cluster, namespace, job_id)
    assert recorded[SCHEDULED_BY_ANNOTATION] == "token:team"
    assert recorded[RESUMED_BY_ANNOTATION] == "token:admin"
    assert recorded[CANCELLED_BY_ANNOTATION] == "token:team"
    assert annotations(cluster, namespace, run_id)[TRIGGERED_BY_ANNOTATION] == "token:admin"
    assert annotations(cluster, namespace, backfilled_id)[TRIGGERED_BY_ANNOTATION] == "token:team"

    lines = audit_lines(audit_file)
    assert {line["logger"] for line in lines} == {"jobscheduler.audit"}
    seen = [(line["method"], line["who"], line["outcome"]) for line in lines]
    assert seen == [
        ("ScheduleJob", "token:team", "OK"),
        ("ScheduleJob", "token:admin", "OK"),
        ("ResumeJob", "token:admin", "OK"),
        ("CancelJob", "token:reader", "PERMISSION_DENIED"),
        ("CancelJob", "token:team", "OK"),
        ("CreateSchedule", "token:team", "OK"),
        ("TriggerSchedule", "token:admin", "OK"),
        ("BackfillSchedule", "token:team", "OK"),
    ]  # no line for the read (GetJobStatus)
    assert lines[0]["namespace"] == namespace
    assert lines[0]["job_id"] == job_id
    assert lines[0]["request_id"] == "audit-1"
    assert lines[4]["job_id"] == job_id
    assert lines[5]["schedule"] == "nightly"
    assert lines[6]["job_id"] == run_id
    assert lines[7]["schedule"] == "nightly"
    text = audit_file.read_text() + s.server.output()
    assert SECRET_VALUE not in text
    for name, token in s.tokens.items():
        assert token not in text, name


def test_without_tokens_a_client_certificate_is_the_identity(
    cluster: Cluster, namespace: str, tmp_path: Path, pki: Pki
) -> None:
    cert, key = pki.issue("audit-server")
    client_cert = pki.issue("audit-client", client=True)
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "TLS_CLIENT_CA_FILE": str(pki.ca)}
    with serving(cluster, tmp_path, K8S_NAMESPACE=namespace, **env) as server:
        with tls_channel(server.port, pki, client_cert) as channel:
            reply = pb_grpc.JobSchedulerStub(channel).ScheduleJob(timer(namespace, "mtls"), timeout=15)
        log = server.output()
    who = reply.status.audit.scheduled_by
    assert who.startswith("mtls:")
    assert "audit-client" in who
    assert annotations(cluster, namespace, reply.job_id)[SCHEDULED_BY_ANNOTATION] == who
    [line] = [json.loads(x) for x in log.splitlines() if '"logger": "jobscheduler.audit"' in x]
    assert line["who"] == who
