"""``TracedConsumerMixin``: the two methods a traced WebSocket consumer overrides.

``__call__`` keeps one :class:`.connection.Connection` around Channels' own loop;
``dispatch`` routes each event: a frame to the connection's frame handling, a
channel-layer message to :func:`..delivery.process.process`, the handshake and
the disconnect to their spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from opentelemetry import context as otel_context

from ..delivery import process as _process
from ..layer.memberships import MEMBERSHIPS
from ..layer.subscriptions import CLOSE_CODE, CLOSE_REASON, SUBSCRIPTION_LOST
from ..telemetry import carrier as _carrier
from ..telemetry import sampling as _sampling
from ..telemetry.client_context import stamp
from .connection import Connection
from .state import ASGISend

_strip = _carrier.strip


def _with_context(send_json: Callable[..., Any], key: str) -> Callable[..., Any]:
    """A JSON consumer's ``send_json`` that adds the current sampled span's context to
    dicts; set on the instance only when ``JSON_CONTEXT_TO_CLIENT`` is on, so sends cost
    nothing more otherwise. A plain function: the async one returns Channels' coroutine."""

    def send_json_with_context(content: Any, *args: Any, **kwargs: Any) -> Any:
        if content.__class__ is dict:
            content = stamp(content, key)
        return send_json(content, *args, **kwargs)

    if asyncio.iscoroutinefunction(send_json):
        markcoroutinefunction(send_json_with_context)
    return send_json_with_context


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
    #: This consumer's share of frames traced (0.0 to 1.0), over its route's in
    #: ``SAMPLE_RATES`` and ``MESSAGE_SAMPLE_RATE``; 0.0: none of its spans at all.
    #: None: the route's rate.
    otel_sample_rate: float | None = None

    _otel: Connection

    async def __call__(self, scope: dict[str, Any], receive: Any, send: ASGISend) -> None:
        connection = Connection(self, scope)
        self._otel = connection
        if connection.to_client and self._otel_json_frames:  # JSON_CONTEXT_TO_CLIENT
            consumer: Any = self
            consumer.send_json = _with_context(consumer.send_json, connection.to_client)
        # Between spans the connection runs under the shared unsampled context; the
        # channel-layer reads Channels starts inherit it.
        token = otel_context.attach(_sampling.DROPPED_CONTEXT) if connection.active else None
        try:
            await super().__call__(scope, receive, connection.wrap_send(send))  # type: ignore[misc]
        finally:
            if token is not None:
                otel_context.detach(token)
            connection.finish()
            # No group membership outlives the consumer, however it ended (see layer.memberships).
            MEMBERSHIPS.release(getattr(self, "channel_layer", None),
                                getattr(self, "channel_name", None))

    def dispatch(self, message: dict[str, Any]) -> Awaitable[Any]:
        # A plain function returning an awaitable: with no SDK, Channels' own dispatch
        # coroutine runs with no frame of ours around it.
        connection = self._otel
        # Channels' own dispatch, bound once per connection: ``super().dispatch`` would
        # build a super object and a bound method for every message.
        dispatch = connection.channels_dispatch
        if dispatch is None:
            dispatch = connection.channels_dispatch = super().dispatch  # type: ignore[misc]
        key = connection.carrier_key
        if key in message:  # from the channel layer, whatever its type
            if connection.passthrough:  # no SDK: only the carrier must go (one copy per dict)
                return dispatch(_strip(message, key))
            return _process.process(self, message, dispatch, connection)
        message_type = message.get("type")
        if message_type == "websocket.receive":
            if not connection.active and not connection.guard.active:
                connection.frames_in += 1  # no SDK and no protective setting: no other work
                return dispatch(message)
            return connection.on_frame(message, dispatch, self._otel_json_frames)
        if message_type == "websocket.connect":
            MEMBERSHIPS.track(getattr(self, "channel_name", None))  # the groups it joins
            if connection.off:  # rate 0: no span, the handshake runs as Channels' own
                return dispatch(message)
            return connection.on_connect(message, dispatch)
        if message_type == "websocket.disconnect":
            if connection.off:
                return dispatch(message)
            return connection.on_disconnect(message, dispatch)
        if message_type == SUBSCRIPTION_LOST and connection.send is not None:
            # Queued by layer.subscriptions ("close"). The ASGI send itself: a sync consumer's
            # base_send is async_to_sync'ed, not callable on this loop.
            return connection.send({"type": "websocket.close", "code": CLOSE_CODE,
                                    "reason": CLOSE_REASON})
        return _process.process(self, message, dispatch, connection)
