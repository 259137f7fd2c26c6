"""One consumer per kind, each a member of ``fuzz_<room>`` while connected.

Group messages of type ``fuzz.message`` go to the client without loss:

* JSON consumers send ``{"event": tag(event)}`` (``tag`` turns ``bytes`` into
  ``{"__fuzz_bytes__": hex}``, the only msgpack value JSON cannot hold);
* text/binary consumers send ``msgpack.packb(event)`` as a binary frame.

Frames are echoed: JSON consumers ``send_json(content)``, the others the same
text or bytes. ``{"__fuzz_group_send__": text}`` in a JSON frame broadcasts
``text`` to the room (the churn soak's chat traffic).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from otel_channels.consumers import (
    TracedAsyncJsonWebsocketConsumer,
    TracedAsyncWebsocketConsumer,
    TracedJsonWebsocketConsumer,
    TracedWebsocketConsumer,
)

BYTES_TAG = "__fuzz_bytes__"
SEND_KEY = "__fuzz_group_send__"


def tag(value: Any) -> Any:
    """``value`` with every ``bytes`` replaced by ``{BYTES_TAG: hex}`` (JSON-safe)."""
    if isinstance(value, (bytes, bytearray)):
        return {BYTES_TAG: bytes(value).hex()}
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else repr(k)): tag(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tag(v) for v in value]
    return value


def pack(event: dict[str, Any]) -> bytes:
    return msgpack.packb(event, use_bin_type=True)


def _group(scope: dict[str, Any]) -> str:
    return f"fuzz_{scope['url_route']['kwargs']['room']}"


def _wants_hello(scope: dict[str, Any]) -> bool:
    """``?hello=1``: the first frame is ``{"hello": channel_name}`` (membership checks)."""
    return b"hello=1" in scope.get("query_string", b"")


def _chat(text: Any) -> dict[str, Any]:
    return {"type": "fuzz.message", "text": text}


class AsyncMember:
    async def connect(self) -> None:
        self.group = _group(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if _wants_hello(self.scope):
            await self.send(text_data=json.dumps({"hello": self.channel_name}))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)


class SyncMember:
    def connect(self) -> None:
        self.group = _group(self.scope)
        async_to_sync(self.channel_layer.group_add)(self.group, self.channel_name)
        self.accept()
        if _wants_hello(self.scope):
            self.send(text_data=json.dumps({"hello": self.channel_name}))

    def disconnect(self, code: int) -> None:
        async_to_sync(self.channel_layer.group_discard)(self.group, self.channel_name)


class FuzzAsyncJson(AsyncMember, TracedAsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and SEND_KEY in content:
            await self.channel_layer.group_send(self.group, _chat(content[SEND_KEY]))
            return
        await self.send_json(content)

    async def fuzz_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"event": tag(event)})


class FuzzPlainJson(AsyncMember, AsyncJsonWebsocketConsumer):
    """Channels' own class: the instrumentor strips the carrier and traces ``process``."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)

    async def fuzz_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"event": tag(event)})


class FuzzSyncJson(SyncMember, TracedJsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and SEND_KEY in content:
            async_to_sync(self.channel_layer.group_send)(self.group, _chat(content[SEND_KEY]))
            return
        self.send_json(content)

    def fuzz_message(self, event: dict[str, Any]) -> None:
        self.send_json({"event": tag(event)})


class FuzzAsync(AsyncMember, TracedAsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)

    async def fuzz_message(self, event: dict[str, Any]) -> None:
        await self.send(bytes_data=pack(event))


class FuzzSync(SyncMember, TracedWebsocketConsumer):
    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                **kwargs: Any) -> None:
        if text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)

    def fuzz_message(self, event: dict[str, Any]) -> None:
        self.send(bytes_data=pack(event))


#: URL kind -> (consumer class, forwards events as JSON).
KINDS: dict[str, tuple[type, bool]] = {
    "async-json": (FuzzAsyncJson, True),
    "sync-json": (FuzzSyncJson, True),
    "async": (FuzzAsync, False),
    "sync": (FuzzSync, False),
    "plain-json": (FuzzPlainJson, True),
}
