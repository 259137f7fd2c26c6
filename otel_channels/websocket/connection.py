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

import time
from typing import Any

from opentelemetry.trace import Link

from ..delivery.process import Dispatch
from ..telemetry import semconv as sc
from ..telemetry import spans as _spans
from .asgi import wire_close_code
from .frames import FrameParent
from .inbound import Inbound

__all__ = ["Connection"]


class Connection(Inbound):
    """One traced connection: its handshake, its disconnect and its end, over the parts
    that send (:class:`.outbound.Outbound`) and receive (:class:`.inbound.Inbound`)."""

    __slots__ = ("channels_dispatch", "ended")

    def __init__(self, consumer: Any, scope: dict[str, Any]) -> None:
        super().__init__(consumer, scope)
        self.channels_dispatch: Dispatch | None = None  # Channels' own, bound at first use
        self.ended = False

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
