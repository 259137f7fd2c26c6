"""The traced WebSocket client: a thin transport on ``websockets`` plus its span recorder."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from ..telemetry import carrier as _carrier
from ..telemetry import semconv as sc
from ..telemetry.names import DEFAULT_SENSITIVE_QUERY_PARAMS
from ..telemetry.wire import classify_close
from ._common import (
    EMPTY,
    ClientTelemetry,
    ConnectionRecorder,
    backoff_delay,
    client_telemetry,
    message_size,
    record_error,
    url_attributes,
)

try:  # optional dependency: the "client" extra
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

__all__ = ["TracedWebSocketClient"]

# Indirection so tests can observe the backoff delays without waiting them out.
_sleep = asyncio.sleep


class _WebSocketRecorder(ConnectionRecorder):
    """The WebSocket-only telemetry: message counts and sizes, ``send`` and ``disconnect``."""

    def __init__(self, telemetry: ClientTelemetry, route: str,
                 url_attributes: dict[str, Any]) -> None:
        super().__init__(telemetry, route, sc.PROTOCOL_WEBSOCKET, url_attributes)
        self.attrs_in = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: "receive"}
        self.attrs_out = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: "transmit"}
        self.frames_in = 0
        self.frames_out = 0

    def opened(self, span: trace.Span, status: int, subprotocol: str | None = None) -> None:
        super().opened(span, status, subprotocol)
        self.frames_in = self.frames_out = 0

    def start_send(self) -> trace.Span:
        """The PRODUCER ``send`` span of one message (``send_spans=True``)."""
        return self.telemetry.tracer.start_span(
            f"{sc.SPAN_SEND} {self.route}", kind=SpanKind.PRODUCER, links=self.links
        )

    def sending(self, data: str | bytes, span: trace.Span | None, carrier: trace.Span) -> None:
        """Count one outbound message; describe it on its ``send`` span or as an event."""
        size = message_size(data)
        telemetry = self.telemetry
        telemetry.websocket_messages.add(1, self.attrs_out)
        telemetry.websocket_message_size.record(size, self.attrs_out)
        self.frames_out += 1
        if not carrier.is_recording():
            return
        attributes = {
            sc.WEBSOCKET_MESSAGE_TYPE: "text" if isinstance(data, str) else "binary",
            sc.MESSAGING_MESSAGE_BODY_SIZE: size,
        }
        if span is None:
            carrier.add_event(sc.EVENT_WEBSOCKET_SEND, attributes)
            return
        span.set_attributes(attributes)
        span.set_attributes({
            sc.MESSAGING_OPERATION_NAME: "send",
            sc.MESSAGING_OPERATION_TYPE: "send",
            sc.NETWORK_PROTOCOL_NAME: sc.PROTOCOL_WEBSOCKET,
            sc.URL_TEMPLATE: self.route,
        })

    def received(self, data: str | bytes, remote: SpanContext | None) -> None:
        """Count one inbound message and start its ``receive`` span."""
        size = message_size(data)
        self.telemetry.websocket_messages.add(1, self.attrs_in)
        self.telemetry.websocket_message_size.record(size, self.attrs_in)
        self.frames_in += 1
        self.receive(remote, data, size, sc.WEBSOCKET_MESSAGE_TYPE,
                     "text" if isinstance(data, str) else "binary")

    def disconnected(self, code: int, reason: str | None) -> None:
        """The end of a connection: its duration and the INTERNAL ``disconnect`` span."""
        self.end_receive()
        error_type = classify_close(code)
        duration, attributes = self.ended(error_type)
        span = self.telemetry.tracer.start_span(
            f"{sc.SPAN_DISCONNECT} {self.route}", context=EMPTY, kind=SpanKind.INTERNAL,
            links=self.links,
        )
        if span.is_recording():
            span.set_attributes({
                **attributes,
                sc.WEBSOCKET_CLOSE_CODE: code,
                sc.CHANNELS_CONNECTION_STATUS: "closed" if error_type is None else "error",
                sc.CHANNELS_CONNECTION_DURATION: duration,
                sc.CHANNELS_FRAMES_RECEIVED: self.frames_in,
                sc.CHANNELS_FRAMES_SENT: self.frames_out,
            })
            if reason:
                span.set_attribute(sc.WEBSOCKET_CLOSE_REASON, reason[:123])  # the frame's limit
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR, f"close code {code}"))
        span.end()


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
        path, attributes = url_attributes(url, sensitive_query_params)
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
        self._recorder = _WebSocketRecorder(
            client_telemetry(tracer_provider, meter_provider), self.route, attributes)
        self._random = random.Random()
        self._finished = True  # the current connection's end has been recorded
        self._closing = False  # close() was called: never reconnect

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TracedWebSocketClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._recorder.end_receive(exc)
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
        return self._recorder.connect_context

    async def _connect(self, first_attempt: int) -> None:
        attempt = first_attempt
        while True:
            if attempt:
                delay = backoff_delay(attempt - 1, self.backoff_base, self.backoff_cap,
                                      self._random.random)
                self.reconnects += 1
                self._recorder.reconnecting()
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
        recorder = self._recorder
        span = recorder.start_connect(attempt)
        headers = dict(self.headers)
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            propagate.inject(headers)  # the server's connect span becomes its child
            try:
                connection = await _ws_connect(
                    self.url, additional_headers=headers, subprotocols=self.subprotocols,
                    open_timeout=self.open_timeout, ping_interval=self.ping_interval,
                    ping_timeout=self.ping_timeout, close_timeout=self.close_timeout,
                    max_size=self.max_size, **self.connect_options,
                )
            except BaseException as exc:
                if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, TimeoutError):
                    # Python 3.10: one TimeoutError everywhere, as on 3.11+.
                    exc = TimeoutError(str(exc) or "timed out during opening handshake")
                    recorder.connect_failed(span, exc)
                    raise exc from None
                status = _status_of(exc)
                recorder.connect_failed(span, exc, status,
                                        str(status) if status is not None else None)
                raise
        response = connection.response
        recorder.opened(span, response.status_code if response is not None else 101,
                        str(connection.subprotocol) if connection.subprotocol else None)
        self.connection = connection
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

    # -- messages -------------------------------------------------------------------------

    async def send(self, message: str | bytes | dict[str, Any] | list[Any]) -> None:
        """Send text, bytes, or a dict / list as JSON text (a dict may carry ``traceparent``)."""
        connection = await self._ready()
        recorder = self._recorder
        span = recorder.start_send() if self.send_spans else None
        carrier = span if span is not None else trace.get_current_span()
        data = _encode(message, self.json_traceparent_key, carrier.get_span_context())
        recorder.sending(data, span, carrier)
        if span is None:
            await connection.send(data)
            return
        try:
            await connection.send(data)
        except BaseException as exc:
            record_error(span, exc)
            raise
        finally:
            span.end()

    def __aiter__(self) -> TracedWebSocketClient:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def recv(self) -> str | bytes:
        """The next message; ``ConnectionClosed`` when the connection has ended."""
        self._recorder.end_receive()
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
            self._recorder.received(
                data, _traceparent_of(data, self._json_needle, self.json_traceparent_key))
            return data

    # -- closing --------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` / ``reason``; no reconnection after this."""
        self._closing = True
        self._recorder.end_receive()
        connection = self.connection
        if connection is None:
            return
        if connection.state is not State.CLOSED:
            await connection.close(code, reason)
        self._finish(code)

    def _finish(self, sent_code: int | None = None) -> None:
        """Record the end of the current connection, once."""
        connection = self.connection
        if self._finished or connection is None:
            return
        self._finished = True
        code = connection.close_code
        if code is None:  # no close frame came back: ours, or 1006 for a dropped connection
            code = sent_code if sent_code is not None else 1006
        self._recorder.disconnected(code, connection.close_reason)


def _encode(message: Any, key: str | None, ctx: SpanContext) -> str | bytes:
    """The frame for ``message``; a dict gets ``ctx`` as ``traceparent`` under ``key``."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    if isinstance(message, dict) and key and ctx.is_valid and key not in message:
        message = dict(message)  # never mutate the caller's dict
        message[key] = _carrier.client_traceparent(ctx)  # "-01": W3C Level 1 servers too
        if ctx.trace_state and "tracestate" not in message:
            message["tracestate"] = ctx.trace_state.to_header()
    return json.dumps(message, separators=(",", ":"))


def _traceparent_of(data: str | bytes, needle: str | None,
                    key: str | None) -> SpanContext | None:
    """The ``traceparent`` a JSON object message carries under ``key``, if any."""
    # A substring test first: most messages then skip a second JSON parse.
    if needle is not None and isinstance(data, str) and needle in data:
        return _carrier.json_traceparent(data, key or "")
    return None


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
