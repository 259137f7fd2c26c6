"""The reconnect storm: hundreds of clients connecting at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.reliability.cluster import TIMEOUTS, Cluster, exceptions_in
from tests.support.reliability.fds import listen_overflows, nofile_of, open_fds
from tests.support.sse import RawEventStream

# -- the reconnect storm ------------------------------------------------------------


@dataclass
class StormResult:
    """What ``n`` WebSocket and ``m`` SSE clients connecting at once got."""

    websocket: dict[str, int] = field(default_factory=dict)  # outcome -> clients
    sse: dict[str, int] = field(default_factory=dict)
    connect_s: float = 0.0
    listen_overflows: int = 0  # machine-wide ListenOverflows during the connects
    delivered_websocket: int = 0
    delivered_sse: int = 0
    sse_ended: int = 0  # streams that ended (a failed join ends at once; browsers retry)
    closed_while_idle: dict[str, int] = field(default_factory=dict)  # close code -> clients
    worker_fds: dict[str, int] = field(default_factory=dict)
    worker_nofile: dict[str, int] = field(default_factory=dict)
    max_connections_errors: dict[str, int] = field(default_factory=dict)  # tracebacks
    broadcasts: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    exceptions: dict[str, dict[str, int]] = field(default_factory=dict)  # worker -> last line

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


async def storm(cluster: Cluster, n_websocket: int, n_sse: int, rooms: list[str],
                hold: float = 6.0, timeout: float = 60.0) -> StormResult:
    """Connect every client at once (shuffled, alternating workers), hold them idle for
    ``hold`` seconds, broadcast once per room, count who got it, then close everyone."""
    import httpx
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    result = StormResult()
    workers = cluster.workers

    async def open_ws(i: int) -> Any:
        worker, room = workers[i % 2], rooms[i % len(rooms)]
        try:
            ws = await connect(f"{worker.ws_url}/ws/chat/{room}/", open_timeout=timeout,
                               ping_interval=None, close_timeout=5, max_queue=4)
        except InvalidStatus as exc:
            bump(result.websocket, f"http {exc.response.status_code}")
        except Exception as exc:  # every other failure is counted by its type
            bump(result.websocket, type(exc).__name__)
        else:
            bump(result.websocket, "accepted")
            return ws
        return None

    async def open_sse(i: int) -> RawEventStream | None:
        worker, room = workers[i % 2], rooms[i % len(rooms)]
        stream = RawEventStream("127.0.0.1", worker.port, f"/events/{room}/")
        try:
            status = await stream.open(timeout=timeout)
        except Exception as exc:  # counted by type and stage
            stage = "connecting" if stream.writer is None else "awaiting headers"
            bump(result.sse, f"{type(exc).__name__} {stage}")
            stream.abort()
            return None
        bump(result.sse, f"http {status}")
        if status != 200:
            stream.abort()
            return None
        return stream

    jobs: list[Any] = [open_ws(i) for i in range(n_websocket)]
    jobs += [open_sse(i) for i in range(n_sse)]
    order = list(range(len(jobs)))
    random.shuffle(order)  # a storm arrives interleaved, not WebSockets first
    futures: list[asyncio.Future[Any]] = [None] * len(jobs)  # type: ignore[list-item]
    started, overflows = time.monotonic(), listen_overflows()
    for index in order:
        futures[index] = asyncio.ensure_future(jobs[index])
    opened = await asyncio.gather(*futures)
    result.connect_s = round(time.monotonic() - started, 2)
    result.listen_overflows = listen_overflows() - overflows
    sockets = [ws for ws in opened[:n_websocket] if ws is not None]
    streams = [s for s in opened[n_websocket:] if s is not None]
    for worker in workers:
        assert worker.process is not None
        result.worker_fds[worker.name] = open_fds(worker.process.pid)
        result.worker_nofile[worker.name] = nofile_of(worker.process.pid)
    try:
        await asyncio.sleep(hold)  # idle: a socket_timeout at or under 5 s kills consumers now
        async with httpx.AsyncClient(timeout=30) as http:
            for index, room in enumerate(rooms):
                response = await http.post(f"{workers[index % 2].url}/broadcast/{room}/",
                                           json={"text": f"storm-{room}"})
                bump(result.broadcasts, str(response.status_code))

        async def ws_got(ws: Any) -> None:
            try:
                frame = await asyncio.wait_for(ws.recv(), 20)
            except ConnectionClosed:
                bump(result.closed_while_idle, str(ws.close_code))
            except TIMEOUTS:
                bump(result.closed_while_idle, "no frame")
            else:
                if json.loads(frame).get("text", "").startswith("storm-"):
                    result.delivered_websocket += 1

        async def sse_got(stream: RawEventStream) -> None:
            try:
                event = await stream.next_event(20)
            except TIMEOUTS:
                return  # neither an event nor an end: a hung stream
            except (OSError, EOFError, asyncio.IncompleteReadError):
                event = None
            if event is None:
                result.sse_ended += 1
            elif event.event == "chat.message":
                result.delivered_sse += 1

        await asyncio.gather(*(ws_got(ws) for ws in sockets), *(sse_got(s) for s in streams))
    finally:
        for stream in streams:
            stream.abort()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    for worker in workers:
        found: dict[str, int] = {}
        for line in exceptions_in(worker.output()):
            bump(found, line)
        result.exceptions[worker.name] = found
        result.max_connections_errors[worker.name] = sum(
            n for line, n in found.items() if line.startswith("redis.exceptions.MaxConnections"))
    return result


