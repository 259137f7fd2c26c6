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


# -- Baggage and close codes (tests/multiprocess/test_baggage*.py, test_servers_*.py) --------

from opentelemetry import baggage as otel_baggage  # noqa: E402
from opentelemetry import context as otel_context  # noqa: E402


class BaggageChatConsumer(RoomMember, TracedAsyncJsonWebsocketConsumer):
    """Baggage in and out: ``/ws/baggage/<room>/``.

    * ``{"echo": true}`` -> ``{"connect": tenant seen in connect(), "receive": tenant seen
      in receive_json()}`` (the ``tenant`` baggage entry, or None);
    * ``{"text": ..., "tenant": t}`` -> sets baggage ``tenant=t``, attaches it and
      broadcasts to ``room_<room>`` (without ``"tenant"``: broadcasts, no baggage set);
    * every broadcast -> the event plus ``"tenant"``: the baggage its handler sees.
    """

    async def connect(self):
        self.connect_tenant = otel_baggage.get_baggage("tenant")
        await super().connect()

    async def receive_json(self, content, **kwargs):
        if content.get("echo"):
            await self.send_json({"connect": self.connect_tenant,
                                  "receive": otel_baggage.get_baggage("tenant")})
            return
        message = {"type": "chat.message", "text": content.get("text")}
        if "tenant" not in content:
            await self.channel_layer.group_send(self.group, message)
            return
        token = otel_context.attach(otel_baggage.set_baggage("tenant", content["tenant"]))
        try:
            await self.channel_layer.group_send(self.group, message)
        finally:
            otel_context.detach(token)

    async def chat_message(self, event):
        await self.send_json({**event, "tenant": otel_baggage.get_baggage("tenant")})


class PlainBaggageConsumer(RoomMember, AsyncJsonWebsocketConsumer):
    """A plain Channels consumer in the room echoing the baggage its handler sees."""

    async def chat_message(self, event):
        await self.send_json({**event, "tenant": otel_baggage.get_baggage("tenant")})


class CloseConsumer(TracedAsyncJsonWebsocketConsumer):
    """``/ws/close/<room>/``: echoes JSON frames; ``{"close": code}`` closes with ``code``."""

    async def receive_json(self, content, **kwargs):
        if "close" in content:
            await self.close(code=int(content["close"]))
            return
        await self.send_json(content)
