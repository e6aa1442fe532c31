"""Job types: what a handler must provide, and the registry that finds handlers by name.

Handlers are discovered through the `jobscheduler.job_types` entry-point group; the built-in
ones are registered in the project's own pyproject.toml exactly as a third-party package
would register its own, so adding a type never edits the server. A type without a field of
its own in the proto travels as `generic_job {type, params}`; its declared parameters are
what those params are checked against before the handler's own validate sees them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError, RegistryError

ENTRY_POINT_GROUP = "jobscheduler.job_types"
# The ScheduleJobRequest field that carries any registered type as {type, params}; the one
# request_field several (third-party) types may share.
GENERIC_FIELD = "generic_job"
GENERIC_PARAMS_FIELD = f"{GENERIC_FIELD}.params"
# What a Parameter's type may be, as ListJobTypes reports it.
PARAMETER_TYPES = (
    "string",
    "integer",
    "number",
    "boolean",
    "list<string>",
    "map<string,string>",
    "list<object>",
)


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of a job type: reported by ListJobTypes, and what generic_job params are
    checked and converted against (a Struct has only doubles: 3.0 becomes 3 for an integer)."""

    name: str
    """As in the type's proto message; `targets[].port` names a key of each element of a
    list<object> parameter."""
    type: str
    """One of PARAMETER_TYPES."""
    description: str
    required: bool = False
    default: str = ""
    """The value used when it is not given, as people write it; empty: none."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What a job type contributes to the Job: its container (name, image, command, args,
    env) and annotations worth reporting. Resources, security context and identity are
    added by the common renderer, so every type gets the same restricted pod."""

    container: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    job_spec: Mapping[str, Any] = field(default_factory=dict)
    """Job spec fields beyond the pod, only those in render.ALLOWED_JOB_SPEC_KEYS
    (parallelism, completions, completionMode, backoffLimitPerIndex, maxFailedIndexes)."""


@runtime_checkable
class JobType(Protocol):
    """A job type handler. Besides these members a handler may have `description` (a
    sentence for ListJobTypes) and `parameters` (a sequence of Parameter): both optional, so
    that a plugin written before they existed still loads, but a type without parameters
    gets its generic_job params unchecked."""

    @property
    def name(self) -> str:
        """Registry key and value of the jobscheduler.io/job-type label (DNS-1123 label)."""

    @property
    def request_field(self) -> str:
        """The ScheduleJobRequest oneof field that carries this type's parameters;
        GENERIC_FIELD for a type the proto does not know."""

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:
        """Normalised parameters, or InvalidArgumentError naming the parameter."""

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:
        """The workload for validated params; pure, no I/O."""


def description_of(job_type: JobType) -> str:
    value = getattr(job_type, "description", "")
    return value if isinstance(value, str) else ""


def parameters_of(job_type: JobType) -> tuple[Parameter, ...]:
    value = getattr(job_type, "parameters", ())
    if not isinstance(value, Sequence) or not all(isinstance(p, Parameter) for p in value):
        raise RegistryError(f"job type {job_type.name!r}: parameters must be a sequence of Parameter")
    return tuple(value)


def check_generic_params(job_type: JobType, params: Mapping[str, Any]) -> dict[str, Any]:
    """generic_job params (a Struct as a dict) checked against the type's declared parameters
    and converted to their types; unknown keys are refused, a null is the same as absent.
    A type that declares no parameters gets them as they are."""
    declared = parameters_of(job_type)
    if not declared:
        return dict(params)
    top = {p.name: p for p in declared if "[]." not in p.name}
    nested = {p.name: p for p in declared if "[]." in p.name}
    out: dict[str, Any] = {}
    for key, value in params.items():
        parameter = top.get(key)
        if parameter is None:
            raise InvalidArgumentError(
                key, f"unknown parameter of job type {job_type.name!r}; it takes: {', '.join(top)}"
            )
        if value is not None:
            out[key] = _convert(key, parameter.type, value, nested=nested, path=key)
    return out


def _convert(where: str, kind: str, value: Any, *, nested: Mapping[str, Parameter], path: str) -> Any:
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(where, f"must be a whole number (got {value!r})")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError(where, f"must be a number (got {value!r})")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidArgumentError(where, "must be true or false")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidArgumentError(where, "must be a string")
        return value
    if kind == "list<string>":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgumentError(where, "must be a list of strings")
        return list(value)
    if kind == "map<string,string>":
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise InvalidArgumentError(where, "must map names to string values")
        return dict(value)
    if kind == "list<object>":
        if not isinstance(value, list):
            raise InvalidArgumentError(where, "must be a list of objects")
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise InvalidArgumentError(f"{where}[{i}]", "must be an object")
            converted = {}
            for key, inner in item.items():
                parameter = nested.get(f"{path}[].{key}")
                if inner is None:
                    continue
                # Keys the type does not declare are left for its validate to judge.
                converted[key] = (
                    inner
                    if parameter is None
                    else _convert(f"{where}[{i}].{key}", parameter.type, inner, nested=nested, path="")
                )
            items.append(converted)
        return items
    return value


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
            for parameter in parameters_of(job_type):
                if parameter.type not in PARAMETER_TYPES:
                    raise RegistryError(
                        f"job type {job_type.name!r}: parameter {parameter.name!r} has type "
                        f"{parameter.type!r}; expected one of {', '.join(PARAMETER_TYPES)}"
                    )
            self._by_name[job_type.name] = job_type
            if job_type.request_field != GENERIC_FIELD:
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

    def types(self) -> list[JobType]:
        """Every registered type, by name."""
        return [self._by_name[name] for name in self.names()]

    def get(self, name: str, *, field: str = "job_type") -> JobType:
        """The type called `name`; InvalidArgumentError naming `field` (and listing the
        registered types) when there is none."""
        if not name:
            raise InvalidArgumentError(field, f"is required; registered: {', '.join(self.names()) or 'none'}")
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidArgumentError(
                field, f"unknown job type {name!r}; registered: {', '.join(self.names()) or 'none'}"
            ) from None

    def for_request_field(self, request_field: str) -> JobType:
        try:
            return self._by_field[request_field]
        except KeyError:
            raise InvalidArgumentError("job_type", f"no job type handles {request_field!r}") from None
