"""The tracer and metric instruments every part of otel_channels records with.

By default they come from the global providers (so the traced consumers work
without the app installed); ``ChannelsInstrumentor().instrument(
tracer_provider=..., meter_provider=...)`` swaps in explicit providers.
Instruments are created once per provider, never on the hot path.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace

from . import __version__
from . import _semconv as sc

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
_DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 86400)
_SIZE_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class Telemetry:
    """A tracer plus the metric instruments of DESIGN.md's metric table."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(
            sc.INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            sc.INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider
        )
        self.meter = meter
        self.active_connections = meter.create_up_down_counter(
            sc.M_ACTIVE_CONNECTIONS, unit="{connection}",
            description="Open WebSocket and SSE connections.",
        )
        self.connection_duration = meter.create_histogram(
            sc.M_CONNECTION_DURATION, unit="s",
            description="Duration of accepted WebSocket / SSE connections.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.websocket_messages = meter.create_counter(
            sc.M_WEBSOCKET_MESSAGES, unit="{message}",
            description="WebSocket frames received and sent.",
        )
        self.websocket_message_size = meter.create_histogram(
            sc.M_WEBSOCKET_MESSAGE_SIZE, unit="By",
            description="Size of WebSocket frames.",
            explicit_bucket_boundaries_advisory=_SIZE_BUCKETS,
        )
        self.sent_messages = meter.create_counter(
            sc.M_SENT_MESSAGES, unit="{message}",
            description="Messages sent to the channel layer (send / group_send).",
        )
        self.operation_duration = meter.create_histogram(
            sc.M_OPERATION_DURATION, unit="s",
            description="Duration of channel-layer send / group_send calls.",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.consumed_messages = meter.create_counter(
            sc.M_CONSUMED_MESSAGES, unit="{message}",
            description="Channel-layer messages received by consumers and SSE hubs.",
        )
        self.process_duration = meter.create_histogram(
            sc.M_PROCESS_DURATION, unit="s",
            description="Time spent handling one channel-layer message.",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.delivery_duration = meter.create_histogram(
            sc.M_DELIVERY_DURATION, unit="s",
            description="From the producer's send to the start of the handler.",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.sse_events = meter.create_counter(
            sc.M_SSE_EVENTS, unit="{event}", description="Server-Sent Events written to streams.",
        )
        self.sse_replay = meter.create_counter(
            sc.M_SSE_REPLAY, unit="{request}",
            description="Last-Event-ID resumptions, by outcome (hit / miss).",
        )
        self.sse_dropped = meter.create_counter(
            sc.M_SSE_DROPPED, unit="{event}",
            description="Events not delivered to a slow SSE stream.",
        )
        self.dropped_messages = meter.create_counter(
            sc.M_DROPPED_MESSAGES, unit="{message}",
            description="Frames or channel-layer messages dropped by a protective policy.",
        )


_current: Telemetry | None = None


def get() -> Telemetry:
    """The active :class:`Telemetry` (global providers unless instrumented with others)."""
    global _current
    if _current is None:
        _current = Telemetry()
    return _current


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> Telemetry:
    """Use these providers from now on (``None``: the global ones)."""
    global _current
    _current = Telemetry(tracer_provider, meter_provider)
    return _current


def reset() -> None:
    global _current
    _current = None
