"""Sharded channels-redis (several ``hosts``): a broadcast across shards is one trace (issue 20).

Two ``redis-server`` of our own on free ports. ``RedisChannelLayer`` puts each
process-local channel on the shard its ``client_prefix`` hashes to, so two
layer instances (two workers) usually read from different shards; the test
uses two aliases of one configuration until their channels land on different
shards, puts a traced consumer of each in one group and broadcasts once: one
``group_send`` PRODUCER span, a ``process`` span on each consumer, children
of it. The replay log of every alias is on ``hosts[0]``: the same stream for
every worker listing the hosts in the same order (which channels-redis needs
anyway for its consistent hashing).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from opentelemetry.trace import SpanKind

from otel_channels import replay
from otel_channels.broadcast import abroadcast
from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from tests.support.redis_layer import redis_host
from tests.support.reliability import RedisServer, require_redis_server

CORE = "channels_redis.core.RedisChannelLayer"


#: The channel of every consumer connected, in order.
CHANNELS: list[str] = []


class RoomConsumer(TracedAsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        CHANNELS.append(self.channel_name)
        await self.channel_layer.group_add("room_shards", self.channel_name)
        await self.accept()

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"]})


class OtherRoomConsumer(RoomConsumer):
    channel_layer_alias = "other"


def _shard(alias: str, channel: str) -> int:
    layer = get_channel_layer(alias)
    return int(layer.consistent_hash(layer.non_local_name(channel)))


async def _connect(consumer: Any) -> tuple[WebsocketCommunicator, str]:
    client = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    connected, _ = await client.connect(timeout=10)
    assert connected
    return client, CHANNELS[-1]


async def test_broadcast_across_shards_is_one_trace(spans: Any) -> None:
    require_redis_server("the test starts two Redis shards of its own")
    with RedisServer() as first, RedisServer() as second:
        hosts = [redis_host(r.url) for r in (first, second)]
        prefix = f"otelshard{uuid.uuid4().hex[:8]}"
        config = {"BACKEND": CORE, "CONFIG": {"hosts": hosts, "prefix": prefix}}
        replay.reset()
        with override_settings(CHANNEL_LAYERS={"default": config, "other": config}):
            clients: list[WebsocketCommunicator] = []
            try:
                a, channel_a = await _connect(RoomConsumer)
                clients.append(a)
                for _ in range(30):  # a new "other" layer until its channels use the other shard
                    b, channel_b = await _connect(OtherRoomConsumer)
                    clients.append(b)
                    if _shard("other", channel_b) != _shard("default", channel_a):
                        break
                    await b.disconnect(timeout=5)
                    clients.remove(b)
                    channel_layers.backends.pop("other", None)
                else:
                    pytest.fail("no layer instance hashed to the second shard in 30 tries")
                spans.clear()
                event_id = await abroadcast("room_shards", "chat.message", {"text": "hi"})
                for client in (a, b):
                    assert await client.receive_json_from(timeout=10) == {"text": "hi"}
            finally:
                for client in clients:
                    await client.disconnect(timeout=5)

            producer = spans.one("group_send room_shards")
            assert producer.kind is SpanKind.PRODUCER
            processes = spans.named("process room_shards")
            assert len(processes) == 2
            assert {p.parent.span_id for p in processes} == {producer.context.span_id}
            assert {p.context.trace_id for p in processes} == {producer.context.trace_id}

            # The replay log: on hosts[0] for every alias (every worker), nowhere else.
            logs = [replay.get_log(alias) for alias in ("default", "other")]
            assert all(isinstance(log, replay.RedisLog) for log in logs)
            assert {log.host["address"] for log in logs} == {first.url}  # type: ignore[union-attr]
            key = f"{prefix}:sse:room_shards"
            assert first.client().xrange(key)[0][0].decode() == event_id
            assert second.client().exists(key) == 0
        replay.reset()
