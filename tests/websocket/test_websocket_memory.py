"""Issue 20: what a traced WebSocket keeps per connection beyond plain Channels (no SDK).

Measured with ``tracemalloc`` in a fresh process (no SDK installed, so the session's
TracerProvider of ``conftest`` is not there): N connections of a plain consumer
(Channels alone, the instrumentor off) and N of the same consumer traced, each
joined to a group; what the N open connections allocate, per connection, is
compared. The communicators' own queues are the same on both sides and cancel out.
Before the issue it was 2.7 KiB (a ``__dict__`` of ~35 attributes, three metric
attribute dicts, guard and cap objects and a membership set per connection); the
worker RSS figures are in benchmarks/README.md ("Connections per worker").
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Bytes per connection (tracemalloc) a traced consumer may add to a plain one: about
#: 1,100 are measured (the slotted Connection, its membership entry, the raw receive).
BOUND = 1536

SCRIPT = textwrap.dedent('''
    import asyncio, gc, tracemalloc, django
    from django.conf import settings
    memory = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    settings.configure(INSTALLED_APPS=["channels", "otel_channels"],
                       CHANNEL_LAYERS={"default": memory})
    django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.testing import WebsocketCommunicator
    from otel_channels.telemetry import instruments as _telemetry
    from otel_channels.consumers import TracedAsyncWebsocketConsumer
    from otel_channels.instrumentation import ChannelsInstrumentor

    class Join:
        async def connect(self):
            await self.channel_layer.group_add("room", self.channel_name)
            await self.accept()

    class Plain(Join, AsyncWebsocketConsumer): pass
    class Traced(Join, TracedAsyncWebsocketConsumer): pass

    N = 300

    async def per_connection(cls):
        app, comms = cls.as_asgi(), []
        for _ in range(5):  # warm-up: caches, interned route names
            comms.append(WebsocketCommunicator(app, "/ws/room/"))
            assert (await comms[-1].connect())[0]
        gc.collect()
        before = tracemalloc.take_snapshot()
        for _ in range(N):
            comms.append(WebsocketCommunicator(app, "/ws/room/"))
            assert (await comms[-1].connect())[0]
        await asyncio.sleep(0.5)  # what the handshakes started has settled, even on a busy machine
        gc.collect()
        after = tracemalloc.take_snapshot()
        for comm in comms:
            await comm.disconnect()
        return sum(s.size_diff for s in after.compare_to(before, "filename")) / N

    async def main():
        assert _telemetry.get().active() is False
        tracemalloc.start()
        ChannelsInstrumentor().uninstrument()  # plain Channels: nothing of ours at all
        plain = await per_connection(Plain)
        ChannelsInstrumentor().instrument()
        traced = await per_connection(Traced)
        print(round(plain), round(traced))

    asyncio.run(main())
''')


def test_a_traced_connection_keeps_little_more_than_a_plain_one() -> None:
    # Without dev mode (CI sets PYTHONDEVMODE=1): its asyncio debug mode keeps a creation
    # traceback for every task and handle, which doubles both sides and is not ours.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDEVMODE", "PYTHONASYNCIODEBUG", "PYTHONTRACEMALLOC")}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    plain, traced = (int(x) for x in result.stdout.split()[-2:])
    assert plain > 5000  # the measurement sees the connections at all
    assert traced - plain <= BOUND, (plain, traced)
