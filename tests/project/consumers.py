"""Consumers of the test project: a traced chat room and a plain Channels one."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from opentelemetry import propagate

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer


class RoomMember:
    """Joins group ``room_<room>`` on connect and leaves it on disconnect."""

    async def connect(self):
        self.group = f"room_{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)


class ChatConsumer(RoomMember, TracedAsyncJsonWebsocketConsumer):
    """``{"text": ...}`` in -> broadcast to ``room_<room>``; broadcasts out as JSON."""

    async def receive_json(self, content, **kwargs):
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "text": content.get("text"),
                         "worker": self.scope.get("server", ["", 0])[1]},
        )

    async def chat_message(self, event):
        await self.send_json(event)


class TraceReplyChatConsumer(ChatConsumer):
    """ChatConsumer whose outbound broadcasts carry the W3C context of the ``process``
    span handling them, so a traced client's ``receive`` span continues the trace."""

    async def chat_message(self, event):
        reply = dict(event)
        propagate.inject(reply)  # "traceparent" (and "tracestate") keys of the current span
        await self.send_json(reply)


class PlainChatConsumer(RoomMember, AsyncJsonWebsocketConsumer):
    """A plain Channels consumer in the same room: the instrumentor covers it."""

    async def chat_message(self, event):
        await self.send_json(event)


class EchoConsumer(TracedAsyncJsonWebsocketConsumer):
    """Echoes JSON frames: for protective settings (sizes, rates, bad frames)."""

    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class FlakyConsumer(ChatConsumer):
    """ChatConsumer whose handler raises on every 7th delivery in this worker process."""

    deliveries = 0

    async def chat_message(self, event):
        FlakyConsumer.deliveries += 1
        if FlakyConsumer.deliveries % 7 == 0:
            raise RuntimeError(f"flaky delivery {FlakyConsumer.deliveries}")
        await self.send_json(event)
