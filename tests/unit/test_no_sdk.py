"""Without an SDK (API no-op providers) the consumers and layers do no tracing work,
carry only a message id (so equal messages are never taken for one), and still strip
carriers that other, traced workers sent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import asyncio, django
    from django.conf import settings
    memory = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    settings.configure(INSTALLED_APPS=["channels", "otel_channels"],
                       CHANNEL_LAYERS={"default": memory})
    django.setup()
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator
    from otel_channels.telemetry import instruments as _telemetry
    from otel_channels.layer.patches import raw_receive
    from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer

    seen = []

    class Room(TracedAsyncJsonWebsocketConsumer):
        groups = ["g"]
        async def receive_json(self, content):
            await self.channel_layer.group_send("g", {"type": "chat.message", **content})
        async def chat_message(self, event):
            seen.append(event)
            await self.send_json(event)

    async def main():
        assert _telemetry.get().active() is False
        comm = WebsocketCommunicator(Room.as_asgi(), "/r/")
        assert (await comm.connect())[0]
        await comm.send_json_to({"text": "hi"})
        assert await comm.receive_json_from() == {"type": "chat.message", "text": "hi"}
        layer = get_channel_layer()
        channel = next(iter(layer.groups["g"]))
        forged = {"type": "chat.message", "text": "x", "_otel": {"traceparent": "junk"}}
        await type(layer).send.__wrapped__(layer, channel, forged)
        assert await comm.receive_json_from() == {"type": "chat.message", "text": "x"}
        await comm.disconnect()
        assert all("_otel" not in event for event in seen), seen
        # What the layer carries: an id per message (the same for every member), no trace.
        a, b = await layer.new_channel(), await layer.new_channel()
        await layer.group_add("h", a)
        await layer.group_add("h", b)
        for _ in range(2):
            await layer.group_send("h", {"type": "x.y"})
        receive = raw_receive(layer.receive)  # what consumers read: the carrier kept
        first = [await receive(a), await receive(b)]
        second = [await receive(a), await receive(b)]
        for pair in (first, second):
            assert pair[0] == pair[1], pair
            assert set(pair[0]["_otel"]) == {"id", "sent_at", "destination"}, pair
        assert first[0]["_otel"]["id"] != second[0]["_otel"]["id"]
        print("OK")

    asyncio.run(main())
''')


def test_no_sdk_consumers_work_and_carry_nothing():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
