"""Retry rules: a request's RetryPolicy checked as the API server checks a podFailurePolicy,
rendered into the Job's spec (shortcuts first, in their documented order), carried through the
proto and a schedule's JSON, and a Job failed by a FailJob rule reported with its exit code."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pytest

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.models import JobState
from jobscheduler.domain.registry import JobType
from jobscheduler.domain.render import JobRequest, check_request, render_job, request_hash
from jobscheduler.domain.retry import RetryPolicy, RetryRule, check_retry
from jobscheduler.domain.status import derive_status
from jobscheduler.jobtypes.batch import BatchJobType
from jobscheduler.jobtypes.container import ContainerJobType
from jobscheduler.transport.convert import retry_from_proto, retry_to_proto

Obj = dict[str, Any]
SETTINGS = Settings()
CONTAINER = ContainerJobType()
BATCH = BatchJobType()
CONTAINER_PARAMS: Mapping[str, Any] = {"image": "ghcr.io/acme/tool:1"}
BATCH_PARAMS: Mapping[str, Any] = {"image": "ghcr.io/acme/shard:1", "completions": 3}

IGNORE_DISRUPTIONS = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
COUNT_OOM = {"action": "Count", "onExitCodes": {"operator": "In", "values": [137]}}


def fail_job(operator: str, values: list[int]) -> Obj:
    return {"action": "FailJob", "onExitCodes": {"operator": operator, "values": values}}


def render(
    retry: RetryPolicy | None,
    *,
    job_type: JobType = CONTAINER,
    params: Mapping[str, Any] = CONTAINER_PARAMS,
    settings: Settings = SETTINGS,
) -> Obj:
    """The manifest for a request with this retry policy, through the service's checks."""
    validated = job_type.validate(params, settings)
    request = check_request(JobRequest(job_type=job_type.name, params=params, retry=retry), settings)
    return render_job(
        request, job_type=job_type, params=validated, job_id="job-7f3k2m9x1q", settings=settings
    )


def rules_of(manifest: Obj) -> list[Obj] | None:
    policy = manifest["spec"].get("podFailurePolicy")
    return None if policy is None else list(policy["rules"])


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        pytest.param(None, None, id="no-policy-no-podFailurePolicy"),
        pytest.param(RetryPolicy(), None, id="empty-policy-no-podFailurePolicy"),
        pytest.param(
            RetryPolicy(fail_on_exit_codes=(42, 3, 42)), [fail_job("In", [3, 42])], id="fail-on-sorted-unique"
        ),
        pytest.param(RetryPolicy(retry_on_exit_codes=(1,)), [fail_job("NotIn", [1])], id="retry-on-is-notin"),
        pytest.param(RetryPolicy(ignore_disruptions=True), [IGNORE_DISRUPTIONS], id="ignore-disruptions"),
        pytest.param(RetryPolicy(count_oom=True), [COUNT_OOM], id="count-oom-is-exit-137"),
        pytest.param(
            RetryPolicy(
                fail_on_exit_codes=(3,),
                retry_on_exit_codes=(1, 2),
                ignore_disruptions=True,
                count_oom=True,
                rules=(RetryRule(action="Ignore", exit_codes=(75,)),),
            ),
            [
                IGNORE_DISRUPTIONS,
                COUNT_OOM,
                fail_job("In", [3]),
                fail_job("NotIn", [1, 2]),
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [75]}},
            ],
            id="shortcuts-in-documented-order-then-rules",
        ),
        pytest.param(
            RetryPolicy(
                rules=(
                    RetryRule(action="Count", exit_codes=(0, 1), operator="NotIn", container_name="main"),
                    RetryRule(action="FailJob", pod_conditions=("ConfigIssue", "example.com/Custom")),
                )
            ),
            [
                {
                    "action": "Count",
                    "onExitCodes": {"operator": "NotIn", "values": [0, 1], "containerName": "main"},
                },
                {
                    "action": "FailJob",
                    "onPodConditions": [
                        {"type": "ConfigIssue", "status": "True"},
                        {"type": "example.com/Custom", "status": "True"},
                    ],
                },
            ],
            id="rules-with-container-name-and-conditions",
        ),
    ],
)
def test_policy_renders_as_pod_failure_policy(retry: RetryPolicy | None, expected: list[Obj] | None) -> None:
    manifest = render(retry)
    assert rules_of(manifest) == expected
    # Required by the API server with a podFailurePolicy; the renderer always sets it.
    assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_fail_index_renders_on_a_job_with_a_per_index_limit() -> None:
    rule = RetryRule(action="FailIndex", exit_codes=(3,))
    manifest = render(
        RetryPolicy(rules=(rule,)), job_type=BATCH, params={**BATCH_PARAMS, "backoff_limit_per_index": 1}
    )
    assert rules_of(manifest) == [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]


def test_policy_renders_on_every_job_type() -> None:
    manifest = render(RetryPolicy(fail_on_exit_codes=(3,)), job_type=BATCH, params=BATCH_PARAMS)
    assert rules_of(manifest) == [fail_job("In", [3])]


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "field", "fragment"),
    [
        pytest.param(
            RetryPolicy(fail_on_exit_codes=(0,)), "retry.fail_on_exit_codes", "0 is success", id="zero-in"
        ),
        pytest.param(
            RetryPolicy(retry_on_exit_codes=(0,)), "retry.retry_on_exit_codes", "0 is success", id="zero-r"
        ),
        pytest.param(
            RetryPolicy(fail_on_exit_codes=(256,)), "retry.fail_on_exit_codes", "256", id="over-255"
        ),
        pytest.param(RetryPolicy(fail_on_exit_codes=(-1,)), "retry.fail_on_exit_codes", "-1", id="negative"),
        pytest.param(
            RetryPolicy(fail_on_exit_codes=(3, 4), retry_on_exit_codes=(4,)),
            "retry.retry_on_exit_codes",
            "4 are also in fail_on_exit_codes",
            id="code-both-failed-and-retried",
        ),
        pytest.param(
            RetryPolicy(fail_on_exit_codes=(137,), count_oom=True),
            "retry.fail_on_exit_codes",
            "count_oom",
            id="oom-both-failed-and-counted",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="", exit_codes=(1,)),)),
            "retry.rules[0].action",
            "required",
            id="action-missing",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Restart", exit_codes=(1,)),)),
            "retry.rules[0].action",
            "not one of",
            id="action-unknown",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Count", exit_codes=(1,), operator="Gt"),)),
            "retry.rules[0].operator",
            "not one of",
            id="operator-unknown",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Count"),)), "retry.rules[0]", "exactly one", id="neither"
        ),
        pytest.param(
            RetryPolicy(
                rules=(RetryRule(action="Count", exit_codes=(1,), pod_conditions=("DisruptionTarget",)),)
            ),
            "retry.rules[0]",
            "exactly one",
            id="both-exit-codes-and-conditions",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Count", exit_codes=(0, 2)),)),
            "retry.rules[0].exit_codes",
            "NOT_IN",
            id="zero-with-in",
        ),
        pytest.param(
            RetryPolicy(
                rules=(RetryRule(action="Count", exit_codes=tuple(range(1, 257)), operator="NotIn"),)
            ),
            "retry.rules[0].exit_codes",
            "at most 255",
            id="too-many-values",
        ),
        pytest.param(
            RetryPolicy(
                rules=(RetryRule(action="Ignore", pod_conditions=tuple(f"C{i}" for i in range(21))),)
            ),
            "retry.rules[0].pod_conditions",
            "at most 20",
            id="too-many-conditions",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Ignore", pod_conditions=("not a condition",)),)),
            "retry.rules[0].pod_conditions[0]",
            "name part",
            id="condition-not-a-qualified-name",
        ),
        pytest.param(
            RetryPolicy(
                rules=(
                    RetryRule(action="Ignore", pod_conditions=("DisruptionTarget",), container_name="main"),
                )
            ),
            "retry.rules[0].container_name",
            "exit_codes only",
            id="container-name-with-conditions",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Count", exit_codes=(1,), container_name="Main_1"),)),
            "retry.rules[0].container_name",
            "DNS-1123",
            id="container-name-malformed",
        ),
        pytest.param(
            RetryPolicy(
                ignore_disruptions=True,
                rules=tuple(RetryRule(action="Count", exit_codes=(i,)) for i in range(1, 21)),
            ),
            "retry",
            "21 podFailurePolicy rules",
            id="more-than-20-rules-shortcuts-included",
        ),
    ],
)
def test_bad_policy_is_refused_naming_the_field(retry: RetryPolicy, field: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        render(retry)
    assert caught.value.field == field
    assert fragment in caught.value.detail


def test_twenty_rules_are_allowed() -> None:
    rules = tuple(RetryRule(action="Count", exit_codes=(i,)) for i in range(1, 20))
    assert len(rules_of(render(RetryPolicy(count_oom=True, rules=rules))) or []) == 20


@pytest.mark.parametrize(
    ("retry", "job_type", "params", "field", "fragment"),
    [
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="Count", exit_codes=(1,), container_name="sidecar"),)),
            CONTAINER,
            CONTAINER_PARAMS,
            "retry.rules[0].container_name",
            "its containers: main",
            id="container-name-not-in-the-pod",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="FailIndex", exit_codes=(1,)),)),
            BATCH,
            BATCH_PARAMS,
            "retry.rules[0].action",
            "backoff_limit_per_index",
            id="fail-index-without-per-index-limit",
        ),
        pytest.param(
            RetryPolicy(rules=(RetryRule(action="FailIndex", exit_codes=(1,)),)),
            CONTAINER,
            CONTAINER_PARAMS,
            "retry.rules[0].action",
            "indexed job",
            id="fail-index-on-a-plain-job",
        ),
    ],
)
def test_policy_that_does_not_fit_the_job_is_refused(
    retry: RetryPolicy, job_type: JobType, params: Mapping[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        render(retry, job_type=job_type, params=params)
    assert caught.value.field == field
    assert fragment in caught.value.detail


# -- fingerprint, proto and JSON round trips ---------------------------------------------------


def test_retry_policy_and_pending_timeout_are_part_of_the_request_fingerprint() -> None:
    base = JobRequest(job_type="container", params=CONTAINER_PARAMS, request_id="r1")
    hashes = {
        request_hash(request, CONTAINER_PARAMS)
        for request in (
            base,
            dataclasses.replace(base, retry=RetryPolicy(fail_on_exit_codes=(3,))),
            dataclasses.replace(base, retry=RetryPolicy(fail_on_exit_codes=(4,))),
            dataclasses.replace(base, pending_timeout_seconds=60),
        )
    }
    assert len(hashes) == 4


FULL_POLICY = RetryPolicy(
    fail_on_exit_codes=(3, 42),
    retry_on_exit_codes=(1,),
    ignore_disruptions=True,
    count_oom=True,
    rules=(
        RetryRule(action="FailIndex", exit_codes=(0, 7), operator="NotIn", container_name="main"),
        RetryRule(action="Ignore", pod_conditions=("DisruptionTarget",)),
    ),
)


def test_policy_survives_the_proto_round_trip() -> None:
    assert retry_from_proto(retry_to_proto(FULL_POLICY)) == FULL_POLICY


def test_policy_survives_a_schedules_json_round_trip() -> None:
    raw = json.loads(json.dumps(dataclasses.asdict(FULL_POLICY)))
    assert RetryPolicy.from_dict(raw) == FULL_POLICY


# proto3 enums are open: a client built from a newer .proto may send a number this one lacks.
UNDEFINED: Any = 99


@pytest.mark.parametrize(
    ("message", "field"),
    [
        pytest.param(
            pb.RetryPolicy(rules=[pb.RetryRule(action=UNDEFINED, exit_codes=[1])]),
            "retry.rules[0].action",
            id="action",
        ),
        pytest.param(
            pb.RetryPolicy(
                rules=[pb.RetryRule(action=pb.RETRY_ACTION_COUNT, operator=UNDEFINED, exit_codes=[1])]
            ),
            "retry.rules[0].operator",
            id="operator",
        ),
    ],
)
def test_undefined_enum_values_are_refused_naming_the_field(message: pb.RetryPolicy, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        retry_from_proto(message)
    assert caught.value.field == field


def test_unspecified_action_is_refused_by_the_check() -> None:
    policy = retry_from_proto(pb.RetryPolicy(rules=[pb.RetryRule(exit_codes=[1])]))
    with pytest.raises(InvalidArgumentError) as caught:
        check_retry(policy)
    assert caught.value.field == "retry.rules[0].action"


# -- status of a Job failed by a FailJob rule --------------------------------------------------


def failed_pod(name: str, code: int, *, finished: str, reason: str = "Error") -> Obj:
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-11-27T13:01:00Z"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": finished}},
                }
            ],
        },
    }


def policy_failed_job(message: str) -> Obj:
    condition = {
        "type": "Failed",
        "status": "True",
        "reason": "PodFailurePolicy",
        "message": message,
        "lastTransitionTime": "2026-11-27T13:05:00Z",
    }
    return {
        "metadata": {"name": "job-7f3k2m9x1q", "namespace": "team-a", "labels": {}},
        "status": {"failed": 2, "conditions": [condition]},
    }


# As the Job controller words it (checked against a real cluster by tests/integration/test_job_control.py).
EXIT_3_MESSAGE = (
    "Container main for pod team-a/job-7f3k2m9x1q-aaaaa failed with exit code 3 "
    "matching FailJob rule at index 0"
)


@pytest.mark.parametrize(
    ("message", "pods", "expected"),
    [
        pytest.param(
            EXIT_3_MESSAGE,
            [failed_pod("job-7f3k2m9x1q-aaaaa", 3, finished="2026-11-27T13:04:00Z")],
            {
                "state": JobState.FAILED,
                "reason": "PodFailurePolicy",
                "exit_code": 3,
                "message": f"failed at once by a retry rule: {EXIT_3_MESSAGE}; "
                "last attempt: container main exited with code 3 (Error)",
            },
            id="one-pod",
        ),
        pytest.param(
            EXIT_3_MESSAGE,
            [
                failed_pod("job-7f3k2m9x1q-aaaaa", 3, finished="2026-11-27T13:04:00Z"),
                # A parallel sibling that ended later, killed as the Job failed: not the reason.
                failed_pod("job-7f3k2m9x1q-bbbbb", 143, finished="2026-11-27T13:04:30Z"),
            ],
            {"reason": "PodFailurePolicy", "exit_code": 3},
            id="the-pod-named-by-the-condition-not-the-last-to-finish",
        ),
        pytest.param(
            "Pod team-a/job-7f3k2m9x1q-ccccc has condition ConfigIssue matching FailJob rule at index 1",
            [],
            {"reason": "PodFailurePolicy", "exit_code": None},
            id="condition-rule-without-pods",
        ),
    ],
)
def test_job_failed_by_a_retry_rule_reports_the_matching_exit_code(
    message: str, pods: list[Obj], expected: dict[str, Any]
) -> None:
    status = derive_status(policy_failed_job(message), pods)
    assert {key: getattr(status, key) for key in expected} == expected
