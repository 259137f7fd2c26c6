"""Producer side of the channel layer: ``group_send`` / ``send`` spans and carriers.

The instrumentor wraps each layer class's ``send`` and ``group_send`` with
:func:`traced_send` / :func:`traced_group_send`. They start a PRODUCER span
(or, for a message the sampling rate drops, none), stamp a *copy* of the
message with the carrier, call the real method, and record
``messaging.client.sent.messages`` / ``messaging.client.operation.duration``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind

from ..conf import get_config
from ..telemetry import carrier as _carrier
from ..telemetry import instruments as _telemetry
from ..telemetry import rates as _rates
from ..telemetry import sampling as _sampling
from ..telemetry import semconv as sc
from ..telemetry.names import group_template
from ..telemetry.spans import activate, deactivate, record_exception
from .capacity import DROPS, counting_full
from .payload import check_payload

# Set while a traced send / group_send runs (to its drop counter, see .capacity): a layer
# whose group_send calls its own send (InMemoryChannelLayer) must not get a second span
# and carrier per member.
_PRODUCING = DROPS


async def _produce(
    wrapped: Callable[..., Awaitable[Any]],
    target: str,
    message: dict[str, Any],
    *,
    group: bool,
) -> Any:
    config = get_config()
    key = config.CARRIER_KEY
    if config.STRICT_PAYLOADS:
        check_payload(message, key)  # on every path: tests must catch what Redis would break
    telemetry = _telemetry.get()
    if not telemetry.active():
        # No SDK installed: no trace to carry, but still a message id, so that no
        # consumer (an SSE stream numbering events) takes two equal messages for one.
        carrier = {"id": _carrier.new_id(), "sent_at": time.time()}
        if group:
            carrier["destination"] = target
        producing = _PRODUCING.set([0])
        try:
            return await wrapped(target, _carrier.attach(message, key, carrier))
        finally:
            _PRODUCING.reset(producing)
    if not is_instrumentation_enabled():
        return await _produce_suppressed(wrapped, target, message, key, group)
    if group:
        template = group_template(target, config.GROUP_TEMPLATE)
        name = f"{sc.SPAN_GROUP_SEND} {template}"
    else:
        template, name = None, sc.SPAN_SEND
    metric_attributes = _telemetry.metric_attributes(
        sc.OPERATION_SEND, template, sc.SPAN_SEND if template is None else sc.SPAN_GROUP_SEND)

    current = trace.get_current_span().get_span_context()
    # The trace we are in, or MESSAGE_SAMPLE_RATE; a group's own rate (SAMPLE_RATES) on top.
    keep = _rates.keep_send(config, template, current)

    span: trace.Span | None = None
    if keep:
        attributes = {**metric_attributes, sc.MESSAGING_DESTINATION_NAME: target}
        if not group:
            attributes[sc.MESSAGING_DESTINATION_TEMPORARY] = True
        message_type = message.get("type")
        if isinstance(message_type, str):
            attributes[sc.CHANNELS_MESSAGE_TYPE] = message_type[:256]
        span = telemetry.tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
        ctx = span.get_span_context()
    else:
        # Not sampled, for every delivery: a sampled caller's trace dropped by its group's
        # rate must not reach the workers as sampled.
        ctx = current if current.is_valid and not current.trace_flags.sampled else (
            _sampling.DROPPED_SPAN_CONTEXT)

    carrier = _carrier.build(ctx, target if group else None, time.time())
    stamped = _carrier.attach(message, key, carrier)
    start = time.perf_counter()
    drops = [0]
    producing = _PRODUCING.set(drops)
    try:
        # No ``return`` inside the try: an ``else`` clause is skipped after a return,
        # which once left the sent-messages counter and duration never recorded.
        if span is not None:
            token = activate(span, otel_context.get_current())
            try:
                result = await wrapped(target, stamped)
            finally:
                deactivate(token)
        else:
            result = await wrapped(target, stamped)
    except BaseException as exc:
        if span is not None:
            record_exception(span, exc)
        error_attributes = {**metric_attributes, sc.ERROR_TYPE: type(exc).__qualname__}
        telemetry.operation_duration.record(time.perf_counter() - start, error_attributes)
        raise
    else:
        telemetry.sent_messages.cell_for(template, metric_attributes)[0] += 1
        if span is not None:  # durations for sampled sends only; counts for all
            telemetry.operation_duration.record(time.perf_counter() - start, metric_attributes)
        if drops[0]:  # members over capacity lost it: the layer said nothing
            _record_drops(telemetry, span, metric_attributes, drops[0])
        return result
    finally:
        _PRODUCING.reset(producing)
        if span is not None:
            span.end()


async def _produce_suppressed(
    wrapped: Callable[..., Awaitable[Any]], target: str, message: dict[str, Any], key: str,
    group: bool,
) -> Any:
    """Under ``suppress_instrumentation()``: no span, no metric, an unsampled carrier.

    The carrier says "not sampled", so every delivery of the message is untraced
    too (a span exporter that publishes spans over the channel layer would
    otherwise trace its own publishing, forever).
    """
    carrier = _carrier.build(_sampling.DROPPED_SPAN_CONTEXT, target if group else None, time.time())
    producing = _PRODUCING.set([0])
    try:
        return await wrapped(target, _carrier.attach(message, key, carrier))
    finally:
        _PRODUCING.reset(producing)


def _target_and_message(
    args: tuple[Any, ...], kwargs: dict[str, Any], name: str
) -> tuple[Any, Any]:
    if len(args) >= 2:
        return args[0], args[1]
    target = args[0] if args else kwargs.get(name)
    return target, kwargs.get("message")


# The wrappers are plain functions returning the layer's own awaitable when there is
# nothing to do (a layer's group_send calling its own send, a malformed call the layer
# rejects itself): no coroutine frame of ours per member.


def _record_drops(telemetry: _telemetry.Telemetry, span: trace.Span | None,
                  metric_attributes: dict[str, Any], dropped: int) -> None:
    telemetry.dropped_messages.add(dropped, {**metric_attributes,
                                             sc.ERROR_TYPE: sc.ERROR_OVER_CAPACITY})
    if span is not None and span.is_recording():
        span.set_attribute(sc.CHANNELS_GROUP_SEND_OVER_CAPACITY, dropped)


def traced_group_send(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Awaitable[Any]:
    """``wrapt`` wrapper for ``ChannelLayer.group_send(group, message)``."""
    if _PRODUCING.get() is not None:
        return wrapped(*args, **kwargs)
    group, message = _target_and_message(args, kwargs, "group")
    if not isinstance(group, str) or not isinstance(message, dict):
        return wrapped(*args, **kwargs)  # the layer raises its own error
    return _produce(wrapped, group, message, group=True)


def traced_send(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Awaitable[Any]:
    """``wrapt`` wrapper for ``ChannelLayer.send(channel, message)``."""
    drops = _PRODUCING.get()
    if drops is not None:  # a member's send inside a group_send: count a full member
        return counting_full(wrapped(*args, **kwargs), drops)
    channel, message = _target_and_message(args, kwargs, "channel")
    if not isinstance(channel, str) or not isinstance(message, dict):
        return wrapped(*args, **kwargs)
    return _produce(wrapped, channel, message, group=False)
