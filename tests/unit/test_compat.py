"""The start-up check's verdicts on what an API server serves (jobscheduler.kube.compat)."""

from __future__ import annotations

import pytest

from jobscheduler.kube.compat import (
    REQUIRED_FIELDS,
    REQUIRED_RESOURCES,
    Field,
    missing_fields,
    missing_resources,
    parse_minor,
)
from jobscheduler.kube.gateway import RESOURCES


def everything() -> dict[str, set[str] | None]:
    return {path: set(resources) for path, resources in REQUIRED_RESOURCES.items()}


def openapi(*, without: tuple[str, str] | None = None) -> dict[str, object]:
    """A batch/v1 OpenAPI v3 document with every required field, less `without` (schema, name)."""
    schemas: dict[str, dict[str, dict[str, object]]] = {}
    for f in REQUIRED_FIELDS:
        if (f.schema, f.name) != without:
            schemas.setdefault(f.schema, {"properties": {}})["properties"][f.name] = {"type": "string"}
    return {"components": {"schemas": schemas}}


def test_every_resource_the_gateway_calls_and_the_pod_log_are_required() -> None:
    required = {(path, r) for path, resources in REQUIRED_RESOURCES.items() for r in resources}
    assert {(prefix, r) for r, prefix in RESOURCES.items()} <= required
    assert ("/api/v1", "pods/log") in required


def test_a_server_with_everything_lacks_nothing() -> None:
    assert missing_resources(everything()) == []
    assert missing_fields(openapi(), {"jobs", "cronjobs"}) == []


def test_a_missing_resource_is_named_with_its_group_version() -> None:
    discovered = everything()
    discovered["/apis/batch/v1"] = {"jobs"}
    assert missing_resources(discovered) == ["batch/v1 cronjobs"]


def test_a_group_version_the_server_does_not_serve_names_all_its_resources() -> None:
    discovered = everything()
    discovered["/apis/coordination.k8s.io/v1"] = None
    assert missing_resources(discovered) == ["coordination.k8s.io/v1 (the whole API group version: leases)"]


@pytest.mark.parametrize("field", REQUIRED_FIELDS, ids=lambda f: f.name)
def test_a_missing_job_field_is_named_with_the_release_that_added_it(field: Field) -> None:
    [message] = missing_fields(openapi(without=(field.schema, field.name)), {"jobs", "cronjobs"})
    kind = field.schema.rsplit(".", 1)[-1]
    assert message.startswith(f"batch/v1 {kind}.{field.name} (Kubernetes {field.since}+")


def test_fields_of_a_resource_the_server_lacks_are_not_reported_twice() -> None:
    assert missing_fields({"components": {"schemas": {}}}, {"jobs"}) == [
        f.describe() for f in REQUIRED_FIELDS if f.resource == "jobs"
    ]


@pytest.mark.parametrize(
    ("git_version", "minor"),
    [("v1.35.4", (1, 35)), ("v1.37.2-gke.1200", (1, 37)), ("1.34.0", (1, 34)), ("weird", None), ("v1", None)],
)
def test_parse_minor(git_version: str, minor: tuple[int, int] | None) -> None:
    assert parse_minor(git_version) == minor
