"""How every server span is built, for WebSocket connections and SSE streams alike.

One builder per span of the trace model, so that attributes cannot drift between
call sites:

* :func:`start_connect` / :func:`end_connect`: ``connect {route}`` SERVER, the
  handshake (or the SSE request) until accept, reject or first byte; parent or
  link from the context the client sent (:func:`handshake_context`);
* :func:`start_receive`: ``receive {route}`` CONSUMER, handling one inbound frame;
* :func:`send_frame`: an outbound frame as a ``send {route}`` PRODUCER span or a
  ``websocket.send`` event;
* :func:`start_disconnect`: ``disconnect {route}`` INTERNAL, linked to ``connect``;
* :func:`record_exception`: an exception on the span that was active (Channels'
  control flow is never an error);
* :func:`activate` / :func:`deactivate`: make a span current while a handler
  runs (what ``trace.use_span`` does, without the generator per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from typing import Any
from urllib.parse import parse_qs

from channels.exceptions import AcceptConnection, DenyConnection, StopConsumer
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from ..conf import Config
from . import carrier as _carrier
from . import instruments as _telemetry
from . import semconv as sc
from .client_context import trusted
from .names import redact_query
from .wire import classify_close, size_of

EMPTY = otel_context.Context()

#: Exceptions Channels uses for control flow: never errors.
CONTROL_FLOW = (StopConsumer, AcceptConnection, DenyConnection, asyncio.CancelledError,
                GeneratorExit)


def record_exception(span: trace.Span, exc: BaseException, timestamp: int | None = None) -> bool:
    """Record ``exc`` on ``span`` unless it is Channels' control flow; True if it is an error."""
    if isinstance(exc, CONTROL_FLOW):
        return False
    if span.is_recording():
        span.record_exception(exc, timestamp=timestamp)
        span.set_attribute(sc.ERROR_TYPE, type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
    return True


def activate(span: trace.Span, base: otel_context.Context = EMPTY) -> Token[otel_context.Context]:
    """Make ``span`` current (on ``base``: a fresh context unless given); returns the token."""
    return otel_context.attach(trace.set_span_in_context(span, base))


deactivate = otel_context.detach


# -- the handshake -------------------------------------------------------------------------


class _HeaderGetter:
    """Reads decoded handshake headers for the global propagator."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def decode_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """ASGI's ``[(bytes, bytes)]`` headers as ``{lower-case name: value}`` (repeats joined)."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        try:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
        except (AttributeError, UnicodeDecodeError):
            continue
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


def handshake_context(
    scope: Mapping[str, Any], headers: Mapping[str, str], config: Config
) -> tuple[otel_context.Context, list[Link]]:
    """``(parent, links)`` of a ``connect`` span from what the client sent.

    The global propagator reads the handshake headers (W3C trace context and
    baggage by default, B3 or others when ``OTEL_PROPAGATORS`` says so); then
    ``?traceparent=`` when ``QUERY_TRACEPARENT`` is on (browsers cannot set
    WebSocket headers). ``CLIENT_CONTEXT`` decides: the client's span is the
    parent, only a link (a client never forces sampling or joins our traces),
    the parent only for an authenticated user (``"authenticated"``, a link
    otherwise), or ignored. Baggage is kept unless the client context is ignored.
    """
    if config.CLIENT_CONTEXT == "ignore":
        return EMPTY, []
    extracted = propagate.extract(headers, getter=_GETTER)  # type: ignore[arg-type]
    found = trace.get_current_span(extracted).get_span_context()
    client = found if found.is_valid else None
    if client is None and config.QUERY_TRACEPARENT:
        client = _query_traceparent(scope)
    base = baggage_of(extracted)
    if client is None:
        return base, []
    if trusted(config.CLIENT_CONTEXT, scope):
        return trace.set_span_in_context(trace.NonRecordingSpan(client), base), []
    return base, [Link(client)]


def baggage_of(context: otel_context.Context) -> otel_context.Context:
    """A fresh context holding only ``context``'s baggage (EMPTY when it has none)."""
    base = EMPTY
    for name, value in baggage.get_all(context).items():
        base = baggage.set_baggage(name, value, base)
    return base


def _query_traceparent(scope: Mapping[str, Any]) -> SpanContext | None:
    query = scope.get("query_string", b"")
    params = parse_qs(query.decode("latin-1") if isinstance(query, bytes) else str(query))
    values, state = params.get("traceparent"), params.get("tracestate")
    if values:
        return _carrier.parse_traceparent(values[0], state[0] if state else None)
    return None


# -- the spans -----------------------------------------------------------------------------


def start_connect(
    telemetry: _telemetry.Telemetry,
    route: str,
    protocol: str,
    consumer: str,
    scope: Mapping[str, Any],
    headers: Mapping[str, str],
    config: Config,
    *,
    parent: otel_context.Context,
    links: list[Link],
    extra: Mapping[str, Any] | None = None,
) -> trace.Span:
    """The ``connect {route}`` SERVER span, with the request's attributes at start."""
    attributes: dict[str, Any] = {
        sc.HTTP_ROUTE: route,
        sc.NETWORK_PROTOCOL_NAME: protocol,
        sc.CHANNELS_CONSUMER: consumer,
    }
    scheme = scope.get("scheme")
    if scheme:
        attributes[sc.URL_SCHEME] = str(scheme)
    path = scope.get("path")
    if isinstance(path, str):
        attributes[sc.URL_PATH] = path
    query = scope.get("query_string")
    if query:
        attributes[sc.URL_QUERY] = redact_query(query, config.SENSITIVE_QUERY_PARAMS)
    client = scope.get("client")
    if client:
        attributes[sc.CLIENT_ADDRESS] = str(client[0])
        if len(client) > 1 and client[1] is not None:
            attributes[sc.CLIENT_PORT] = int(client[1])
    agent = headers.get("user-agent")
    if agent:
        attributes[sc.USER_AGENT_ORIGINAL] = agent[:1024]
    if extra:
        attributes.update(extra)
    return telemetry.tracer.start_span(
        f"{sc.SPAN_CONNECT} {route}", context=parent, kind=SpanKind.SERVER, links=links,
        attributes=attributes,
    )


def end_connect(span: trace.Span, status: str, status_code: int | None = None,
                close_code: int | None = None) -> None:
    """End a ``connect`` span: accepted, rejected, pending, aborted or error."""
    if span.is_recording():
        span.set_attribute(sc.CHANNELS_CONNECTION_STATUS, status)
        if status_code is not None:
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status_code)
        if close_code is not None:
            span.set_attribute(sc.WEBSOCKET_CLOSE_CODE, close_code)
    span.end()


def start_receive(
    telemetry: _telemetry.Telemetry,
    route: str,
    consumer: str,
    parent: otel_context.Context,
    links: list[Link],
    text: bool,
    size: int,
) -> trace.Span:
    """The ``receive {route}`` CONSUMER span of one inbound frame."""
    return telemetry.tracer.start_span(
        f"{sc.SPAN_RECEIVE} {route}", context=parent, kind=SpanKind.CONSUMER, links=links,
        attributes={
            sc.MESSAGING_SYSTEM: sc.SYSTEM_CHANNELS,
            sc.MESSAGING_OPERATION_NAME: sc.SPAN_RECEIVE,
            sc.MESSAGING_OPERATION_TYPE: sc.OPERATION_PROCESS,
            sc.HTTP_ROUTE: route,
            sc.NETWORK_PROTOCOL_NAME: sc.PROTOCOL_WEBSOCKET,
            sc.CHANNELS_CONSUMER: consumer,
            sc.WEBSOCKET_MESSAGE_TYPE: "text" if text else "binary",
            sc.MESSAGING_MESSAGE_BODY_SIZE: size,
        },
    )


def rejected_receive(telemetry: _telemetry.Telemetry, route: str, connect: Link | None,
                     kind: str, code: int, size: int, why: str) -> None:
    """The ERROR ``receive`` span of a frame closed on instead of handled (a new trace)."""
    span = telemetry.tracer.start_span(
        f"{sc.SPAN_RECEIVE} {route}", context=EMPTY, kind=SpanKind.CONSUMER,
        links=[connect] if connect is not None else [], attributes={
            sc.HTTP_ROUTE: route, sc.MESSAGING_MESSAGE_BODY_SIZE: size,
            sc.ERROR_TYPE: kind, sc.WEBSOCKET_CLOSE_CODE: code,
        })
    span.set_status(Status(StatusCode.ERROR, why))
    span.end()


async def send_frame(
    telemetry: _telemetry.Telemetry,
    route: str,
    current: trace.Span,
    base: otel_context.Context,
    message: dict[str, Any],
    send: Callable[[dict[str, Any]], Awaitable[None]],
    as_span: bool,
    metric_attributes: dict[str, Any],
) -> None:
    """Send one outbound frame inside ``current``, a recording span: as a ``send
    {route}`` PRODUCER span (``as_span``), or with a ``websocket.send`` event on
    ``current``. Its size goes to the message-size histogram either way."""
    text = message.get("text")
    size = size_of(text, message.get("bytes"))
    attributes = {
        sc.WEBSOCKET_MESSAGE_TYPE: "text" if text is not None else "binary",
        sc.MESSAGING_MESSAGE_BODY_SIZE: size,
    }
    telemetry.websocket_message_size.record(size, metric_attributes)
    if not as_span:
        current.add_event(sc.EVENT_WEBSOCKET_SEND, attributes)
        await send(message)
        return
    span = telemetry.tracer.start_span(
        f"{sc.SPAN_SEND} {route}", context=trace.set_span_in_context(current, base),
        kind=SpanKind.PRODUCER, attributes=attributes,
    )
    try:
        await send(message)
    except BaseException as exc:
        record_exception(span, exc)
        raise
    finally:
        span.end()


def close_attributes(frames_in: int, frames_out: int, reason: Any,
                     spans_dropped: int) -> dict[str, Any]:
    """A WebSocket ``disconnect`` span's frame counts, close reason and dropped spans."""
    attributes: dict[str, Any] = {sc.CHANNELS_FRAMES_RECEIVED: frames_in,
                                  sc.CHANNELS_FRAMES_SENT: frames_out}
    if isinstance(reason, str) and reason:
        attributes[sc.WEBSOCKET_CLOSE_REASON] = reason[:123]  # at most 123 bytes on the wire
    if spans_dropped:
        attributes[sc.CHANNELS_SPANS_DROPPED] = spans_dropped
    return attributes


def start_disconnect(
    telemetry: _telemetry.Telemetry,
    route: str,
    protocol: str,
    consumer: str,
    connect: Link | None,
    duration: float,
    attributes: dict[str, Any],
    close_code: Any = None,
) -> trace.Span:
    """The ``disconnect {route}`` INTERNAL span, linked to ``connect``.

    With a ``close_code``, an abnormal one (not 1000, 1001 or 1005) makes it an error.
    """
    attributes[sc.HTTP_ROUTE] = route
    attributes[sc.NETWORK_PROTOCOL_NAME] = protocol
    attributes[sc.CHANNELS_CONSUMER] = consumer
    attributes[sc.CHANNELS_CONNECTION_DURATION] = duration
    if close_code is not None:
        attributes[sc.WEBSOCKET_CLOSE_CODE] = close_code
        error_type = classify_close(close_code)
        attributes[sc.CHANNELS_CONNECTION_STATUS] = "closed" if error_type is None else "error"
        if error_type is not None:
            attributes[sc.ERROR_TYPE] = error_type
    span = telemetry.tracer.start_span(
        f"{sc.SPAN_DISCONNECT} {route}", context=EMPTY, kind=SpanKind.INTERNAL,
        links=[connect] if connect is not None else [], attributes=attributes,
    )
    if close_code is not None and attributes.get(sc.ERROR_TYPE) is not None:
        span.set_status(Status(StatusCode.ERROR, f"close code {close_code}"))
    return span
