"""Tracing one WebSocket connection: the state the four traced consumers share.

Every span is short (docs/spans.md): ``connect {route}`` for the handshake,
``receive {route}`` per handled inbound frame (not the idle wait before it),
``disconnect {route}``, ``process {group}`` per channel-layer message
(:mod:`..delivery.process`), and optionally ``send {route}`` per outbound frame. The
spans are built by :mod:`..telemetry.spans`, frame decisions made by :mod:`.frames`.

The active-connection count goes up at accept and down exactly once in
``__call__``'s ``finally``, whatever ends the connection. Between spans the
connection's task runs under the shared unsampled context, so an unsampled
frame or message needs no context switch of its own, and ``active_span`` (the
span being handled, or the unsampled one) spares outbound frames a lookup.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Status, StatusCode

from ..conf import Config, get_config
from ..telemetry import (
    instruments as _telemetry,
)
from ..telemetry import (
    rates as _rates,
)
from ..telemetry import (
    sampling as _sampling,
)
from ..telemetry import semconv as sc
from ..telemetry import (
    spans as _spans,
)
from ..telemetry.names import route_of
from ..telemetry.wire import size_of
from .asgi import application_codes_only, close_codes_for, sendable_close, wire_close_code
from .frames import FrameGuard, FrameParent, Rejection, span_cap

Dispatch = Callable[[dict[str, Any]], Awaitable[Any]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

_DROPPED_SPAN = _sampling.DROPPED_SPAN


async def _nothing() -> None:
    return None


class _Route:
    """What every connection of one consumer class on one route shares (issue 20: the
    per-connection cost): its names, metric attributes and counter cells, and the
    objects that hold no per-connection state until the connection needs its own."""

    __slots__ = ("attrs_in", "attrs_out", "config", "count_in", "count_out", "frame_parent",
                 "guard", "metric_attributes", "name", "off", "route", "telemetry")

    def __init__(self, cls: type, route: str, telemetry: _telemetry.Telemetry,
                 config: Config) -> None:
        self.telemetry, self.config = telemetry, config
        self.name = cls.__qualname__
        self.route = route
        self.metric_attributes = {sc.NETWORK_PROTOCOL_NAME: sc.PROTOCOL_WEBSOCKET,
                                  sc.HTTP_ROUTE: route}
        self.attrs_in = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: "receive"}
        self.attrs_out = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: "transmit"}
        self.count_in = telemetry.websocket_messages.cell(self.attrs_in)
        self.count_out = telemetry.websocket_messages.cell(self.attrs_out)
        # The class's or route's own rate (off: 0, no span of the connection at all).
        rate, self.off = _rates.route_rate(config, route, cls)
        self.frame_parent = FrameParent(config, None, rate=rate)  # until the handshake
        guard = FrameGuard(config.MAX_FRAME_SIZE, config.MAX_FRAME_RATE)
        self.guard = None if guard.active else guard  # a rate limit counts per connection


#: ``(consumer class, route)`` -> its :class:`_Route`; rebuilt when settings or providers change.
_ROUTES: dict[tuple[type, str], _Route] = {}
_MAX_ROUTES = 4096  # route templates and classes are few; a bound all the same


def _route_for(cls: type, scope: dict[str, Any], telemetry: _telemetry.Telemetry,
               config: Config) -> _Route:
    route = route_of(scope, cls.__name__)
    shared = _ROUTES.get((cls, route))
    if shared is None or shared.config is not config or shared.telemetry is not telemetry:
        if len(_ROUTES) >= _MAX_ROUTES:
            _ROUTES.clear()
        shared = _ROUTES[(cls, route)] = _Route(cls, route, telemetry, config)
    return shared


class Connection:
    """Per-connection tracing state (``consumer._otel``); slotted, the rest in :class:`_Route`."""

    __slots__ = ("accepted_at", "active", "active_span", "attrs_in", "attrs_out", "base", "cap",
                 "carrier_key", "close_reason", "closed_by_server", "config", "connect_link",
                 "connect_links", "connect_span", "channels_dispatch", "count_in", "count_out",
                 "ended", "frame_parent", "frames_in", "frames_out", "guard", "idle_span",
                 "ignored", "metric_attributes", "name", "off", "passthrough", "rejected",
                 "restricted", "route", "scope", "send", "server_send", "telemetry", "to_client",
                 "trace_sends")

    def __init__(self, consumer: Any, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.telemetry = telemetry = _telemetry.get()
        self.config = config = get_config()
        shared = _route_for(type(consumer), scope, telemetry, config)
        self.carrier_key = config.CARRIER_KEY
        self.active = telemetry.active()
        self.guard = shared.guard or FrameGuard(config.MAX_FRAME_SIZE, config.MAX_FRAME_RATE)
        self.ignored = config.IGNORED_FRAMES
        self.trace_sends = config.SEND_EVENTS or config.SEND_SPANS
        #: ``JSON_CONTEXT_TO_CLIENT``: the key dict frames ``send_json`` sends get, or None.
        self.to_client = config.JSON_TRACEPARENT_KEY if config.JSON_CONTEXT_TO_CLIENT else None
        #: No SDK and no message policy: a channel-layer message only loses its carrier.
        self.passthrough = not self.active and config.UNKNOWN_MESSAGE_POLICY == "raise"
        self.name, self.route, self.off = shared.name, shared.route, shared.off
        self.base = _spans.EMPTY  # the handshake's baggage, if any
        self.frame_parent = shared.frame_parent
        self.connect_span: trace.Span | None = None
        self.connect_link: Link | None = None  # built once: every later span links it
        self.connect_links: tuple[Link, ...] | None = None
        self.idle_span: trace.Span | None = _DROPPED_SPAN if self.active else None
        self.active_span: trace.Span | None = self.idle_span
        self.send: ASGISend | None = None
        self.channels_dispatch: Dispatch | None = None  # Channels' own, bound at first use
        self.server_send: ASGISend | None = None
        # restricted: the server refuses protocol close codes (daphne)
        self.restricted = self.rejected = self.ended = False
        self.accepted_at: float | None = None
        self.closed_by_server: int | None = None
        self.close_reason: str | None = None
        self.frames_in = self.frames_out = 0
        self.cap = span_cap(config.MAX_SPANS_PER_CONNECTION)
        self.metric_attributes, self.attrs_in, self.attrs_out = (
            shared.metric_attributes, shared.attrs_in, shared.attrs_out)
        self.count_in, self.count_out = shared.count_in, shared.count_out

    async def _run(self, span: trace.Span, message: dict[str, Any], dispatch: Dispatch,
                   base: Context) -> Any:
        """Handle ``message`` with ``span`` current in ``base``; exception recorded, then ended."""
        self.active_span = span
        token = _spans.activate(span, base)
        try:
            return await dispatch(message)
        except BaseException as exc:
            _spans.record_exception(span, exc)
            raise
        finally:
            _spans.deactivate(token)
            self.active_span = self.idle_span
            span.end()

    # -- connect ----------------------------------------------------------------------

    async def on_connect(self, message: dict[str, Any], dispatch: Dispatch) -> Any:
        scope, config = self.scope, self.config
        headers = _spans.decode_headers(scope)
        parent, links = _spans.handshake_context(scope, headers, config)
        span = _spans.start_connect(self.telemetry, self.route, sc.PROTOCOL_WEBSOCKET, self.name,
                                    {**scope, "scheme": scope.get("scheme") or "ws"}, headers,
                                    config, parent=parent, links=links)
        self.base = _spans.baggage_of(parent)  # every later span's context keeps it
        context = span.get_span_context()
        if context.is_valid:
            self.connect_link = Link(context)
            self.connect_links = (self.connect_link,)  # a process span's links, built once
        shared = self.frame_parent
        # Its own decision only when it differs from the route's: a connect to link or a
        # parent, baggage, or a user to ask ("authenticated").
        if context.is_valid or self.base is not _spans.EMPTY or shared.trust == "authenticated":
            self.frame_parent = FrameParent(config, context, self.base, scope, shared.rate)
        self.connect_span = self.active_span = span
        # Nothing to make current (no SDK, client context or baggage): no context (issue 20).
        current = self.active or context.is_valid or self.base is not _spans.EMPTY
        token = _spans.activate(span, self.base) if current else None
        try:
            return await dispatch(message)
        except BaseException as exc:
            _spans.record_exception(span, exc)
            self._end_connect("error")
            raise
        finally:
            if token is not None:
                _spans.deactivate(token)
            self.active_span = self.idle_span
            self._end_connect("pending")  # the handler returned without accept or close

    def _end_connect(self, status: str, code: int | None = None) -> None:
        span, self.connect_span = self.connect_span, None
        if span is not None:
            status_code = {"accepted": 101, "rejected": 403}.get(status)
            _spans.end_connect(span, status, status_code, code if status == "rejected" else None)

    # -- outbound ASGI messages --------------------------------------------------------

    def wrap_send(self, send: ASGISend) -> ASGISend:
        """The consumer's ASGI ``send``: sees accept, close, every frame (no closure: issue 20)."""
        if not self.active:  # no SDK installed: nothing to record
            self.send = close_codes_for(send)
            return self.send
        self.server_send = send
        self.restricted = application_codes_only(send)
        self.send = self._traced_send
        return self.send

    @markcoroutinefunction  # sync consumers hand it to async_to_sync
    def _traced_send(self, message: dict[str, Any]) -> Awaitable[None]:
        """Returns the server's awaitable: an untraced frame adds no coroutine frame of ours."""
        send = self.server_send
        assert send is not None
        message_type = message.get("type")
        if message_type == "websocket.send":
            self.frames_out += 1
            self.count_out[0] += 1
            if not self.trace_sends:
                return send(message)  # outbound frames are counted, not traced
            span = self.active_span or trace.get_current_span()
            if not span.is_recording():
                return send(message)
            return _spans.send_frame(self.telemetry, self.route, span, self.base, message,
                                     send, self.config.SEND_SPANS and self.cap.take(),
                                     self.attrs_out)
        if message_type == "websocket.accept":
            self._on_accept(message)
        elif message_type == "websocket.close":
            if self.restricted:
                message = sendable_close(message)
            self._on_close(message)
        return send(message)

    def _on_accept(self, message: dict[str, Any]) -> None:
        span = self.connect_span
        if span is not None and message.get("subprotocol"):
            span.set_attribute(sc.WEBSOCKET_SUBPROTOCOL, str(message["subprotocol"]))
        self._end_connect("accepted")
        if self.accepted_at is None:
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

    # -- inbound frames ---------------------------------------------------------------

    def on_frame(self, message: dict[str, Any], dispatch: Dispatch,
                 json_frames: bool) -> Awaitable[Any]:
        """The awaitable handling one inbound frame (Channels' own when it is not traced)."""
        self.frames_in += 1
        self.count_in[0] += 1
        if self.rejected:
            return _nothing()  # closing: frames already in flight are not handled
        text = message.get("text")
        if self.guard.active:
            rejection = self.guard.check(text, message.get("bytes"))
            if rejection is not None:
                return self._reject(rejection)
        if self.ignored and text is not None and text in self.ignored:
            return dispatch(message)
        decided = self.frame_parent.decide(text if json_frames else None)
        if decided is None:
            # Not sampled: no span, no histogram; what the handler starts is dropped too.
            if self.active:  # runs under the shared unsampled context between spans
                return dispatch(message)
            return self._untraced(message, dispatch, self.base)
        parent, links = decided
        if links is None or not self.cap.take():  # the same, under the frame's baggage
            return self._untraced(message, dispatch, parent)
        size = size_of(text, message.get("bytes") if text is None else None)
        self.telemetry.websocket_message_size.record(size, self.attrs_in)
        span = _spans.start_receive(self.telemetry, self.route, self.name, parent, links,
                                    text is not None, size)
        hook = self.config.SPAN_HOOK
        if hook is not None and span.is_recording():
            with contextlib.suppress(Exception):  # a user hook must never break the connection
                hook(span, self.scope, message)
        return self._run(span, message, dispatch, parent)  # parent: the frame's baggage

    async def _untraced(self, message: dict[str, Any], dispatch: Dispatch, base: Context) -> Any:
        token = _spans.activate(_DROPPED_SPAN, base)
        self.active_span = _DROPPED_SPAN
        try:
            return await dispatch(message)
        finally:
            self.active_span = self.idle_span
            _spans.deactivate(token)

    async def _reject(self, rejection: Rejection) -> None:
        """Close with the rejection's code instead of handling a frame."""
        self.telemetry.dropped_messages.add(1, {**self.metric_attributes,
                                                sc.ERROR_TYPE: rejection.kind})
        self.rejected = True
        close: dict[str, Any] = {"type": "websocket.close", "code": rejection.code}
        if self.restricted:
            close = sendable_close(close)
        # The span says the code actually sent (4009 under daphne, 1009 elsewhere).
        if not self.off:
            _spans.rejected_receive(self.telemetry, self.route, self.connect_link, rejection.kind,
                                    close["code"], rejection.size, rejection.why)
        assert self.send is not None  # set by wrap_send before any frame arrives
        await self.send({"type": "websocket.close", "code": rejection.code})  # mapped in send

    def bad_frame(self, kind: str, code: int) -> str:
        """Record a frame a JSON consumer cannot decode; returns ``BAD_FRAME_POLICY``."""
        self.telemetry.dropped_messages.add(1, {**self.metric_attributes, sc.ERROR_TYPE: kind})
        span = self.active_span
        if span is not None and span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        return self.config.BAD_FRAME_POLICY

    # -- disconnect and the end of the connection -------------------------------------

    async def on_disconnect(self, message: dict[str, Any], dispatch: Dispatch) -> Any:
        # The code on the wire, whatever the server reports (see .asgi).
        code = wire_close_code(self.closed_by_server, self.server_send, message.get("code"))
        attributes = _spans.close_attributes(self.frames_in, self.frames_out,
                                             message.get("reason") or self.close_reason,
                                             self.cap.dropped)
        duration = time.monotonic() - self.accepted_at if self.accepted_at is not None else 0.0
        span = _spans.start_disconnect(
            self.telemetry, self.route, sc.PROTOCOL_WEBSOCKET, self.name, self.connect_link,
            duration, attributes, close_code=code)
        return await self._run(span, message, dispatch, self.base)

    def finish(self) -> None:
        """Runs exactly once when the consumer's ``__call__`` exits, however it exits."""
        if self.ended:
            return
        self.ended = True
        self._end_connect("aborted")
        if self.accepted_at is not None:
            duration = time.monotonic() - self.accepted_at
            self.telemetry.active_connections.add(-1, self.metric_attributes)
            self.telemetry.connection_duration.record(duration, self.metric_attributes)
