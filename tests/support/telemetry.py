"""One session-wide TracerProvider / MeterProvider with in-memory readers, and lookups.

The global providers can be set only once per process, so importing this module
sets them (tests/conftest.py imports it first); the ``spans`` fixture clears the
exporter for each test and ``metric_reader`` collects once up front so every test
sees only its own deltas.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SPAN_EXPORTER = InMemorySpanExporter()
_TRACER_PROVIDER = TracerProvider()
_TRACER_PROVIDER.add_span_processor(SimpleSpanProcessor(SPAN_EXPORTER))
trace.set_tracer_provider(_TRACER_PROVIDER)

_DELTA = AggregationTemporality.DELTA
METRIC_READER = InMemoryMetricReader(preferred_temporality={
    Counter: _DELTA, UpDownCounter: _DELTA, Histogram: _DELTA, ObservableCounter: _DELTA,
    ObservableUpDownCounter: _DELTA, ObservableGauge: _DELTA,
})
metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER]))


class Spans:
    """Finished spans of the current test, with lookups by name."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [span.name for span in self.all()])
        return found[0]

    def names(self) -> list[str]:
        return [span.name for span in self.all()]

    def clear(self) -> None:
        self.exporter.clear()


class Metrics:
    """Delta metric points collected since the fixture started (or last ``collect``)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader
        self.points: dict[str, list[Any]] = {}

    def collect(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        if data is not None:
            for resource_metrics in data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        # Observed counters report every attribute set they ever saw;
                        # a zero delta says nothing about this test, so leave it out.
                        points = [p for p in metric.data.data_points
                                  if getattr(p, "value", None) != 0]
                        self.points.setdefault(metric.name, []).extend(points)
        return self.points

    def sum(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's deltas whose attributes include ``attributes``."""
        self.collect()
        return sum(
            point.value for point in self.points.get(name, [])
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )

    def count(self, name: str, **attributes: Any) -> int:
        """Number of recordings of a histogram whose attributes include ``attributes``."""
        self.collect()
        return sum(
            point.count for point in self.points.get(name, [])
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )

    def total(self, name: str, **attributes: Any) -> float:
        """Sum of the values recorded by a histogram whose attributes include ``attributes``."""
        self.collect()
        return sum(
            point.sum for point in self.points.get(name, [])
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )

    def attributes(self, name: str) -> list[dict[str, Any]]:
        self.collect()
        return [dict(point.attributes) for point in self.points.get(name, [])]

