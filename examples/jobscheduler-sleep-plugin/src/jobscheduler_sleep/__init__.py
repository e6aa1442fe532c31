"""An example third-party jobscheduler job type: a pod that sleeps a number of seconds.

It has no field of its own in the service's proto, so callers send it as
`generic_job {type: "sleep", params: {...}}`; the service checks the params against
`parameters` (the same list ListJobTypes reports) before `validate` sees them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobscheduler.domain.config import Settings
from jobscheduler.domain.errors import InvalidArgumentError
from jobscheduler.domain.registry import GENERIC_FIELD, Parameter, Workload

MAX_SECONDS = 3600
DEFAULT_IMAGE = "busybox:1.36"


class SleepJobType:
    name = "sleep"
    request_field = GENERIC_FIELD
    description = (
        "Sleeps for `seconds`, then succeeds: an example plugin (examples/jobscheduler-sleep-plugin)."
    )
    parameters = (
        Parameter("seconds", "integer", f"how long to sleep, 1 … {MAX_SECONDS}", required=True),
        Parameter("image", "string", "an image with a `sleep` command", default=DEFAULT_IMAGE),
    )

    def validate(self, params: Mapping[str, Any], settings: Settings) -> Mapping[str, Any]:  # noqa: ARG002
        seconds = params.get("seconds")
        if seconds is None:
            raise InvalidArgumentError("seconds", "is required")
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_SECONDS:
            raise InvalidArgumentError(
                "seconds", f"must be a whole number from 1 to {MAX_SECONDS} (got {seconds!r})"
            )
        image = params.get("image") or DEFAULT_IMAGE
        if not isinstance(image, str) or any(c.isspace() for c in image):
            raise InvalidArgumentError("image", "must be an image reference")
        return {"seconds": seconds, "image": image}

    def render(self, params: Mapping[str, Any], *, job_id: str, settings: Settings) -> Workload:  # noqa: ARG002
        # Only container keys the renderer allows; it adds resources and the restricted security context.
        return Workload(
            container={
                "name": "sleep",
                "image": params["image"],
                "command": ["sleep", str(params["seconds"])],
            },
            annotations={"jobscheduler.io/parameters": json.dumps({"seconds": params["seconds"]})},
        )
