"""The gRPC face of the service: server wiring, interceptors (authentication, logging, metrics,
error mapping), one servicer per RPC group, and proto <-> domain conversion.

Contract: the only package that imports grpc (besides the CLI); it decodes, calls a use case
in jobscheduler.app, and encodes. No Kubernetes knowledge lives here.
"""
