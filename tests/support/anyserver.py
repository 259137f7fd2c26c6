"""Client-side helpers for the any-layer / any-server tests (real worker processes).

Clients are :mod:`tests.support.websocket`'s and event streams are read with
:mod:`tests.support.sse`; ``settle`` waits for
spans like ``wait_spans`` but returns what arrived when the time is up, so a
test can say *which* expectation failed instead of "timed out".
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

from websockets.asyncio.client import connect

from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import DaphneWorker

TEMPLATE = "room_{id}"
def new_room() -> str:
    """Digits only: the default template turns group ``room_<digits>`` into ``room_{id}``."""
    return str(random.randrange(10**9, 10**10))


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
