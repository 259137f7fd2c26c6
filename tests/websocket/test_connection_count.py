"""The active-connection count returns to zero however connections end."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import DenyConnection
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import path

from otel_channels.consumers import TracedAsyncWebsocketConsumer, TracedWebsocketConsumer


class Normal(TracedAsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "explode":
            raise RuntimeError("handler failure after accept")
        await self.send(text_data=text_data)


class SyncNormal(TracedWebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data)


class Denied(TracedAsyncWebsocketConsumer):
    async def connect(self):
        raise DenyConnection


class Broken(TracedAsyncWebsocketConsumer):
    async def connect(self):
        raise ValueError("broken connect")


app = URLRouter([
    path("normal/", Normal.as_asgi()),
    path("sync/", SyncNormal.as_asgi()),
    path("denied/", Denied.as_asgi()),
    path("broken/", Broken.as_asgi()),
])


async def cycle(kind: str) -> bool:
    """One connection ending in ``kind``; returns whether it was accepted."""
    if kind == "denied":
        comm = WebsocketCommunicator(app, "/denied/")
        assert not (await comm.connect())[0]
        return False
    if kind == "broken":
        comm = WebsocketCommunicator(app, "/broken/")
        await comm.send_input({"type": "websocket.connect"})
        with pytest.raises(ValueError):
            await comm.wait(1)
        return False
    comm = WebsocketCommunicator(app, "/sync/" if kind == "sync" else "/normal/")
    assert (await comm.connect())[0]
    if kind == "crash":
        await comm.send_to(text_data="explode")
        with pytest.raises(RuntimeError):
            await comm.wait(1)
    elif kind == "abnormal":
        await comm.disconnect(code=1006)
    elif kind == "cancelled":
        await comm.send_to(text_data="x")
        await comm.receive_from()
        comm.future.cancel()  # the server task dies without a disconnect event
        with pytest.raises(asyncio.CancelledError):
            await comm.future
    else:
        await comm.send_to(text_data="x")
        assert await comm.receive_from() == "x"
        await comm.disconnect()
    return True


async def test_200_cycles_balance_active_connections(metric_reader, spans):
    kinds = ["normal", "abnormal", "denied", "broken", "crash", "cancelled", "sync"]
    accepted = 0
    for i in range(200):
        accepted += await cycle(kinds[i % len(kinds)])
    expected = sum(kinds[i % len(kinds)] not in ("denied", "broken") for i in range(200))
    assert accepted == expected
    assert metric_reader.sum("channels.server.active_connections") == 0
    assert metric_reader.count("channels.server.connection.duration") == accepted
    ups = list(metric_reader.points["channels.server.active_connections"])
    assert all(p.attributes["network.protocol.name"] == "websocket" for p in ups)
