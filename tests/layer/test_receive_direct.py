"""Direct receivers: code that calls ``channel_layer.receive()`` itself gets the message sent.

In this process the app's instrumentor is on and the suite's conftest installed
an SDK, so every ``send`` / ``group_send`` below is traced. A worker loop, a test
or a bridge that reads the layer directly must still get back exactly the dict
that was sent, with no ``_otel`` key, while a traced consumer on the same layer
still gets a ``process`` span that is the child of the producer (so consumers
still see the context the carrier held). Layers: ``InMemoryChannelLayer`` and,
against Redis, ``RedisChannelLayer`` and ``RedisPubSubChannelLayer``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from otel_channels.instrumentation import ChannelsInstrumentor
from tests.support.redis_layer import redis_layer_config
from tests.support.telemetry import Spans

TEMPLATE = "room_{id}"
BACKENDS = {
    "memory": "channels.layers.InMemoryChannelLayer",
    "redis": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
tracer = trace.get_tracer("tests.receive_direct")


@pytest.fixture(params=list(BACKENDS))
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The default channel layer, one backend per parameter (unique Redis prefix)."""
    assert ChannelsInstrumentor().is_instrumented_by_opentelemetry  # the app turned it on
    assert type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.sdk")
    backend = BACKENDS[request.param]
    if request.param == "memory":
        config: dict[str, Any] = {"BACKEND": backend}
    else:
        config = redis_layer_config(request.getfixturevalue("redis_url"), backend,
                                    prefix=f"oteldirect{uuid.uuid4().hex[:12]}")
    with override_settings(CHANNEL_LAYERS={"default": config}):
        channel_layer = get_channel_layer()
        try:
            yield channel_layer
        finally:
            await channel_layer.flush()
            if hasattr(channel_layer, "close_pools"):
                await channel_layer.close_pools()


def new_group() -> str:
    return f"room_{uuid.uuid4().int % 10**12}"


class Member(TracedAsyncJsonWebsocketConsumer):
    async def x(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


async def test_send_then_receive_gives_back_the_message(layer: Any, spans: Spans) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 1})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "x", "n": 1}
    assert spans.one("send").kind is SpanKind.PRODUCER  # it was traced all the same


async def test_group_send_then_receive_gives_back_the_message(layer: Any, spans: Spans) -> None:
    group = new_group()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    await layer.group_send(group, {"type": "x", "n": 1})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "x", "n": 1}
    assert spans.one(f"group_send {TEMPLATE}").kind is SpanKind.PRODUCER
    await layer.group_discard(group, channel)


async def test_direct_receiver_and_consumer_share_a_broadcast(layer: Any, spans: Spans) -> None:
    """One group_send: the direct receiver gets the clean dict, the consumer a child span."""
    group = new_group()
    member = type("DirectMember", (Member,), {"groups": [group]})
    app = URLRouter([path("ws/<str:room>/", member.as_asgi())])
    communicator = WebsocketCommunicator(app, f"/ws/{group}/")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        with tracer.start_as_current_span("caller"):
            await layer.group_send(group, {"type": "x", "n": 1})
        direct = await asyncio.wait_for(layer.receive(channel), 5)
        assert await communicator.receive_json_from(timeout=5) == {"type": "x", "n": 1}
    finally:
        await layer.group_discard(group, channel)
        await communicator.disconnect()
    producer = spans.one(f"group_send {TEMPLATE}")
    process = spans.one(f"process {TEMPLATE}")
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == producer.context.span_id
    assert process.context.trace_id == producer.context.trace_id
    assert producer.context.span_id not in [link.context.span_id for link in process.links]
    assert direct == {"type": "x", "n": 1}  # last: the consumer side is checked either way
