"""How the JobScheduler service is registered on a grpc server: every method of the .proto,
each answered by the servicer group that implements it, with request bytes that do not parse
refused as INVALID_ARGUMENT (grpc's own answer would be INTERNAL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from jobscheduler.api import scheduler_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobScheduler"].full_name


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What arrived instead of a request message: bytes that do not parse as it."""

    message: str
    error: str


def _decoder(cls: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as e:  # DecodeError, or a string field that is not UTF-8
            return Undecodable(cls.DESCRIPTOR.name, type(e).__name__)

    return decode


def _refusing_undecodable(method: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {request.message} message ({request.error})",
            )
        return method(request, context)

    return handle


def add_service(methods: Callable[[str], Callable[..., Any]], server: grpc.Server) -> None:
    """Registers the JobScheduler methods as the generated code would, each method's behaviour
    given by `methods(name)`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in pb.DESCRIPTOR.services_by_name["JobScheduler"].methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            _refusing_undecodable(methods(method.name)),
            request_deserializer=_decoder(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
