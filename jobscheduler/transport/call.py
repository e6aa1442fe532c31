"""What the servicer methods know about the call they serve: its deadline, who makes it, and
the one step the interceptor cannot take for them, authorizing it in the request's namespace.

The interceptor (jobscheduler.transport.interceptors) opens a Call for every JobScheduler RPC
before the method runs; each method's first line is `call = begin(namespace=..., ...)`, with
the namespace read from wherever its request holds it (a schedule's spec, a template's).
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass

import grpc
import structlog

from jobscheduler.domain.audit import Identity, IdentityKind
from jobscheduler.domain.errors import UnauthenticatedError
from jobscheduler.transport.tokens import Authorizer, Grant


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    """The RPC's name (ScheduleJob), as in the metrics and logs."""
    caller: str
    """Who makes the call: its token's name, or its address when tokens are off."""
    deadline: float | None
    """time.monotonic() value the caller gives up at; None without a deadline."""
    grant: Grant | None = None
    authorizer: Authorizer | None = None
    identity: Identity | None = None
    """Who makes the call for the audit trail: the token's name, else the client certificate's
    subject, else the address (identity_of); None only in stand-ins made by tests."""

    @property
    def who(self) -> Identity:
        return self.identity or Identity(IdentityKind.PEER, self.caller)


_CURRENT: contextvars.ContextVar[Call] = contextvars.ContextVar("call")


def deadline_of(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    # grpc reports "no deadline" as a very large number.
    return time.monotonic() + remaining if remaining is not None and remaining < 1e8 else None


def open_call(call: Call) -> contextvars.Token[Call]:
    return _CURRENT.set(call)


def close_call(token: contextvars.Token[Call]) -> None:
    _CURRENT.reset(token)


def begin(*, namespace: str = "", **fields: str) -> Call:
    """The current call, authorized in `namespace` (the request's; empty: K8S_NAMESPACE), with
    the request's identifying fields bound to the log context. Raises TokenScopeError when the
    caller's token does not cover this RPC there."""
    call = _CURRENT.get()
    structlog.contextvars.bind_contextvars(
        **{k: v for k, v in {"namespace": namespace, **fields}.items() if v}
    )
    if call.authorizer is not None:
        if call.grant is None:
            raise UnauthenticatedError("missing or invalid bearer token")
        call.authorizer.authorize(call.grant, call.method, namespace)
    return call


def identity_of(context: grpc.ServicerContext, grant: Grant | None) -> Identity:
    """The caller as the auth layer knows it: its token's name (AUTH_TOKENS_FILE), else the
    subject of the client certificate it presented (mutual TLS), else its address."""
    if grant is not None:
        return Identity(IdentityKind.TOKEN, grant.name)
    auth = context.auth_context()
    # grpc core names the whole subject x509_subject (newer cores) and its CN x509_common_name.
    for key in ("x509_subject", "x509_common_name"):
        values = auth.get(key)
        if values:
            raw: object = values[0]
            subject = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            return Identity(IdentityKind.MTLS, subject)
    return Identity(IdentityKind.PEER, peer_host(context.peer()))


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer ("ipv4:10.0.0.7:5123" → "10.0.0.7", "ipv6:[::1]:5123" →
    "::1"): a caller's identity when tokens are off, stable across its connections."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer or "unknown"
