"""Capacity drops: a member whose channel is full loses group messages; say so.

channels-redis (and Channels' in-memory layer) refuse a message for a channel that
holds ``capacity`` messages already. A direct ``send`` raises ``ChannelFull``; a
``group_send`` skips that member **silently**: channels-redis only logs
``"N of M channels over capacity in group G"`` at INFO (its Lua script counts
them), the in-memory layer swallows ``ChannelFull``. The producer's span says
the broadcast went fine and no metric moves, while a member lost it.

What these tests ask of the instrumentor (in this process, SDK fixtures of
tests/conftest.py, real Redis on ``REDIS_URL`` under a unique prefix):

* the ``group_send`` span records how many members were over capacity:
  attribute :data:`OVER_CAPACITY` (``channels.group_send.over_capacity``, an int;
  absent or 0 when none was) — proposed name;
* ``channels.messages.dropped`` (docs/metrics.md, the protective-policy counter)
  counts each skipped member with ``error.type = "over_capacity"`` — proposed
  value, the counter exists;
* a direct ``send`` to a full channel raises ``ChannelFull`` (unchanged) and its
  ``send`` span is ERROR with ``error.type = "ChannelFull"`` (as today; kept here
  with a capacity of 5).

Members are channels with their own Redis key (names without ``!``: channels-redis
keeps every ``new_channel()`` of one layer instance in one process-wide key, so
they would share a capacity) or ``new_channel()`` of separate layer instances.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from opentelemetry.trace import StatusCode

from tests.support.redis_layer import redis_layer_config
from tests.support.telemetry import Metrics, Spans

pytestmark = [pytest.mark.timeout(60)]

CAPACITY = 5
OVER_CAPACITY = "channels.group_send.over_capacity"
DROPPED = "channels.messages.dropped"
TEMPLATE = "cap_{id}"


def new_group() -> str:
    return f"cap_{uuid.uuid4().int % 10**12}"  # digits: the template is cap_{id}


def new_channel_name(what: str) -> str:
    return f"cap-{what}-{uuid.uuid4().hex[:12]}"  # its own Redis key: no "!"


@pytest.fixture(params=["redis", "memory"])
async def layers(request: pytest.FixtureRequest) -> AsyncIterator[list[Any]]:
    """Three layer instances of one backend with ``capacity=5`` (one prefix for Redis)."""
    if request.param == "memory":
        shared = InMemoryChannelLayer(capacity=CAPACITY)
        yield [shared, shared, shared]
        await shared.flush()
        return
    from channels_redis.core import RedisChannelLayer

    config = redis_layer_config(request.getfixturevalue("redis_url"),
                                prefix=f"otelcap{uuid.uuid4().hex[:10]}",
                                capacity=CAPACITY)["CONFIG"]
    found = [RedisChannelLayer(**config) for _ in range(3)]
    try:
        yield found
    finally:
        await found[0].flush()
        for layer in found:
            await layer.close_pools()


async def fill(layer: Any, channel: str) -> None:
    for n in range(CAPACITY):
        await layer.send(channel, {"type": "cap.fill", "n": n})


async def test_group_send_records_members_over_capacity(
        layers: list[Any], spans: Spans, metric_reader: Metrics) -> None:
    layer = layers[0]
    group = new_group()
    full = [new_channel_name("full1"), new_channel_name("full2")]
    ok = new_channel_name("ok")
    for channel in [*full, ok]:
        await layer.group_add(group, channel)
    for channel in full:
        await fill(layer, channel)
    spans.clear()

    await layer.group_send(group, {"type": "cap.message", "text": "hi"})  # never raises

    # What the layer did: the free member got it, the full ones did not.
    assert (await layer.receive(ok))["text"] == "hi"
    for channel in full:
        got = [await layer.receive(channel) for _ in range(CAPACITY)]
        assert [m["type"] for m in got] == ["cap.fill"] * CAPACITY
    # What telemetry must say.
    span = spans.one(f"group_send {TEMPLATE}")
    attributes = dict(span.attributes or {})
    assert attributes.get(OVER_CAPACITY) == 2, (
        f"the group_send span does not say that 2 of 3 members were over capacity: "
        f"{attributes}")
    dropped = metric_reader.sum(DROPPED, error__type="over_capacity")
    assert dropped == 2, (dropped, metric_reader.attributes(DROPPED))


async def test_group_send_with_room_for_everyone_records_no_drop(
        layers: list[Any], spans: Spans, metric_reader: Metrics) -> None:
    layer = layers[0]
    group = new_group()
    members = [new_channel_name(f"m{n}") for n in range(3)]
    for channel in members:
        await layer.group_add(group, channel)
    await fill(layer, members[0])
    await layer.receive(members[0])  # one free slot
    spans.clear()

    await layer.group_send(group, {"type": "cap.message"})

    for channel in members[1:]:
        assert (await layer.receive(channel))["type"] == "cap.message"
    span = spans.one(f"group_send {TEMPLATE}")
    assert (span.attributes or {}).get(OVER_CAPACITY, 0) == 0
    assert span.status.status_code is StatusCode.UNSET
    assert metric_reader.sum(DROPPED, error__type="over_capacity") == 0


async def test_members_of_other_processes_over_capacity(
        layers: list[Any], spans: Spans, metric_reader: Metrics) -> None:
    """``new_channel()`` members of two other "processes" (layer instances): one never
    reads (a worker whose consumers' handlers all block), one does."""
    producer, stuck, reader = layers
    group = new_group()
    blocked = await stuck.new_channel()
    alive = await reader.new_channel()
    await producer.group_add(group, blocked)
    await producer.group_add(group, alive)
    await fill(stuck, blocked)
    spans.clear()

    for n in range(3):
        await producer.group_send(group, {"type": "cap.message", "n": n})

    assert [(await reader.receive(alive))["n"] for _ in range(3)] == [0, 1, 2]
    over = [(s.attributes or {}).get(OVER_CAPACITY) for s in spans.named(
        f"group_send {TEMPLATE}")]
    assert over == [1, 1, 1], over
    assert metric_reader.sum(DROPPED, error__type="over_capacity") == 3


async def test_send_to_a_full_channel_raises_and_its_span_is_error(
        layers: list[Any], spans: Spans, metric_reader: Metrics) -> None:
    layer = layers[0]
    channel = new_channel_name("direct")
    await fill(layer, channel)
    spans.clear()
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "cap.message"})
    span = spans.one("send")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {}).get("error.type") == "ChannelFull"
    assert [event.name for event in span.events] == ["exception"]
    assert metric_reader.count("messaging.client.operation.duration",
                               messaging__operation__name="send",
                               error__type="ChannelFull") == 1
