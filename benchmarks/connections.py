"""Idle connections per worker: resident memory and OS threads per connection.

Usage::

    .venv/bin/python benchmarks/connections.py                    # N = 1,000 (~13 min)
    .venv/bin/python benchmarks/connections.py -n 5000 --frames 10
    .venv/bin/python benchmarks/connections.py -n 10000 --frames 10 --cycles 1
    .venv/bin/python benchmarks/connections.py -n 100 --frames 2 --variants plain,sse  # smoke

For each N, side by side, each on a fresh daphne worker on Redis
(``benchmarks/_connections_app``; one worker, a channel-layer prefix of its own):

* ``plain WS``: Channels' ``AsyncWebsocketConsumer``, otel_channels not installed;
* ``traced WS, no SDK``: ``TracedAsyncWebsocketConsumer``, the app installed, API no-ops;
* ``traced WS, SDK``: the same with SDK providers (batch span processor, periodic metrics);
* ``SSE stream, SDK``: ``EventStreamView`` on the same group, SDK providers.

Every WebSocket joins one group. The clients run here, in this process (asyncio:
``websockets`` for WebSockets, raw sockets for SSE), so their memory is not the
worker's. Per worker: a warm-up (50 connections, a broadcast, closed), then the
baseline (``VmRSS`` and ``Threads`` of ``/proc/<pid>/status``); N connections
opened (200 at a time); one broadcast received by all; ``--frames`` frames each
(WebSocket: echoed; SSE: that many broadcasts, each to all); all closed; and a
second cycle of N opened and closed. Reported: KiB of RSS per connection over
the baseline, the growth per connection after the broadcast and after the frames
(none expected), the OS threads with N open, what stays after each close, and
the worker's live pymalloc blocks after a full collection at the baseline and
after each close (``sys.getallocatedblocks()``; RSS rarely shrinks after a close,
so the blocks are the leak check).

The benchmark raises its ``RLIMIT_NOFILE`` to the hard limit (the worker inherits
it) and listens with a backlog of 4,096 (daphne's ``-b``/``-p`` give Twisted's 50:
``-e tcp:...:backlog=`` instead).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from tests.support.redis_layer import delete_keys  # noqa: E402
from tests.support.servers import DaphneWorker  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BACKLOG = 4096
OPEN_AT_ONCE = 200
TIMEOUT = 300.0  # seconds for any one phase (bounded however slow the machine is)

#: key -> (label, kind, worker environment)
VARIANTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "plain": ("plain WS", "ws", {"CONNECTIONS_CONSUMER": "plain"}),
    "nosdk": ("traced WS, no SDK", "ws",
              {"CONNECTIONS_CONSUMER": "traced", "CONNECTIONS_APP": "1"}),
    "sdk": ("traced WS, SDK", "ws",
            {"CONNECTIONS_CONSUMER": "traced", "CONNECTIONS_APP": "1", "FANOUT_SDK": "1"}),
    "sse": ("SSE stream, SDK", "sse",
            {"CONNECTIONS_CONSUMER": "traced", "CONNECTIONS_APP": "1", "FANOUT_SDK": "1"}),
}


class Worker(DaphneWorker):
    """The benchmark's daphne, listening with a large backlog."""

    def command(self) -> list[str]:
        bindir = Path(sys.executable).parent
        return [str(bindir / "daphne"),
                "-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={BACKLOG}",
                "--websocket_connect_timeout", "60",
                # daphne pings every 20 s and drops a client that has not answered within
                # 30 s: on a loaded 2-core machine 10,000 clients in one process may not.
                "--ping-interval", "600", "--ping-timeout", "600", self.app]


def proc_status(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, OS threads) of ``pid``."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+) kB", text)
    threads = re.search(r"Threads:\s+(\d+)", text)
    assert rss is not None and threads is not None
    return int(rss.group(1)), int(threads.group(1))


async def settled(pid: int, seconds: float = 10.0) -> tuple[int, int]:
    """(RSS, threads) once RSS has moved by less than 0.5 % over one second."""
    last = proc_status(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = proc_status(pid)
        if abs(now[0] - last[0]) <= last[0] * 0.005:
            return now
        last = now
    return last


async def http_get(port: int, target: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                 .encode())
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


async def live_blocks(port: int) -> tuple[int, int]:
    """The worker's live pymalloc blocks after ``gc.collect()`` (the leak check), and the
    connections its channels-redis pool holds (kept at their high-water mark)."""
    stats = json.loads(await http_get(port, "/stats?blocks=1"))
    return int(stats["blocks"]), int(stats["redis_connections"])


class SSEClient:
    """One event stream on a raw socket, counting ``bench.message`` events."""

    MARK = b"event: bench.message\n"

    def __init__(self) -> None:
        self.events = 0
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(b"GET /events/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Accept: text/event-stream\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head[:100])
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                chunk = tail + data
                self.events += chunk.count(self.MARK)
                tail = chunk[-(len(self.MARK) - 1):]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class WSClient:
    """One WebSocket, counting the broadcasts it receives."""

    def __init__(self) -> None:
        self.ws: ClientConnection | None = None

    async def open(self, port: int) -> None:
        self.ws = await connect(f"ws://127.0.0.1:{port}/ws/", compression=None,
                                ping_interval=None, open_timeout=120)

    async def frames(self, count: int) -> None:
        assert self.ws is not None
        for i in range(count):
            await self.ws.send(f"frame {i}")
            assert await self.ws.recv() == f"frame {i}"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def open_all(kind: str, port: int, n: int) -> list[Any]:
    clients: list[Any] = [WSClient() if kind == "ws" else SSEClient() for _ in range(n)]
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one(client: Any) -> None:
        async with gate:
            await client.open(port)

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in clients)), TIMEOUT)
    return clients


async def close_all(kind: str, clients: list[Any], port: int, pid: int, threads: int) -> None:
    """Close every client; wait until the worker has ended every connection."""
    await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while kind == "ws" and time.monotonic() < deadline:  # until every disconnect() ran
        if json.loads(await http_get(port, "/stats"))["websocket"] == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # SSE: Django cancels the response on http.disconnect
    # Django ends each request on a thread of its own (request_finished's sync receivers),
    # joined by another: closing thousands of streams at once runs hundreds for a while.
    for _ in range(int(TIMEOUT / 0.5)):
        if proc_status(pid)[1] <= threads:
            break
        await asyncio.sleep(0.5)


async def broadcast(kind: str, clients: list[Any], port: int, count: int) -> None:
    """``count`` broadcasts, until every client got them all."""
    if kind == "ws":
        async def receive(client: WSClient) -> None:
            assert client.ws is not None
            for _ in range(count):
                await client.ws.recv()

        waiting = asyncio.gather(*(receive(c) for c in clients))
        await http_get(port, f"/broadcast?n={count}")
        await asyncio.wait_for(waiting, TIMEOUT)
        return
    targets = [c.events + count for c in clients]
    await http_get(port, f"/broadcast?n={count}")
    deadline = time.monotonic() + TIMEOUT
    while any(c.events < t for c, t in zip(clients, targets, strict=True)):
        if time.monotonic() > deadline:
            raise TimeoutError("not every stream got the broadcasts")
        await asyncio.sleep(0.2)


async def run_variant(label: str, kind: str, env: dict[str, str], n: int,
                      frames: int, cycles: int) -> dict[str, Any]:
    prefix = f"conn{uuid.uuid4().hex[:10]}"
    worker = Worker({**env, "CONNECTIONS_PREFIX": prefix, "REDIS_URL": REDIS_URL},
                    app="benchmarks._connections_app.asgi:application",
                    settings="benchmarks._connections_app.settings", name=f"conn-{kind}")
    started = time.monotonic()
    with worker:
        port = worker.port
        pid = json.loads(await http_get(port, "/stats"))["pid"]
        warm = await open_all(kind, port, 50)
        await broadcast(kind, warm, port, 1)
        if kind == "ws":
            await asyncio.gather(*(c.frames(2) for c in warm))
        await close_all(kind, warm, port, pid, proc_status(pid)[1])
        base = await settled(pid)
        blocks = [await live_blocks(port)]
        row: dict[str, Any] = {"label": label, "n": n, "base_rss": base[0],
                               "base_threads": base[1], "phases": {}}
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            row["phases"][name] = round(now - mark, 1)
            mark = now

        for cycle in range(1, cycles + 1):
            clients = await open_all(kind, port, n)
            phase(f"open{cycle}")
            row[f"open{cycle}"] = await settled(pid)
            if cycle == 1:
                await broadcast(kind, clients, port, 1)
                phase("broadcast")
                row["broadcast"] = await settled(pid)
                if kind == "ws":
                    await asyncio.wait_for(
                        asyncio.gather(*(c.frames(frames) for c in clients)), TIMEOUT * 2)
                else:
                    await broadcast(kind, clients, port, frames)
                phase("frames")
                row["frames"] = await settled(pid)
            await close_all(kind, clients, port, pid, base[1])
            phase(f"close{cycle}")
            row[f"closed{cycle}"] = await settled(pid)
            blocks.append(await live_blocks(port))  # after the RSS reading: it collects
        row["blocks"] = blocks
    delete_keys(REDIS_URL, prefix)
    row["seconds"] = time.monotonic() - started
    print(json.dumps(row), flush=True)
    return row


def per_conn(row: dict[str, Any], key: str, against: int | None = None) -> str:
    base = row["base_rss"] if against is None else against
    return f"{(row[key][0] - base) / row['n']:.1f}"


def leak(row: dict[str, Any]) -> str:
    """Live pymalloc blocks after each close over the baseline, per connection."""
    found = row.get("blocks") or []
    if len(found) < 2:
        return "—"
    blocks = [b[0] for b in found]
    text = " / ".join(f"{(b - blocks[0]) / row['n']:.1f}" for b in blocks[1:])
    return text + " (Redis pool: " + " / ".join(str(b[1]) for b in found[1:]) + ")"


def table(rows: list[dict[str, Any]], frames: int) -> str:
    """One line per (N, variant); every figure is KiB of worker RSS per connection."""
    lines = [
        "| N | connection | open | + a broadcast to all | "
        f"+ {frames} frames each | OS threads (baseline → N open) "
        "| open again, cycle 2 (over cycle 1's close) | cycle 2's close over cycle 1's "
        "| live blocks left per connection after close, cycle 1 / 2 (Redis connections) |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n']:,} | {row['label']} | {per_conn(row, 'open1')} "
            f"| {per_conn(row, 'broadcast', row['open1'][0])} "
            f"| {per_conn(row, 'frames', row['broadcast'][0])} "
            f"| {row['base_threads']} → {row['open1'][1]} "
            + (f"| {per_conn(row, 'open2', row['closed1'][0])} "
               f"| {per_conn(row, 'closed2', row['closed1'][0])} |" if "open2" in row
               else "| — | — |")
            + f" {leak(row)} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", default="1000", help="comma-separated connection counts")
    parser.add_argument("--frames", type=int, default=100, help="frames per connection")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--cycles", type=int, default=2, choices=(1, 2),
                        help="open/close cycles (1: no leak check)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = [int(x) for x in args.n.split(",")]
    if max(counts) + 200 > hard:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is too low for {max(counts)} connections")
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows = []
    for n in counts:
        for key in wanted:
            label, kind, env = VARIANTS[key]
            rows.append(await run_variant(label, kind, env, n, args.frames, args.cycles))
    print(table(rows, args.frames))


async def run() -> None:
    """``main()``, cancelled on SIGTERM so that the worker is stopped on the way out."""
    task = asyncio.ensure_future(main())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await task


if __name__ == "__main__":
    asyncio.run(run())
