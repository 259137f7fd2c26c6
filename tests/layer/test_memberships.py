"""No group membership outlives its traced consumer, however the consumer ends.

Channels runs ``disconnect()`` (where users ``group_discard``) only when the
server reports the disconnect. A consumer that dies first (its send raises on a
connection the client just reset, channels#1820; a handler that raises; a server
cancelling it) left its memberships behind until ``group_expiry``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer, TracedWebsocketConsumer


class Member(TracedAsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        for group in ("room_m1", "room_m2"):
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard("room_m1", self.channel_name)
        await self.channel_layer.group_discard("room_m2", self.channel_name)

    async def boom(self, event: dict[str, Any]) -> None:
        raise ConnectionResetError("the client is gone")  # e.g. daphne's send after a reset


class SyncMember(TracedWebsocketConsumer):
    groups = ["room_m3"]  # Channels joins and leaves these itself

    def boom(self, event: dict[str, Any]) -> None:
        raise ConnectionResetError("the client is gone")


async def members_of(group: str) -> set[str]:
    await asyncio.sleep(0.05)  # the release runs as a task of its own
    return set(get_channel_layer().groups.get(group, {}))


@pytest.mark.parametrize("consumer, groups", [(Member, ("room_m1", "room_m2")),
                                             (SyncMember, ("room_m3",))])
async def test_a_consumer_that_dies_leaves_its_groups(consumer: Any, groups: tuple[str]) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/m/")
    assert (await comm.connect())[0]
    layer = get_channel_layer()
    for group in groups:
        assert len(await members_of(group)) == 1
    await layer.group_send(groups[0], {"type": "boom"})
    with pytest.raises(ConnectionResetError):
        await comm.wait(timeout=5)
    for group in groups:
        assert await members_of(group) == set(), group


async def test_a_cancelled_consumer_leaves_its_groups() -> None:
    comm = WebsocketCommunicator(Member.as_asgi(), "/m/")
    assert (await comm.connect())[0]
    assert len(await members_of("room_m1")) == 1
    comm.future.cancel()  # what a server does to an application that will not stop
    with contextlib.suppress(asyncio.CancelledError):
        await comm.future
    assert await members_of("room_m1") == set()
    assert await members_of("room_m2") == set()


async def test_a_normal_disconnect_is_left_to_the_consumer() -> None:
    comm = WebsocketCommunicator(Member.as_asgi(), "/m/")
    assert (await comm.connect())[0]
    await comm.disconnect()
    assert await members_of("room_m1") == set()
    from otel_channels.layer.memberships import MEMBERSHIPS

    assert MEMBERSHIPS.by_channel == {}  # nothing tracked after the consumer ended
