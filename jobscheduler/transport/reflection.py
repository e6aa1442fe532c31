"""Server reflection that current clients can use without a protoset: grpcurl, and ghz, which
answered "Symbol not found" for every method, health included.

Two gaps of grpcio-reflection are closed here. It resolves a symbol with the descriptor
pool's FindFileContainingSymbol, which finds services and messages but not methods: ghz asks
for the file of the method (`jobscheduler.JobScheduler.GetJobStatus`), grpcurl for that of
the service, so only grpcurl worked; a method's symbol is answered here with its service's
file. And it serves `grpc.reflection.v1alpha` only, while current clients speak
`grpc.reflection.v1` first: v1 is the same protocol under another package name (same fields
and numbers), so the one servicer answers both, v1 calls decoded with the v1alpha classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _add_v1_descriptor() -> None:
    """The v1 service and messages in the default pool, so that reflection can describe
    itself under both names (a client listing services may ask for either)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    pool.Add(proto)


class MethodAwareReflection(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, which also finds the file of a method's full name."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        base: Any = super()
        return base._file_containing_symbol(request, _symbol_with_a_file(fully_qualified_name))


def _symbol_with_a_file(name: str) -> str:
    """`name`, or the service of a method's full name (the pool finds no file for a method)."""
    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):
        pool.FindFileContainingSymbol(name)
        return name
    service, _, method = name.rpartition(".")
    with contextlib.suppress(KeyError):
        if service and method in pool.FindServiceByName(service).methods_by_name:
            return service
    return name


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serves reflection for `service_names` (and for itself) under v1alpha and v1."""
    _add_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = MethodAwareReflection(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
