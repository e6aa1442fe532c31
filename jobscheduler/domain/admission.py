"""Admission guards: what an operator allows callers to run, where, and how fast.

Checked by JobService before anything is created: the namespace allowlist (every RPC), the
image allowlist (every container a job type renders), and per caller a token-bucket rate of
ScheduleJob calls. The cap on a caller's unfinished jobs needs the cluster's view and lives in
the service; this module only says how the caller is named on the Job.

Off by default: an empty allowlist allows every namespace but Kubernetes' own (kube-*, which
only a pattern starting with `kube-` admits), a zero rate or cap means no limit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobscheduler.domain.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from jobscheduler.domain.validation import shown

# Buckets of callers idle long enough to be full again are dropped past this many callers.
MAX_TRACKED_CALLERS = 10_000
# Kubernetes' own namespaces: refused unless ALLOWED_NAMESPACES names them with this prefix.
SYSTEM_NAMESPACE_PREFIX = "kube-"
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    allowed_images: tuple[str, ...] = ()
    """Image patterns (glob, `*` any characters; a trailing `/` a prefix); empty: any image."""
    allowed_namespaces: tuple[str, ...] = ()
    """Namespace patterns (glob); empty: any namespace."""
    schedule_rate: float = 0.0
    """ScheduleJob calls per second per caller (token bucket refill); 0: unlimited."""
    schedule_burst: int = 0
    """Bucket size: calls a caller may make at once (default: max(1, rate))."""
    max_active_jobs: int = 0
    """Unfinished jobs one caller may have per namespace; 0: unlimited."""


def is_system_namespace(namespace: str) -> bool:
    """kube-system, kube-public, kube-node-lease and any other kube-* namespace: Kubernetes' own,
    where a job could read or disturb the control plane's objects."""
    return namespace.startswith(SYSTEM_NAMESPACE_PREFIX)


def normalize_image(image: str) -> str:
    """The fully qualified form of an image reference, as the container runtime resolves it:
    `busybox` is `docker.io/library/busybox`, `acme/tool:1` is `docker.io/acme/tool:1`."""
    first, sep, rest = image.partition("/")
    if not sep:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def image_allowed(image: str, patterns: Iterable[str]) -> bool:
    """Whether the image, as written or fully qualified, matches one of the patterns."""
    candidates = {image, normalize_image(image)}
    for pattern in patterns:
        for candidate in candidates:
            if pattern.endswith("/") and candidate.startswith(pattern):
                return True
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
    return False


def caller_label(caller: str) -> str:
    """A caller's name as a label value (63 characters of [A-Za-z0-9_.-], alphanumeric at both
    ends), so a caller's jobs can be counted and selected; long names keep a hash suffix."""
    value = _LABEL_UNSAFE.sub("-", caller).strip("-_.")
    if len(value) > 63 or value != caller:
        digest = hashlib.sha256(caller.encode()).hexdigest()[:8]
        value = f"{value[:54].rstrip('-_.')}-{digest}".lstrip("-")
    return value or "anonymous"


class Admission:
    def __init__(
        self,
        policy: AdmissionPolicy,
        *,
        trusted_images: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        # The operator's own defaults (TIMER_IMAGE, ...) are allowed whatever the patterns say.
        self.trusted_images = frozenset(trusted_images)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        rate = policy.schedule_rate
        self._burst = float(policy.schedule_burst or max(1, int(rate))) if rate > 0 else 0.0

    def check_namespace(self, namespace: str) -> None:
        patterns = self.policy.allowed_namespaces
        if patterns and not any(fnmatch.fnmatchcase(namespace, p) for p in patterns):
            raise PermissionDeniedError(
                f"namespace {namespace!r} is not served by this jobscheduler "
                f"(ALLOWED_NAMESPACES: {', '.join(patterns)}); pick one of those"
            )
        if is_system_namespace(namespace) and not any(
            p.startswith(SYSTEM_NAMESPACE_PREFIX) and fnmatch.fnmatchcase(namespace, p) for p in patterns
        ):
            raise PermissionDeniedError(
                f"namespace {namespace!r} is a Kubernetes system namespace; jobscheduler runs jobs there "
                f"only when the operator lists it in ALLOWED_NAMESPACES (a pattern starting with "
                f"{SYSTEM_NAMESPACE_PREFIX!r}); use your own namespace"
            )

    def check_images(self, manifest: Mapping[str, Any], *, field: str) -> None:
        patterns = self.policy.allowed_images
        if not patterns:
            return
        pod = manifest["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            image = container["image"]
            if image in self.trusted_images or image_allowed(image, patterns):
                continue
            raise InvalidArgumentError(
                field,
                f"image {shown(image)} is not allowed here; allowed images match: {', '.join(patterns)} "
                "(ALLOWED_IMAGES)",
            )

    def take(self, caller: str) -> None:
        """Spends one ScheduleJob call of the caller's budget, or raises ResourceExhaustedError
        saying when the next one will be available."""
        rate = self.policy.schedule_rate
        if rate <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                wait = (1.0 - tokens) / rate
                raise ResourceExhaustedError(
                    f"caller {caller!r} is over its rate of {rate:g} ScheduleJob calls per second "
                    f"(burst {self._burst:g}); retry in {wait:.2f}s",
                    retry_after=wait,
                )
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_TRACKED_CALLERS:
                self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        full_after = self._burst / self.policy.schedule_rate
        for caller, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[caller]
