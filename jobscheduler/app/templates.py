"""Job templates: named ScheduleJob requests kept in the cluster, in immutable versions.

A template is one ConfigMap, `jobscheduler-template-<name>`, labelled with the managed-by label
and `jobscheduler.io/template=<name>`; each version is one key of its data (`v1`, `v2`, ...),
a JSON record of the description, the job as the caller wrote it and who stored it when. Writes
are conditional on the ConfigMap's resourceVersion and retried on a conflict, so two replicas
updating one template at once store two consecutive versions and lose neither. The newest
TEMPLATE_HISTORY_LIMIT versions are kept (fewer when large ones would overflow the ConfigMap).

The job is stored as the request's JSON and is opaque here; validating it is JobService's
(`prepare`, exactly as ScheduleJob does), merging it with a caller's request the transport's.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from jobscheduler.app.service import JobService
from jobscheduler.domain.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from jobscheduler.domain.models import MANAGED_BY_LABEL, MANAGED_BY_VALUE, MANAGED_SELECTOR, TEMPLATE_LABEL
from jobscheduler.domain.render import JobRequest
from jobscheduler.domain.validation import check_dns_label
from jobscheduler.kube.gateway import KubeGateway

log = structlog.get_logger("jobscheduler.app.templates")

Obj = dict[str, Any]
CONFIGMAP_PREFIX = "jobscheduler-template-"
LATEST_ANNOTATION = "jobscheduler.io/template-latest-version"
MAX_DESCRIPTION_CHARS = 1024
# A ConfigMap holds at most 1 MiB of data. One version may take a quarter of it, and versions
# are dropped, oldest first, until the rest fits with room for the object's metadata.
MAX_VERSION_BYTES = 256 * 1024
MAX_DATA_BYTES = 900 * 1024
# Conflicting writers each retry; one of them wins each round, so this many rounds let that many
# replicas write one template at once.
MAX_WRITE_ATTEMPTS = 50
# The job id the body is rendered under when it is checked (nothing is created with it).
CHECK_JOB_ID = "job-template-check"


@dataclass(frozen=True, slots=True)
class TemplateDraft:
    """A template version as a caller writes it (Template in the proto, without output fields)."""

    name: str
    namespace: str
    description: str
    job: JobRequest
    """The body in domain terms: checked as ScheduleJob would check it."""
    body: Mapping[str, Any]
    """The body as stored and given back: the ScheduleJob request's JSON (proto field names)."""


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One stored version of a template, with what the template's ConfigMap says about it."""

    name: str
    namespace: str
    version: int
    description: str
    body: Mapping[str, Any]
    job_type: str
    updated_at: datetime | None
    updated_by: str
    latest_version: int
    versions: tuple[int, ...]  # kept, oldest first
    created_at: datetime | None


def configmap_name(template: str) -> str:
    return CONFIGMAP_PREFIX + template


def version_key(version: int) -> str:
    return f"v{version}"


def _parse_version_key(key: str) -> int | None:
    digits = key[1:]
    if key.startswith("v") and digits.isascii() and digits.isdigit() and not digits.startswith("0"):
        return int(digits)
    return None


def kept_versions(data: Mapping[str, str]) -> list[int]:
    """The version numbers a template's ConfigMap data holds, oldest first."""
    return sorted(v for v in map(_parse_version_key, data) if v is not None)


def retain(data: Mapping[str, str], *, limit: int, max_bytes: int = MAX_DATA_BYTES) -> dict[str, str]:
    """The newest `limit` versions, fewer when their records together exceed `max_bytes` (the
    newest is always kept); keys that are not versions are left alone."""
    versions = kept_versions(data)
    keep = versions[-limit:]
    others = {k: v for k, v in data.items() if _parse_version_key(k) is None}

    def size(kept: list[int]) -> int:
        return sum(len(k.encode()) + len(v.encode()) for k, v in others.items()) + sum(
            len(version_key(n)) + len(data[version_key(n)].encode()) for n in kept
        )

    while len(keep) > 1 and size(keep) > max_bytes:
        keep = keep[1:]
    return {**others, **{version_key(n): data[version_key(n)] for n in keep}}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class TemplateService:
    def __init__(self, gateway: KubeGateway, jobs: JobService) -> None:
        self.gateway = gateway
        self.jobs = jobs
        self.history_limit = jobs.settings.template_history_limit

    # -- checks --------------------------------------------------------------------------------

    def _check(self, draft: TemplateDraft) -> TemplateDraft:
        """The draft validated, with its namespace resolved; InvalidArgumentError names the field."""
        namespace = self.jobs.resolve_namespace(draft.namespace)
        self._check_name("name", draft.name)
        if len(draft.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgumentError(
                "description", f"is {len(draft.description)} characters long; at most {MAX_DESCRIPTION_CHARS}"
            )
        job = draft.job
        self.jobs.submission.check_embedded_job(
            job,
            namespace=namespace,
            owner="template",
            job_id=CHECK_JOB_ID,
            default_name=draft.name,
            # `after`: every job made from the template would wait for the same fixed jobs.
            forbidden={"request_id": job.request_id, "secret_env": job.secret_env, "after": job.after},
            why="templates are stored in a ConfigMap and shared by every job made from them; give it in "
            "the ScheduleJob request instead",
        )
        size = len(_canonical(draft.body).encode())
        if size > MAX_VERSION_BYTES:
            raise InvalidArgumentError(
                "job", f"is {size} bytes as JSON; a template may hold at most {MAX_VERSION_BYTES}"
            )
        return replace(draft, namespace=namespace)

    @staticmethod
    def _check_name(field_name: str, name: str) -> None:
        if not name:
            raise InvalidArgumentError(field_name, "is required")
        check_dns_label(field_name, name, what="template name")

    def _record(self, draft: TemplateDraft, *, author: str) -> str:
        return _canonical(
            {
                "description": draft.description,
                "job": dict(draft.body),
                "job_type": draft.job.job_type,
                "created_at": _rfc3339(datetime.now(UTC)),
                "created_by": author,
            }
        )

    # -- the RPCs ------------------------------------------------------------------------------

    def create(
        self, draft: TemplateDraft, *, author: str = "", deadline: float | None = None
    ) -> TemplateVersion:
        draft = self._check(draft)
        configmap: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(draft.name),
                "namespace": draft.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, TEMPLATE_LABEL: draft.name},
                "annotations": {LATEST_ANNOTATION: "1"},
            },
            "data": {version_key(1): self._record(draft, author=author)},
        }
        try:
            created = self.gateway.create("configmaps", draft.namespace, configmap, deadline=deadline)
        except NotFoundError:
            raise InvalidArgumentError(
                "namespace", f"namespace {draft.namespace!r} does not exist; create it or pick another"
            ) from None
        except AlreadyExistsError:
            try:
                existing = self._get(draft.namespace, draft.name, deadline=deadline)
            except NotFoundError as e:  # a ConfigMap of that name that is not ours (or just deleted)
                raise AlreadyExistsError(f"{e}; pick another template name") from None
            latest = self._version(existing, 0)
            if _same(latest, draft):
                return latest  # a retried call whose first attempt stored it
            raise AlreadyExistsError(
                f"template {draft.name!r} already exists in namespace {draft.namespace!r} "
                f"(latest version {latest.version}); UpdateTemplate stores a new version"
            ) from None
        log.info("template created", template=draft.name, namespace=draft.namespace, version=1)
        return self._version(created, 1)

    def update(
        self,
        draft: TemplateDraft,
        *,
        expected_version: int = 0,
        author: str = "",
        deadline: float | None = None,
    ) -> TemplateVersion:
        """Stores the draft as the template's next version; an update identical to the latest
        version (a retried call) stores nothing and returns it."""
        draft = self._check(draft)
        for attempt in range(MAX_WRITE_ATTEMPTS):
            current = self._get(draft.namespace, draft.name, deadline=deadline)
            latest = self._version(current, 0)
            if expected_version and expected_version != latest.version:
                raise FailedPreconditionError(
                    f"template {draft.name!r} is at version {latest.version}, not expected_version "
                    f"{expected_version}; read it again and reapply the change"
                )
            if _same(latest, draft):
                return latest
            version = latest.latest_version + 1
            data = {**(current.get("data") or {}), version_key(version): self._record(draft, author=author)}
            body = dict(current)
            body["metadata"] = {
                **current["metadata"],
                "annotations": {
                    **(current["metadata"].get("annotations") or {}),
                    LATEST_ANNOTATION: str(version),
                },
            }
            body["data"] = retain(data, limit=self.history_limit)
            try:
                stored = self.gateway.replace(
                    "configmaps", draft.namespace, configmap_name(draft.name), body, deadline=deadline
                )
            except ConflictError:
                # Another writer stored a version first: read it and go again, after a pause that
                # keeps the writers from colliding in lockstep.
                time.sleep(random.uniform(0, 0.01 * min(attempt + 1, 10)))
                continue
            except NotFoundError:
                raise NotFoundError(
                    f"template {draft.name!r} was deleted from namespace {draft.namespace!r} meanwhile"
                ) from None
            log.info("template updated", template=draft.name, namespace=draft.namespace, version=version)
            return self._version(stored, version)
        raise FailedPreconditionError(
            f"template {draft.name!r} kept changing while a version was being stored; try again"
        )

    def get(
        self, namespace: str, name: str, *, version: int = 0, deadline: float | None = None
    ) -> TemplateVersion:
        """The template's latest version (version 0), or the one asked for; NotFoundError when
        either is not there."""
        if version < 0:
            raise InvalidArgumentError("version", f"must not be negative (got {version})")
        return self._version(self._get(namespace, name, deadline=deadline), version)

    def resolve(
        self, namespace: str, name: str, *, version: int = 0, deadline: float | None = None
    ) -> TemplateVersion:
        """The version a ScheduleJob request starts from; InvalidArgumentError names `template`
        or `template_version` when it is not there."""
        if version < 0:
            raise InvalidArgumentError("template_version", f"must not be negative (got {version})")
        if not name:
            raise InvalidArgumentError("template", "is required with template_version or template_unset")
        self._check_name("template", name)
        try:
            configmap = self._get(namespace, name, deadline=deadline)
        except NotFoundError as e:
            raise InvalidArgumentError("template", str(e)) from None
        try:
            return self._version(configmap, version)
        except NotFoundError as e:
            raise InvalidArgumentError("template_version", str(e)) from None

    def list_templates(self, namespace: str, *, deadline: float | None = None) -> list[TemplateVersion]:
        """The latest version of every template in the namespace, by name."""
        namespace = self.jobs.resolve_namespace(namespace)
        configmaps = self.gateway.list_of(
            "configmaps", namespace, label_selector=f"{MANAGED_SELECTOR},{TEMPLATE_LABEL}", deadline=deadline
        )
        found = []
        for configmap in configmaps:
            if configmap["metadata"].get("deletionTimestamp") or _template_name(configmap) is None:
                continue
            try:
                found.append(self._version(configmap, 0))
            except (NotFoundError, FailedPreconditionError):
                log.warning(
                    "template unreadable", configmap=configmap["metadata"]["name"], namespace=namespace
                )
        return sorted(found, key=lambda t: t.name)

    def delete(self, namespace: str, name: str, *, deadline: float | None = None) -> None:
        """Deletes the template and all its versions (NotFoundError when there is none)."""
        configmap = self._get(namespace, name, deadline=deadline)
        meta = configmap["metadata"]
        self.gateway.delete("configmaps", meta["namespace"], meta["name"], uid=meta["uid"], deadline=deadline)
        log.info("template deleted", template=name, namespace=meta["namespace"])

    # -- reading -------------------------------------------------------------------------------

    def _get(self, namespace: str, name: str, *, deadline: float | None) -> Obj:
        namespace = self.jobs.resolve_namespace(namespace)
        self._check_name("name", name)
        try:
            configmap = self.gateway.get("configmaps", namespace, configmap_name(name), deadline=deadline)
        except NotFoundError:
            raise NotFoundError(f"template {name!r} not found in namespace {namespace!r}") from None
        if _template_name(configmap) != name:
            raise NotFoundError(
                f"ConfigMap {configmap_name(name)!r} in namespace {namespace!r} is not a "
                "jobscheduler template"
            )
        return configmap

    def _version(self, configmap: Obj, version: int) -> TemplateVersion:
        """One version of the template a ConfigMap holds (0: the latest)."""
        meta = configmap["metadata"]
        name = _template_name(configmap) or ""
        data: Mapping[str, str] = configmap.get("data") or {}
        versions = kept_versions(data)
        if not versions:
            raise FailedPreconditionError(f"template {name!r} holds no versions (its ConfigMap was edited)")
        latest = versions[-1]
        with contextlib.suppress(ValueError):
            latest = max(latest, int((meta.get("annotations") or {}).get(LATEST_ANNOTATION, "0")))
        version = version or versions[-1]
        if version not in versions:
            if version > latest:
                raise NotFoundError(f"template {name!r} has no version {version}; the latest is {latest}")
            raise NotFoundError(
                f"version {version} of template {name!r} is no longer kept "
                f"(kept: {versions[0]}..{versions[-1]})"
            )
        try:
            record = json.loads(data[version_key(version)])
            body, description = record["job"], record.get("description", "")
            if not isinstance(body, dict) or not isinstance(description, str):
                raise TypeError("job")
        except (ValueError, KeyError, TypeError):
            raise FailedPreconditionError(
                f"version {version} of template {name!r} is not readable (its ConfigMap was edited); "
                "store a new version with UpdateTemplate"
            ) from None
        return TemplateVersion(
            name=name,
            namespace=meta["namespace"],
            version=version,
            description=description,
            body=body,
            job_type=str(record.get("job_type", "")),
            updated_at=_parse_time(record.get("created_at")),
            updated_by=str(record.get("created_by", "")),
            latest_version=latest,
            versions=tuple(versions),
            created_at=_parse_time(meta.get("creationTimestamp")),
        )


def _template_name(configmap: Obj) -> str | None:
    """The template a ConfigMap holds; None when it is not one of ours."""
    meta = configmap["metadata"]
    labels = meta.get("labels") or {}
    name = labels.get(TEMPLATE_LABEL)
    if (
        labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE
        or not name
        or meta.get("name") != configmap_name(name)
    ):
        return None
    return str(name)


def _same(stored: TemplateVersion, draft: TemplateDraft) -> bool:
    return stored.description == draft.description and _canonical(stored.body) == _canonical(draft.body)
