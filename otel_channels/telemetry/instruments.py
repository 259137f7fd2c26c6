"""The tracer and metric instruments every part of otel_channels records with.

By default they come from the global providers (so the traced consumers work
without the app installed); ``ChannelsInstrumentor().instrument(
tracer_provider=..., meter_provider=...)`` swaps in explicit providers.
Instruments are created once per provider, never on the hot path.

Counters hit on every frame and every delivery are :class:`LocalCounter` objects:
an integer cell per attribute set, bumped in place, reported to the SDK by an
asynchronous (observable) counter callback at collection time. An SDK
``Counter.add`` costs about 10 us here (attribute cleaning and hashing per
call); a cell bump costs ~50 ns, with the same exported data (a monotonic
cumulative sum per attribute set).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .. import __version__
from . import semconv as sc

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
#: Bucket boundaries (s) of connection durations, the clients' too.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 86400)
#: Bucket boundaries (bytes) of message sizes, the clients' too.
SIZE_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class LocalCounter:
    """A monotonic counter kept in process and observed at collection time."""

    def __init__(self, meter: metrics.Meter, name: str, unit: str, description: str) -> None:
        self._cells: dict[tuple[tuple[str, Any], ...], list[int]] = {}
        self._by_key: dict[Any, list[int]] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def cell(self, attributes: Mapping[str, Any]) -> list[int]:
        """The mutable ``[count]`` for one attribute set: ``cell[0] += 1`` on hot paths."""
        key = tuple(sorted(attributes.items()))
        found = self._cells.get(key)
        if found is None:
            with self._lock:
                found = self._cells.setdefault(key, [0])
        return found

    def cell_for(self, key: Any, attributes: Mapping[str, Any]) -> list[int]:
        """Like :meth:`cell`, looked up by a cheap caller-chosen ``key`` (e.g. a template)."""
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = self.cell(attributes)
        return found

    def add(self, amount: int, attributes: Mapping[str, Any]) -> None:
        self.cell(attributes)[0] += amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        for key, cell in list(self._cells.items()):
            yield Observation(cell[0], dict(key))


class Telemetry:
    """A tracer plus the metric instruments of docs/metrics.md."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._active = False
        self._checked_at = -1.0
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
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.websocket_messages = LocalCounter(
            meter, sc.M_WEBSOCKET_MESSAGES, "{message}", "WebSocket frames received and sent.",
        )
        self.websocket_message_size = meter.create_histogram(
            sc.M_WEBSOCKET_MESSAGE_SIZE, unit="By",
            description="Size of WebSocket frames.",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )
        self.sent_messages = LocalCounter(
            meter, sc.M_SENT_MESSAGES, "{message}",
            "Messages sent to the channel layer (send / group_send).",
        )
        self.operation_duration = meter.create_histogram(
            sc.M_OPERATION_DURATION, unit="s",
            description="Duration of channel-layer send / group_send calls.",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.consumed_messages = LocalCounter(
            meter, sc.M_CONSUMED_MESSAGES, "{message}",
            "Channel-layer messages received by consumers and SSE hubs.",
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
        self.sse_events = LocalCounter(
            meter, sc.M_SSE_EVENTS, "{event}", "Server-Sent Events written to streams.",
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
        self.subscriptions_lost = meter.create_counter(
            sc.M_SUBSCRIPTIONS_LOST, unit="{subscription}",
            description="Pub/sub group subscriptions lost and re-made (messages between lost).",
        )


    def active(self) -> bool:
        """False while neither a tracer nor a meter provider is installed (API no-ops).

        Then otel_channels does no per-message work at all beyond stripping
        carriers. Once a provider appears (the SDK may be installed after start-up)
        it stays True: providers are never uninstalled.
        """
        if self._active:
            return True
        # Without a provider every get_*_provider() call reads os.environ: look again
        # at most once a second, so an SDK installed late is still picked up.
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return False
        self._checked_at = now
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or metrics.get_meter_provider()
        self._active = not (
            type(tracer_provider).__name__ in _NO_OP_PROVIDERS
            and type(meter_provider).__name__ in _NO_OP_PROVIDERS
        )
        return self._active


_NO_OP_PROVIDERS = frozenset({
    "ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider",
})

_current: Telemetry | None = None

#: One Telemetry per provider pair (None: the global ones), reused across
#: uninstrument + instrument. The SDK ignores the callbacks of a duplicate
#: observable instrument, so a fresh Telemetry on the same meter would bump
#: LocalCounter cells that nobody observes: its counters would vanish.
_by_providers: dict[tuple[Any, Any], Telemetry] = {}


def _for(tracer_provider: Any, meter_provider: Any) -> Telemetry:
    key = (tracer_provider, meter_provider)
    found = _by_providers.get(key)
    if found is None:
        found = _by_providers[key] = Telemetry(tracer_provider, meter_provider)
    return found


def get() -> Telemetry:
    """The active :class:`Telemetry` (global providers unless instrumented with others)."""
    global _current
    if _current is None:
        _current = _for(None, None)
    return _current


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> Telemetry:
    """Use these providers from now on (``None``: the global ones)."""
    global _current
    _current = _for(tracer_provider, meter_provider)
    return _current


def reset() -> None:
    global _current
    _current = None


@functools.lru_cache(maxsize=2048)
def metric_attributes(operation_type: str, template: str | None,
                      operation_name: str | None = None) -> dict[str, Any]:
    """Shared, read-only attributes of a layer operation's metrics: a ``group_send`` /
    ``send`` (``operation_type`` send, with its ``operation_name``) or a consumed
    message (process) to or from the group ``template`` (None: one channel)."""
    attributes: dict[str, Any] = {sc.MESSAGING_SYSTEM: sc.SYSTEM_CHANNELS}
    if operation_name is not None:
        attributes[sc.MESSAGING_OPERATION_NAME] = operation_name
    attributes[sc.MESSAGING_OPERATION_TYPE] = operation_type
    if template is not None:
        attributes[sc.MESSAGING_DESTINATION_TEMPLATE] = template
    return attributes
