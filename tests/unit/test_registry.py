"""The job type registry: discovery through the jobscheduler.job_types entry points, lookup by
name and by request field, and refusal of broken or clashing plugins."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from jobscheduler.domain import registry as registry_module
from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError, RegistryError
from jobscheduler.domain.registry import ENTRY_POINT_GROUP, JobType, Registry, Workload
from jobscheduler.jobtypes.timer import TimerJobType


class _FakeJobType:
    def __init__(self, name: str, request_field: str) -> None:
        self.name = name
        self.request_field = request_field

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        return params

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        return Workload(container={"name": self.name, "image": "busybox"})


def test_installed_entry_points_provide_the_timer_type() -> None:
    registry = Registry.from_entry_points()
    assert "timer" in registry.names()
    assert isinstance(registry.get("timer"), TimerJobType)


def test_timer_type_is_found_by_its_request_field() -> None:
    registry = Registry.from_entry_points()
    assert registry.for_request_field("timer_job") is registry.get("timer")


def test_names_are_sorted() -> None:
    registry = Registry([_FakeJobType("zeta", "zeta_job"), _FakeJobType("alpha", "alpha_job")])
    assert registry.names() == ["alpha", "zeta"]


@pytest.mark.parametrize(
    ("types", "registered"),
    [
        pytest.param([TimerJobType()], "registered: timer", id="one-type"),
        pytest.param(
            [TimerJobType(), _FakeJobType("batch", "batch_job")],
            "registered: batch, timer",
            id="two-types-sorted",
        ),
        pytest.param([], "registered: none", id="empty-registry"),
    ],
)
def test_unknown_name_is_invalid_job_type_listing_registered(types: list[JobType], registered: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Registry(types).get("nope")
    assert caught.value.field == "job_type"
    assert "'nope'" in caught.value.detail
    assert registered in caught.value.detail


def test_unknown_request_field_is_invalid_job_type() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Registry([TimerJobType()]).for_request_field("cron_job")
    assert caught.value.field == "job_type"
    assert "'cron_job'" in caught.value.detail


def test_two_types_with_one_name_are_refused() -> None:
    with pytest.raises(RegistryError, match="'timer' is registered twice"):
        Registry([TimerJobType(), _FakeJobType("timer", "other_job")])


# --- from_entry_points, with the group's contents replaced ------------------------------------


def _use_entry_points(monkeypatch: pytest.MonkeyPatch, *specs: tuple[str, str]) -> None:
    found = [EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP) for name, value in specs]

    def entry_points(*, group: str) -> list[EntryPoint]:
        return found if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry_module, "entry_points", entry_points)


def test_entry_point_naming_a_class_is_instantiated(monkeypatch: pytest.MonkeyPatch) -> None:
    _use_entry_points(monkeypatch, ("timer", "jobscheduler.jobtypes.timer:TimerJobType"))
    assert isinstance(Registry.from_entry_points().get("timer"), TimerJobType)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        pytest.param(
            [("gone", "jobscheduler.no_such_module:Thing")], "'gone' .* failed to load", id="module-missing"
        ),
        pytest.param(
            [("gone", "jobscheduler.jobtypes.timer:NoSuchClass")],
            "'gone' .* failed to load",
            id="attribute-missing",
        ),
        pytest.param([("plain", "builtins:object")], "'plain' .* is not a JobType", id="not-a-job-type"),
        pytest.param(
            [
                ("timer", "jobscheduler.jobtypes.timer:TimerJobType"),
                ("timer2", "jobscheduler.jobtypes.timer:TimerJobType"),
            ],
            "'timer' is registered twice",
            id="two-plugins-one-name",
        ),
    ],
)
def test_broken_plugin_is_a_registry_error(
    monkeypatch: pytest.MonkeyPatch, specs: list[tuple[str, str]], message: str
) -> None:
    _use_entry_points(monkeypatch, *specs)
    with pytest.raises(RegistryError, match=message):
        Registry.from_entry_points()


def test_two_types_claiming_one_request_field_is_refused() -> None:
    class Impostor(TimerJobType):
        name = "impostor"

    with pytest.raises(RegistryError, match="timer_job"):
        Registry([TimerJobType(), Impostor()])
