"""SDK set-up for worker processes started without ``opentelemetry-instrument``.

Uses only the standard ``OTEL_*`` variables (exporter endpoint, service name,
intervals); does nothing when a real provider is already installed (zero-code
runs) or when no OTLP endpoint is configured.
"""

import os

from opentelemetry import metrics, trace


def configure() -> None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    if type(trace.get_tracer_provider()).__name__ != "ProxyTracerProvider":
        return  # opentelemetry-instrument already configured the SDK
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
    ))
