"""The ASGI ``send`` of a traced WebSocket connection: accept, close and its code (what
the server will really send, daphne's refusals of protocol codes), outbound frames.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import markcoroutinefunction
from opentelemetry import trace

from ..telemetry import semconv as sc
from ..telemetry import spans as _spans
from .asgi import application_codes_only, close_codes_for, sendable_close
from .state import ASGISend, ConnectionState


class Outbound(ConnectionState):
    """What the connection sends: the wrapped ``send`` and the close-code bookkeeping."""

    __slots__ = ("close_reason", "closed_by_server", "frames_out", "restricted", "send",
                 "server_send")

    def __init__(self, consumer: Any, scope: dict[str, Any]) -> None:
        super().__init__(consumer, scope)
        self.send: ASGISend | None = None
        self.server_send: ASGISend | None = None
        self.restricted = False  # the server refuses protocol close codes (daphne)
        self.closed_by_server: int | None = None
        self.close_reason: str | None = None
        self.frames_out = 0

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
