"""Tracing for one WebSocket connection, shared by the four traced consumers.

Every span here is short (DESIGN.md, "Trace model"):

* ``connect {route}`` SERVER, from the ``websocket.connect`` event to accept,
  reject (close before accept, ``DenyConnection``) or the end of the handler;
* ``receive {route}`` CONSUMER per handled inbound frame (handling only, not
  the idle wait before it): a new trace linking ``connect`` (``FRAME_TRACE_MODE
  ="link"``), or its child (``"child"``), or the child of a ``traceparent``
  carried in a JSON frame;
* ``send {route}`` PRODUCER per outbound frame when ``SEND_SPANS`` is on, or a
  ``websocket.send`` event on the span being handled when ``SEND_EVENTS`` is
  (both off by default: an outbound frame is counted, not traced on its own);
* ``disconnect {route}`` INTERNAL with close code, status, duration, frame
  counts, linked to ``connect``;
* ``process {group}`` for channel-layer messages (see :mod:`._process`).

The active-connection count goes up at accept and down exactly once in
``__call__``'s ``finally``, whatever ends the connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from . import _carrier, _process, _sampling, _telemetry
from . import _semconv as sc
from ._names import redact_query, route_of
from .conf import get_config

Dispatch = Callable[[dict[str, Any]], Awaitable[Any]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})
_EMPTY = otel_context.Context()


async def _nothing() -> None:
    return None


def classify_close(code: Any) -> str | None:
    """``None`` for a normal close (1000, 1001, 1005 no status), else ``error.type``."""
    if code is None or code in NORMAL_CLOSE_CODES:
        return None
    return str(int(code)) if isinstance(code, int) else str(code)  # IntEnum str() differs < 3.11


class _HeaderGetter:
    """Reads ASGI's ``[(bytes, bytes)]`` headers for the global propagator."""

    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def decode_headers(scope: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        try:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
        except (AttributeError, UnicodeDecodeError):
            continue
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


def client_context(
    scope: dict[str, Any], headers: dict[str, str], config: dict[str, Any]
) -> SpanContext | None:
    """Trace context the client sent: handshake headers, else ``?traceparent=``."""
    if config["CLIENT_CONTEXT"] == "ignore":
        return None
    extracted = propagate.extract(headers, getter=_GETTER)  # type: ignore[arg-type]
    ctx = trace.get_current_span(extracted).get_span_context()
    if ctx.is_valid:
        return ctx
    if config["QUERY_TRACEPARENT"]:
        from urllib.parse import parse_qs

        query = scope.get("query_string", b"")
        params = parse_qs(query.decode("latin-1") if isinstance(query, bytes) else str(query))
        values = params.get("traceparent")
        state = params.get("tracestate")
        if values:
            return _carrier.parse_traceparent(values[0], state[0] if state else None)
    return None


def application_codes_only(send: Any) -> bool:
    """Whether the ASGI server behind ``send`` lets a server send only 1000 or 3000-4999.

    daphne's WebSocket library (autobahn) refuses any other close code from the
    server ("invalid close code 1009") and the connection dies with 1011 instead.
    """
    func = getattr(send, "func", send)  # daphne passes functools.partial(handle_reply, ...)
    return str(getattr(func, "__module__", "")).startswith("daphne.")


def sendable_close(message: dict[str, Any]) -> dict[str, Any]:
    """Map a protocol close code such a server refuses to ``4000 + code % 1000``.

    1009 (too big) becomes 4009, 1008 (policy) 4008, 1003 (unsupported data)
    4003, 1007 (invalid payload) 4007, 1011 4011: the client still learns why.
    """
    code = message.get("code")
    if isinstance(code, int) and code != 1000 and not 3000 <= code <= 4999:
        return {**message, "code": 4000 + code % 1000}
    return message


def size_of(text: str | None, data: bytes | None) -> int:
    if text is not None:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return len(data) if data is not None else 0


class Connection:
    """Per-connection tracing state; the consumer holds one as ``self._otel``."""

    def __init__(self, consumer: Any, scope: dict[str, Any]) -> None:
        self.consumer = consumer
        self.scope = scope
        self.telemetry = _telemetry.get()
        self.config = get_config()
        self.carrier_key = self.config["CARRIER_KEY"]
        self.active = self.telemetry.active()
        self.ignored = self.config["IGNORED_FRAMES"]
        key = self.config["JSON_TRACEPARENT_KEY"]
        self.json_needle = (
            f'"{key}"' if key and self.config["CLIENT_CONTEXT"] != "ignore" else None
        )
        self.protective = self.config["MAX_FRAME_SIZE"] is not None or (
            self.config["MAX_FRAME_RATE"] is not None
        )
        self.trace_sends = self.config["SEND_EVENTS"] or self.config["SEND_SPANS"]
        #: No SDK and no message policy: a channel-layer message only loses its carrier.
        self.passthrough = not self.active and self.config["UNKNOWN_MESSAGE_POLICY"] == "raise"
        self.consumer_name = type(consumer).__qualname__
        self.route = route_of(scope, type(consumer).__name__)
        self.connect_span: trace.Span | None = None
        self.connect_context: SpanContext | None = None
        self.connect_link: Link | None = None  # built once: every process span links it
        # The task of a traced connection runs under the shared unsampled context
        # between spans (``TracedConsumerMixin.__call__``): an unsampled frame or message
        # needs no context switch of its own. ``active_span`` is the span being handled
        # (``idle_span`` between them), so outbound frames need no context lookup.
        self.under_dropped = self.active
        self.idle_span: trace.Span | None = _sampling.DROPPED_SPAN if self.active else None
        self.active_span: trace.Span | None = self.idle_span
        self.accepted_at: float | None = None
        self.counted = False
        self.closed_by_server: int | None = None
        self.close_reason: str | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.spans = 0
        self.spans_dropped = 0
        self.ended = False
        self.send: ASGISend | None = None
        self.rejected = False
        self.bucket_at: float | None = None
        self.tokens = 0.0
        self.metric_attributes = {
            sc.NETWORK_PROTOCOL_NAME: "websocket", sc.HTTP_ROUTE: self.route,
        }
        self.attrs_in = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: "receive"}
        self.attrs_out = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: "transmit"}
        self.receive_attributes = {
            sc.MESSAGING_SYSTEM: sc.SYSTEM_CHANNELS,
            sc.MESSAGING_OPERATION_NAME: "receive",
            sc.MESSAGING_OPERATION_TYPE: "process",
            sc.HTTP_ROUTE: self.route,
            sc.NETWORK_PROTOCOL_NAME: "websocket",
            sc.CHANNELS_CONSUMER: self.consumer_name,
        }
        self.count_in = self.telemetry.websocket_messages.cell(self.attrs_in)
        self.count_out = self.telemetry.websocket_messages.cell(self.attrs_out)

    # -- span budget ---------------------------------------------------------

    def _budget(self) -> bool:
        cap = self.config["MAX_SPANS_PER_CONNECTION"]
        if cap is not None and self.spans >= cap:
            self.spans_dropped += 1
            return False
        self.spans += 1
        return True

    # -- connect -------------------------------------------------------------

    async def on_connect(self, message: dict[str, Any], dispatch: Dispatch) -> Any:
        scope, config = self.scope, self.config
        headers = decode_headers(scope)
        client = client_context(scope, headers, config)
        parent, links = _EMPTY, []
        if client is not None:
            if config["CLIENT_CONTEXT"] == "parent":
                parent = trace.set_span_in_context(trace.NonRecordingSpan(client), _EMPTY)
            else:  # "link": never let a client force sampling or join our traces
                links.append(Link(client))
        span = self.telemetry.tracer.start_span(
            f"connect {self.route}", context=parent, kind=SpanKind.SERVER, links=links
        )
        self.connect_span = span
        self.connect_context = span.get_span_context()
        if self.connect_context.is_valid:
            self.connect_link = Link(self.connect_context)
        if span.is_recording():
            span.set_attributes(self._connect_attributes(headers))
        self.active_span = span
        token = otel_context.attach(trace.set_span_in_context(span, _EMPTY))
        try:
            return await dispatch(message)
        except BaseException as exc:
            _process.record_exception(span, exc)
            self._end_connect("error")
            raise
        finally:
            otel_context.detach(token)
            self.active_span = self.idle_span
            self._end_connect("pending")  # handler returned without accept or close

    def _connect_attributes(self, headers: dict[str, str]) -> dict[str, Any]:
        scope = self.scope
        attributes: dict[str, Any] = {
            sc.HTTP_ROUTE: self.route,
            sc.NETWORK_PROTOCOL_NAME: "websocket",
            sc.URL_SCHEME: scope.get("scheme") or "ws",
            sc.CHANNELS_CONSUMER: self.consumer_name,
        }
        path = scope.get("path")
        if isinstance(path, str):
            attributes[sc.URL_PATH] = path
        query = scope.get("query_string")
        if query:
            attributes[sc.URL_QUERY] = redact_query(query, self.config["SENSITIVE_QUERY_PARAMS"])
        client = scope.get("client")
        if client:
            attributes[sc.CLIENT_ADDRESS] = str(client[0])
            if len(client) > 1 and client[1] is not None:
                attributes[sc.CLIENT_PORT] = int(client[1])
        agent = headers.get("user-agent")
        if agent:
            attributes[sc.USER_AGENT_ORIGINAL] = agent[:1024]
        return attributes

    def _end_connect(self, status: str, code: int | None = None) -> None:
        span, self.connect_span = self.connect_span, None
        if span is None:
            return
        if span.is_recording():
            span.set_attribute(sc.CHANNELS_CONNECTION_STATUS, status)
            if status == "accepted":
                span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, 101)
            elif status == "rejected":
                span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, 403)
                if code is not None:
                    span.set_attribute(sc.WEBSOCKET_CLOSE_CODE, code)
        span.end()

    # -- outbound ASGI messages ----------------------------------------------

    def wrap_send(self, send: ASGISend) -> ASGISend:
        """The ASGI ``send`` the consumer gets: sees accept, close and every frame.

        A plain function returning the server's awaitable: an untraced frame
        adds no coroutine frame of ours.
        """

        restricted = application_codes_only(send)
        if not self.active:
            # No SDK installed: nothing to record, only close codes the server accepts.
            if not restricted:
                self.send = send
                return send

            def mapped_send(message: dict[str, Any]) -> Awaitable[None]:
                if message.get("type") == "websocket.close":
                    message = sendable_close(message)
                return send(message)

            self.send = markcoroutinefunction(mapped_send)
            return mapped_send

        def traced_send(message: dict[str, Any]) -> Awaitable[None]:
            message_type = message.get("type")
            if message_type == "websocket.send":
                self.frames_out += 1
                self.count_out[0] += 1
                if not self.trace_sends:
                    return send(message)  # outbound frames are counted, not traced
                span = self.active_span
                if span is None:
                    span = trace.get_current_span()
                if not span.is_recording():
                    return send(message)
                return self._send_traced(message, send, span)
            if message_type == "websocket.accept":
                self._on_accept(message)
            elif message_type == "websocket.close":
                if restricted:
                    message = sendable_close(message)
                self._on_close(message)
            return send(message)

        # Marked as a coroutine function: sync consumers hand it to async_to_sync.
        self.send = markcoroutinefunction(traced_send)
        return traced_send

    def _on_accept(self, message: dict[str, Any]) -> None:
        if self.connect_span is not None and message.get("subprotocol"):
            self.connect_span.set_attribute(sc.WEBSOCKET_SUBPROTOCOL, str(message["subprotocol"]))
        self._end_connect("accepted")
        if not self.counted:
            self.counted = True
            self.accepted_at = time.monotonic()
            self.telemetry.active_connections.add(1, self.metric_attributes)

    def _on_close(self, message: dict[str, Any]) -> None:
        code = message.get("code", 1000)
        self.closed_by_server = code if isinstance(code, int) else 1000
        reason = message.get("reason")
        if isinstance(reason, str) and reason:
            self.close_reason = reason[:123]  # a close reason is at most 123 bytes
        if self.accepted_at is None:
            self._end_connect("rejected", self.closed_by_server)

    async def _send_traced(self, message: dict[str, Any], send: ASGISend,
                           current: trace.Span) -> None:
        """An outbound frame inside a recording span, with ``SEND_EVENTS`` or ``SEND_SPANS`` on."""
        telemetry = self.telemetry
        text = message.get("text")
        size = size_of(text, message.get("bytes"))
        telemetry.websocket_message_size.record(size, self.attrs_out)
        attributes = {
            sc.WEBSOCKET_MESSAGE_TYPE: "text" if text is not None else "binary",
            sc.MESSAGING_MESSAGE_BODY_SIZE: size,
        }
        if not self.config["SEND_SPANS"] or not self._budget():
            current.add_event(sc.EVENT_WEBSOCKET_SEND, attributes)
            await send(message)
            return
        span = telemetry.tracer.start_span(
            f"send {self.route}", context=trace.set_span_in_context(current, _EMPTY),
            kind=SpanKind.PRODUCER, attributes=attributes,
        )
        try:
            await send(message)
        except BaseException as exc:
            _process.record_exception(span, exc)
            raise
        finally:
            span.end()

    # -- inbound frames --------------------------------------------------------

    def on_frame(self, message: dict[str, Any], dispatch: Dispatch,
                 json_frames: bool) -> Awaitable[Any]:
        """The awaitable handling one inbound frame (Channels' own when it is not traced)."""
        self.frames_in += 1
        self.count_in[0] += 1
        config = self.config
        text = message.get("text")
        if self.rejected:
            return _nothing()  # closing: frames already in flight are not handled
        limit = config["MAX_FRAME_SIZE"]
        if limit is not None:
            size = size_of(text, message.get("bytes") if text is None else None)
            if size > limit:
                # 1009 "message too big" (RFC 6455 7.4.1)
                return self._reject("frame_too_large", 1009, size,
                                    "frame larger than MAX_FRAME_SIZE")
        rate = config["MAX_FRAME_RATE"]
        if rate is not None and self._over_rate(rate):
            # 1008 "policy violation": a flood of frames, however small
            return self._reject("frame_rate_exceeded", 1008, 0,
                                "frames faster than MAX_FRAME_RATE")
        if self.ignored and text is not None and text in self.ignored:
            return dispatch(message)

        decided = self._frame_parent(text if json_frames else None, config)
        if decided is None or not self._budget():
            # Not sampled: no span, no histogram; children see an unsampled parent.
            if self.under_dropped:
                return dispatch(message)
            return self._untraced(message, dispatch)
        parent, links = decided

        telemetry = self.telemetry
        size = size_of(text, message.get("bytes") if text is None else None)
        telemetry.websocket_message_size.record(size, self.attrs_in)
        span = telemetry.tracer.start_span(
            f"receive {self.route}", context=parent, kind=SpanKind.CONSUMER, links=links,
            attributes={
                **self.receive_attributes,
                sc.WEBSOCKET_MESSAGE_TYPE: "text" if text is not None else "binary",
                sc.MESSAGING_MESSAGE_BODY_SIZE: size,
            },
        )
        if self.config["SPAN_HOOK"] is not None and span.is_recording():
            self._hook(span, message)
        return self._run(span, message, dispatch)

    def _frame_parent(
        self, json_text: str | None, config: dict[str, Any]
    ) -> tuple[otel_context.Context, list[Link]] | None:
        """``(parent context, links)`` for one inbound frame, or None when it is not sampled.

        Decides first and allocates after, so a dropped frame costs no Link or Context.
        """
        rate = config["MESSAGE_SAMPLE_RATE"]
        connect = self.connect_context
        client = self._json_traceparent(json_text, config) if json_text else None
        trusted = client is not None and config["CLIENT_CONTEXT"] == "parent"
        child = not trusted and config["FRAME_TRACE_MODE"] == "child" and connect is not None
        if trusted:
            keep = _sampling.keep_trace(client.trace_id, rate)  # type: ignore[union-attr]
        elif child:
            keep = connect.trace_flags.sampled and _sampling.draw(rate)  # type: ignore[union-attr]
        else:
            keep = _sampling.draw(rate)
        if not keep:
            return None
        links = [Link(connect)] if connect is not None and connect.is_valid else []
        if trusted:
            return trace.set_span_in_context(trace.NonRecordingSpan(client), _EMPTY), links  # type: ignore[arg-type]
        if client is not None:
            links.append(Link(client))  # "link": the client cannot force sampling
        if child:
            return trace.set_span_in_context(trace.NonRecordingSpan(connect), _EMPTY), []  # type: ignore[arg-type]
        return _EMPTY, links

    def _json_traceparent(self, text: str, config: dict[str, Any]) -> SpanContext | None:
        key, needle = config["JSON_TRACEPARENT_KEY"], self.json_needle
        if needle is None or needle not in text:
            return None  # the substring test keeps the common frame free of a second parse
        return _carrier.json_traceparent(text, key)

    async def _reject(self, kind: str, code: int, size: int, why: str) -> None:
        """Close with ``code`` instead of handling a frame; the handler never sees it."""
        telemetry = self.telemetry
        telemetry.dropped_messages.add(1, {**self.metric_attributes, sc.ERROR_TYPE: kind})
        self.rejected = True
        span = telemetry.tracer.start_span(
            f"receive {self.route}", context=_EMPTY, kind=SpanKind.CONSUMER,
            links=[Link(self.connect_context)] if self.connect_context else [],
        )
        if span.is_recording():
            span.set_attributes({
                sc.HTTP_ROUTE: self.route, sc.MESSAGING_MESSAGE_BODY_SIZE: size,
                sc.ERROR_TYPE: kind, sc.WEBSOCKET_CLOSE_CODE: code,
            })
            span.set_status(Status(StatusCode.ERROR, why))
        span.end()
        assert self.send is not None  # set by wrap_send before any frame arrives
        await self.send({"type": "websocket.close", "code": code})

    def _over_rate(self, rate: float) -> bool:
        """Token bucket of ``rate`` frames per second with a burst of ``rate`` frames."""
        now = time.monotonic()
        if self.bucket_at is None:
            self.bucket_at, self.tokens = now, float(rate)
        self.tokens = min(float(rate), self.tokens + (now - self.bucket_at) * rate)
        self.bucket_at = now
        if self.tokens < 1.0:
            return True
        self.tokens -= 1.0
        return False

    def bad_frame(self, kind: str) -> tuple[str, int]:
        """Record a frame a JSON consumer cannot decode; ``(policy, close code)``.

        ``kind`` is ``binary_frame`` (close 1003, unsupported data), ``empty_frame``
        or ``malformed_json`` (close 1007, invalid payload data), RFC 6455 7.4.1.
        """
        code = 1003 if kind == "binary_frame" else 1007
        self.telemetry.dropped_messages.add(1, {**self.metric_attributes, sc.ERROR_TYPE: kind})
        span = self.active_span
        if span is not None and span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        return self.config["BAD_FRAME_POLICY"], code

    def _hook(self, span: trace.Span, message: dict[str, Any]) -> None:
        hook = self.config["SPAN_HOOK"]
        if hook is not None:
            with contextlib.suppress(Exception):  # a user hook must never break the connection
                hook(span, self.scope, message)

    async def _run(self, span: trace.Span, message: dict[str, Any], dispatch: Dispatch) -> Any:
        self.active_span = span
        token = otel_context.attach(trace.set_span_in_context(span, _EMPTY))
        try:
            return await dispatch(message)
        except BaseException as exc:
            _process.record_exception(span, exc)
            raise
        finally:
            otel_context.detach(token)
            self.active_span = self.idle_span
            span.end()

    async def _untraced(self, message: dict[str, Any], dispatch: Dispatch) -> Any:
        token = otel_context.attach(_sampling.DROPPED_CONTEXT)
        self.active_span = _sampling.DROPPED_SPAN
        try:
            return await dispatch(message)
        finally:
            self.active_span = self.idle_span
            otel_context.detach(token)

    # -- channel-layer messages ----------------------------------------------

    def on_layer_message(self, message: dict[str, Any], dispatch: Dispatch) -> Awaitable[Any]:
        return _process.process(self.consumer, message, dispatch, self)

    # -- disconnect ------------------------------------------------------------

    async def on_disconnect(self, message: dict[str, Any], dispatch: Dispatch) -> Any:
        code = message.get("code")
        if not isinstance(code, int):
            code = self.closed_by_server if self.closed_by_server is not None else 1005
        reason = message.get("reason") or self.close_reason
        error_type = classify_close(code)
        links = [Link(self.connect_context)] if self.connect_context else []
        span = self.telemetry.tracer.start_span(
            f"disconnect {self.route}", context=_EMPTY, kind=SpanKind.INTERNAL, links=links
        )
        if span.is_recording():
            duration = time.monotonic() - self.accepted_at if self.accepted_at is not None else 0.0
            attributes: dict[str, Any] = {
                sc.HTTP_ROUTE: self.route,
                sc.NETWORK_PROTOCOL_NAME: "websocket",
                sc.CHANNELS_CONSUMER: self.consumer_name,
                sc.WEBSOCKET_CLOSE_CODE: code,
                sc.CHANNELS_CONNECTION_STATUS: "closed" if error_type is None else "error",
                sc.CHANNELS_CONNECTION_DURATION: duration,
                sc.CHANNELS_FRAMES_RECEIVED: self.frames_in,
                sc.CHANNELS_FRAMES_SENT: self.frames_out,
            }
            if isinstance(reason, str) and reason:
                attributes[sc.WEBSOCKET_CLOSE_REASON] = reason[:123]
            if self.spans_dropped:
                attributes[sc.CHANNELS_SPANS_DROPPED] = self.spans_dropped
            if error_type is not None:
                attributes[sc.ERROR_TYPE] = error_type
                span.set_status(Status(StatusCode.ERROR, f"close code {code}"))
            span.set_attributes(attributes)
        return await self._run(span, message, dispatch)

    # -- end of the connection -----------------------------------------------

    def finish(self) -> None:
        """Runs exactly once when the consumer's ``__call__`` exits, however it exits."""
        if self.ended:
            return
        self.ended = True
        self._end_connect("aborted")
        if self.counted:
            duration = time.monotonic() - (self.accepted_at or time.monotonic())
            self.telemetry.active_connections.add(-1, self.metric_attributes)
            self.telemetry.connection_duration.record(duration, self.metric_attributes)


class TracedConsumerMixin:
    """Put before a Channels WebSocket consumer class in the bases to trace it.

    Overrides only ``__call__`` (connection bookkeeping around Channels' own
    loop) and ``dispatch`` (one span per event); handlers, ``send``, ``accept``
    and ``close`` stay Channels' own, so behaviour is unchanged.
    """

    #: Skipped by the instrumentor's plain-consumer wrapper (no double spans).
    _otel_traced = True
    #: JSON consumers look for a ``traceparent`` in inbound frames.
    _otel_json_frames = False

    _otel: Connection

    async def __call__(self, scope: dict[str, Any], receive: Any, send: ASGISend) -> None:
        connection = Connection(self, scope)
        self._otel = connection
        # Between spans the connection runs under the shared unsampled context (see
        # Connection.under_dropped); the channel-layer reads Channels starts inherit it.
        token = otel_context.attach(_sampling.DROPPED_CONTEXT) if connection.active else None
        try:
            await super().__call__(scope, receive, connection.wrap_send(send))  # type: ignore[misc]
        finally:
            if token is not None:
                otel_context.detach(token)
            connection.finish()

    def dispatch(self, message: dict[str, Any]) -> Awaitable[Any]:
        # A plain function returning an awaitable: with no SDK, Channels' own dispatch
        # coroutine runs with no frame of ours around it.
        connection = self._otel
        key = connection.carrier_key
        if key in message:  # from the channel layer, whatever its type
            if connection.passthrough:  # no SDK: only the carrier must go
                clean = dict(message)
                del clean[key]
                return super().dispatch(clean)  # type: ignore[misc, no-any-return]
            return _process.process(self, message, super().dispatch, connection)  # type: ignore[misc]
        dispatch = super().dispatch  # type: ignore[misc]
        message_type = message.get("type")
        if message_type == "websocket.receive":
            if not connection.active and not connection.protective:
                connection.frames_in += 1  # no SDK and no protective setting: no other work
                return dispatch(message)  # type: ignore[no-any-return]
            return connection.on_frame(message, dispatch, self._otel_json_frames)
        if message_type == "websocket.connect":
            return connection.on_connect(message, dispatch)
        if message_type == "websocket.disconnect":
            return connection.on_disconnect(message, dispatch)
        return connection.on_layer_message(message, dispatch)
