"""What a delivery allocates for the carrier: one carrier-less copy per received dict.

channels-redis deserializes a group message once per worker and puts that one
dict into every local member's receive buffer, so plain Channels hands the
same dict to all of them. The traced consumers strip the carrier from it once
and hand every member that one copy: no dict per delivery (issue 21). The
received dict keeps its carrier (another reader, an SSE hub, needs it). Layers
that give every member its own dict (InMemoryChannelLayer deep-copies per
member) still give every member its own carrier-less dict.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from otel_channels.telemetry import carrier as _carrier
from tests.support.telemetry import Spans
from tests.support.websocket import connected

SHARING = {"default": {"BACKEND": "benchmarks._fanout_app.layers.RedisLikeMemoryLayer"}}
COPYING = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class Recorder:
    """Keeps the message object each member's handler got."""

    got: ClassVar[list[dict[str, Any]]] = []
    channel_layer: Any
    channel_name: str
    scope: dict[str, Any]

    async def connect(self) -> None:
        self.group = self.scope["url_route"]["kwargs"]["group"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()  # type: ignore[attr-defined]

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def copy_message(self, event: dict[str, Any]) -> None:
        Recorder.got.append(event)
        await self.send_json({"n": event["n"]})  # type: ignore[attr-defined]


class Traced(Recorder, TracedAsyncJsonWebsocketConsumer):
    pass


class Plain(Recorder, AsyncJsonWebsocketConsumer):
    pass


APP = URLRouter([path("traced/<str:group>/", Traced.as_asgi()),
                 path("plain/<str:group>/", Plain.as_asgi())])


@asynccontextmanager
async def members(kind: str, count: int) -> AsyncIterator[tuple[str, list[WebsocketCommunicator]]]:
    group = f"copies_{uuid.uuid4().hex[:12]}"
    async with connected([WebsocketCommunicator(APP, f"/{kind}/{group}/")
                          for _ in range(count)]) as comms:
        yield group, comms


async def fan_out(kind: str, count: int, broadcasts: int = 2) -> list[dict[str, Any]]:
    Recorder.got = []
    async with members(kind, count) as (group, comms):
        for n in range(broadcasts):
            await get_channel_layer().group_send(group, {"type": "copy.message", "n": n})
            for comm in comms:
                assert await comm.receive_json_from(timeout=5) == {"n": n}
    return Recorder.got


@pytest.mark.parametrize("settings", [{}, {"MESSAGE_SAMPLE_RATE": 0.0},
                                      {"MAX_PROCESS_SPANS_PER_BROADCAST": 0}])
async def test_members_sharing_a_received_dict_share_one_copy(spans: Spans,
                                                              settings: dict[str, Any]) -> None:
    with override_settings(CHANNEL_LAYERS=SHARING, OTEL_CHANNELS=settings):
        plain = await fan_out("plain", 6)
        traced = await fan_out("traced", 6)
    # On a channels-redis-like layer Channels hands every member one dict per broadcast;
    # plain consumers (instrumented) and traced ones get one carrier-less copy of it,
    # not one copy per delivery.
    for got in (plain, traced):
        assert len(got) == 12 and len({id(event) for event in got}) == 2
        assert all(event == {"type": "copy.message", "n": event["n"]} for event in got)


async def test_members_given_their_own_dicts_each_get_their_own_copy(spans: Spans) -> None:
    with override_settings(CHANNEL_LAYERS=COPYING):
        traced = await fan_out("traced", 5)
    assert len({id(event) for event in traced}) == 10
    assert all("_otel" not in event for event in traced)


def test_strip_copies_once_and_leaves_the_received_dict_alone() -> None:
    received = {"type": "x", "n": 1, "_otel": {"id": "a-1"}}
    first = _carrier.strip(received, "_otel")
    assert first == {"type": "x", "n": 1}
    assert _carrier.strip(received, "_otel") is first  # the next member: the same copy
    assert received["_otel"] == {"id": "a-1"}  # other readers still find the carrier
    other = {"type": "x", "n": 1, "_otel": {"id": "a-2"}}
    assert _carrier.strip(other, "_otel") is not first  # an equal dict is not the same dict


def test_strip_keeps_a_bounded_number_of_copies() -> None:
    kept = [{"type": "x", "_otel": {}} for _ in range(3 * _carrier._STRIPPED_KEPT)]
    for message in kept:
        _carrier.strip(message, "_otel")
    assert len(_carrier._stripped) <= _carrier._STRIPPED_KEPT
    assert all(entry[0] is kept[-1 - i] for i, entry in
               enumerate(reversed(list(_carrier._stripped.values()))))


def test_carried_is_the_carrier_dict_or_none() -> None:
    assert _carrier.carried({"_otel": {"id": "x"}}, "_otel") == {"id": "x"}
    assert _carrier.carried({"_otel": "not a dict"}, "_otel") is None
    assert _carrier.carried({}, "_otel") is None
