"""Job types: what a handler must provide, and the registry that finds handlers by name.

Handlers are discovered through the `jobscheduler.job_types` entry-point group; the built-in
ones are registered in the project's own pyproject.toml exactly as a third-party package
would register its own, so adding a type never edits the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from jobscheduler.config import Settings
from jobscheduler.errors import InvalidArgumentError, JobSchedulerError

ENTRY_POINT_GROUP = "jobscheduler.job_types"


@dataclass(frozen=True, slots=True)
class Workload:
    """What a job type contributes to the Job: its container (name, image, command, args,
    env) and annotations worth reporting. Resources, security context and identity are
    added by the common renderer, so every type gets the same restricted pod."""

    container: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class JobType(Protocol):
    @property
    def name(self) -> str:
        """Registry key and value of the jobscheduler.io/job-type label (DNS-1123 label)."""

    @property
    def request_field(self) -> str:
        """The ScheduleJobRequest oneof field that carries this type's parameters."""

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:
        """Normalised parameters, or InvalidArgumentError naming the parameter."""

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:
        """The workload for validated params; pure, no I/O."""


class RegistryError(JobSchedulerError):
    """A job type plugin is broken (fails to load, or two claim one name)."""


class Registry:
    def __init__(self, types: Iterable[JobType]) -> None:
        self._by_name: dict[str, JobType] = {}
        self._by_field: dict[str, JobType] = {}
        for job_type in types:
            if job_type.name in self._by_name:
                raise RegistryError(f"job type {job_type.name!r} is registered twice")
            if job_type.request_field in self._by_field:
                raise RegistryError(
                    f"job types {self._by_field[job_type.request_field].name!r} and {job_type.name!r} "
                    f"both claim request field {job_type.request_field!r}"
                )
            self._by_name[job_type.name] = job_type
            self._by_field[job_type.request_field] = job_type

    @classmethod
    def from_entry_points(cls) -> Registry:
        types = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
            except Exception as e:
                raise RegistryError(f"job type plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
            instance = obj() if isinstance(obj, type) else obj
            if not isinstance(instance, JobType):
                raise RegistryError(f"job type plugin {ep.name!r} ({ep.value}) is not a JobType")
            types.append(instance)
        return cls(types)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> JobType:
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidArgumentError(
                "job_type", f"unknown job type {name!r}; registered: {', '.join(self.names()) or 'none'}"
            ) from None

    def for_request_field(self, request_field: str) -> JobType:
        try:
            return self._by_field[request_field]
        except KeyError:
            raise InvalidArgumentError("job_type", f"no job type handles {request_field!r}") from None
