"""Traced Python clients for Channels apps: WebSocket and Server-Sent Events.

For bots, services, load generators and tests that talk to a Channels app.
Both clients start (or continue) a trace on the client side and carry it
into the server, so one trace can run from the client through the server's
``receive``, ``group_send`` and ``process`` spans and back.

Usage::

    from otel_channels.client import TracedEventSource, TracedWebSocketClient

    async with TracedWebSocketClient("ws://localhost:8000/ws/chat/42/",
                                     route="/ws/chat/<room>/", send_spans=True) as ws:
        await ws.send({"text": "hello"})      # JSON; a ``traceparent`` key rides along
        async for message in ws:              # one CONSUMER span per message
            ...

    async with TracedEventSource("http://localhost:8000/events/42/",
                                 route="/events/<room>/") as source:
        async for event in source:            # MessageEvent(type, data, id, retry, fields)
            ...

Spans (tracer ``otel_channels.client``; payloads are never recorded, sizes only):

* ``connect {route}`` CLIENT: the handshake (WebSocket upgrade / SSE request).
  ``traceparent`` / ``tracestate`` go into the request headers through the
  global propagator, so the server's ``connect`` span becomes its child.
* ``send {route}`` PRODUCER per WebSocket message when ``send_spans=True``,
  otherwise a ``websocket.send`` event on the current span. A ``dict`` sent as
  JSON gets the W3C ``traceparent`` (and ``tracestate``) of that span under
  ``json_traceparent_key`` (default ``"traceparent"``, the server's
  ``JSON_TRACEPARENT_KEY``), so the server's ``receive`` span is its child.
* ``receive {route}`` CONSUMER per WebSocket message / SSE event: the child of
  a ``traceparent`` the message carries (a key of a JSON object message, or an
  SSE ``traceparent:`` field line), otherwise a new trace; either way linked to
  the ``connect`` span. The span stays *current* while the caller handles the
  message (the body of ``async for``, or the code after ``recv()``) and ends
  at the next receive, at ``close()`` or when the ``async with`` block exits
  (an exception leaving the block is recorded on it), so spans the handler
  starts, and messages it sends, belong to the same trace. (Await ``recv()``
  directly or under ``asyncio.timeout()``: before Python 3.12,
  ``asyncio.wait_for`` runs it in another task, where the span stays.)
* ``disconnect {route}`` INTERNAL (WebSocket) when the connection ends: close
  code and reason, ``channels.connection.status``; 1000, 1001 and 1005 are
  normal, any other code sets ``error.type`` to the code, as on the server.

``{route}`` should be low-cardinality: pass ``route="/ws/chat/<room>/"``. It
defaults to the URL path, which is only right when the path holds no ids.

Metrics (meter ``otel_channels.client``), attributes ``network.protocol.name``
(``websocket`` / ``sse``) and ``url.template`` (the route):

* ``channels.client.connection.duration`` (s), with ``error.type`` when the
  connection ended abnormally;
* ``channels.client.websocket.messages`` ({message}) by ``network.io.direction``
  and ``channels.client.websocket.message.size`` (By);
* ``channels.client.sse.events`` ({event});
* ``channels.client.reconnects`` ({reconnect}).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from . import __version__, _carrier
from . import _semconv as sc
from ._names import redact_query
from ._sse_parser import EventStreamParser, EventTooLarge, MessageEvent
from ._websocket import classify_close
from .conf import DEFAULT_SENSITIVE_QUERY_PARAMS

try:  # optional dependencies: the "client" extra
    import httpx
except ImportError:  # pragma: no cover - exercised only without the extra
    httpx = None  # type: ignore[assignment]
try:
    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.client import connect as _ws_connect
    from websockets.exceptions import (
        ConnectionClosed,
        ConnectionClosedOK,
        InvalidHandshake,
        InvalidStatus,
        InvalidURI,
    )
    from websockets.protocol import State
    from websockets.typing import Subprotocol
except ImportError:  # pragma: no cover - exercised only without the extra
    _ws_connect = None  # type: ignore[assignment,misc]

__all__ = [
    "EventSourceError",
    "MessageEvent",
    "TracedEventSource",
    "TracedWebSocketClient",
]

SCOPE = "otel_channels.client"
M_CONNECTION_DURATION = "channels.client.connection.duration"
M_WEBSOCKET_MESSAGES = "channels.client.websocket.messages"
M_WEBSOCKET_MESSAGE_SIZE = "channels.client.websocket.message.size"
M_SSE_EVENTS = "channels.client.sse.events"
M_RECONNECTS = "channels.client.reconnects"

URL_FULL = "url.full"
URL_TEMPLATE = "url.template"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_RESEND_COUNT = "http.request.resend_count"
SSE_LAST_EVENT_ID = "sse.last_event_id"
SSE_EVENT_TYPE = "sse.event.type"

_EMPTY = otel_context.Context()
_MAX_RETRY = 86400.0  # a day: a huge ``retry:`` must not overflow the event loop's timer
_DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 86400)
_SIZE_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
# Indirection so tests can observe the backoff delays without waiting them out.
_sleep = asyncio.sleep


class _Telemetry:
    """Tracer and instruments of the clients, created once per provider pair."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self.connection_duration = meter.create_histogram(
            M_CONNECTION_DURATION, unit="s", description="Duration of client connections.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.websocket_messages = meter.create_counter(
            M_WEBSOCKET_MESSAGES, unit="{message}",
            description="WebSocket messages sent and received by clients.",
        )
        self.websocket_message_size = meter.create_histogram(
            M_WEBSOCKET_MESSAGE_SIZE, unit="By", description="Size of client WebSocket messages.",
            explicit_bucket_boundaries_advisory=_SIZE_BUCKETS,
        )
        self.sse_events = meter.create_counter(
            M_SSE_EVENTS, unit="{event}", description="Server-Sent Events received by clients.",
        )
        self.reconnects = meter.create_counter(
            M_RECONNECTS, unit="{reconnect}", description="Client reconnection attempts.",
        )


@functools.lru_cache(maxsize=16)
def _telemetry(tracer_provider: Any = None, meter_provider: Any = None) -> _Telemetry:
    return _Telemetry(tracer_provider, meter_provider)


def _backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
    """
    return rand() * min(cap, base * 2.0 ** min(attempt, 62))


def _size(data: str | bytes) -> int:
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    return len(data)


def _url_attributes(url: str, sensitive: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """``(path, attributes)`` of a URL: scheme, server, path and the redacted query."""
    parts = urlsplit(url)
    path = parts.path or "/"
    query = redact_query(parts.query, frozenset(name.lower() for name in sensitive))
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    attributes: dict[str, Any] = {
        sc.URL_SCHEME: parts.scheme,
        URL_FULL: urlunsplit((parts.scheme, netloc, path, query, "")),
        sc.URL_PATH: path,
        SERVER_ADDRESS: parts.hostname or "",
    }
    if parts.port is not None:
        attributes[SERVER_PORT] = parts.port
    if query:
        attributes[sc.URL_QUERY] = query
    return path, attributes


def _record_error(span: trace.Span, exc: BaseException, error_type: str | None = None) -> None:
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_attribute(sc.ERROR_TYPE, error_type or type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))


class _Current:
    """A receive span kept current in the caller's task until the next receive.

    ``__anext__`` / ``recv`` are plain coroutines awaited by the caller, so a
    context attached in them stays attached in the caller's task (as the
    contrib Kafka instrumentations do for ``next(consumer)``). It is detached
    only from that same task and only while it is still the current span, so
    a consumer driven from another task never breaks the caller's context.
    """

    __slots__ = ("span", "token", "task")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.token = otel_context.attach(trace.set_span_in_context(span))
        self.task = _current_task()

    def end(self, exc: BaseException | None = None) -> None:
        if exc is not None and isinstance(exc, Exception):
            _record_error(self.span, exc)
        if _current_task() is self.task and trace.get_current_span() is self.span:
            otel_context.detach(self.token)
        self.span.end()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _links(ctx: SpanContext) -> list[Link]:
    return [Link(ctx)] if ctx.is_valid else []


def _remote_parent(remote: SpanContext | None) -> otel_context.Context:
    if remote is None:
        return _EMPTY  # a new trace (links keep it tied to the connection)
    return trace.set_span_in_context(NonRecordingSpan(remote), _EMPTY)


def _start_receive(
    telemetry: _Telemetry, route: str, remote: SpanContext | None, links: list[Link],
    protocol: str, body: str | bytes, size: int | None, type_key: str, type_value: str,
    event_id: str = "",
) -> trace.Span:
    """The CONSUMER ``receive`` span of one inbound message (WebSocket frame or SSE event)."""
    span = telemetry.tracer.start_span(
        f"receive {route}", context=_remote_parent(remote), kind=SpanKind.CONSUMER, links=links,
    )
    if span.is_recording():  # attributes only for sampled spans: nothing built otherwise
        attributes: dict[str, Any] = {
            sc.MESSAGING_OPERATION_NAME: "receive",
            sc.MESSAGING_OPERATION_TYPE: "receive",
            sc.NETWORK_PROTOCOL_NAME: protocol,
            URL_TEMPLATE: route,
            type_key: type_value,
            sc.MESSAGING_MESSAGE_BODY_SIZE: _size(body) if size is None else size,
        }
        if event_id:
            attributes[SSE_LAST_EVENT_ID] = event_id
        span.set_attributes(attributes)
    return span


# --------------------------------------------------------------------------------------------
# WebSocket
# --------------------------------------------------------------------------------------------


class TracedWebSocketClient:
    """A traced WebSocket client on the ``websockets`` asyncio API; use it with ``async with``.

    Args:
        url: ``ws://`` or ``wss://`` URL.
        route: low-cardinality name for span names and metrics (default: the URL path).
        headers: extra handshake headers.
        subprotocols: subprotocols to offer.
        open_timeout: seconds allowed for the TCP connect plus the handshake.
        ping_interval: seconds between keep-alive pings (None: no pings).
        ping_timeout: seconds to wait for a pong before closing with 1011 (None: forever).
        close_timeout: seconds to wait for the closing handshake.
        max_size: largest inbound message in bytes (None: no limit).
        send_spans: a PRODUCER span per sent message instead of a span event.
        json_traceparent_key: key for ``traceparent`` in JSON object messages, both
            injected on send and read on receive (None: off).
        reconnect: reconnect when the handshake fails with a network error, a
            timeout or a 5xx/429, and when an open connection ends with any code
            other than 1000 / 1005 (or after ``close()``).
        max_retries: reconnection attempts before the last error is raised.
        backoff_base: seconds; attempt ``n`` waits uniform(0, min(cap, base * 2**n)).
        backoff_cap: seconds; upper bound of one backoff wait.
        sensitive_query_params: query parameters redacted in ``url.query`` / ``url.full``.
        tracer_provider: defaults to the global one.
        meter_provider: defaults to the global one.
        **connect_options: passed to ``websockets.asyncio.client.connect`` (e.g. ``proxy``).
    """

    def __init__(
        self,
        url: str,
        *,
        route: str | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] | None = None,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        max_size: int | None = 2**20,
        send_spans: bool = False,
        json_traceparent_key: str | None = "traceparent",
        reconnect: bool = False,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sensitive_query_params: Iterable[str] = DEFAULT_SENSITIVE_QUERY_PARAMS,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        **connect_options: Any,
    ) -> None:
        if _ws_connect is None:  # pragma: no cover
            raise ImportError("TracedWebSocketClient needs 'websockets': "
                              "pip install 'otel_channels[client]'")
        self.url = url
        path, self._url_attributes = _url_attributes(url, sensitive_query_params)
        self.route = route or path
        self.headers = dict(headers or {})
        self.subprotocols = [Subprotocol(p) for p in subprotocols] if subprotocols else None
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.send_spans = send_spans
        self.json_traceparent_key = json_traceparent_key
        self._json_needle = f'"{json_traceparent_key}"' if json_traceparent_key else None
        self.reconnect = reconnect
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.connect_options = connect_options
        #: Reconnections made so far (not counting the first connect).
        self.reconnects = 0
        #: The underlying ``websockets`` connection (None before ``connect``).
        self.connection: ClientConnection | None = None
        self._telemetry = _telemetry(tracer_provider, meter_provider)
        self._random = random.Random()
        self._metric_attributes: dict[str, Any] = {
            sc.NETWORK_PROTOCOL_NAME: "websocket", URL_TEMPLATE: self.route,
        }
        self._attrs_in = {**self._metric_attributes, sc.NETWORK_IO_DIRECTION: "receive"}
        self._attrs_out = {**self._metric_attributes, sc.NETWORK_IO_DIRECTION: "transmit"}
        self._connect_context: SpanContext | None = None
        self._connect_links: list[Link] = []
        self._current: _Current | None = None
        self._opened_at = 0.0
        self._frames_in = 0
        self._frames_out = 0
        self._finished = True  # the current connection's end has been recorded
        self._closing = False  # close() was called: never reconnect

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TracedWebSocketClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._end_current(exc)
        await self.close()

    async def connect(self) -> TracedWebSocketClient:
        """Open the connection (retrying with backoff when ``reconnect`` is on)."""
        if self.connection is not None and self.connection.state is not State.CLOSED:
            return self  # already open
        self._closing = False
        await self._connect(first_attempt=0)
        return self

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected."""
        return self.connection.subprotocol if self.connection is not None else None

    @property
    def connect_span_context(self) -> SpanContext | None:
        """Span context of the last successful ``connect`` span."""
        return self._connect_context

    async def _connect(self, first_attempt: int) -> None:
        attempt = first_attempt
        while True:
            if attempt:
                delay = _backoff_delay(attempt - 1, self.backoff_base, self.backoff_cap,
                                       self._random.random)
                self.reconnects += 1
                self._telemetry.reconnects.add(1, self._metric_attributes)
                await _sleep(delay)
            try:
                await self._open(attempt)
                return
            except Exception as exc:
                if not (self.reconnect and _retryable(exc) and attempt < self.max_retries):
                    raise
                attempt += 1

    async def _open(self, attempt: int) -> None:
        """One handshake inside a ``connect`` CLIENT span."""
        attributes = dict(self._url_attributes)
        attributes[sc.NETWORK_PROTOCOL_NAME] = "websocket"
        attributes[URL_TEMPLATE] = self.route
        if attempt:
            attributes[HTTP_REQUEST_RESEND_COUNT] = attempt
        span = self._telemetry.tracer.start_span(
            f"connect {self.route}", kind=SpanKind.CLIENT, attributes=attributes
        )
        headers = dict(self.headers)
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            propagate.inject(headers)
            try:
                connection = await _ws_connect(
                    self.url, additional_headers=headers, subprotocols=self.subprotocols,
                    open_timeout=self.open_timeout, ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout, close_timeout=self.close_timeout,
                    max_size=self.max_size, **self.connect_options,
                )
            except BaseException as exc:
                status = _status_of(exc)
                if status is not None and span.is_recording():
                    span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
                if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, TimeoutError):
                    exc = TimeoutError(str(exc) or "timed out during opening handshake")
                    _record_error(span, exc, None)  # Python 3.10: one TimeoutError everywhere
                    span.end()
                    raise exc from None
                _record_error(span, exc, str(status) if status is not None else None)
                span.end()
                raise
        if span.is_recording():
            response = connection.response
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE,
                               response.status_code if response is not None else 101)
            if connection.subprotocol:
                span.set_attribute(sc.WEBSOCKET_SUBPROTOCOL, str(connection.subprotocol))
        span.end()
        self.connection = connection
        self._connect_context = span.get_span_context()
        self._connect_links = _links(self._connect_context)
        self._opened_at = time.monotonic()
        self._frames_in = self._frames_out = 0
        self._finished = False

    async def _ready(self) -> ClientConnection:
        """The open connection; reconnects first if it dropped and ``reconnect`` is on."""
        connection = self.connection
        if connection is None:
            if self._closing:
                raise RuntimeError("the client is closed")
            await self.connect()
            assert self.connection is not None
            return self.connection
        if connection.state is State.CLOSED:
            self._finish()
            if self._should_reconnect(connection):
                await self._connect(first_attempt=1)
                assert self.connection is not None
                return self.connection
        return connection

    def _should_reconnect(self, connection: ClientConnection) -> bool:
        if not self.reconnect or self._closing:
            return False
        return connection.close_code not in (1000, 1005)

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: str | bytes | dict[str, Any] | list[Any]) -> None:
        """Send text, bytes, or a dict / list as JSON text (a dict may carry ``traceparent``)."""
        connection = await self._ready()
        telemetry = self._telemetry
        span: trace.Span | None = None
        if self.send_spans:
            span = telemetry.tracer.start_span(
                f"send {self.route}", kind=SpanKind.PRODUCER, links=self._connect_links
            )
            carrier_span: trace.Span = span
        else:
            carrier_span = trace.get_current_span()
        data = self._encode(message, carrier_span.get_span_context())
        size = _size(data)
        telemetry.websocket_messages.add(1, self._attrs_out)
        telemetry.websocket_message_size.record(size, self._attrs_out)
        self._frames_out += 1
        if carrier_span.is_recording():
            attributes = {
                sc.WEBSOCKET_MESSAGE_TYPE: "text" if isinstance(data, str) else "binary",
                sc.MESSAGING_MESSAGE_BODY_SIZE: size,
            }
            if span is None:
                carrier_span.add_event(sc.EVENT_WEBSOCKET_SEND, attributes)
            else:
                span.set_attributes(attributes)
                span.set_attributes({
                    sc.MESSAGING_OPERATION_NAME: "send",
                    sc.MESSAGING_OPERATION_TYPE: "send",
                    sc.NETWORK_PROTOCOL_NAME: "websocket",
                    URL_TEMPLATE: self.route,
                })
        if span is None:
            await connection.send(data)
            return
        try:
            await connection.send(data)
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            span.end()

    def _encode(self, message: Any, ctx: SpanContext) -> str | bytes:
        if isinstance(message, (str, bytes)):
            return message
        if isinstance(message, bytearray | memoryview):
            return bytes(message)
        key = self.json_traceparent_key
        if isinstance(message, dict) and key and ctx.is_valid and key not in message:
            message = dict(message)  # never mutate the caller's dict
            message[key] = _carrier.format_traceparent(ctx)
            if ctx.trace_state and "tracestate" not in message:
                message["tracestate"] = ctx.trace_state.to_header()
        return json.dumps(message, separators=(",", ":"))

    # -- receiving --------------------------------------------------------------------------

    def __aiter__(self) -> TracedWebSocketClient:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def recv(self) -> str | bytes:
        """The next message; ``ConnectionClosed`` when the connection has ended."""
        self._end_current()
        while True:
            connection = await self._ready()
            try:
                data = await connection.recv()
            except ConnectionClosed:
                self._finish()
                if self._should_reconnect(connection):
                    await self._connect(first_attempt=1)
                    continue
                raise
            self._received(data)
            return data

    def _received(self, data: str | bytes) -> None:
        telemetry = self._telemetry
        size = _size(data)
        telemetry.websocket_messages.add(1, self._attrs_in)
        telemetry.websocket_message_size.record(size, self._attrs_in)
        self._frames_in += 1
        remote = None
        needle = self._json_needle
        if needle is not None and isinstance(data, str) and needle in data:
            # the substring test first: most messages skip a second parse
            remote = _json_traceparent(data, self.json_traceparent_key or "")
        span = _start_receive(
            telemetry, self.route, remote, self._connect_links, "websocket", data, size,
            sc.WEBSOCKET_MESSAGE_TYPE, "text" if isinstance(data, str) else "binary",
        )
        self._current = _Current(span)

    def _end_current(self, exc: BaseException | None = None) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.end(exc)

    # -- closing ----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` / ``reason``; no reconnection after this."""
        self._closing = True
        self._end_current()
        connection = self.connection
        if connection is None:
            return
        if connection.state is not State.CLOSED:
            await connection.close(code, reason)
        self._finish(code)

    def _finish(self, sent_code: int | None = None) -> None:
        """Record the end of the current connection once: ``disconnect`` span and duration."""
        connection = self.connection
        if self._finished or connection is None:
            return
        self._finished = True
        self._end_current()
        code = connection.close_code
        if code is None:
            code = sent_code if sent_code is not None else 1006
        reason = connection.close_reason
        error_type = classify_close(code)
        duration = time.monotonic() - self._opened_at
        attributes = dict(self._metric_attributes)
        if error_type is not None:
            attributes[sc.ERROR_TYPE] = error_type
        self._telemetry.connection_duration.record(duration, attributes)
        span = self._telemetry.tracer.start_span(
            f"disconnect {self.route}", context=_EMPTY, kind=SpanKind.INTERNAL,
            links=self._connect_links,
        )
        if span.is_recording():
            span.set_attributes({
                **attributes,
                sc.WEBSOCKET_CLOSE_CODE: code,
                sc.CHANNELS_CONNECTION_STATUS: "closed" if error_type is None else "error",
                sc.CHANNELS_CONNECTION_DURATION: duration,
                sc.CHANNELS_FRAMES_RECEIVED: self._frames_in,
                sc.CHANNELS_FRAMES_SENT: self._frames_out,
            })
            if reason:
                span.set_attribute(sc.WEBSOCKET_CLOSE_REASON, reason[:123])
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR, f"close code {code}"))
        span.end()


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, InvalidStatus):
        return int(exc.response.status_code)
    return None


def _retryable(exc: BaseException) -> bool:
    """Network errors, timeouts, broken handshakes, 5xx and 429: worth another attempt."""
    status = _status_of(exc)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(exc, InvalidURI):
        return False
    return isinstance(
        exc, (OSError, TimeoutError, asyncio.TimeoutError, InvalidHandshake, ConnectionClosed)
    )


_json_traceparent = _carrier.json_traceparent


# --------------------------------------------------------------------------------------------
# Server-Sent Events
# --------------------------------------------------------------------------------------------


class EventSourceError(Exception):
    """The event source failed and will not reconnect (the WHATWG "fail the connection").

    Args:
        message: what happened.
        status: the HTTP status of the response, if there was one.
        content_type: its ``Content-Type``, if there was one.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 content_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.content_type = content_type


class TracedEventSource:
    """A traced ``EventSource`` on ``httpx``: ``async with`` it, then ``async for`` its events.

    Behaves as the WHATWG ``EventSource`` processing model says: follows
    redirects; reconnects when the stream ends or the network fails, after the
    reconnection time (``retry:`` from the stream, else ``retry``), sending
    ``Last-Event-ID``; fails (raises :class:`EventSourceError`, no reconnection)
    on a status other than 200 (204 included) or a ``Content-Type`` other than
    ``text/event-stream``. Events are :class:`MessageEvent` objects.

    Args:
        url: ``http://`` or ``https://`` URL of the stream.
        route: low-cardinality name for span names and metrics (default: the URL path).
        headers: extra request headers.
        client: an ``httpx.AsyncClient`` to use (not closed by this class); default: own one.
        retry: initial reconnection time in seconds (a ``retry:`` field replaces it).
        last_event_id: resume from this id (sent as ``Last-Event-ID`` on the first request).
        max_retries: consecutive reconnections without a single event before giving up
            (None: never give up, as browsers).
        backoff_cap: seconds; repeated network failures back off exponentially from
            ``retry`` up to this.
        open_timeout: seconds for connecting and receiving the response headers.
        read_timeout: seconds without a byte (heartbeats count) before reconnecting
            (None: wait forever, as browsers).
        max_event_size: characters one event may grow to (None: unbounded).
        sensitive_query_params: query parameters redacted in ``url.query`` / ``url.full``.
        tracer_provider: defaults to the global one.
        meter_provider: defaults to the global one.
    """

    def __init__(
        self,
        url: str,
        *,
        route: str | None = None,
        headers: Mapping[str, str] | None = None,
        client: Any = None,
        retry: float = 3.0,
        last_event_id: str = "",
        max_retries: int | None = None,
        backoff_cap: float = 30.0,
        open_timeout: float = 10.0,
        read_timeout: float | None = None,
        max_event_size: int | None = 16 * 2**20,
        sensitive_query_params: Iterable[str] = DEFAULT_SENSITIVE_QUERY_PARAMS,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        if httpx is None:  # pragma: no cover
            raise ImportError("TracedEventSource needs 'httpx': "
                              "pip install 'otel_channels[client]'")
        self.url = url
        path, self._url_attributes = _url_attributes(url, sensitive_query_params)
        self.route = route or path
        self.headers = dict(headers or {})
        #: Seconds to wait before reconnecting (updated by ``retry:`` fields).
        self.retry = retry
        #: The last event id string; sent as ``Last-Event-ID`` when reconnecting.
        self.last_event_id = last_event_id
        self.max_retries = max_retries
        self.backoff_cap = backoff_cap
        self.max_event_size = max_event_size
        self.open_timeout = open_timeout
        self.timeout = httpx.Timeout(open_timeout, read=read_timeout)
        #: ``"connecting"``, ``"open"`` or ``"closed"``.
        self.ready_state = "connecting"
        #: Reconnections made so far (not counting the first connection).
        self.reconnects = 0
        self._client = client
        self._owns_client = client is None
        self._telemetry = _telemetry(tracer_provider, meter_provider)
        self._metric_attributes: dict[str, Any] = {
            sc.NETWORK_PROTOCOL_NAME: "sse", URL_TEMPLATE: self.route,
        }
        self._response: Any = None
        self._chunks: Any = None
        self._parser: EventStreamParser | None = None
        self._pending: collections.deque[MessageEvent] = collections.deque()
        self._connect_links: list[Link] = []
        self._connect_context: SpanContext | None = None
        self._current: _Current | None = None
        self._connections = 0
        self._opened_at = 0.0
        self._stream_events = 0
        self._failures = 0  # consecutive connections that brought no event
        self._network_failure = False  # the last connection ended with a network error
        self._last_error: BaseException | None = None
        self._closed = False
        self._closed_event = asyncio.Event()

    @property
    def connect_span_context(self) -> SpanContext | None:
        """Span context of the last successful ``connect`` span."""
        return self._connect_context

    async def __aenter__(self) -> TracedEventSource:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._end_current(exc)
        await self.aclose()

    def __aiter__(self) -> TracedEventSource:
        return self

    async def __anext__(self) -> MessageEvent:
        self._end_current()
        event = await self._next_event()
        if event is None:
            raise StopAsyncIteration
        self._received(event)
        return event

    async def aclose(self) -> None:
        """Stop: close the stream, never reconnect; iteration ends. Idempotent.

        Called by itself when the source fails, so a failed source holds nothing open.
        """
        self._closed = True
        self._closed_event.set()
        self.ready_state = "closed"
        self._pending.clear()
        self._end_current()
        await self._end_stream(None)
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    close = aclose

    # -- the stream ------------------------------------------------------------------------

    async def _next_event(self) -> MessageEvent | None:
        while True:
            if self._closed:
                return None
            if self._pending:
                return self._pending.popleft()
            if self._response is None:
                await self._connect()
                continue
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                await self._end_stream(None)  # the server ended the stream: reconnect
                continue
            except Exception as exc:
                if self._closed:
                    return None
                if not isinstance(exc, httpx.TransportError):
                    raise
                await self._end_stream(exc)
                continue
            parser = self._parser
            assert parser is not None
            try:
                events = parser.feed(chunk)
            except EventTooLarge as exc:
                self._closed = True
                await self._end_stream(exc)
                await self.aclose()
                raise EventSourceError(str(exc)) from exc
            if parser.retry is not None:
                self.retry = min(parser.retry / 1000.0, _MAX_RETRY)
            self.last_event_id = parser.last_event_id
            if events:
                self._stream_events += len(events)
                self._pending.extend(events)

    async def _connect(self) -> None:
        """Wait out the reconnection time if this is a reconnection, then open the stream."""
        if self._connections:
            if self.max_retries is not None and self._failures > self.max_retries:
                await self.aclose()
                raise EventSourceError(
                    f"gave up after {self.max_retries} reconnections without an event"
                ) from self._last_error
            await self._wait(self._reconnect_delay())
            if self._closed:
                return
            self.reconnects += 1
            self._telemetry.reconnects.add(1, self._metric_attributes)
        attempt = self._connections
        self._connections += 1
        if self._client is None:
            self._client = httpx.AsyncClient()
        headers: dict[str, Any] = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        headers.update(self.headers)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id.encode("utf-8")
        attributes = dict(self._url_attributes)
        attributes.update({
            sc.HTTP_REQUEST_METHOD: "GET", sc.NETWORK_PROTOCOL_NAME: "sse",
            URL_TEMPLATE: self.route,
        })
        if attempt:
            attributes[HTTP_REQUEST_RESEND_COUNT] = attempt
        span = self._telemetry.tracer.start_span(
            f"connect {self.route}", kind=SpanKind.CLIENT, attributes=attributes
        )
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            propagate.inject(headers)
            try:
                request = self._client.build_request("GET", self.url, headers=headers,
                                                     timeout=self.timeout)
                # open_timeout bounds the whole wait for the response headers, whatever
                # read_timeout is (that one is for the idle stream).
                response = await asyncio.wait_for(
                    self._client.send(request, stream=True, follow_redirects=True),
                    self.open_timeout,
                )
            except (httpx.TransportError, asyncio.TimeoutError) as caught:
                exc: BaseException = caught
                if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, TimeoutError):
                    exc = TimeoutError("no response headers within open_timeout")  # 3.10
                _record_error(span, exc)
                span.end()
                if isinstance(exc, httpx.UnsupportedProtocol):
                    await self.aclose()
                    raise EventSourceError(str(exc)) from exc
                self._failures += 1
                self._network_failure = True
                self._last_error = exc
                return  # a network error: reconnect
            except BaseException as exc:
                _record_error(span, exc)
                span.end()
                raise
        status = response.status_code
        content_type = response.headers.get("content-type")
        if span.is_recording():
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
        problem = None
        if status != 200:
            problem = f"HTTP {status} from {self.url}"
            error_type = str(status)
        elif (content_type or "").split(";", 1)[0].strip().lower() != "text/event-stream":
            problem = f"Content-Type {content_type!r} is not text/event-stream"
            error_type = "invalid_content_type"
        if problem is not None:
            error = EventSourceError(problem, status=status, content_type=content_type)
            _record_error(span, error, error_type)
            span.end()
            await response.aclose()
            await self.aclose()
            raise error
        span.end()
        self._connect_context = span.get_span_context()
        self._connect_links = _links(self._connect_context)
        self._response = response
        self._chunks = response.aiter_bytes()
        self._parser = EventStreamParser(self.last_event_id, self.max_event_size)
        self._opened_at = time.monotonic()
        self._stream_events = 0
        self.ready_state = "open"

    def _reconnect_delay(self) -> float:
        if not self._network_failure or self._failures <= 1:
            return self.retry
        growing = self.retry * 2.0 ** min(self._failures - 1, 30)
        return min(growing, max(self.retry, self.backoff_cap))

    async def _wait(self, delay: float) -> None:
        if delay <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):  # aclose() meanwhile wakes it at once
            await asyncio.wait_for(self._closed_event.wait(), delay)

    async def _end_stream(self, error: BaseException | None) -> None:
        """The open stream ended (EOF, network error or ``aclose``): record it, forget it."""
        response, self._response = self._response, None
        if response is None:
            return
        self._chunks = None
        if self._parser is not None:
            self._parser.close()  # an incomplete event at EOF is discarded
            self._parser = None
        attributes = dict(self._metric_attributes)
        if error is not None:
            attributes[sc.ERROR_TYPE] = type(error).__qualname__
        self._telemetry.connection_duration.record(time.monotonic() - self._opened_at, attributes)
        if not self._closed:
            self.ready_state = "connecting"
        self._network_failure = error is not None
        if error is not None:
            self._last_error = error
        if self._stream_events:
            self._failures = 0
        else:
            self._failures += 1
        with contextlib.suppress(Exception):  # a broken transport has nothing left to release
            await response.aclose()

    # -- events ---------------------------------------------------------------------------

    def _received(self, event: MessageEvent) -> None:
        telemetry = self._telemetry
        telemetry.sse_events.add(1, self._metric_attributes)
        fields = event.fields
        remote = None
        if fields:
            traceparent = fields.get("traceparent")
            if traceparent:
                remote = _carrier.parse_traceparent(traceparent, fields.get("tracestate"))
        span = _start_receive(
            telemetry, self.route, remote, self._connect_links, "sse", event.data, None,
            SSE_EVENT_TYPE, event.type, event.id,
        )
        self._current = _Current(span)

    def _end_current(self, exc: BaseException | None = None) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.end(exc)
