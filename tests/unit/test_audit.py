"""The audit trail's pure parts: identities, what a new Job records about who made it and in
which trace, the audit JobStatus reports, which RPCs are audited, and the audit log's lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.audit import (
    SCHEDULED_BY_ANNOTATION,
    TRACEPARENT_ANNOTATION,
    TRIGGERED_BY_ANNOTATION,
    Identity,
    IdentityKind,
    JobAudit,
    Origin,
    is_traceparent,
    stamp_origin,
)
from jobscheduler.domain.status import derive_status
from jobscheduler.obs.audit import AuditLog
from jobscheduler.obs.logs import configure_logging
from jobscheduler.timestamps import parse_rfc3339
from jobscheduler.transport.audit import MUTATING_METHODS
from jobscheduler.transport.convert import to_proto_status

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ALICE = Identity(IdentityKind.TOKEN, "alice")


def manifest(*containers: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-1",
            "namespace": "ns",
            "annotations": {"jobscheduler.io/request-hash": "x"},
        },
        "spec": {"template": {"spec": {"containers": list(containers) or [{"name": "main", "image": "i"}]}}},
    }


def env_of(job: dict[str, Any]) -> list[list[dict[str, str]]]:
    return [c.get("env", []) for c in job["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize(
    ("identity", "text"),
    [
        pytest.param(ALICE, "token:alice", id="token"),
        pytest.param(Identity(IdentityKind.MTLS, "CN=ci,O=acme"), "mtls:CN=ci,O=acme", id="mtls"),
        pytest.param(Identity(IdentityKind.PEER, "127.0.0.1"), "peer:127.0.0.1", id="peer"),
        pytest.param(Identity(IdentityKind.MTLS, "CN=a\nb"), "mtls:CN=a?b", id="unprintable-replaced"),
        pytest.param(Identity(IdentityKind.MTLS, "x" * 1000), "mtls:" + "x" * 256, id="bounded"),
    ],
)
def test_identity_reads_as_kind_and_name(identity: Identity, text: str) -> None:
    assert str(identity) == text


def test_stamp_origin_records_who_and_gives_every_container_the_traceparent() -> None:
    job = manifest(
        {"name": "a", "image": "i"}, {"name": "b", "image": "i", "env": [{"name": "X", "value": "1"}]}
    )
    stamp_origin(job, Origin(ALICE, traceparent=TRACEPARENT))
    assert job["metadata"]["annotations"][SCHEDULED_BY_ANNOTATION] == "token:alice"
    assert job["metadata"]["annotations"][TRACEPARENT_ANNOTATION] == TRACEPARENT
    assert env_of(job) == [
        [{"name": "TRACEPARENT", "value": TRACEPARENT}],
        [{"name": "X", "value": "1"}, {"name": "TRACEPARENT", "value": TRACEPARENT}],
    ]


def test_stamp_origin_keeps_a_traceparent_env_the_caller_set() -> None:
    own = {"name": "TRACEPARENT", "value": "00-11111111111111111111111111111111-2222222222222222-01"}
    job = manifest({"name": "a", "image": "i", "env": [own]})
    stamp_origin(job, Origin(ALICE, traceparent=TRACEPARENT))
    assert env_of(job) == [[own]]
    assert job["metadata"]["annotations"][TRACEPARENT_ANNOTATION] == TRACEPARENT  # the service's trace


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # invalid trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # invalid span id
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
    ],
)
def test_stamp_origin_without_a_valid_trace_context_records_only_who(traceparent: str) -> None:
    job = manifest()
    stamp_origin(job, Origin(ALICE, traceparent=traceparent))
    assert TRACEPARENT_ANNOTATION not in job["metadata"]["annotations"]
    assert env_of(job) == [[]]
    assert not is_traceparent(traceparent)


def test_a_triggered_run_records_triggered_by_not_scheduled_by() -> None:
    job = manifest()
    stamp_origin(job, Origin(ALICE), triggered=True)
    annotations = job["metadata"]["annotations"]
    assert annotations[TRIGGERED_BY_ANNOTATION] == "token:alice"
    assert SCHEDULED_BY_ANNOTATION not in annotations


def test_status_reports_the_audit_and_traceparent_from_the_annotations() -> None:
    job = manifest()
    job["metadata"]["annotations"].update(
        {
            SCHEDULED_BY_ANNOTATION: "token:alice",
            "jobscheduler.io/cancelled-by": "token:bob",
            "jobscheduler.io/cancelled-at": "2026-01-02T03:04:05Z",
            "jobscheduler.io/resumed-by": "peer:10.0.0.7",
            "jobscheduler.io/resumed-at": "2026-01-02T03:00:00Z",
            TRACEPARENT_ANNOTATION: TRACEPARENT,
        }
    )
    status = derive_status(job, [])
    assert status.audit == JobAudit(
        scheduled_by="token:alice",
        cancelled_by="token:bob",
        cancelled_at=parse_rfc3339("2026-01-02T03:04:05Z"),
        resumed_by="peer:10.0.0.7",
        resumed_at=parse_rfc3339("2026-01-02T03:00:00Z"),
    )
    assert status.traceparent == TRACEPARENT
    message = to_proto_status(status)
    assert message.audit.scheduled_by == "token:alice"
    assert message.audit.cancelled_by == "token:bob"
    assert message.audit.cancelled_at.seconds == int(status.audit.cancelled_at.timestamp())  # type: ignore[union-attr]
    assert message.traceparent == TRACEPARENT


def test_a_job_nobody_acted_on_has_no_audit_in_its_message() -> None:
    status = derive_status(manifest(), [])
    assert status.audit == JobAudit()
    assert status.traceparent == ""
    assert not to_proto_status(status).HasField("audit")


def test_every_rpc_that_is_not_a_read_is_audited() -> None:
    """A new RPC is audited unless it only reads (Get*, List*, Watch*): add it to MUTATING_METHODS."""
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["JobScheduler"].methods}
    reads = {m for m in methods if m.startswith(("Get", "List", "Watch"))}
    assert methods - reads == MUTATING_METHODS
    assert methods >= MUTATING_METHODS


def test_audit_log_writes_json_lines_whatever_the_log_level(tmp_path: Path) -> None:
    configure_logging("error", "json")
    path = tmp_path / "audit.jsonl"
    AuditLog(str(path)).record(
        who="token:alice", method="CancelJob", outcome="OK", namespace="ns", job_id="j"
    )
    [line] = path.read_text().splitlines()
    record = json.loads(line)
    assert record["event"] == "audit"
    assert record["logger"] == "jobscheduler.audit"
    assert {k: record[k] for k in ("who", "method", "outcome", "namespace", "job_id")} == {
        "who": "token:alice",
        "method": "CancelJob",
        "outcome": "OK",
        "namespace": "ns",
        "job_id": "j",
    }


def test_audit_log_redacts_what_looks_like_a_credential(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(str(path)).record(who="token:alice", method="ScheduleJob", token="s3cr3t", note="Bearer abc.def")
    text = path.read_text()
    assert "s3cr3t" not in text
    assert "abc.def" not in text


def test_audit_log_off_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    AuditLog("off").record(who="token:alice", method="ScheduleJob", outcome="OK")
    assert capsys.readouterr() == ("", "")
