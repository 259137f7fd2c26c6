"""STRICT_PAYLOADS and UNKNOWN_MESSAGE_POLICY: protective settings, off by default."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from tests.support.redis_layer import redis_layer_config

BAD = [
    ({"type": "x", "when": datetime.datetime(2026, 1, 1)}, "message['when']: datetime"),
    ({"type": "x", "amount": decimal.Decimal("1.5")}, "message['amount']: Decimal"),
    ({"type": "x", "id": uuid.uuid4()}, "message['id']: UUID"),
    ({"type": "x", "tags": {"a", "b"}}, "message['tags']: set"),
    ({"type": "x", "nested": {"deep": [1, {"k": object()}]}}, "message['nested']['deep'][1]['k']"),
    ({"type": "x", "map": {1: "one"}}, "dict key 1 is int, not str"),
    ({"type": "x", "big": 1 << 70}, "message['big']: int out of msgpack"),
    ({"type": "x", 5: "non-str top-level key"}, "key 5 is int"),
]


@pytest.mark.parametrize(("message", "named"), BAD)
async def test_strict_payloads_raise_type_error_naming_the_key(message, named):
    with override_settings(OTEL_CHANNELS={"STRICT_PAYLOADS": True}):
        layer = get_channel_layer()
        with pytest.raises(TypeError, match=named.replace("[", r"\[").replace("(", r"\(")):
            await layer.group_send("strict", message)
        with pytest.raises(TypeError):
            await layer.send("strict.channel", message)


def test_strict_payloads_from_sync_code():
    with override_settings(OTEL_CHANNELS={"STRICT_PAYLOADS": True}), \
            pytest.raises(TypeError, match="UUID"):
        async_to_sync(get_channel_layer().group_send)("strict", {"type": "x", "u": uuid.uuid4()})


async def test_strict_payloads_off_by_default_in_memory_layer_carries_anything():
    await get_channel_layer().group_send("strict", {"type": "x", "u": uuid.uuid4()})


async def test_strict_payloads_same_error_on_redis_layer(redis_url):
    layers = {"default": redis_layer_config(redis_url, prefix=f"strict{uuid.uuid4().hex[:8]}")}
    with override_settings(CHANNEL_LAYERS=layers, OTEL_CHANNELS={"STRICT_PAYLOADS": True}):
        layer = get_channel_layer()
        with pytest.raises(TypeError, match="message\\['when'\\]: datetime"):
            await layer.group_send("strict", {"type": "x", "when": datetime.datetime.now()})
        await layer.group_send("strict", {"type": "x", "ok": [1, "two", 3.0, None, b"\x00"]})


class Room(TracedAsyncJsonWebsocketConsumer):
    groups = ["unknown_types"]

    async def chat_message(self, event):
        await self.send_json(event)


async def test_unknown_type_kills_consumer_by_default():
    comm = WebsocketCommunicator(Room.as_asgi(), "/r/")
    await comm.connect()
    await get_channel_layer().group_send("unknown_types", {"type": "no.such.handler"})
    with pytest.raises(ValueError, match="No handler for message type no.such.handler"):
        await comm.wait(1)


async def test_unknown_type_dropped_and_counted_with_drop_policy(spans, metric_reader):
    with override_settings(OTEL_CHANNELS={"UNKNOWN_MESSAGE_POLICY": "drop"}):
        comm = WebsocketCommunicator(Room.as_asgi(), "/r/")
        await comm.connect()
        layer = get_channel_layer()
        await layer.group_send("unknown_types", {"type": "no.such.handler"})
        await layer.group_send("unknown_types", {"type": "chat.message", "text": "still here"})
        assert await comm.receive_json_from() == {"type": "chat.message", "text": "still here"}
        await comm.disconnect()
    dropped = [s for s in spans.named("process unknown_types")
               if s.attributes.get("error.type") == "unknown_type"]
    assert len(dropped) == 1
    assert metric_reader.sum("channels.messages.dropped", error__type="unknown_type") == 1


async def test_strict_payloads_also_under_suppressed_instrumentation():
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with override_settings(OTEL_CHANNELS={"STRICT_PAYLOADS": True}), \
            suppress_instrumentation(), pytest.raises(TypeError, match="UUID"):
        await get_channel_layer().group_send("strict", {"type": "x", "u": uuid.uuid4()})
