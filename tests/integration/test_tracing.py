"""Traces from the caller into the job, against a real OTLP receiver (Jaeger, hack/jaeger.py)
and the real cluster: the caller's client span (OpenTelemetry SDK and gRPC client
instrumentation, exporting to Jaeger) is the parent of the service's ScheduleJob server span,
whose traceparent the Job's annotation, JobStatus and the pod's TRACEPARENT env carry."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from hack.jaeger import Jaeger
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.domain.audit import TRACEPARENT_ANNOTATION
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import ServeProcess
from tests.integration.test_dependencies import timer
from tests.integration.test_security import serving

CLIENT_SERVICE = "tracing-test-client"


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with Jaeger() as running:
        yield running


@pytest.fixture
def client_tracing(jaeger: Jaeger) -> Iterator[TracerProvider]:
    """The caller's SDK, exporting each span to Jaeger as it ends."""
    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT_SERVICE}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_endpoint, insecure=True))
    )
    yield provider
    provider.shutdown()


def traced_stub(
    server: ServeProcess, provider: TracerProvider
) -> tuple[grpc.Channel, pb_grpc.JobSchedulerStub]:
    channel = intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{server.port}"), client_interceptor(tracer_provider=provider)
    )
    return channel, pb_grpc.JobSchedulerStub(channel)


def tracing_env(jaeger: Jaeger, service_name: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's batch delay (ms): spans reach Jaeger soon
    }


def pod_env(cluster: Cluster, namespace: str, job_id: str) -> dict[str, str]:
    """The env of the Job's first pod (kwok runs no container, but the pod's spec carries it)."""
    core = client.CoreV1Api(cluster.api)

    def pod() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job_id}").items
        return pods[0] if pods else None

    found = wait_until(f"a pod of {job_id}", pod, timeout=30)
    return {e.name: e.value for e in found.spec.containers[0].env or [] if e.value is not None}


def job_annotations(cluster: Cluster, namespace: str, job_id: str) -> dict[str, str]:
    job = client.BatchV1Api(cluster.api).read_namespaced_job(job_id, namespace)
    return dict(job.metadata.annotations or {})


def parent_of(span: dict[str, Any]) -> str:
    refs = [r for r in span.get("references") or [] if r.get("refType") == "CHILD_OF"]
    return str(refs[0]["spanID"]) if refs else ""


def test_one_trace_links_the_client_span_to_the_pods_traceparent(
    cluster: Cluster, namespace: str, tmp_path: Path, jaeger: Jaeger, client_tracing: TracerProvider
) -> None:
    service_name = f"jobscheduler-{secrets.token_hex(3)}"
    with serving(cluster, tmp_path, K8S_NAMESPACE=namespace, **tracing_env(jaeger, service_name)) as server:
        channel, stub = traced_stub(server, client_tracing)
        with client_tracing.get_tracer("test").start_as_current_span("caller") as caller:
            reply = stub.ScheduleJob(timer(namespace, "traced"), timeout=15)
        channel.close()
        trace_id = format(caller.get_span_context().trace_id, "032x")
        spans = jaeger.wait_spans(trace_id, count=3)
        by_service = {(s["serviceName"], s["operationName"]): s for s in spans}
        client_span = by_service[(CLIENT_SERVICE, "/jobscheduler.JobScheduler/ScheduleJob")]
        server_span = by_service[(service_name, "/jobscheduler.JobScheduler/ScheduleJob")]
        # caller -> the client instrumentation's span -> the service's server span
        assert parent_of(client_span) == format(caller.get_span_context().span_id, "016x")
        assert parent_of(server_span) == client_span["spanID"]
        expected = reply.status.traceparent
        # The server span, sampled (W3C level 2 may add the random-trace-id flag, 0x02).
        assert expected.startswith(f"00-{trace_id}-{server_span['spanID']}-")
        assert int(expected.rsplit("-", 1)[1], 16) & 1
        assert job_annotations(cluster, namespace, reply.job_id)[TRACEPARENT_ANNOTATION] == expected
        assert pod_env(cluster, namespace, reply.job_id)["TRACEPARENT"] == expected


def test_without_trace_context_from_the_caller_a_new_trace_starts(
    cluster: Cluster, namespace: str, tmp_path: Path, jaeger: Jaeger
) -> None:
    service_name = f"jobscheduler-{secrets.token_hex(3)}"
    with (
        serving(cluster, tmp_path, K8S_NAMESPACE=namespace, **tracing_env(jaeger, service_name)) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        reply = pb_grpc.JobSchedulerStub(channel).ScheduleJob(timer(namespace, "untraced"), timeout=15)
        _, trace_id, span_id, flags = reply.status.traceparent.split("-")
        assert int(flags, 16) & 1  # sampled
        [root] = jaeger.wait_spans(trace_id, count=1)
        assert root["serviceName"] == service_name
        assert root["spanID"] == span_id
        assert parent_of(root) == ""  # the root of a trace of its own
        assert pod_env(cluster, namespace, reply.job_id)["TRACEPARENT"] == reply.status.traceparent


def test_with_no_endpoint_configured_nothing_is_exported(
    cluster: Cluster, namespace: str, tmp_path: Path, jaeger: Jaeger, client_tracing: TracerProvider
) -> None:
    service_name = f"jobscheduler-{secrets.token_hex(3)}"
    with serving(cluster, tmp_path, K8S_NAMESPACE=namespace, OTEL_SERVICE_NAME=service_name) as server:
        channel, stub = traced_stub(server, client_tracing)
        with client_tracing.get_tracer("test").start_as_current_span("caller") as caller:
            reply = stub.ScheduleJob(timer(namespace, "tracing-off"), timeout=15)
        channel.close()
        trace_id = format(caller.get_span_context().trace_id, "032x")
        spans = jaeger.wait_spans(trace_id, count=2)
        env = pod_env(cluster, namespace, reply.job_id)
    assert {s["serviceName"] for s in spans} == {CLIENT_SERVICE}  # only the caller's own spans
    assert service_name not in jaeger.services()
    assert reply.status.traceparent == ""
    assert TRACEPARENT_ANNOTATION not in job_annotations(cluster, namespace, reply.job_id)
    assert "TRACEPARENT" not in env
