"""Consumer side of the channel layer: strip the carrier, trace the handler.

Used by the traced consumers, by plain Channels consumers once
:class:`~otel_channels.instrumentation.ChannelsInstrumentor` is on, and by the
SSE hub. One ``process {group}`` CONSUMER span per handled message:

* ``GROUP_MESSAGE_PARENT="producer"`` (default): child of the producer span
  and linked to it, so a fan-out stays in one trace;
* ``"link"``: a new trace, linked to the producer.

Either way it also links the consumer's ``connect`` span when there is one.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.exceptions import AcceptConnection, DenyConnection, StopConsumer
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from . import _carrier, _sampling, _telemetry
from . import _semconv as sc
from ._names import group_template
from .conf import get_config

#: ASGI event types that come from the client, never from the channel layer.
CLIENT_EVENT_TYPES = frozenset({
    "websocket.connect", "websocket.receive", "websocket.disconnect",
    "http.request", "http.disconnect", "lifespan.startup", "lifespan.shutdown",
})


@functools.lru_cache(maxsize=1024)
def _metric_attributes(template: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        sc.MESSAGING_SYSTEM: sc.SYSTEM_CHANNELS,
        sc.MESSAGING_OPERATION_TYPE: "process",
    }
    if template is not None:
        attributes[sc.MESSAGING_DESTINATION_TEMPLATE] = template
    return attributes


class Delivery:
    """What the carrier of one received channel-layer message says."""

    __slots__ = ("message", "carrier", "group", "template", "producer", "sent_at", "attributes")

    def __init__(self, message: dict[str, Any], config: dict[str, Any]) -> None:
        self.message, self.carrier = _carrier.detach(message, config["CARRIER_KEY"])
        self.group = _carrier.destination(self.carrier)
        self.template = group_template(self.group, config["GROUP_TEMPLATE"]) if self.group else None
        self.producer = _carrier.remote_context(self.carrier)
        self.sent_at = _carrier.sent_at(self.carrier)
        # Low cardinality, shared per template (read-only): also the metric attributes.
        self.attributes = _metric_attributes(self.template)

    @property
    def keep(self) -> bool:
        """Follow the producer's decision; untraced producers get a fresh draw."""
        if self.producer is not None:
            return self.producer.trace_flags.sampled
        return _sampling.draw(get_config()["MESSAGE_SAMPLE_RATE"])

    def record_receipt(self, telemetry: _telemetry.Telemetry, sampled: bool = True) -> None:
        """Count the message; its delivery latency too when it is sampled."""
        telemetry.consumed_messages.cell_for(self.template, self.attributes)[0] += 1
        if sampled and self.sent_at is not None:
            delay = max(0.0, time.time() - self.sent_at)
            telemetry.delivery_duration.record(delay, self.attributes)

    def start_span(
        self,
        telemetry: _telemetry.Telemetry,
        config: dict[str, Any],
        extra_links: Sequence[SpanContext] = (),
        attributes: dict[str, Any] | None = None,
    ) -> trace.Span:
        links = [Link(self.producer)] if self.producer is not None else []
        links.extend(Link(ctx) for ctx in extra_links if ctx is not None and ctx.is_valid)
        if self.producer is not None and config["GROUP_MESSAGE_PARENT"] == "producer":
            parent = trace.set_span_in_context(
                trace.NonRecordingSpan(self.producer), otel_context.Context()
            )
        else:
            parent = otel_context.Context()  # a new trace
        span_attributes = {**self.attributes, sc.MESSAGING_OPERATION_NAME: "process"}
        if self.group is not None:
            span_attributes[sc.MESSAGING_DESTINATION_NAME] = self.group
        else:
            span_attributes[sc.MESSAGING_DESTINATION_TEMPORARY] = True
        message_type = self.message.get("type")
        if isinstance(message_type, str):
            span_attributes[sc.CHANNELS_MESSAGE_TYPE] = message_type[:256]
        if self.sent_at is not None:
            span_attributes[sc.CHANNELS_DELIVERY_DELAY] = max(0.0, time.time() - self.sent_at)
        if attributes:
            span_attributes.update(attributes)
        # One attributes dict at start (not set_attribute calls): one lock, one pass.
        return telemetry.tracer.start_span(
            f"process {self.template}" if self.template else "process",
            context=parent, kind=SpanKind.CONSUMER, links=links, attributes=span_attributes,
        )


def has_handler(consumer: Any, message: dict[str, Any]) -> bool:
    message_type = message.get("type")
    if not isinstance(message_type, str):
        return False
    name = message_type.replace(".", "_")
    return not name.startswith("_") and getattr(consumer, name, None) is not None


async def process(
    consumer: Any,
    message: dict[str, Any],
    dispatch: Callable[[dict[str, Any]], Awaitable[Any]],
    connect_context: SpanContext | None = None,
    holder: Any = None,
) -> Any:
    """Handle one channel-layer ``message`` with ``dispatch`` inside a ``process`` span.

    ``holder`` (a traced connection) gets the span as ``active_span`` while the
    handler runs, so its outbound frames find it without a context lookup.
    """
    config = get_config()
    telemetry = _telemetry.get()
    if not telemetry.active() and config["UNKNOWN_MESSAGE_POLICY"] == "raise":
        # No SDK installed: only make sure the carrier never reaches the handler.
        key = config["CARRIER_KEY"]
        return await dispatch(_carrier.detach(message, key)[0] if key in message else message)
    delivery = Delivery(message, config)
    keep = delivery.keep
    delivery.record_receipt(telemetry, keep)
    if config["UNKNOWN_MESSAGE_POLICY"] == "drop" and not has_handler(consumer, delivery.message):
        # Channels would raise ValueError and kill this consumer (and, for a group
        # message, every consumer in the group): record, count, drop instead.
        telemetry.dropped_messages.add(1, {**delivery.attributes, sc.ERROR_TYPE: "unknown_type"})
        span = delivery.start_span(telemetry, config, (connect_context,) if connect_context else ())
        if span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, "unknown_type")
            span.set_status(Status(StatusCode.ERROR, "no handler for message type"))
        span.end()
        return None

    if not keep:
        # Not sampled: no span and no duration histograms, only the count above.
        token = otel_context.attach(_sampling.DROPPED_CONTEXT)
        if holder is not None:
            holder.active_span = _sampling.DROPPED_SPAN
        try:
            return await dispatch(delivery.message)
        finally:
            otel_context.detach(token)
            if holder is not None:
                holder.active_span = None

    span = delivery.start_span(telemetry, config, (connect_context,) if connect_context else ())
    start = time.perf_counter()
    if holder is not None:
        holder.active_span = span
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            return await dispatch(delivery.message)
    except BaseException as exc:
        record_exception(span, exc)
        raise
    finally:
        if holder is not None:
            holder.active_span = None
        telemetry.process_duration.record(time.perf_counter() - start, delivery.attributes)
        span.end()


#: Exceptions Channels uses for control flow: never errors.
_CONTROL_FLOW = (StopConsumer, AcceptConnection, DenyConnection, asyncio.CancelledError,
                 GeneratorExit)


def record_exception(span: trace.Span, exc: BaseException) -> None:
    """Record ``exc`` on ``span`` unless it is Channels' control flow."""
    if isinstance(exc, _CONTROL_FLOW) or not span.is_recording():
        return
    span.record_exception(exc)
    span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
