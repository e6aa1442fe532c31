"""The container job type: runs the caller's image, with its command, args, env and working
directory, in the same restricted pod as every other type.

Its parameters are also the per-index container of the batch type (jobtypes.batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import Parameter, Workload
from jobscheduler.jobtypes import params as p

CONTAINER_NAME = "main"
PARAMETERS = (
    Parameter("image", "string", "container image to run, e.g. ghcr.io/acme/tool:1.2", required=True),
    Parameter("command", "list<string>", "the container's entrypoint", default="the image's ENTRYPOINT"),
    Parameter("args", "list<string>", "arguments to the entrypoint", default="the image's CMD"),
    Parameter(
        "env",
        "map<string,string>",
        "environment variables (at most 64 KiB); values are stored in the Job, so put secrets in "
        "the request's secret_env",
    ),
    Parameter("working_dir", "string", "absolute working directory", default="the image's WORKDIR"),
)


def validate_container(
    params: Mapping[str, Any], *, reserved_env: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The container parameters of params, normalised (absent ones empty)."""
    command = p.string_list(params, "command")
    args = p.string_list(params, "args")
    if sum(len(v.encode()) for v in command + args) > p.MAX_ARGV_BYTES:
        raise InvalidArgumentError("args", f"command and args total more than {p.MAX_ARGV_BYTES} bytes")
    return {
        "image": p.image(params),
        "command": command,
        "args": args,
        "env": p.env(params, reserved=reserved_env),
        "working_dir": p.absolute_path(params, "working_dir"),
    }


def render_container(params: Mapping[str, Any]) -> dict[str, Any]:
    """The container for validated container parameters; absent ones keep the image's own."""
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": params["image"]}
    if params["command"]:
        container["command"] = list(params["command"])
    if params["args"]:
        container["args"] = list(params["args"])
    if params["env"]:
        container["env"] = [{"name": k, "value": v} for k, v in params["env"].items()]
    if params["working_dir"]:
        container["workingDir"] = params["working_dir"]
    return container


class ContainerJobType:
    name = "container"
    request_field = "container_job"
    description = "Runs a container image once: command, args, env and working directory as given."
    parameters = PARAMETERS

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        return validate_container(params)

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        # The image only: command, args and env may carry secrets.
        return Workload(
            container=render_container(params), annotations=p.reported({"image": params["image"]})
        )
