"""Browser-like clients that reconnect (chat WebSocket, EventSource) and a broadcaster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from tests.support.reliability.cluster import TIMEOUTS, Worker
from tests.support.sse import Event, RawEventStream

# -- browser-like clients that reconnect -----------------------------------------------


async def pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(*TIMEOUTS):
        await asyncio.wait_for(stop.wait(), seconds)


async def until(condition: Any, timeout: float, what: str) -> None:
    """Return once ``condition()`` holds (polled every 50 ms); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


class ChatClient:
    """A chat page's WebSocket: on close it reconnects after 0.2 s, doubling to 2 s.

    Keeps the first receipt time of every broadcast text, every (re)connect time,
    every close code and every failed attempt's reason.
    """

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.worker = name.split("-")[0]
        self.texts: dict[str, float] = {}
        self.duplicates = 0
        self.connects: list[float] = []
        self.closes: list[tuple[float, int | None]] = []
        self.failures: dict[str, int] = {}
        self.ws: Any = None

    async def run(self, stop: asyncio.Event, max_attempts: int = 500) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        delay = 0.2
        for _ in range(max_attempts):
            if stop.is_set():
                return
            try:
                self.ws = await connect(self.url, open_timeout=10, ping_interval=None,
                                        close_timeout=2)
            except InvalidStatus as exc:
                reason = f"http {exc.response.status_code}"
            except (OSError, InvalidHandshake, *TIMEOUTS, EOFError) as exc:
                reason = type(exc).__name__
            else:
                self.connects.append(time.monotonic())
                delay = 0.2
                try:
                    async for raw in self.ws:
                        self._frame(raw)
                except ConnectionClosed:
                    pass
                self.closes.append((time.monotonic(), self.ws.close_code))
                await pause(stop, delay)
                continue
            self.failures[reason] = self.failures.get(reason, 0) + 1
            await pause(stop, delay)
            delay = min(2.0, delay * 2)

    def _frame(self, raw: str | bytes) -> None:
        text = json.loads(raw).get("text")
        if not isinstance(text, str):
            return
        if text in self.texts:
            self.duplicates += 1
        else:
            self.texts[text] = time.monotonic()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class EventSourceClient:
    """An ``EventSource``: on any end it reconnects with ``Last-Event-ID`` after 0.2 s
    (doubling to 2 s while attempts fail), as browsers do with their ``retry`` delay."""

    def __init__(self, name: str, port: int, path: str) -> None:
        self.name = name
        self.port = port
        self.path = path
        self.worker = name.split("-")[0]
        self.texts: dict[str, float] = {}
        self.duplicates = 0
        self.resets: list[tuple[float, str, str | None]] = []  # (time, reason, id)
        self.connects: list[tuple[float, str | None]] = []  # (time, Last-Event-ID sent)
        self.ends: list[float] = []
        self.failures: dict[str, int] = {}
        self.last_id: str | None = None
        self.stream: RawEventStream | None = None
        self.hold = 0.0  # extra wait before the next reconnect (a dropped laptop lid)

    async def run(self, stop: asyncio.Event, max_attempts: int = 500) -> None:
        delay = 0.2
        for _ in range(max_attempts):
            if stop.is_set():
                return
            stream = self.stream = RawEventStream("127.0.0.1", self.port, self.path)
            reason = None
            try:
                status = await stream.open(self.last_id, timeout=10)
                if status != 200:
                    reason = f"http {status}"
                else:
                    self.connects.append((time.monotonic(), self.last_id))
                    delay = 0.2
                    while not stop.is_set():
                        event = await stream.next_event(timeout=3600)
                        if stream.last_id is not None:
                            self.last_id = stream.last_id
                        if event is None:
                            break
                        self._event(event)
                    self.ends.append(time.monotonic())
            except (OSError, EOFError, asyncio.IncompleteReadError, ValueError,
                    *TIMEOUTS) as exc:
                if self.connects and stream.status == 200:
                    self.ends.append(time.monotonic())
                    if stream.last_id is not None:
                        self.last_id = stream.last_id
                else:
                    reason = type(exc).__name__
            finally:
                stream.abort()
            if reason is not None:
                self.failures[reason] = self.failures.get(reason, 0) + 1
            hold, self.hold = self.hold, 0.0
            await pause(stop, delay + hold)
            if reason is not None:
                delay = min(2.0, delay * 2)

    def _event(self, event: Event) -> None:
        now = time.monotonic()
        if event.event == "stream-reset":
            self.resets.append((now, event.json().get("reason"), event.id))
        elif event.event == "chat.message":
            text = event.json().get("text")
            if text in self.texts:
                self.duplicates += 1
            elif isinstance(text, str):
                self.texts[text] = now

    def drop(self, hold: float = 0.0) -> None:
        """Abort the TCP connection now; reconnect ``hold`` seconds later than usual."""
        self.hold = hold
        if self.stream is not None:
            self.stream.abort()

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.abort()


@dataclass
class Sent:
    text: str
    worker: str
    at: float
    status: int | str
    done: float = 0.0


async def broadcaster(urls: dict[str, str], room: str, stop: asyncio.Event, sent: list[Sent],
                      interval: float = 0.1, max_count: int = 5000,
                      on_tick: Any = None) -> None:
    """POST ``/broadcast/<room>/`` alternately to each worker every ``interval`` s."""
    import httpx

    names = sorted(urls)
    async with httpx.AsyncClient(timeout=5) as http:
        for i in range(max_count):
            if stop.is_set():
                return
            name = names[i % len(names)]
            text = f"b{i:05d}"
            at = time.monotonic()
            try:
                response = await http.post(f"{urls[name]}/broadcast/{room}/", json={"text": text})
                status: int | str = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            sent.append(Sent(text, name, at, status, time.monotonic()))
            if on_tick is not None:
                on_tick()
            await pause(stop, interval)


def room_clients(workers: list[Worker], room: str, chat_per_worker: int, sse_per_worker: int
                 ) -> tuple[list[ChatClient], list[EventSourceClient]]:
    """Chat and SSE clients of ``room`` on every worker, named ``<a|b>-ws<i>``, ``<a|b>-sse<i>``."""
    chat: list[ChatClient] = []
    sse: list[EventSourceClient] = []
    for worker in workers:
        short = worker.name.rsplit("-", 1)[-1]
        chat += [ChatClient(f"{short}-ws{i}", f"{worker.ws_url}/ws/chat/{room}/")
                 for i in range(chat_per_worker)]
        sse += [EventSourceClient(f"{short}-sse{i}", worker.port, f"/events/{room}/")
                for i in range(sse_per_worker)]
    return chat, sse


async def all_connected(chat: list[ChatClient], sse: list[EventSourceClient]) -> None:
    """Every chat client connected and every stream past its first event (bounded: 10 s)."""
    for _ in range(200):
        if all(c.connects for c in chat) and all(c.stream and c.stream.last_id for c in sse):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("clients did not connect: "
                         f"{[(c.name, c.failures) for c in [*chat, *sse]]}")


async def close_all(clients: list[ChatClient | EventSourceClient],
                    tasks: list[asyncio.Task[None]]) -> None:
    """Close the clients, then end their tasks (bounded: 10 s)."""
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
