"""Who may call the API: bearer tokens scoped to verbs and namespaces (AUTH_TOKENS_FILE).

The file is re-read when it changes, so an edited token Secret takes effect without a restart;
a change that does not load keeps what was loaded before. Health and reflection never ask for
a token: only the JobScheduler RPCs go through the Authorizer, in two steps: the interceptor
authenticates each call (jobscheduler.transport.interceptors), and the servicer method, which
knows where its request names the namespace, authorizes it (jobscheduler.transport.call).
TLS on the port: jobscheduler.transport.tls.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from jobscheduler.domain.errors import ConfigError, TokenScopeError, UnauthenticatedError
from jobscheduler.domain.validation import is_dns1123_label, is_dns1123_subdomain

log = structlog.get_logger("jobscheduler.transport.tokens")

VERBS = ("schedule", "read", "cancel")
# Every JobScheduler RPC, by the verb a token needs for it. An RPC missing here is refused
# (KeyError -> INTERNAL), never let through.
RPC_VERBS: Mapping[str, str] = {
    "ScheduleJob": "schedule",
    "ResumeJob": "schedule",
    "GetJobStatus": "read",
    "ListJobs": "read",
    "ListJobTypes": "read",
    "WatchJob": "read",
    "WatchJobs": "read",
    "GetJobLogs": "read",
    "CancelJob": "cancel",
    "CreateSchedule": "schedule",
    "UpdateSchedule": "schedule",
    "ResumeSchedule": "schedule",
    "TriggerSchedule": "schedule",
    "BackfillSchedule": "schedule",
    "GetSchedule": "read",
    "ListSchedules": "read",
    "PauseSchedule": "cancel",
    "DeleteSchedule": "cancel",
    "CreateTemplate": "schedule",
    "UpdateTemplate": "schedule",
    "GetTemplate": "read",
    "ListTemplates": "read",
    "DeleteTemplate": "cancel",
    "ListQueues": "read",
    "GetServiceStatus": "read",
}
ALL_NAMESPACES = "*"
# The files are stat-ed at most this often (per handshake or call, not by a thread of their own).
RELOAD_INTERVAL_SECONDS = 1.0
# Tokens written in the file in plain text must be long enough not to be guessed.
MIN_TOKEN_LENGTH = 16
MAX_FILE_BYTES = 1024 * 1024
ENTRY_KEYS = frozenset({"name", "token", "token_sha256", "namespaces", "verbs", "queues"})
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_.@:")

Stamp = tuple[tuple[int, int, int, int], ...]


# -- bearer tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of the tokens file: a named token (kept only as its SHA-256) and its scope."""

    name: str
    digest: bytes = field(repr=False)
    namespaces: frozenset[str]
    verbs: frozenset[str]
    queues: frozenset[str] | None = None
    """The Kueue LocalQueues its jobs may go to (ListQueues shows only these); None: any, and
    unqueued jobs too."""

    def allows(self, verb: str, namespace: str) -> bool:
        return verb in self.verbs and (ALL_NAMESPACES in self.namespaces or namespace in self.namespaces)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str) -> tuple[Grant, ...]:
    """The grants of a tokens file (README "Security"); ValueError names the entry and field.

    No message ever quotes a token or its digest."""
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"not valid YAML{where}") from None
    if not isinstance(entries, list):
        raise ValueError("expected a YAML list of tokens (- name: ..., token_sha256: ..., ...)")
    grants: list[Grant] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for i, entry in enumerate(entries):
        grant = _parse_entry(i, entry)
        if grant.name in names:
            raise ValueError(f"entry {i} ({grant.name}): name: given twice")
        if grant.digest in digests:
            raise ValueError(f"entry {i} ({grant.name}): the same token as {digests[grant.digest]!r}")
        names.add(grant.name)
        digests[grant.digest] = grant.name
        grants.append(grant)
    return tuple(grants)


def _parse_entry(i: int, entry: Any) -> Grant:
    if not isinstance(entry, dict):
        raise ValueError(f"entry {i}: expected a mapping with name, token or token_sha256, namespaces, verbs")
    name = entry.get("name")
    if not isinstance(name, str) or not name or len(name) > 128 or not set(name) <= NAME_CHARS:
        raise ValueError(f"entry {i}: name: expected letters, digits and - _ . @ : (at most 128)")
    where = f"entry {i} ({name})"
    unknown = sorted(str(k) for k in entry if k not in ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(ENTRY_KEYS))}")
    if ("token" in entry) == ("token_sha256" in entry):
        raise ValueError(f"{where}: expected exactly one of token, token_sha256")
    if "token" in entry:
        token = entry["token"]
        if not isinstance(token, str):
            raise ValueError(f"{where}: token: expected a string (quote it)")
        if len(token) < MIN_TOKEN_LENGTH or token != token.strip() or not token.isprintable():
            raise ValueError(
                f"{where}: token: expected at least {MIN_TOKEN_LENGTH} printable characters, no spaces around"
            )
        digest = token_digest(token)
    else:
        hexdigest = entry["token_sha256"]
        if (
            not isinstance(hexdigest, str)
            or len(hexdigest) != 64
            or not set(hexdigest) <= set(string.hexdigits)
        ):
            raise ValueError(f"{where}: token_sha256: expected 64 hex digits (the SHA-256 of the token)")
        digest = bytes.fromhex(hexdigest)
    namespaces = _string_list(entry.get("namespaces"), f"{where}: namespaces")
    bad = [n for n in namespaces if n != ALL_NAMESPACES and not is_dns1123_label(n)]
    if bad:
        raise ValueError(f"{where}: namespaces: {bad[0]!r} is not a namespace name or '*'")
    verbs = _string_list(entry.get("verbs"), f"{where}: verbs")
    bad = [v for v in verbs if v not in VERBS]
    if bad:
        raise ValueError(f"{where}: verbs: {bad[0]!r} is not one of {', '.join(VERBS)}")
    queues = None
    if "queues" in entry:
        queues = frozenset(_string_list(entry["queues"], f"{where}: queues"))
        bad = [q for q in sorted(queues) if len(q) > 63 or not is_dns1123_subdomain(q)]
        if bad:
            raise ValueError(f"{where}: queues: {bad[0]!r} is not a LocalQueue name")
    return Grant(
        name=name, digest=digest, namespaces=frozenset(namespaces), verbs=frozenset(verbs), queues=queues
    )


def _string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: expected a non-empty list of strings")
    return [str(v) for v in value]


def find_grant(grants: Iterable[Grant], token: str) -> Grant | None:
    """The grant of `token`, compared in constant time against every entry (no early exit, so
    the time taken does not tell which entry, or how much of one, matched)."""
    digest = token_digest(token)
    found: Grant | None = None
    for grant in grants:
        if hmac.compare_digest(grant.digest, digest):
            found = grant
    return found


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the one `authorization: Bearer <token>` header, else None."""
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def stamp_of(paths: Iterable[Path]) -> Stamp:
    """What changes when a file is rewritten or a Secret volume swaps its `..data` link."""
    stats = [os.stat(p) for p in paths]
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def read_file(variable: str, path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{variable}={str(path)!r}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{variable}={str(path)!r}: larger than {MAX_FILE_BYTES} bytes")
    return data


def load_tokens(path: Path) -> tuple[Grant, ...]:
    """AUTH_TOKENS_FILE's grants; ConfigError names the variable, the file and what is wrong."""
    data = read_file("AUTH_TOKENS_FILE", path)
    try:
        return parse_tokens(data.decode())
    except (UnicodeDecodeError, ValueError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
        raise ConfigError(f"AUTH_TOKENS_FILE={str(path)!r}: {reason}") from None


class TokenStore:
    """AUTH_TOKENS_FILE's grants, re-read when the file changes. The check runs on the calling
    thread at most once per `interval`; a file that no longer loads keeps the previous grants
    (one warning per change)."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = RELOAD_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._stamp: Stamp | None = stamp_of([path])
        except OSError as e:
            raise ConfigError(f"AUTH_TOKENS_FILE={str(path)!r}: cannot read: {e.strerror or e}") from None
        self._grants = load_tokens(path)
        self._checked = clock()

    def grants(self) -> tuple[Grant, ...]:
        now = self._clock()
        with self._lock:
            if now - self._checked >= self._interval:
                self._checked = now
                self._reload_if_changed()
            return self._grants

    def _reload_if_changed(self) -> None:
        try:
            stamp: Stamp | None = stamp_of([self.path])
        except OSError as e:
            if self._stamp is not None:
                log.warning(
                    "tokens file unreadable; keeping the previous tokens",
                    file=str(self.path),
                    error=e.strerror or str(e),
                )
            self._stamp = None
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            grants = load_tokens(self.path)
        except ConfigError as e:
            log.warning(
                "tokens file not reloaded; keeping the previous tokens", file=str(self.path), error=str(e)
            )
            return
        self._grants = grants
        log.info("tokens file reloaded", file=str(self.path), entries=len(grants))


class Authorizer:
    """Bearer tokens on the JobScheduler RPCs: the call's token must be in the tokens file
    (authenticate, once per call), and its scope must cover the RPC's verb in the request's
    namespace, K8S_NAMESPACE when empty (authorize, where the request is read)."""

    def __init__(self, tokens: TokenStore, *, default_namespace: str) -> None:
        self.tokens = tokens
        self.default_namespace = default_namespace

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Grant:
        token = bearer_token(metadata)
        grant = find_grant(self.tokens.grants(), token) if token is not None else None
        if grant is None:
            raise UnauthenticatedError("missing or invalid bearer token")
        return grant

    def authorize(self, grant: Grant, method: str, namespace: str) -> None:
        verb = RPC_VERBS[method]
        namespace = namespace or self.default_namespace
        if not grant.allows(verb, namespace):
            raise TokenScopeError(f"token {grant.name!r} does not allow {verb!r} in namespace {namespace!r}")
