"""OpenTelemetry set-up: one trace per mail, propagated by FastStream's NATS middleware."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def setup_tracing(
    service: str, otlp_endpoint: str | None, extra: SpanExporter | None = None
) -> TracerProvider:
    """A tracer provider for this service; exports OTLP when an endpoint is configured.

    ``extra`` adds another exporter (tests use an in-memory one).
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    if extra is not None:
        provider.add_span_processor(BatchSpanProcessor(extra))
    trace.set_tracer_provider(provider)
    return provider
