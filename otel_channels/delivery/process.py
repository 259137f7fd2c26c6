"""Consumer side of the channel layer: strip the carrier, trace the handler.

Used by the traced consumers, by plain Channels consumers once
:class:`~otel_channels.instrumentation.ChannelsInstrumentor` is on, and by the
SSE hub. A handled message is a ``process {group}`` CONSUMER span:

* ``GROUP_MESSAGE_PARENT="producer"`` (default): child of the producer span,
  so a fan-out stays in one trace (no link to it too: it would repeat the parent);
* ``"link"``: a new trace, linked to the producer.

Either way it also links the consumer's ``connect`` span when there is one.

Per broadcast and worker only ``MAX_PROCESS_SPANS_PER_BROADCAST`` sampled
deliveries get that span; the rest run untraced and are tallied
(:mod:`.fanout`), except failed or slow ones, which get their span after the
fact. ``messaging.client.consumed.messages`` counts every delivery; the
duration histograms (``messaging.process.duration``,
``channels.message.delivery.duration``) get one point per sampled message
per worker: its first delivery there (an SSE hub receipt is one), whatever the
budget. An SDK histogram record costs about a quarter of a delivery, so one
per member would double the cost of a fan-out.

Hot path: nothing here allocates a container for a delivery that is not
sampled: the carrier-less copy of a message is made once per received dict
(channels-redis hands one dict to every member on a worker, see
:func:`._carrier.strip`), and the record of the broadcast
(:class:`._fanout.Broadcast`) holds everything prepared once. A delivery past
the budget adds one coroutine frame, which times the handler.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ..conf import Config, get_config
from ..telemetry import carrier as _carrier
from ..telemetry import instruments as _telemetry
from ..telemetry import sampling as _sampling
from ..telemetry import semconv as sc
from ..telemetry.spans import CONTROL_FLOW, record_exception
from .fanout import TABLE, Broadcast

#: A consumer's dispatch: Channels' own, bound to the consumer.
Dispatch = Callable[[dict[str, Any]], Awaitable[Any]]


class HandlerScope(Protocol):
    """What :func:`process` uses of a traced connection (``websocket.connection.Connection``)
    to handle a message in: its settings and instruments, whether it is traced at all, the
    link to its ``connect`` span, and the span its outbound frames attach to."""

    config: Config
    telemetry: _telemetry.Telemetry
    #: An SDK is installed; ``off``: the connection's rate is 0 (no span of its own).
    active: bool
    off: bool
    connect_link: Link | None
    connect_links: tuple[Link, ...] | None
    #: The span being handled, and the shared unsampled one between spans.
    active_span: trace.Span | None
    idle_span: trace.Span | None

#: ASGI event types that come from the client, never from the channel layer.
CLIENT_EVENT_TYPES = frozenset({
    "websocket.connect", "websocket.receive", "websocket.disconnect",
    "http.request", "http.disconnect", "lifespan.startup", "lifespan.shutdown",
})

_set_span_in_context = trace.set_span_in_context
_attach, _detach = otel_context.attach, otel_context.detach
_DROPPED_SPAN = _sampling.DROPPED_SPAN
_DROPPED_CONTEXT = _sampling.DROPPED_CONTEXT
_time_ns = time.time_ns
_RECORDS = TABLE.records
_strip, _STRIPPED = _carrier.strip, _carrier._stripped
_ABSENT: Any = object()


def has_handler(consumer: Any, message: dict[str, Any]) -> bool:
    message_type = message.get("type")
    if not isinstance(message_type, str):
        return False
    name = message_type.replace(".", "_")
    return not name.startswith("_") and getattr(consumer, name, None) is not None


def process(
    consumer: Any,
    message: dict[str, Any],
    dispatch: Dispatch,
    holder: HandlerScope | None = None,
) -> Awaitable[Any]:
    """The awaitable that handles one channel-layer ``message`` with ``dispatch``.

    ``holder`` is a traced connection: its config, telemetry and ``connect``
    link are used, and it gets the span being handled as ``active_span``, so
    its outbound frames find it without a context lookup. A plain function
    returning an awaitable: with no SDK installed, and for an unsampled
    message on a traced connection, it is Channels' own ``dispatch``
    coroutine, with no frame of ours around it.
    """
    if holder is not None:
        config, telemetry, active = holder.config, holder.telemetry, holder.active
    else:
        config, telemetry = get_config(), _telemetry.get()
        active = telemetry.active()
    key = config.CARRIER_KEY
    carrier = message.get(key, _ABSENT)
    if carrier is _ABSENT:
        clean, carrier = message, None
    else:
        # One copy per received dict, not per delivery (see _carrier.strip); inlined
        # lookup of it: a later member's delivery makes no call for it.
        found = _STRIPPED.get(id(message))
        clean = found[1] if found is not None and found[0] is message else _strip(message, key)
        if carrier.__class__ is not dict:
            carrier = None  # a hostile or foreign value: stripped, not read
    if not active and config.UNKNOWN_MESSAGE_POLICY == "raise":
        # No SDK installed: only make sure the carrier never reaches the handler.
        return dispatch(clean)
    # The common case first: a later delivery of a message this worker already knows.
    message_id = carrier.get("id") if carrier is not None else None
    record = _RECORDS.get(message_id) if message_id.__class__ is str else None
    if record is None:
        record = TABLE.lookup(carrier, clean.get("type"), config, telemetry)
    record.consumed[0] += 1
    if config.UNKNOWN_MESSAGE_POLICY == "drop" and not has_handler(consumer, clean):
        _drop_unknown(record, telemetry, holder)
        return nothing()
    if not record.sampled or (holder is not None and holder.off):
        # Not sampled (or a connection at rate 0): no span, no histogram; what the
        # handler starts is dropped too.
        if (holder is not None and holder.active
                and record.dropped_context is _DROPPED_CONTEXT):
            return dispatch(clean)  # the connection's task already runs under that context
        return _untraced(record, clean, dispatch, holder)
    first = record.started == 0
    record.started += 1
    budget = config.MAX_PROCESS_SPANS_PER_BROADCAST
    if budget is None or record.key is None:  # a span per delivery (or an unshared record)
        return _traced(record, clean, dispatch, holder, telemetry, config, first, False)
    if record.spans < budget:
        record.spans += 1
        return _traced(record, clean, dispatch, holder, telemetry, config, first, True)
    return _past_budget(record, clean, dispatch, holder, telemetry, config, first)


async def nothing() -> None:
    """An awaitable that does nothing (a message or frame not handled)."""
    return None


async def _untraced(record: Broadcast, clean: dict[str, Any], dispatch: Dispatch,
                    holder: HandlerScope | None) -> Any:
    token = _attach(record.dropped_context)
    if holder is not None:
        holder.active_span = _DROPPED_SPAN
    try:
        return await dispatch(clean)
    finally:
        _detach(token)
        if holder is not None:
            holder.active_span = holder.idle_span


def start_span(
    record: Broadcast,
    telemetry: _telemetry.Telemetry,
    connect: Link | None,
    now: float,
    start_time: int | None = None,
    connect_only: tuple[Link, ...] | None = None,
) -> trace.Span:
    """The ``process`` span of one delivery of ``record``'s message.

    ``connect_only``: the connection's ``(connect,)`` links tuple, built once.
    """
    delay = record.delay(now)
    attributes = record.span_attributes
    if delay is not None:
        attributes = {**attributes, sc.CHANNELS_DELIVERY_DELAY: delay}
    # One attributes dict at start (not set_attribute calls): one lock, one pass.
    return telemetry.tracer.start_span(
        record.span_name, context=record.parent, kind=SpanKind.CONSUMER,
        links=record.links(connect, connect_only), attributes=attributes,
        start_time=start_time,
    )


def record_histograms(
    record: Broadcast, telemetry: _telemetry.Telemetry, started: float, duration: float
) -> None:
    """The duration histograms' point for a message's first delivery on this worker."""
    attributes = record.metric_attributes
    delay = record.delay(started)
    if delay is not None:
        telemetry.delivery_duration.record(delay, attributes)
    telemetry.process_duration.record(duration, attributes)


async def _traced(
    record: Broadcast,
    clean: dict[str, Any],
    dispatch: Dispatch,
    holder: HandlerScope | None,
    telemetry: _telemetry.Telemetry,
    config: Config,
    first: bool,
    tally: bool,
) -> Any:
    """A delivery within the budget: a ``process`` span around the handler.

    ``tally``: a budget applies, so the broadcast's summary counts this delivery.
    One clock for everything: the span's start and end, the delay, the duration.
    """
    start_ns = _time_ns()
    if tally and not record.first_ns:
        record.first_ns = start_ns
    if holder is not None:
        span = start_span(record, telemetry, holder.connect_link, start_ns / 1e9,
                          start_ns, holder.connect_links)
    else:
        span = start_span(record, telemetry, None, start_ns / 1e9, start_ns)
    token = _attach(_set_span_in_context(span, record.handler_context))
    if holder is not None:
        holder.active_span = span
    failed = False
    try:
        return await dispatch(clean)
    except BaseException as exc:
        failed = record_exception(span, exc)
        raise
    finally:
        end_ns = _time_ns()
        duration = (end_ns - start_ns) / 1e9
        if holder is not None:
            holder.active_span = holder.idle_span
        threshold = config.SLOW_PROCESS_THRESHOLD
        slow = threshold is not None and duration > threshold
        if slow:
            span.set_attribute(sc.CHANNELS_DELIVERY_SLOW, True)
        if first:  # inside the span's context: the histogram points carry it as exemplar
            record_histograms(record, telemetry, start_ns / 1e9, duration)
        _detach(token)
        span.end(end_time=end_ns)
        if tally:
            record.last_ns = end_ns
            record.deliveries += 1
            record.recorded += 1
            record.failed += failed
            record.slow += slow
            if duration > record.max_duration:
                record.max_duration = duration


async def _past_budget(
    record: Broadcast,
    clean: dict[str, Any],
    dispatch: Dispatch,
    holder: HandlerScope | None,
    telemetry: _telemetry.Telemetry,
    config: Config,
    first: bool,
) -> Any:
    """A delivery past the budget: no span object unless it fails or is slow."""
    token = None
    if holder is None or not holder.active or record.dropped_context is not (
            _DROPPED_CONTEXT):
        token = _attach(record.dropped_context)
        if holder is not None:
            holder.active_span = _DROPPED_SPAN
    record.in_flight += 1
    start_ns = _time_ns()
    if not record.first_ns:
        record.first_ns = start_ns
    failure: BaseException | None = None
    try:
        return await dispatch(clean)
    except BaseException as exc:
        if not isinstance(exc, CONTROL_FLOW):
            failure = exc
        raise
    finally:
        end_ns = _time_ns()
        if token is not None:
            _detach(token)
            if holder is not None:
                holder.active_span = holder.idle_span
        record.in_flight -= 1
        record.deliveries += 1
        record.last_ns = end_ns
        duration = (end_ns - start_ns) / 1e9
        if duration > record.max_duration:
            record.max_duration = duration
        threshold = config.SLOW_PROCESS_THRESHOLD
        slow = threshold is not None and duration > threshold
        if failure is not None or slow:
            record.recorded += 1
            record.failed += failure is not None
            record.slow += slow
            _span_after_the_fact(record, telemetry, holder, start_ns, end_ns, failure, slow)
        elif not record.pending:
            TABLE.mark_pending(record)
        if first:
            record_histograms(record, telemetry, start_ns / 1e9, duration)


def _span_after_the_fact(
    record: Broadcast,
    telemetry: _telemetry.Telemetry,
    holder: HandlerScope | None,
    start_ns: int,
    end_ns: int,
    failure: BaseException | None,
    slow: bool,
) -> None:
    """The ``process`` span a failed or slow delivery past the budget would have had."""
    span = start_span(record, telemetry, holder.connect_link if holder is not None else None,
                      start_ns / 1e9, start_time=start_ns)
    if slow:
        span.set_attribute(sc.CHANNELS_DELIVERY_SLOW, True)
    if failure is not None:
        record_exception(span, failure, timestamp=end_ns)
    span.end(end_time=end_ns)


def _drop_unknown(record: Broadcast, telemetry: _telemetry.Telemetry,
                  holder: HandlerScope | None) -> None:
    """``UNKNOWN_MESSAGE_POLICY="drop"``: a message no handler takes is recorded and dropped.

    Channels would raise ValueError and kill this consumer (and, for a group
    message, every consumer in the group).
    """
    telemetry.dropped_messages.add(1, {**record.metric_attributes,
                                       sc.ERROR_TYPE: sc.ERROR_UNKNOWN_TYPE})
    if not record.sampled:
        return
    span = start_span(record, telemetry, holder.connect_link if holder is not None else None,
                      time.time())
    if span.is_recording():
        span.set_attribute(sc.ERROR_TYPE, sc.ERROR_UNKNOWN_TYPE)
        span.set_status(Status(StatusCode.ERROR, "no handler for message type"))
    span.end()
