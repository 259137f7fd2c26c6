"""The fan-out consumers: one group, a frame in becomes a broadcast, a broadcast goes out.

The plain and the traced consumer share every line of behaviour (the mixin);
only the base class differs, which is exactly what a user changes.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer

GROUP = "fanout"


class FanoutMixin:
    """``{"i": n, "t": send time}`` in -> ``group_send`` to everyone -> the same out."""

    channel_layer: Any
    channel_name: str

    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()  # type: ignore[attr-defined]

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        await self.channel_layer.group_send(
            GROUP, {"type": "fanout.message", "i": content["i"], "t": content["t"]}
        )

    async def fanout_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"i": event["i"], "t": event["t"]})  # type: ignore[attr-defined]


class PlainFanoutConsumer(FanoutMixin, AsyncJsonWebsocketConsumer):
    """Plain Channels."""


class TracedFanoutConsumer(FanoutMixin, TracedAsyncJsonWebsocketConsumer):
    """The same consumer, traced by otel_channels."""
