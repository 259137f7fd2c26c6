"""The churn soak: clients connecting, chatting and dropping abnormally.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.reliability.cluster import TIMEOUTS, Cluster
from tests.support.reliability.storm import bump
from tests.support.sse import RawEventStream

# -- the churn soak -------------------------------------------------------------------


@dataclass
class ChurnStats:
    """What the churning clients did."""

    websocket_sessions: int = 0
    sse_sessions: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    events_received: int = 0
    endings: dict[str, int] = field(default_factory=dict)  # how sessions ended
    failures: dict[str, int] = field(default_factory=dict)  # connects that did not open

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


async def churn(cluster: Cluster, rooms: list[str], seconds: float, users: int = 30,
                seed: int = 0, max_sessions: int = 100_000,
                websocket_share: float = 0.5) -> ChurnStats:
    """``users`` concurrent loops of short WebSocket / SSE sessions for ``seconds``.

    A WebSocket session sends 1-5 chat frames (each one a ``group_send`` to the
    room on both workers), reads what arrives, then ends: 20 % a normal close,
    40 % a TCP reset (``transport.abort()``), 40 % a FIN without a close frame
    (``transport.close()``). An SSE session reads for 0.2-1.5 s, then resets or
    FINs its connection. Bounded by ``seconds`` and ``max_sessions``.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    stats = ChurnStats()
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    budget = [max_sessions]

    async def websocket_session() -> None:
        worker, room = rng.choice(cluster.workers), rng.choice(rooms)
        try:
            ws = await connect(f"{worker.ws_url}/ws/chat/{room}/", open_timeout=10,
                               ping_interval=None, close_timeout=2)
        except InvalidStatus as exc:
            bump(stats.failures, f"websocket http {exc.response.status_code}")
            return
        except (OSError, *TIMEOUTS) as exc:
            bump(stats.failures, f"websocket {type(exc).__name__}")
            return
        stats.websocket_sessions += 1
        try:
            for n in range(rng.randint(1, 5)):
                await ws.send(json.dumps({"text": f"churn {n}"}))
                stats.frames_sent += 1
                try:
                    while True:  # drain what arrived without blocking long
                        await asyncio.wait_for(ws.recv(), 0.05)
                        stats.frames_received += 1
                except TIMEOUTS:
                    pass
        except ConnectionClosed:
            bump(stats.endings, "websocket closed by server")
            return
        how = rng.random()
        if how < 0.2:
            await ws.close()
            bump(stats.endings, "websocket close 1000")
        elif how < 0.6:
            ws.transport.abort()
            bump(stats.endings, "websocket tcp reset")
        else:
            ws.transport.close()
            bump(stats.endings, "websocket fin, no close frame")

    async def sse_session() -> None:
        worker, room = rng.choice(cluster.workers), rng.choice(rooms)
        stream = RawEventStream("127.0.0.1", worker.port, f"/events/{room}/")
        try:
            status = await stream.open(timeout=10)
        except (OSError, *TIMEOUTS, asyncio.IncompleteReadError) as exc:
            bump(stats.failures, f"sse {type(exc).__name__}")
            stream.abort()
            return
        if status != 200:
            bump(stats.failures, f"sse http {status}")
            stream.abort()
            return
        stats.sse_sessions += 1
        until = time.monotonic() + rng.uniform(0.2, 1.5)
        try:
            while time.monotonic() < until:
                event = await stream.next_event(max(0.01, until - time.monotonic()))
                if event is None:
                    break
                stats.events_received += 1
        except TIMEOUTS:
            pass
        if rng.random() < 0.5:
            stream.abort()
            bump(stats.endings, "sse tcp reset")
        else:
            assert stream.writer is not None
            stream.writer.transport.close()
            bump(stats.endings, "sse fin")

    async def user() -> None:
        while time.monotonic() < end and budget[0] > 0:
            budget[0] -= 1
            if rng.random() < websocket_share:
                await websocket_session()
            else:
                await sse_session()

    await asyncio.gather(*(user() for _ in range(users)))
    return stats


