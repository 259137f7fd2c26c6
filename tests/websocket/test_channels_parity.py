"""The traced consumers behave exactly like Channels' own (Channels' generic-consumer
behaviours, re-checked with the Traced* classes, instances used directly as apps)."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.sessions import SessionMiddlewareStack
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from otel_channels.consumers import (
    TracedAsyncJsonWebsocketConsumer,
    TracedAsyncWebsocketConsumer,
    TracedJsonWebsocketConsumer,
    TracedWebsocketConsumer,
)

MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.mark.django_db
@pytest.mark.parametrize("base", [TracedWebsocketConsumer, TracedAsyncWebsocketConsumer])
async def test_text_and_bytes_round_trip(base, spans):
    results = {}
    if base is TracedWebsocketConsumer:
        class Consumer(base):
            def connect(self):
                results["connected"] = True
                self.accept()

            def receive(self, text_data=None, bytes_data=None):
                results["received"] = (text_data, bytes_data)
                self.send(text_data=text_data, bytes_data=bytes_data)

            def disconnect(self, code):
                results["disconnected"] = code
    else:
        class Consumer(base):
            async def connect(self):
                results["connected"] = True
                await self.accept()

            async def receive(self, text_data=None, bytes_data=None):
                results["received"] = (text_data, bytes_data)
                await self.send(text_data=text_data, bytes_data=bytes_data)

            async def disconnect(self, code):
                results["disconnected"] = code

    comm = WebsocketCommunicator(Consumer(), "/testws/")
    assert (await comm.connect())[0]
    await comm.send_to(text_data="hello")
    assert await comm.receive_from() == "hello"
    assert results["received"] == ("hello", None)
    await comm.send_to(bytes_data=b"w\0\0\0")
    assert await comm.receive_from() == b"w\0\0\0"
    assert results["received"] == (None, b"w\0\0\0")
    await comm.disconnect()
    assert results["disconnected"] == 1000
    receives = spans.named("receive Consumer")
    assert [s.attributes["websocket.message.type"] for s in receives] == ["text", "binary"]


@pytest.mark.django_db
async def test_sessions_scope_per_consumer():
    class Consumer(TracedWebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.send(text_data=self.scope["path"])

    app = SessionMiddlewareStack(Consumer.as_asgi())
    first = WebsocketCommunicator(app, "/first/")
    second = WebsocketCommunicator(app, "/second/")
    assert (await first.connect())[0] and (await second.connect())[0]
    await second.send_to(text_data="x")
    assert await second.receive_from() == "/second/"
    await first.send_to(text_data="x")
    assert await first.receive_from() == "/first/"
    await first.disconnect()
    await second.disconnect()


@pytest.mark.parametrize("base", [TracedWebsocketConsumer, TracedAsyncWebsocketConsumer])
async def test_subprotocol(base, spans):
    if base is TracedWebsocketConsumer:
        class Consumer(base):
            def connect(self):
                assert self.scope["subprotocols"] == ["p1", "p2"]
                self.accept("p2")
    else:
        class Consumer(base):
            async def connect(self):
                assert self.scope["subprotocols"] == ["p1", "p2"]
                await self.accept("p2")

    comm = WebsocketCommunicator(Consumer(), "/testws/", subprotocols=["p1", "p2"])
    assert await comm.connect() == (True, "p2")
    assert spans.one("connect Consumer").attributes["websocket.subprotocol"] == "p2"
    await comm.disconnect()


@pytest.mark.django_db
@pytest.mark.parametrize("base", [TracedWebsocketConsumer, TracedAsyncWebsocketConsumer])
async def test_groups_added_and_discarded(base):
    results = {}

    class Consumer(base):
        groups = ["chat"]

        if base is TracedWebsocketConsumer:
            def receive(self, text_data=None, bytes_data=None):
                results["received"] = (text_data, bytes_data)
                self.send(text_data=text_data, bytes_data=bytes_data)
        else:
            async def receive(self, text_data=None, bytes_data=None):
                results["received"] = (text_data, bytes_data)
                await self.send(text_data=text_data, bytes_data=bytes_data)

        def websocket_receive(self, message):
            results["keys"] = sorted(message)
            return super().websocket_receive(message)

    with override_settings(CHANNEL_LAYERS=MEMORY):
        comm = WebsocketCommunicator(Consumer(), "/testws/")
        await comm.connect()
        layer = get_channel_layer()
        await layer.group_send("chat", {"type": "websocket.receive", "text": "hello"})
        assert await comm.receive_from() == "hello"
        assert results["received"] == ("hello", None)
        assert results["keys"] == ["text", "type"]  # the carrier never reaches a handler
        await comm.disconnect()
        assert layer.groups == {}


async def test_specific_channel_layer_alias():
    results = {}

    class Consumer(TracedAsyncWebsocketConsumer):
        channel_layer_alias = "testlayer"

        async def receive(self, text_data=None, bytes_data=None):
            results["received"] = (text_data, bytes_data)
            await self.send(text_data=text_data, bytes_data=bytes_data)

    with override_settings(CHANNEL_LAYERS={"testlayer": MEMORY["default"]}):
        comm = WebsocketCommunicator(Consumer(), "/testws/")
        await comm.connect()
        layer = get_channel_layer("testlayer")
        channel = list(layer.channels.keys())[0]
        await layer.send(channel, {"type": "websocket.receive", "text": "hello"})
        assert await comm.receive_from() == "hello"
        await comm.disconnect()


@pytest.mark.django_db
@pytest.mark.parametrize("base", [TracedJsonWebsocketConsumer, TracedAsyncJsonWebsocketConsumer])
async def test_json_round_trip_and_bytes_break_it(base):
    results = {}
    if base is TracedJsonWebsocketConsumer:
        class Consumer(base):
            def receive_json(self, data=None):
                results["received"] = data
                self.send_json(data)
    else:
        class Consumer(base):
            async def receive_json(self, data=None):
                results["received"] = data
                await self.send_json(data)

    comm = WebsocketCommunicator(Consumer(), "/testws/")
    assert (await comm.connect())[0]
    await comm.send_json_to({"hello": "world"})
    assert await comm.receive_json_from() == {"hello": "world"}
    await comm.send_to(bytes_data=b"w\0\0\0")
    with pytest.raises(ValueError):
        await comm.wait()


@pytest.mark.parametrize("message_type", ["_private_handler", ".private_handler"])
async def test_private_handlers_blocked(message_type):
    class Consumer(TracedAsyncWebsocketConsumer):
        channel_layer_alias = "testlayer"

        async def _private_handler(self, _):
            await self.send(text_data="should never be called")

    with override_settings(CHANNEL_LAYERS={"testlayer": MEMORY["default"]}):
        comm = WebsocketCommunicator(Consumer(), "/testws/")
        await comm.connect()
        layer = get_channel_layer("testlayer")
        channel = list(layer.channels.keys())[0]
        await layer.send(channel, {"type": message_type, "text": "hello"})
        with pytest.raises(ValueError, match=r"Malformed type in message \(leading underscore\)"):
            await comm.receive_from()
