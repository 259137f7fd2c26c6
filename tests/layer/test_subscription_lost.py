"""A pub/sub layer's lost subscription is never silent (issue 20, channels_redis#256).

A Redis of our own (never the shared one) is killed and started again under a
``RedisPubSubChannelLayer`` with traced consumers in a group: redis-py
resubscribes by itself and channels-redis says nothing, so what was published
in between is gone. These tests check what the instrumentor adds: the
``channels.layer.subscription.lost`` counter (layer class and group template),
a warning naming the layer and group, and with ``ON_SUBSCRIPTION_LOST =
"close"`` a 1012 close of each traced consumer in the group (the client
reconnects); with the default ``"count"`` the consumers stay open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from django.urls import path

from otel_channels import replay
from otel_channels.broadcast import abroadcast
from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer, TracedJsonWebsocketConsumer
from otel_channels.sse import EventStreamView
from otel_channels.telemetry import semconv as sc
from otel_channels.testing import EventStreamCommunicator
from tests.support.redis_layer import redis_layer_config
from tests.support.reliability import RedisServer, require_redis_server
from tests.support.reliability.clients import until

PUBSUB = "channels_redis.pubsub.RedisPubSubChannelLayer"
#: channels-redis's pub/sub layer on valkey-py: it talks to Redis as well.
VALKEY_PUBSUB = "channels_valkey.pubsub.ValkeyPubSubChannelLayer"


class Room(EventStreamView):
    groups = ["room_42"]


urlpatterns = [path("events/", Room.as_view())]
pytestmark = pytest.mark.urls(__name__)


class RoomConsumer(TracedAsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add("room_42", self.channel_name)
        await self.accept()

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"]})


class SyncRoomConsumer(TracedJsonWebsocketConsumer):
    def connect(self) -> None:
        from asgiref.sync import async_to_sync

        async_to_sync(self.channel_layer.group_add)("room_42", self.channel_name)
        self.accept()

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send_json({"text": event["text"]})


async def _restart_and_resubscribe(redis: RedisServer, metric_reader: Any) -> float:
    """Kill Redis, start it again, wait for the lost-subscription count; returns it."""
    redis.kill()
    await asyncio.sleep(0.5)
    redis.start()
    counted: list[float] = []

    def lost() -> bool:
        counted.append(metric_reader.sum(sc.M_SUBSCRIPTIONS_LOST))
        return sum(counted) > 0

    await until(lost, 30, "channels.layer.subscription.lost counted")
    return sum(counted)


@pytest.mark.parametrize(("policy", "consumer", "backend"), [
    ("count", RoomConsumer, PUBSUB), ("close", RoomConsumer, PUBSUB),
    ("close", SyncRoomConsumer, PUBSUB), ("close", RoomConsumer, VALKEY_PUBSUB)])
async def test_lost_subscription_is_counted_logged_and_closes_on_request(
        policy: str, consumer: Any, backend: str, metric_reader: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    require_redis_server("the test kills and restarts its own Redis")
    if backend == VALKEY_PUBSUB:
        pytest.importorskip("channels_valkey")
    layer_class = backend.rsplit(".", 1)[1]
    with RedisServer() as redis:
        config = redis_layer_config(redis.url, backend, prefix=f"otellost{uuid.uuid4().hex[:8]}")
        settings = {"ON_SUBSCRIPTION_LOST": policy}
        with override_settings(CHANNEL_LAYERS={"default": config}, OTEL_CHANNELS=settings):
            layer = get_channel_layer()
            clients = [WebsocketCommunicator(consumer.as_asgi(), "/ws/") for _ in range(2)]
            try:
                for client in clients:
                    connected, _ = await client.connect(timeout=10)
                    assert connected
                await layer.group_send("room_42", {"type": "chat.message", "text": "before"})
                for client in clients:
                    assert (await client.receive_json_from(timeout=10)) == {"text": "before"}
                caplog.set_level(logging.WARNING, logger="otel_channels")
                lost = await _restart_and_resubscribe(redis, metric_reader)
                assert lost == 1  # one group on one shard, one reconnect
                points = metric_reader.attributes(sc.M_SUBSCRIPTIONS_LOST)
                assert points == [{
                    sc.MESSAGING_SYSTEM: "channels",
                    sc.CHANNELS_LAYER: layer_class,
                    sc.MESSAGING_DESTINATION_TEMPLATE: "room_{id}",
                }]
                warnings = [r.getMessage() for r in caplog.records if r.name == "otel_channels"]
                assert any(f"{layer_class} lost its subscription to group 'room_42'"
                           in w for w in warnings), warnings
                if policy == "close":
                    for client in clients:
                        closed = await client.receive_output(timeout=10)
                        assert closed == {"type": "websocket.close", "code": 1012,
                                          "reason": "subscription lost"}
                else:  # still open, and subscribed again: the next broadcast arrives
                    await layer.group_send("room_42", {"type": "chat.message", "text": "after"})
                    for client in clients:
                        assert (await client.receive_json_from(timeout=10)) == {"text": "after"}
            finally:
                for client in clients:
                    await client.disconnect(timeout=5)
                await layer.flush()


async def test_sse_hub_reads_the_gap_at_once(metric_reader: Any) -> None:
    """The hub is told too: it reads the log without waiting for the next event.

    Redis comes back empty here (no persistence), so the log lost the stream's
    position as well: the stream gets ``stream-reset`` (``resubscribed``) at once,
    with no broadcast after the restart.
    """
    require_redis_server("the test kills and restarts its own Redis")
    with RedisServer() as redis:
        config = redis_layer_config(redis.url, PUBSUB, prefix=f"otelhub{uuid.uuid4().hex[:8]}")
        replay.reset()
        with override_settings(CHANNEL_LAYERS={"default": config}):
            layer = get_channel_layer()
            stream = EventStreamCommunicator(ASGIHandler(), "/events/")
            try:
                await stream.connect()
                await stream.receive_chunk()
                await stream.receive_chunk()
                await abroadcast("room_42", "chat.message", {"text": "before"})
                event = await stream.receive_event(timeout=10)
                assert event.event == "chat.message"
                await _restart_and_resubscribe(redis, metric_reader)
                event = await stream.receive_event(timeout=10)
                assert (event.event, json.loads(event.data)["reason"]) == (
                    "stream-reset", "resubscribed")
            finally:
                await stream.disconnect()
                await layer.flush()
        replay.reset()
