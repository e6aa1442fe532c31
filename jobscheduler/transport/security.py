"""Who may call the API and over what: TLS (optionally mutual) on the gRPC port, and bearer
tokens scoped to verbs and namespaces. Both sets of files are re-read when they change, so a
certificate rotated by cert-manager or an edited token Secret takes effect without a restart;
a change that does not load keeps what was loaded before. Health and reflection never ask for
a token: only the JobScheduler RPCs go through the authorizer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
import yaml

from jobscheduler.domain.config import ConfigError, SecuritySettings
from jobscheduler.domain.errors import PermissionDeniedError
from jobscheduler.domain.validation import is_dns1123_label
from jobscheduler.transport.servicer import UnauthenticatedError

log = structlog.get_logger("jobscheduler.transport.security")

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
    "GetSchedule": "read",
    "ListSchedules": "read",
    "PauseSchedule": "cancel",
    "DeleteSchedule": "cancel",
    "CreateTemplate": "schedule",
    "UpdateTemplate": "schedule",
    "GetTemplate": "read",
    "ListTemplates": "read",
    "DeleteTemplate": "cancel",
}
ALL_NAMESPACES = "*"
# The files are stat-ed at most this often (per handshake or call, not by a thread of their own).
RELOAD_INTERVAL_SECONDS = 1.0
# Tokens written in the file in plain text must be long enough not to be guessed.
MIN_TOKEN_LENGTH = 16
MAX_FILE_BYTES = 1024 * 1024
ENTRY_KEYS = frozenset({"name", "token", "token_sha256", "namespaces", "verbs"})
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_.@:")

Stamp = tuple[tuple[int, int, int, int], ...]


class TokenScopeError(PermissionDeniedError):
    """A known token whose scope does not cover the verb in the namespace."""


# -- bearer tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of the tokens file: a named token (kept only as its SHA-256) and its scope."""

    name: str
    digest: bytes = field(repr=False)
    namespaces: frozenset[str]
    verbs: frozenset[str]

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
    return Grant(name=name, digest=digest, namespaces=frozenset(namespaces), verbs=frozenset(verbs))


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


def _stamp(paths: Iterable[Path]) -> Stamp:
    """What changes when a file is rewritten or a Secret volume swaps its `..data` link."""
    stats = [os.stat(p) for p in paths]
    return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _read(variable: str, path: Path) -> bytes:
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
    data = _read("AUTH_TOKENS_FILE", path)
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
            self._stamp: Stamp | None = _stamp([path])
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
            stamp: Stamp | None = _stamp([self.path])
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
    """The servicer's `authorize` hook: the call's bearer token must be in the tokens file and
    its scope must cover the RPC's verb in the request's namespace (K8S_NAMESPACE when empty)."""

    def __init__(self, tokens: TokenStore, *, default_namespace: str) -> None:
        self.tokens = tokens
        self.default_namespace = default_namespace

    def __call__(self, context: grpc.ServicerContext, method: str, namespace: str) -> str:
        verb = RPC_VERBS[method]
        token = bearer_token(context.invocation_metadata())
        grant = find_grant(self.tokens.grants(), token) if token is not None else None
        if grant is None:
            raise UnauthenticatedError("missing or invalid bearer token")
        # The token's name, never the token: every line the call logs says who made it.
        structlog.contextvars.bind_contextvars(caller=grant.name)
        namespace = namespace or self.default_namespace
        if not grant.allows(verb, namespace):
            raise TokenScopeError(f"token {grant.name!r} does not allow {verb!r} in namespace {namespace!r}")
        return grant.name


# -- TLS -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pem:
    key: bytes = field(repr=False)
    chain: bytes
    client_ca: bytes | None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.chain)], self.client_ca)


def _pem_text(variable: str, path: Path, data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if "-----BEGIN " not in text:
        raise ConfigError(f"{variable}={str(path)!r}: not a PEM file (no -----BEGIN line)")
    return text


def _check_certificates(variable: str, path: Path, data: bytes) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=_pem_text(variable, path, data))
    except ssl.SSLError as e:
        raise ConfigError(f"{variable}={str(path)!r}: no readable PEM certificate ({e.reason})") from None


def _no_password() -> bytes:
    raise ValueError("encrypted private keys are not supported")


class ServerCertificates:
    """TLS_CERT_FILE and TLS_KEY_FILE (and TLS_CLIENT_CA_FILE) for the gRPC port.

    grpc calls `fetch` before each TLS handshake; it stats the files at most once per
    `interval` and re-reads them when they changed, so new handshakes get a rotated
    certificate while open connections keep theirs. Files that do not load (unreadable, not
    PEM, a key that does not match the certificate, half-written) keep the certificate already
    served, with one warning naming the file per change."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        *,
        interval: float = RELOAD_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files: dict[str, Path] = {"TLS_CERT_FILE": cert_file, "TLS_KEY_FILE": key_file}
        if client_ca_file is not None:
            self.files["TLS_CLIENT_CA_FILE"] = client_ca_file
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: Stamp | None = self._stat_or_config_error()
        self._pem = self._load()
        self._checked = clock()

    @property
    def mutual(self) -> bool:
        return "TLS_CLIENT_CA_FILE" in self.files

    @property
    def certificate_chain(self) -> bytes:
        """The PEM chain new handshakes present."""
        return self._pem.chain

    def credentials(self) -> grpc.ServerCredentials:
        fetch: Callable[[], grpc.ServerCertificateConfiguration] = self.fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            self._pem.configuration(), fetch, require_client_authentication=self.mutual
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The configuration to switch to, or None to keep the current one. Never raises: an
        exception here would fail the client's handshake."""
        try:
            now = self._clock()
            with self._lock:
                if now - self._checked < self._interval:
                    return None
                self._checked = now
                pem = self._reload_if_changed()
            return pem.configuration() if pem is not None else None
        except Exception:
            log.exception("tls certificate reload failed; keeping the current certificate")
            return None

    def _reload_if_changed(self) -> _Pem | None:
        try:
            stamp: Stamp | None = _stamp(self.files.values())
        except OSError:
            stamp = None  # a file is missing: warned about once, below, until it is back
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            pem = self._load()
        except ConfigError as e:
            log.warning("tls files not reloaded; keeping the current certificate", error=str(e))
            return None
        if pem == self._pem:
            return None
        self._pem = pem
        log.info("tls certificate reloaded", cert_file=str(self.files["TLS_CERT_FILE"]))
        return pem

    def _stat_or_config_error(self) -> Stamp:
        for variable, path in self.files.items():
            try:
                os.stat(path)
            except OSError as e:
                raise ConfigError(f"{variable}={str(path)!r}: cannot read: {e.strerror or e}") from None
        return _stamp(self.files.values())

    def _read_all(self) -> dict[str, bytes]:
        return {variable: _read(variable, path) for variable, path in self.files.items()}

    def _load(self) -> _Pem:
        """Reads and checks the files. The key is checked against the certificate by paths
        (the ssl module loads chains only from files), so the bytes are read again afterwards:
        bytes that changed meanwhile belong to a rotation in progress and are not used."""
        for _ in range(3):
            data = self._read_all()
            cert_path, key_path = self.files["TLS_CERT_FILE"], self.files["TLS_KEY_FILE"]
            _check_certificates("TLS_CERT_FILE", cert_path, data["TLS_CERT_FILE"])
            key_text = _pem_text("TLS_KEY_FILE", key_path, data["TLS_KEY_FILE"])
            if "ENCRYPTED" in key_text:
                raise ConfigError(f"TLS_KEY_FILE={str(key_path)!r}: encrypted keys are not supported")
            if "TLS_CLIENT_CA_FILE" in self.files:
                _check_certificates(
                    "TLS_CLIENT_CA_FILE", self.files["TLS_CLIENT_CA_FILE"], data["TLS_CLIENT_CA_FILE"]
                )
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                    cert_path, key_path, password=_no_password
                )
            except (ssl.SSLError, ValueError) as e:
                reason = getattr(e, "reason", None) or str(e)
                raise ConfigError(
                    f"TLS_KEY_FILE={str(key_path)!r}: not the private key of TLS_CERT_FILE "
                    f"{str(cert_path)!r} ({reason})"
                ) from None
            except OSError as e:
                raise ConfigError(f"TLS_KEY_FILE={str(key_path)!r}: cannot read: {e.strerror or e}") from None
            if self._read_all() == data:
                return _Pem(
                    key=data["TLS_KEY_FILE"],
                    chain=data["TLS_CERT_FILE"],
                    client_ca=data.get("TLS_CLIENT_CA_FILE"),
                )
        raise ConfigError(
            f"TLS_CERT_FILE={str(self.files['TLS_CERT_FILE'])!r}: the files kept changing while read"
        )


# -- wiring ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Security:
    """SecuritySettings loaded and checked: the port's TLS certificates (None: plaintext), the
    tokens (None: no authentication) and whether reflection is served."""

    certificates: ServerCertificates | None = None
    tokens: TokenStore | None = None
    reflection: bool = True

    @classmethod
    def load(cls, settings: SecuritySettings) -> Security:
        """Raises ConfigError naming the variable when a file is missing or unusable."""
        certificates = None
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            certificates = ServerCertificates(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
        tokens = TokenStore(settings.auth_tokens_file) if settings.auth_tokens_file is not None else None
        return cls(certificates=certificates, tokens=tokens, reflection=settings.reflection)

    @property
    def tls(self) -> str:
        """off, on or mutual: for the start-up log line."""
        if self.certificates is None:
            return "off"
        return "mutual" if self.certificates.mutual else "on"

    def server_credentials(self) -> grpc.ServerCredentials | None:
        return self.certificates.credentials() if self.certificates is not None else None

    def authorizer(self, *, default_namespace: str) -> Authorizer | None:
        if self.tokens is None:
            return None
        return Authorizer(self.tokens, default_namespace=default_namespace)
