"""Kubernetes API failures as domain errors (jobscheduler.kube.translate), from error bodies
shaped as the API server sends them: pure code, no cluster."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from jobscheduler.domain import errors
from jobscheduler.domain.errors import FieldViolation
from jobscheduler.kube.translate import translate


def api_error(status: int, body: object | str) -> ApiException:
    e = ApiException(status=status, reason="x")
    e.body = body if isinstance(body, str) else json.dumps(body)
    return e


INVALID_JOB = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'Job.batch "job-x" is invalid: [spec.template.spec.containers[0].image: Required value, '
    'metadata.labels: Invalid value: "-bad": a valid label must ...]',
    "reason": "Invalid",
    "details": {
        "name": "job-x",
        "group": "batch",
        "kind": "Job",
        "causes": [
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": "spec.template.spec.containers[0].image",
            },
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "-bad": a valid label must ...',
                "field": "metadata.labels",
            },
        ],
    },
    "code": 422,
}


def test_a_422_names_each_cause_field_in_the_message_and_as_a_violation() -> None:
    error = translate(api_error(422, INVALID_JOB), "create")

    assert isinstance(error, errors.InvalidArgumentError)
    assert "spec.template.spec.containers[0].image: Required value" in str(error)
    assert "metadata.labels: Invalid value" in str(error)
    assert error.violations == (
        FieldViolation("spec.template.spec.containers[0].image", "Required value"),
        FieldViolation("metadata.labels", 'Invalid value: "-bad": a valid label must ...'),
    )


def test_a_422_without_causes_keeps_the_status_message() -> None:
    body = {**INVALID_JOB, "details": {}}
    error = translate(api_error(422, body), "create")

    assert isinstance(error, errors.InvalidArgumentError)
    assert str(error) == f"Kubernetes rejected the request: {INVALID_JOB['message']}"


def test_a_409_conflict_on_a_write_is_a_conflict_and_already_exists_is_not() -> None:
    conflict = {
        "kind": "Status",
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on jobs.batch "job-x": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "code": 409,
    }
    exists = {**conflict, "reason": "AlreadyExists", "message": 'jobs.batch "job-x" already exists'}

    assert isinstance(translate(api_error(409, conflict), "patch"), errors.ConflictError)
    assert isinstance(translate(api_error(409, exists), "create"), errors.AlreadyExistsError)


@pytest.mark.parametrize(
    ("status", "verb", "expected"),
    [
        (409, "create", errors.AlreadyExistsError),
        (409, "update", errors.ConflictError),
        (422, "create", errors.InvalidArgumentError),
        (400, "list_jobs", errors.InvalidArgumentError),
        (403, "create", errors.PermissionDeniedError),
        (404, "get", errors.NotFoundError),
        (401, "get", errors.UnavailableError),
        (418, "get", errors.UnavailableError),
    ],
)
@pytest.mark.parametrize(
    "body", ["<html><body>502 Bad Gateway</body></html>", "", "[1, 2]", '{"message": 5, "details": []}']
)
def test_a_body_that_is_not_a_status_is_mapped_by_the_http_status_alone(
    status: int, verb: str, expected: type[errors.JobSchedulerError], body: str
) -> None:
    error = translate(api_error(status, body), verb)

    assert type(error) is expected
    assert "<html>" not in str(error)
