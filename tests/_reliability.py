"""Harness of the reliability tests and ``benchmarks/storm.py``.

* :class:`RedisServer`: a ``redis-server`` of our own on a free port, without
  persistence, that a test may kill and restart (never the shared one on 6379).
* :class:`Cluster`: two ``daphne tests.project.asgi:application`` workers on
  one channel-layer prefix, started at once, optionally exporting to an
  :class:`~tests._otlp.OTLPReceiver`.
* :class:`SSEStream`: an EventSource-like reader on a raw HTTP/1.1 connection
  (chunked body, ``Last-Event-ID``), light enough for a thousand at once and
  able to drop its TCP connection without a clean end (``abort()``).
* File-descriptor limits (``RLIMIT_NOFILE``) of this process and of a worker.
* :func:`require_redis_server`, :func:`active_connections`: shared test set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests._otlp import MetricPoint, OTLPReceiver
from tests._servers import DaphneWorker, free_port, wait_for_port

#: ``asyncio.wait_for`` raises ``asyncio.TimeoutError``: not the built-in before 3.11.
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)
#: The host entry the checks recommend (W010 / W011), as the test project uses it.
RECOMMENDED_HOSTS = "recommended"
#: The stock entry a user copies from the channels-redis README: a bare URL.
STOCK_HOSTS = "stock"


# -- Redis of our own ------------------------------------------------------------


class RedisServer:
    """``redis-server --port N --save "" --appendonly no``, owned by the test."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--maxclients", "10000", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, 10, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, nothing written anywhere (there is no persistence anyway)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(5)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


# -- two workers -------------------------------------------------------------------


def hosts_json(url: str, kind: str) -> str:
    """``CHANNEL_HOSTS_JSON`` for the test project: the recommended dict or a bare URL."""
    if kind == STOCK_HOSTS:
        return json.dumps([url])
    return json.dumps([{"address": url, "socket_timeout": 30, "max_connections": 2000}])


class Worker(DaphneWorker):
    """A :class:`DaphneWorker` with extra daphne options (``--websocket_connect_timeout``)."""

    def __init__(self, env: dict[str, str], name: str, options: list[str],
                 backlog: int | None = None) -> None:
        super().__init__(env, name=name)
        self.options = options
        self.backlog = backlog

    def command(self) -> list[str]:
        """Daphne with ``options`` and, given a ``backlog``, a Twisted endpoint to listen on."""
        bindir = Path(sys.executable).parent
        if self.backlog is None:
            bind = ["-b", "127.0.0.1", "-p", str(self.port)]
        else:  # a Twisted endpoint: daphne's -b/-p listen with Twisted's backlog of 50
            bind = ["-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={self.backlog}"]
        return [str(bindir / "daphne"), *bind, *self.options, self.app]


class Cluster:
    """Two daphne workers (A, B) on one channel layer prefix of ``redis_url``.

    ``connect_timeout``: daphne's ``--websocket_connect_timeout`` (default 5 s), the
    time a WebSocket handshake may take from its TCP connection to the app's accept.
    ``backlog``: the listen queue (daphne's ``-b``/``-p`` get Twisted's 50; a storm
    overflows it and the kernel drops connection attempts, see ``ListenOverflows``).
    """

    def __init__(self, redis_url: str, receiver: OTLPReceiver | None = None,
                 hosts: str = RECOMMENDED_HOSTS, extra_env: dict[str, str] | None = None,
                 names: tuple[str, str] = ("worker-a", "worker-b"),
                 connect_timeout: int | None = None, backlog: int | None = None) -> None:
        self.prefix = f"otelrel{uuid.uuid4().hex[:10]}"
        env = {
            **(receiver.env() if receiver is not None else {}),
            "CHANNEL_BACKEND": "redis",
            "CHANNEL_PREFIX": self.prefix,
            "REDIS_URL": redis_url,
            "CHANNEL_HOSTS_JSON": hosts_json(redis_url, hosts),
            **(extra_env or {}),
        }
        options = ([] if connect_timeout is None
                   else ["--websocket_connect_timeout", str(connect_timeout)])
        self.workers = [Worker(env, name, options, backlog) for name in names]

    @property
    def a(self) -> DaphneWorker:
        return self.workers[0]

    @property
    def b(self) -> DaphneWorker:
        return self.workers[1]

    def start(self) -> Cluster:
        errors: list[BaseException] = []

        def start(worker: DaphneWorker) -> None:
            try:
                worker.start(timeout=40)
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,)) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
        if errors:
            self.stop()
            raise errors[0]
        return self

    def alive(self) -> bool:
        return all(w.process is not None and w.process.poll() is None for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def exceptions_in(log: str) -> list[str]:
    """The final ``SomeError: ...`` line of every traceback in a worker log."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in block.splitlines() if line and not line.startswith(" ")]
        found.append(lines[0] if lines else "")
    return found


# -- Server-Sent Events on a raw connection ---------------------------------------


@dataclass
class Event:
    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEStream:
    """One ``GET`` event stream; ``events()`` yields parsed events as they arrive."""

    host: str
    port: int
    path: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    last_id: str | None = None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    _buffer: str = ""
    _chunked: bool = False

    async def open(self, last_event_id: str | None = None, timeout: float = 30.0) -> int:
        """Send the request, read the status and headers; returns the status code."""
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), timeout)
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Accept: text/event-stream", "Cache-Control: no-cache"]
        if last_event_id:
            lines.append(f"Last-Event-ID: {last_event_id}")
            self.last_id = last_event_id
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._buffer = ""
        return self.status

    async def _read(self) -> str:
        """The next piece of the body ('' at its end)."""
        assert self.reader is not None
        if not self._chunked:
            return (await self.reader.read(65536)).decode()
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.strip().split(b";")[0], 16)
        if size == 0:
            return ""
        data = await self.reader.readexactly(size + 2)
        return data[:-2].decode()

    async def next_event(self, timeout: float = 30.0) -> Event | None:
        """The next event (comments skipped, ``id`` kept); None when the body ends."""
        deadline = time.monotonic() + timeout
        while True:
            while "\n\n" in self._buffer:
                block, self._buffer = self._buffer.split("\n\n", 1)
                event = self._parse(block)
                if event is not None:
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event on {self.path} within {timeout} s")
            piece = await asyncio.wait_for(self._read(), left)
            if not piece:
                return None
            self._buffer += piece.replace("\r\n", "\n").replace("\r", "\n")

    def _parse(self, block: str) -> Event | None:
        name, data, seen_id = "message", [], None
        has_data = False
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
                has_data = True
            elif key == "id":
                seen_id = value
        if seen_id is not None:
            self.last_id = seen_id  # what a browser keeps for Last-Event-ID
        if not has_data:
            return None
        return Event(name, seen_id, "\n".join(data))

    def abort(self) -> None:
        """Drop the TCP connection (RST), as a crashed browser or a dead network would."""
        if self.writer is not None:
            self.writer.transport.abort()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()


# -- metrics in the receiver --------------------------------------------------------


def latest(receiver: OTLPReceiver, name: str, service: str, **attributes: Any
           ) -> MetricPoint | None:
    """The most recent exported point of one metric stream of one worker."""
    with receiver.lock:
        points = [p for p in receiver.metrics if p.name == name and p.service == service
                  and all(p.attributes.get(k) == v for k, v in attributes.items())]
    return points[-1] if points else None


def latest_by_attributes(receiver: OTLPReceiver, name: str, service: str
                         ) -> dict[tuple[tuple[str, Any], ...], MetricPoint]:
    """The most recent point of every attribute set of one metric of one worker."""
    found: dict[tuple[tuple[str, Any], ...], MetricPoint] = {}
    with receiver.lock:
        for point in receiver.metrics:
            if point.name == name and point.service == service:
                found[tuple(sorted(point.attributes.items()))] = point
    return found



def active_connections(receiver: OTLPReceiver, service: str, protocol: str) -> float | None:
    """Latest cumulative active-connection count of one worker and protocol (all routes)."""
    points = [p for p in latest_by_attributes(
        receiver, "channels.server.active_connections", service).values()
        if p.attributes.get("network.protocol.name") == protocol]
    return sum(p.value or 0.0 for p in points) if points else None


def require_redis_server(why: str) -> str:
    """Path of ``redis-server``; skips the test without it (fails under ``REQUIRE_REDIS=1``)."""
    import pytest  # here, not at the top: benchmarks/storm.py imports this module without pytest

    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail("REQUIRE_REDIS=1 but redis-server is not on PATH")
        pytest.skip(f"redis-server is not on PATH ({why})")
    return found

# -- file descriptors ---------------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns (soft, hard).

    Worker processes started afterwards inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def nofile_of(pid: int) -> int:
    """The soft open-files limit of process ``pid`` (from ``/proc/<pid>/limits``)."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                value = line.split()[3]
                return 1 << 62 if value == "unlimited" else int(value)
    raise LookupError(pid)


def listen_overflows() -> int:
    """The kernel's count of connections dropped from full listen queues (all sockets)."""
    with open("/proc/net/netstat") as netstat:
        lines = netstat.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        keys = names.split()
        if "ListenOverflows" in keys:
            return int(values.split()[keys.index("ListenOverflows")])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- browser-like clients that reconnect -----------------------------------------------


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(*TIMEOUTS):
        await asyncio.wait_for(stop.wait(), seconds)


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
                await _pause(stop, delay)
                continue
            self.failures[reason] = self.failures.get(reason, 0) + 1
            await _pause(stop, delay)
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
        self.stream: SSEStream | None = None
        self.hold = 0.0  # extra wait before the next reconnect (a dropped laptop lid)

    async def run(self, stop: asyncio.Event, max_attempts: int = 500) -> None:
        delay = 0.2
        for _ in range(max_attempts):
            if stop.is_set():
                return
            stream = self.stream = SSEStream("127.0.0.1", self.port, self.path)
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
            await _pause(stop, delay + hold)
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
            await _pause(stop, interval)


# -- the Redis fault scenario ---------------------------------------------------------


@dataclass
class FaultRun:
    """Everything a Redis kill-and-restart run observed (see :func:`redis_fault_run`)."""

    chat: list[ChatClient]
    sse: list[EventSourceClient]
    sent: list[Sent]
    t_kill: float
    t_up: float
    t_recovered: float
    t_drop: float
    dropped: EventSourceClient
    across: EventSourceClient | None
    died: list[str]
    metrics_at_kill: dict[str, float]
    metrics_at_up: dict[str, float]

    def rejoined(self, client: ChatClient | EventSourceClient) -> float:
        """When ``client`` was back in the group after the restart."""
        limit = self.t_drop or float("inf")  # not the deliberate drop at the end
        if isinstance(client, ChatClient):  # group_add runs before the accept
            # The last connect: one made right after the restart may still die on a
            # pooled connection to the old Redis (redis-py finds it stale on first use).
            return max(t for t in client.connects if self.t_up < t < limit)
        marks = [t for t, _ in client.connects if self.t_up < t < limit]
        marks += [t for t, _, _ in client.resets if self.t_up < t < limit]
        return max(marks)

    def accounting(self) -> dict[str, Any]:
        """Per client: broadcasts accepted (202) vs received, losses by cause."""
        accepted = [s for s in self.sent if s.status == 202]
        refused = [s for s in self.sent if s.status != 202]
        rows = {}
        for client in [*self.chat, *self.sse]:
            back = self.rejoined(client)
            missing = [s for s in accepted if s.text not in client.texts]
            rows[client.name] = {
                "accepted": len(accepted),
                "received": sum(1 for s in accepted if s.text in client.texts),
                "lost_in_flight_at_kill": sum(1 for s in missing if s.at < self.t_kill),
                "lost_after_restart_before_rejoin": sum(
                    1 for s in missing if self.t_up <= s.at < back),
                "lost_after_rejoin": sum(1 for s in missing if s.at >= back),
                "rejoined_after_restart_s": round(back - self.t_up, 2),
                "duplicates": client.duplicates,
                "failed_connects": dict(client.failures),
            }
        return {
            "broadcasts": len(self.sent),
            "accepted": len(accepted),
            "refused_in_flight_at_kill": sum(1 for s in refused if s.at < self.t_kill),
            "refused_during_outage": sum(1 for s in refused if self.t_kill <= s.at < self.t_up),
            "refused_after_restart": sum(1 for s in refused if s.at >= self.t_up),
            "outage_s": round(self.t_up - self.t_kill, 2),
            "all_rejoined_after_restart_s": round(self.t_recovered - self.t_up, 2),
            "clients": rows,
        }


def _sum_metric(receiver: OTLPReceiver, name: str, service: str, **attributes: Any) -> float:
    """Sum over attribute sets of the latest cumulative value of one metric of one worker."""
    total = 0.0
    for point in latest_by_attributes(receiver, name, service).values():
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            total += point.value or 0.0
    return total


async def redis_fault_run(redis: RedisServer, receiver: OTLPReceiver, cluster: Cluster,
                          room: str, chat_per_worker: int = 2, sse_per_worker: int = 2,
                          before: float = 2.0, down: float = 3.0, tail: float = 3.0,
                          interval: float = 0.1, recovery_timeout: float = 20.0) -> FaultRun:
    """Clients on both workers and broadcasts flowing; Redis killed, restarted, recovered.

    After every client is back in the group, one SSE client drops its connection
    for a second and reconnects with ``Last-Event-ID`` (replay from the new log).
    """
    stop_clients, stop_sending = asyncio.Event(), asyncio.Event()
    chat, sse = [], []
    for worker in cluster.workers:
        short = worker.name.rsplit("-", 1)[-1]
        chat += [ChatClient(f"{short}-ws{i}", f"{worker.ws_url}/ws/chat/{room}/")
                 for i in range(chat_per_worker)]
        sse += [EventSourceClient(f"{short}-sse{i}", worker.port, f"/events/{room}/")
                for i in range(sse_per_worker)]
    tasks = [asyncio.create_task(c.run(stop_clients)) for c in [*chat, *sse]]
    died: list[str] = []

    def watch() -> None:
        for worker in cluster.workers:
            gone = worker.process is None or worker.process.poll() is not None
            if gone and worker.name not in died:
                died.append(worker.name)

    sent: list[Sent] = []
    try:
        for _ in range(200):  # everyone connected (bounded: 10 s)
            if all(c.connects for c in chat) and all(c.stream and c.stream.last_id for c in sse):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("clients did not connect: "
                                 f"{[(c.name, c.failures) for c in [*chat, *sse]]}")
        urls = {w.name: w.url for w in cluster.workers}
        sender = asyncio.create_task(
            broadcaster(urls, room, stop_sending, sent, interval, on_tick=watch))
        await asyncio.sleep(before)

        def snapshot() -> dict[str, float]:
            return {w.name: _sum_metric(receiver, "messaging.client.consumed.messages", w.name)
                    for w in cluster.workers}

        t_kill = time.monotonic()
        redis.kill()
        await asyncio.sleep(0.5)
        # A browser losing its network mid-outage: it reconnects while Redis is down
        # (the stream ends at once, it retries) and again once Redis is back, with a
        # Last-Event-ID the restarted log does not know.
        across = sse[1] if len(sse) > 2 else None
        if across is not None:
            across.drop(hold=down / 2)
        await asyncio.sleep(0.5)  # a metric export (0.5 s) after the last delivery
        metrics_at_kill = snapshot()
        await asyncio.sleep(max(0.0, down - 1.0))
        metrics_at_up = snapshot()
        t_up = time.monotonic()
        redis.start()

        def back() -> bool:
            return (all(any(t > t_up for t in c.connects) for c in chat)
                    and all(any(t > t_up for t, _, _ in c.resets)
                            or any(t > t_up for t, _ in c.connects) for c in sse))

        for _ in range(int(recovery_timeout / 0.05)):
            if back():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("not every client rejoined: " + repr(
                [(c.name, c.failures, c.connects[-1:]) for c in [*chat, *sse]]))
        run = FaultRun(chat, sse, sent, t_kill, t_up, 0.0, 0.0, sse[-1], across, died,
                       metrics_at_kill, metrics_at_up)
        run.t_recovered = max(run.rejoined(c) for c in [*chat, *sse])
        await asyncio.sleep(0.5)
        run.t_drop = time.monotonic()
        run.dropped.drop(hold=1.0)  # misses ~10 broadcasts, then resumes
        await asyncio.sleep(tail)
        stop_sending.set()
        await sender
        await asyncio.sleep(1.0)  # the last deliveries
        watch()
        return run
    finally:
        stop_sending.set()
        stop_clients.set()
        await asyncio.gather(*(c.close() for c in [*chat, *sse]), return_exceptions=True)
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()


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


def _bump(counter: dict[str, int], key: str) -> None:
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
            _bump(result.websocket, f"http {exc.response.status_code}")
        except Exception as exc:  # every other failure is counted by its type
            _bump(result.websocket, type(exc).__name__)
        else:
            _bump(result.websocket, "accepted")
            return ws
        return None

    async def open_sse(i: int) -> SSEStream | None:
        worker, room = workers[i % 2], rooms[i % len(rooms)]
        stream = SSEStream("127.0.0.1", worker.port, f"/events/{room}/")
        try:
            status = await stream.open(timeout=timeout)
        except Exception as exc:  # counted by type and stage
            stage = "connecting" if stream.writer is None else "awaiting headers"
            _bump(result.sse, f"{type(exc).__name__} {stage}")
            stream.abort()
            return None
        _bump(result.sse, f"http {status}")
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
                _bump(result.broadcasts, str(response.status_code))

        async def ws_got(ws: Any) -> None:
            try:
                frame = await asyncio.wait_for(ws.recv(), 20)
            except ConnectionClosed:
                _bump(result.closed_while_idle, str(ws.close_code))
            except TIMEOUTS:
                _bump(result.closed_while_idle, "no frame")
            else:
                if json.loads(frame).get("text", "").startswith("storm-"):
                    result.delivered_websocket += 1

        async def sse_got(stream: SSEStream) -> None:
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
            _bump(found, line)
        result.exceptions[worker.name] = found
        result.max_connections_errors[worker.name] = sum(
            n for line, n in found.items() if line.startswith("redis.exceptions.MaxConnections"))
    return result


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
            _bump(stats.failures, f"websocket http {exc.response.status_code}")
            return
        except (OSError, *TIMEOUTS) as exc:
            _bump(stats.failures, f"websocket {type(exc).__name__}")
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
            _bump(stats.endings, "websocket closed by server")
            return
        how = rng.random()
        if how < 0.2:
            await ws.close()
            _bump(stats.endings, "websocket close 1000")
        elif how < 0.6:
            ws.transport.abort()
            _bump(stats.endings, "websocket tcp reset")
        else:
            ws.transport.close()
            _bump(stats.endings, "websocket fin, no close frame")

    async def sse_session() -> None:
        worker, room = rng.choice(cluster.workers), rng.choice(rooms)
        stream = SSEStream("127.0.0.1", worker.port, f"/events/{room}/")
        try:
            status = await stream.open(timeout=10)
        except (OSError, *TIMEOUTS, asyncio.IncompleteReadError) as exc:
            _bump(stats.failures, f"sse {type(exc).__name__}")
            stream.abort()
            return
        if status != 200:
            _bump(stats.failures, f"sse http {status}")
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
            _bump(stats.endings, "sse tcp reset")
        else:
            assert stream.writer is not None
            stream.writer.transport.close()
            _bump(stats.endings, "sse fin")

    async def user() -> None:
        while time.monotonic() < end and budget[0] > 0:
            budget[0] -= 1
            if rng.random() < websocket_share:
                await websocket_session()
            else:
                await sse_session()

    await asyncio.gather(*(user() for _ in range(users)))
    return stats


async def worker_state(worker: DaphneWorker, collect: bool = True) -> dict[str, Any]:
    """The test project's ``/debug/state/`` of one worker."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{worker.url}/debug/state/", params={"gc": "1"} if collect
                                  else None)
    response.raise_for_status()
    return response.json()


def group_members(redis: RedisServer, prefix: str) -> dict[str, int]:
    """``ZCARD`` of every channels-redis group key under ``prefix`` (empty: no members)."""
    client = redis.client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}:group:*", count=1000))
        return {key.decode(): int(client.zcard(key)) for key in keys}
    finally:
        client.close()


# -- Redis with persistence (tests/test_redis_persistence.py) ---------------------------


class PersistentRedisServer(RedisServer):
    """``redis-server`` with an append-only file written on every command
    (``--appendonly yes --appendfsync always``, no RDB snapshots) in a directory of
    its own: :meth:`kill` (SIGKILL) then :meth:`start` brings back everything it had
    acknowledged (group memberships, queued messages, the SSE replay log)."""

    def __init__(self, port: int | None = None, directory: str | None = None) -> None:
        import tempfile

        super().__init__(port)
        self.directory = directory or tempfile.mkdtemp(prefix="otel-redis-aof-")
        self.owns_directory = directory is None

    def start(self) -> PersistentRedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--dir", self.directory, "--daemonize", "no",
             "--maxclients", "10000", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, 10, self.process)
        self.wait_loaded()
        return self

    def wait_loaded(self, timeout: float = 10.0) -> None:
        """Until PING answers (a restarted server says LOADING while it reads the AOF)."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            client = self.client()
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
