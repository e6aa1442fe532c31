"""What happens once for every JobScheduler RPC, around the servicer method: the log context,
the metrics (RPC_REQUESTS by method and code, RPC_DURATION of unary calls), authentication,
the stream bound, the mapping of errors to statuses, and the audit record of every mutating
RPC (jobscheduler.transport.audit), whatever its outcome.

Errors: a domain error becomes its status (jobscheduler.transport.errors) and its message; an
UNAVAILABLE one also tells the health monitor at once (`on_unavailable`), unless it is a node's
(a kubelet that serves no log says nothing about the API server). Anything else is logged with
its traceback and returned as INTERNAL with an incident id, never with its message.

Streams (WatchJob, WatchJobs, GetJobLogs) each hold a server thread for as long as they are
open: at most `max_streams` at once, so that the threads kept for unary calls stay free; the
server's pool is sized from the same number (jobscheduler.transport.server).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import grpc
import structlog

from jobscheduler.domain.errors import JobSchedulerError, NodeUnavailableError
from jobscheduler.obs.audit import AuditLog
from jobscheduler.obs.metrics import RPC_DURATION, RPC_REQUESTS, child
from jobscheduler.transport.audit import MUTATING_METHODS, record_call
from jobscheduler.transport.call import Call, close_call, deadline_of, identity_of, open_call, peer_host
from jobscheduler.transport.errors import abort, abort_with, status_code_for
from jobscheduler.transport.registration import Undecodable
from jobscheduler.transport.tokens import Authorizer

log = structlog.get_logger("jobscheduler.rpc")
STREAMS_FULL = "too many open watch streams on this replica (MAX_WATCH_STREAMS); retry later or elsewhere"
NO_STREAMS = "this replica serves no watch or log streams (MAX_WATCH_STREAMS=0); use another replica"

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs


class RpcInterceptor(grpc.ServerInterceptor):
    """Logging, metrics, authentication, the stream bound and error mapping for the RPCs of
    `service` (a full service name); other services (health, reflection) pass untouched."""

    def __init__(
        self,
        service: str,
        *,
        authorizer: Authorizer | None = None,
        on_unavailable: Callable[[], None] | None = None,
        max_streams: int,
        audit: AuditLog | None = None,
    ) -> None:
        self.prefix = f"/{service}/"
        self.audit = audit or AuditLog("stdout")
        self.authorizer = authorizer
        self.on_unavailable = on_unavailable or (lambda: None)
        # 0 allows no stream at all: an unbounded number would take every thread.
        self.streams = threading.BoundedSemaphore(max_streams) if max_streams else None
        # The wrapped handler of each method, made on its first call: the registered handlers
        # never change, and wrapping anew on every call cost a measurable share of a cheap RPC.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(self.prefix):
            return handler
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(details.method[len(self.prefix) :], handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no client-streaming RPCs in this service

    def _unary(
        self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                return behaviour(request, context)  # refused as INVALID_ARGUMENT, before anything
            with self._call(method, context, observe_latency=True):
                return behaviour(request, context)

        return handle

    def _stream(
        self, method: str, behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if isinstance(request, Undecodable):
                yield from behaviour(request, context)
                return
            streams = self.streams
            if streams is None or not streams.acquire(blocking=False):
                RPC_REQUESTS.labels(method, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
                abort(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    STREAMS_FULL if streams is not None else NO_STREAMS,
                )
            try:
                with self._call(method, context, observe_latency=False):
                    yield from behaviour(request, context)
            finally:
                streams.release()

        return handle

    @contextmanager
    def _call(self, method: str, context: grpc.ServicerContext, *, observe_latency: bool) -> Iterator[None]:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        token = None
        call = None
        try:
            call = self._authenticate(method, context)
            token = open_call(call)
            yield
            log.debug("rpc ok", duration_ms=round((time.perf_counter() - started) * 1000, 2))
        except JobSchedulerError as e:
            code = status_code_for(e)
            if code is grpc.StatusCode.UNAVAILABLE and not isinstance(e, NodeUnavailableError):
                self.on_unavailable()
            log.info("rpc failed", code=code.name, error=str(e))
            abort_with(context, e)
        except Exception:
            code = grpc.StatusCode.INTERNAL
            incident = uuid.uuid4().hex[:12]
            log.exception("rpc crashed", incident=incident)
            abort(context, code, f"internal error (incident {incident}); see the service logs")
        finally:
            if token is not None:
                close_call(token)
            child(RPC_REQUESTS, method, code.name).inc()
            if observe_latency:
                child(RPC_DURATION, method).observe(time.perf_counter() - started)
            if method in MUTATING_METHODS:
                who = call.who if call is not None else identity_of(context, None)
                record_call(self.audit, method=method, who=who, code=code)
            structlog.contextvars.clear_contextvars()

    def _authenticate(self, method: str, context: grpc.ServicerContext) -> Call:
        deadline = deadline_of(context)
        if self.authorizer is None:
            return Call(
                method=method,
                caller=peer_host(context.peer()),
                deadline=deadline,
                identity=identity_of(context, None),
            )
        grant = self.authorizer.authenticate(context.invocation_metadata())
        # The token's name, never the token: every line the call logs says who made it.
        structlog.contextvars.bind_contextvars(caller=grant.name)
        return Call(
            method=method,
            caller=grant.name,
            deadline=deadline,
            grant=grant,
            authorizer=self.authorizer,
            identity=identity_of(context, grant),
        )
