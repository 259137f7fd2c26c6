"""ASGI application of the connections benchmark's worker; ``CONNECTIONS_*`` pick the variant.

* ``CONNECTIONS_CONSUMER``: ``plain`` (Channels' ``AsyncWebsocketConsumer``) or
  ``traced`` (``TracedAsyncWebsocketConsumer``); both join :data:`GROUP` and echo
  every frame;
* ``FANOUT_SDK=1``: SDK providers (``benchmarks/_fanout_app/otel.py``), else the API's no-ops.

HTTP: ``/events/`` is an :class:`~otel_channels.sse.EventStreamView` on :data:`GROUP`
(served by Django's ASGI handler, as in a project); ``/broadcast?n=K`` sends K
messages to the group and ``/stats`` returns the open counts (``?blocks=1``: and,
after a full collection, ``sys.getallocatedblocks()``), both plain ASGI.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks._connections_app.settings")

from benchmarks._fanout_app import otel  # noqa: E402

otel.configure()

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

GROUP = "bench"
OPEN = {"websocket": 0}


class EchoMixin:
    """Joins :data:`GROUP`, echoes frames, forwards the group's messages."""

    channel_layer: Any
    channel_name: str

    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()  # type: ignore[attr-defined]
        OPEN["websocket"] += 1

    async def disconnect(self, code: int) -> None:
        OPEN["websocket"] -= 1
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)  # type: ignore[attr-defined]

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=str(event["i"]))  # type: ignore[attr-defined]


class PlainConsumer(EchoMixin, AsyncWebsocketConsumer):
    """Plain Channels."""


if os.environ.get("CONNECTIONS_CONSUMER") == "traced":
    from otel_channels.consumers import TracedAsyncWebsocketConsumer
    from otel_channels.sse import EventStreamView

    class TracedConsumer(EchoMixin, TracedAsyncWebsocketConsumer):
        """The same consumer, traced."""

    class Events(EventStreamView):
        groups = (GROUP,)

    consumer: Any = TracedConsumer
    urlpatterns = [path("events/", Events.as_view())]
else:
    consumer = PlainConsumer
    urlpatterns = []

django_app = get_asgi_application()


def redis_connections() -> int:
    """Connections held by channels-redis's pools (they stay at their high-water mark)."""
    total = 0
    for loop_layer in getattr(get_channel_layer(), "_layers", {}).values():
        for client in getattr(loop_layer, "_connections", {}).values():
            pool = client.connection_pool
            total += len(pool._available_connections) + len(pool._in_use_connections)
    return total


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/events/`` to Django; ``/stats`` and ``/broadcast`` answered here."""
    if scope["path"].startswith("/events/"):
        return await django_app(scope, receive, send)
    if scope["path"] == "/broadcast":
        count = int(parse_qs(scope["query_string"].decode()).get("n", ["1"])[0])
        layer = get_channel_layer()
        for i in range(count):
            await layer.group_send(GROUP, {"type": "bench.message", "i": i})
        body = b"{}"
    else:
        stats: dict[str, Any] = {"pid": os.getpid(), **OPEN}
        if b"blocks=1" in scope["query_string"]:  # live Python memory, garbage collected
            gc.collect()
            stats["blocks"] = sys.getallocatedblocks()
            stats["redis_connections"] = redis_connections()
        body = json.dumps(stats).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter({
    "http": http_app,
    "websocket": URLRouter([path("ws/", consumer.as_asgi())]),
})
