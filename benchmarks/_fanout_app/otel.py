"""OpenTelemetry SDK set-up of the benchmark workers (``FANOUT_SDK=1``), and their counters.

Spans go through a ``BatchSpanProcessor`` (what production uses) into either
an exporter that counts and discards them (``FANOUT_EXPORTER=discard``, the
default: the benchmark measures the instrumentation, not protobuf encoding)
or the real OTLP/HTTP exporter (``FANOUT_EXPORTER=otlp``, endpoint from the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT``). Metrics: a periodic reader every
``FANOUT_METRIC_INTERVAL`` ms, so collection runs during the measurement.

The counting exporter sees every span either way and counts them by the
first word of the name (``process``, ``deliver``, ``group_send``,
``receive``, anything else under ``other``): :func:`stats` reports them.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics, trace

_state: dict[str, Any] = {"spans": 0, "metric_exports": 0, "provider": None,
                          "gc_seconds": 0.0, "gc_full": 0, "gc_full_seconds": 0.0,
                          "gc_young": 0, "gc_started": 0.0}
#: Span name prefixes counted separately; any other span counts under ``other``.
SPAN_KINDS = ("process", "deliver", "group_send", "receive")
_by_name: dict[str, int] = dict.fromkeys((*SPAN_KINDS, "other"), 0)


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    """Time spent in the cyclic garbage collector (allocation-heavy code pays it later)."""
    if phase == "start":
        _state["gc_started"] = time.perf_counter()
    else:
        spent = time.perf_counter() - _state["gc_started"]
        _state["gc_seconds"] += spent
        if info.get("generation") == 2:
            _state["gc_full"] += 1
            _state["gc_full_seconds"] += spent
        else:
            _state["gc_young"] += 1


gc.callbacks.append(_gc_timer)


def configure() -> None:
    """Install SDK providers when ``FANOUT_SDK=1``; otherwise leave the API's no-op ones."""
    if os.environ.get("FANOUT_SDK") != "1":
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    otlp = os.environ.get("FANOUT_EXPORTER") == "otlp"

    class CountingSpanExporter(SpanExporter):
        """Counts spans, then hands them to the OTLP exporter or drops them."""

        def __init__(self, inner: SpanExporter | None) -> None:
            self.inner = inner

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            _state["spans"] += len(spans)
            for span in spans:  # the export thread, not the measured hot path
                prefix = span.name.split(" ", 1)[0]
                _by_name[prefix if prefix in _by_name else "other"] += 1
            return self.inner.export(spans) if self.inner else SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            if self.inner:
                self.inner.shutdown()

    class CountingMetricExporter(MetricExporter):
        """Counts collections, then hands them to the OTLP exporter or drops them."""

        def __init__(self, inner: MetricExporter | None) -> None:
            super().__init__()
            self.inner = inner

        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                   **kwargs: Any) -> MetricExportResult:
            _state["metric_exports"] += 1
            if self.inner:
                return self.inner.export(metrics_data, timeout_millis=timeout_millis)
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            if self.inner:
                self.inner.shutdown()

    span_inner: SpanExporter | None = None
    metric_inner: MetricExporter | None = None
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_inner, metric_inner = OTLPSpanExporter(), OTLPMetricExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "fanout")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(CountingSpanExporter(span_inner)))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    interval = int(os.environ.get("FANOUT_METRIC_INTERVAL", "5000"))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[
        PeriodicExportingMetricReader(CountingMetricExporter(metric_inner),
                                      export_interval_millis=interval),
    ]))


def stats() -> dict[str, Any]:
    """Spans exported so far (after flushing the batch queue) and this process's CPU time."""
    provider = _state["provider"]
    if provider is not None:
        provider.force_flush()
    times = os.times()
    return {
        "pid": os.getpid(),
        "spans": _state["spans"],
        "spans_by_name": dict(_by_name),
        "metric_exports": _state["metric_exports"],
        "cpu": times.user + times.system,
        "gc_seconds": _state["gc_seconds"],
        "gc_full": _state["gc_full"],
        "gc_full_seconds": _state["gc_full_seconds"],
        "gc_young": _state["gc_young"],
    }
