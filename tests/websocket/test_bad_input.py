"""Bad frames and bad carriers: clean closes or error frames, never a crashed consumer."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer, TracedJsonWebsocketConsumer


class AsyncJson(TracedAsyncJsonWebsocketConsumer):
    groups = ["bad_input"]

    async def receive_json(self, content, **kwargs):
        await self.send_json({"ok": content})

    async def chat_message(self, event):
        await self.send_json(event)


class SyncJson(TracedJsonWebsocketConsumer):
    groups = ["bad_input"]

    def receive_json(self, content, **kwargs):
        self.send_json({"ok": content})

    def chat_message(self, event):
        self.send_json(event)


FRAMES = [
    ({"text": "{not json"}, "malformed_json", 1007),
    ({"text": ""}, "empty_frame", 1007),
    ({"bytes": b"\x00\x01"}, "binary_frame", 1003),
    ({"text": "[1, 2"}, "malformed_json", 1007),
]


@pytest.mark.parametrize("consumer", [AsyncJson, SyncJson])
@pytest.mark.parametrize(("frame", "kind", "code"), FRAMES)
async def test_close_policy(consumer, frame, kind, code, spans, metric_reader):
    with override_settings(OTEL_CHANNELS={"BAD_FRAME_POLICY": "close"}):
        comm = WebsocketCommunicator(consumer.as_asgi(), "/j/")
        assert (await comm.connect())[0]
        await comm.send_input({"type": "websocket.receive", **frame})
        assert await comm.receive_output() == {"type": "websocket.close", "code": code}
        await comm.disconnect(code=code)
    receive = spans.one(f"receive {consumer.__name__}")
    assert receive.attributes["error.type"] == kind
    assert metric_reader.sum("channels.messages.dropped", error__type=kind) == 1
    assert metric_reader.sum("channels.server.active_connections") == 0


@pytest.mark.parametrize("consumer", [AsyncJson, SyncJson])
@pytest.mark.parametrize(("frame", "kind", "code"), FRAMES)
async def test_error_frame_policy_keeps_connection(consumer, frame, kind, code, spans):
    with override_settings(OTEL_CHANNELS={"BAD_FRAME_POLICY": "error_frame"}):
        comm = WebsocketCommunicator(consumer.as_asgi(), "/j/")
        assert (await comm.connect())[0]
        await comm.send_input({"type": "websocket.receive", **frame})
        assert await comm.receive_json_from() == {"type": "error", "error": kind}
        await comm.send_json_to({"still": "alive"})
        assert await comm.receive_json_from() == {"ok": {"still": "alive"}}
        await comm.disconnect()


async def test_default_policy_is_channels_behaviour():
    comm = WebsocketCommunicator(AsyncJson.as_asgi(), "/j/")
    await comm.connect()
    await comm.send_to(bytes_data=b"\x00")
    with pytest.raises(ValueError, match="No text section"):
        await comm.wait()


async def connected_channel(layer, comm):
    """Connect ``comm`` and return its consumer's channel name."""
    before = set(layer.channels)
    assert (await comm.connect())[0]
    (channel,) = set(layer.channels) - before
    return channel


BAD_CARRIERS = [
    "not a dict",
    42,
    None,
    ["traceparent"],
    {"traceparent": 7, "destination": 1, "sent_at": "yesterday"},
    {"traceparent": "00-" + "f" * (1 << 20)},
    {"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"},
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
    {"traceparent": "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
]


@pytest.mark.parametrize("carrier", BAD_CARRIERS, ids=range(len(BAD_CARRIERS)))
@pytest.mark.parametrize("consumer", [AsyncJson, SyncJson])
async def test_bad_carriers_are_ignored_and_message_delivered(consumer, carrier, spans):
    layer = get_channel_layer()
    comm = WebsocketCommunicator(consumer.as_asgi(), "/j/")
    channel = await connected_channel(layer, comm)
    # A forged key from untraced code: go around the instrumented send.
    await type(layer).send.__wrapped__(layer, channel,
                                       {"type": "chat.message", "text": "hi", "_otel": carrier})
    assert await comm.receive_json_from() == {"type": "chat.message", "text": "hi"}
    await comm.disconnect()
    process = spans.one("process")
    assert process.parent is None  # nothing valid to continue
    assert len(process.links) == 1  # only the consumer's connect span


async def test_valid_traceparent_with_oversized_fields_keeps_parent_drops_rest(spans):
    layer = get_channel_layer()
    comm = WebsocketCommunicator(AsyncJson.as_asgi(), "/j/")
    channel = await connected_channel(layer, comm)
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
               "tracestate": "x" * 100000, "sent_at": float("nan"), "destination": "d" * 5000}
    await type(layer).send.__wrapped__(layer, channel,
                                       {"type": "chat.message", "text": "hi", "_otel": carrier})
    assert await comm.receive_json_from() == {"type": "chat.message", "text": "hi"}
    await comm.disconnect()
    process = spans.one("process")
    assert process.parent.span_id == 0xB7AD6B7169203331
    assert len(process.context.trace_state) == 0
    assert "channels.message.delivery.delay" not in process.attributes
