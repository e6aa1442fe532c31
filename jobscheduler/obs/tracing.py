"""OpenTelemetry traces: the tracer provider that exports the RPCs' server spans over OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT is set, and the current span's W3C trace context for the job and
the audit log.

Off (no endpoint), nothing is set up: no SDK is imported, no interceptor is installed, and
the current span is OpenTelemetry's invalid one, so trace ids and traceparents are empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def current_trace_id() -> str:
    """The trace id of the current span (32 hex digits); empty outside a sampled trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def current_traceparent() -> str:
    """The current span as a W3C traceparent (`00-<trace id>-<span id>-<flags>`), for a job
    created under it; empty without a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return (
        f"00-{trace.format_trace_id(context.trace_id)}-{trace.format_span_id(context.span_id)}"
        f"-{int(context.trace_flags):02x}"
    )


def tracer_provider(
    endpoint: str | None, *, service_name: str, sampler: str, sampler_arg: float
) -> TracerProvider | None:
    """A provider exporting over OTLP/gRPC in batches to `endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT),
    sampling as OTEL_TRACES_SAMPLER says; None without an endpoint (tracing off)."""
    if not endpoint:
        return None
    # Imported here: with tracing off the SDK and the exporter are never loaded.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=_sampler(sampler, sampler_arg),
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://")))
    )
    return provider


def _sampler(name: str, arg: float) -> Any:
    from opentelemetry.sdk.trace import sampling

    root = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(arg),
    }
    if name.startswith("parentbased_"):
        return sampling.ParentBased(root[name.removeprefix("parentbased_")])
    return root[name]
