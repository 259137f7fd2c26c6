"""Client-side helpers for the any-layer / any-server tests (real worker processes).

``Client`` keeps every raw WebSocket frame it got (to check that no carrier
leaks); ``SseStream`` reads a real ``text/event-stream`` response event by
event with its own small parser (ids, event names, data); ``settle`` waits for
spans like ``wait_spans`` but returns what arrived when the time is up, so a
test can say *which* expectation failed instead of "timed out".
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support.compat import timeout as time_limit
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import DaphneWorker

TEMPLATE = "room_{id}"
CARRIER_KEYS = ("_otel", "traceparent")


def new_room() -> str:
    """Digits only: the default template turns group ``room_<digits>`` into ``room_{id}``."""
    return str(random.randrange(10**9, 10**10))


class Client:
    """A WebSocket client that keeps every raw frame it received."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.frames: list[str] = []

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(content))

    async def receive_json(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), raw
        self.frames.append(raw)
        content = json.loads(raw)
        assert isinstance(content, dict)
        return content

    def leaked(self) -> list[str]:
        """Frames holding a trace carrier key (must stay empty)."""
        return [raw for raw in self.frames if any(key in raw for key in CARRIER_KEYS)]


@asynccontextmanager
async def open_clients(urls: dict[str, str], headers: dict[str, str] | None = None,
                       settle_time: float = 0.5) -> AsyncIterator[dict[str, Client]]:
    """Clients connected one after another (closed normally on exit).

    ``settle_time``: pub/sub layers send SUBSCRIBE without waiting for the reply, so a
    broadcast right after the last ``group_add`` could get there first.
    """
    async with AsyncExitStack() as stack:
        found = {}
        for name, url in urls.items():
            ws = await stack.enter_async_context(
                connect(url, additional_headers=headers, open_timeout=10))
            found[name] = Client(name, ws)
        await asyncio.sleep(settle_time)
        yield found


async def warm_up(*workers: DaphneWorker, wait: float = 1.0) -> None:
    """One consumer per worker, kept ``wait`` s, before the real clients connect.

    channels_postgres trap: each ``receive()`` that starts before the layer's LISTEN
    connection is up spawns another listener task, and every listener queues every
    NOTIFY: consumers connecting together to a fresh worker get each message 2-3 times.
    The listener outlives the warm-up consumer, so later receivers share it.
    """
    async with AsyncExitStack() as stack:
        for worker in workers:
            ws = await stack.enter_async_context(
                connect(f"{worker.ws_url}/ws/echo/warmup/", open_timeout=10))
            await ws.send('{"warm": 1}')
            await asyncio.wait_for(ws.recv(), 10)
        await asyncio.sleep(wait)


async def settle(receiver: OTLPReceiver, predicate: Callable[[list[Span]], bool],
                 timeout: float = 10.0) -> list[Span]:
    """The received spans once ``predicate`` holds, or whatever arrived after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with receiver.lock:
            spans = list(receiver.spans)
        if predicate(spans) or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.05)


def names(spans: list[Span]) -> list[str]:
    return sorted(f"{s.service}:{s.name}" for s in spans)


@dataclass
class Event:
    event: str
    data: str
    id: str


class SseStream:
    """A real HTTP ``text/event-stream`` client (httpx), event by event."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[Event] = []
        self.last_id = ""
        self._buffer = ""
        self._fields: dict[str, list[str]] = {}
        self._queue: list[Event] = []

    async def __aenter__(self) -> SseStream:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        self._context = self.client.stream("GET", self.url,
                                           headers={"accept": "text/event-stream"})
        self.response = await self._context.__aenter__()
        assert self.response.status_code == 200, self.response.status_code
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._chunks = self.response.aiter_text()
        return self

    def _feed(self, text: str) -> None:
        self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if not line:
                if "data" in self._fields:
                    self._queue.append(Event(
                        event=(self._fields.get("event") or ["message"])[-1],
                        data="\n".join(self._fields["data"]), id=self.last_id))
                self._fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                self.last_id = value
            else:
                self._fields.setdefault(name, []).append(value)

    async def next_event(self, timeout: float = 10.0) -> Event:
        async with time_limit(timeout):
            while not self._queue:
                self._feed(await self._chunks.__anext__())
        event = self._queue.pop(0)
        self.events.append(event)
        return event

    async def wait_position(self, timeout: float = 10.0) -> str:
        """Read until the stream told its position (its first ``id:`` line)."""
        async with time_limit(timeout):
            while not self.last_id:
                self._feed(await self._chunks.__anext__())
        return self.last_id

    async def __aexit__(self, *exc: Any) -> None:
        await self._context.__aexit__(None, None, None)  # closes the TCP connection
        await self.client.aclose()
