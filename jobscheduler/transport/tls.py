"""TLS (optionally mutual) on the gRPC port, and the security settings loaded as one value.

The certificate files are re-read when they change, so a certificate rotated by cert-manager
takes effect for new handshakes without a restart; files that do not load keep what was
loaded before.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from jobscheduler.domain.config import SecuritySettings
from jobscheduler.domain.errors import ConfigError
from jobscheduler.transport.tokens import (
    RELOAD_INTERVAL_SECONDS,
    Authorizer,
    Stamp,
    TokenStore,
    read_file,
    stamp_of,
)

log = structlog.get_logger("jobscheduler.transport.tls")


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
            stamp: Stamp | None = stamp_of(self.files.values())
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
        return stamp_of(self.files.values())

    def _read_all(self) -> dict[str, bytes]:
        return {variable: read_file(variable, path) for variable, path in self.files.items()}

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
