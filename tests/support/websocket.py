"""The tests' WebSocket client: a ``websockets`` connection that keeps every raw frame
it received, so a test can check that no trace carrier reached a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect

if TYPE_CHECKING:
    from channels.testing import WebsocketCommunicator

__all__ = ["CARRIER_KEYS", "WebSocketClient", "connected", "open_clients"]

CARRIER_KEYS = ("_otel", "traceparent")


class WebSocketClient:
    """A WebSocket client that keeps every raw frame it received."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.frames: list[str] = []

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(content))

    async def receive_text(self, timeout: float = 10.0) -> str:
        """The next frame, which must be text; kept in ``frames``."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), raw
        self.frames.append(raw)
        return raw

    async def receive_json(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await self.receive_text(timeout)
        content = json.loads(raw)
        assert isinstance(content, dict)
        return content

    def leaked(self) -> list[str]:
        """Frames holding a trace carrier key (must stay empty)."""
        return [raw for raw in self.frames if any(key in raw for key in CARRIER_KEYS)]


@asynccontextmanager
async def open_clients(urls: dict[str, str], headers: dict[str, str] | None = None,
                       settle_time: float = 0.5) -> AsyncIterator[dict[str, WebSocketClient]]:
    """Clients connected one after another (closed normally on exit).

    ``settle_time``: pub/sub layers send SUBSCRIBE without waiting for the reply, so a
    broadcast right after the last ``group_add`` could get there first.
    """
    async with AsyncExitStack() as stack:
        found = {}
        for name, url in urls.items():
            ws = await stack.enter_async_context(
                connect(url, additional_headers=headers, open_timeout=10))
            found[name] = WebSocketClient(name, ws)
        await asyncio.sleep(settle_time)
        yield found


@asynccontextmanager
async def connected(comms: list[WebsocketCommunicator]
                    ) -> AsyncIterator[list[WebsocketCommunicator]]:
    """In-process communicators, each connected (asserted), all disconnected on exit."""
    for comm in comms:
        assert (await comm.connect())[0]
    try:
        yield comms
    finally:
        for comm in comms:
            with contextlib.suppress(Exception):  # a member the test made raise is gone
                await comm.disconnect()
