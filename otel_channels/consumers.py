"""Traced drop-in subclasses of Channels' four generic WebSocket consumers.

Swap the import and nothing else changes::

    from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer

    class ChatConsumer(TracedAsyncJsonWebsocketConsumer):
        async def receive_json(self, content): ...

They behave exactly like their Channels parents and work without
``"otel_channels"`` in ``INSTALLED_APPS`` (tracer and meter come from the
global OpenTelemetry providers). Spans and metrics: see the README.
"""

from __future__ import annotations

from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

from ._websocket import TracedConsumerMixin

__all__ = [
    "TracedAsyncJsonWebsocketConsumer",
    "TracedAsyncWebsocketConsumer",
    "TracedJsonWebsocketConsumer",
    "TracedWebsocketConsumer",
]


class TracedWebsocketConsumer(TracedConsumerMixin, WebsocketConsumer):
    """:class:`channels.generic.websocket.WebsocketConsumer`, traced."""


class TracedAsyncWebsocketConsumer(TracedConsumerMixin, AsyncWebsocketConsumer):
    """:class:`channels.generic.websocket.AsyncWebsocketConsumer`, traced."""


class TracedJsonWebsocketConsumer(TracedConsumerMixin, JsonWebsocketConsumer):
    """:class:`channels.generic.websocket.JsonWebsocketConsumer`, traced."""

    _otel_json_frames = True


class TracedAsyncJsonWebsocketConsumer(TracedConsumerMixin, AsyncJsonWebsocketConsumer):
    """:class:`channels.generic.websocket.AsyncJsonWebsocketConsumer`, traced."""

    _otel_json_frames = True
