"""Test-side harness of the fuzz / membership tests (never imported by the workers).

* :class:`FuzzWorkers`: an OTLP receiver and two daphne workers of
  ``tests.fuzzproject`` on one channel-layer prefix of a Redis;
* :func:`raw_group_send`: a ``group_send`` that bypasses the instrumentor, as an
  untraced (or hostile) producer in another process would send it;
* :class:`WSClient` / :class:`SSEClient`: clients that keep everything they got;
* strategies of msgpack-safe messages and hostile carriers (hypothesis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from tests.fuzzproject.consumers import BYTES_TAG, KINDS
from tests.support.otlp import OTLPReceiver, Span
from tests.support.redis_layer import redis_host
from tests.support.servers import DaphneWorker, running
from tests.support.sse import Event

APP = "tests.fuzzproject.asgi:application"
SETTINGS = "tests.fuzzproject.settings"
CARRIER_KEY = "_otel"
MESSAGE_TYPE = "fuzz.message"
#: ERROR spans a test accepts: a carrier the library chose to record as bad.
BAD_CARRIER = "bad_carrier"
#: What daphne raises into a consumer sending to a client that just reset (channels#1820).
SEND_AFTER_RESET = "autobahn.exception.Disconnected: Attempt to send on a closed protocol"


def hosts_json(url: str) -> str:
    return json.dumps([redis_host(url)])


class FuzzWorkers:
    """Two ``tests.fuzzproject`` workers (A, B) and their OTLP receiver."""

    def __init__(self, redis_url: str, otel_channels: dict[str, Any] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.redis_url = redis_url
        self.prefix = f"otelfuzz{uuid.uuid4().hex[:10]}"
        self.receiver = OTLPReceiver()
        self.env = {
            "CHANNEL_BACKEND": "redis",
            "CHANNEL_PREFIX": self.prefix,
            "REDIS_URL": redis_url,
            "CHANNEL_HOSTS_JSON": hosts_json(redis_url),
            "OTEL_CHANNELS_JSON": json.dumps(otel_channels or {}),
            **(extra_env or {}),
        }
        self.workers: list[DaphneWorker] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> FuzzWorkers:
        receiver = self._stack.enter_context(self.receiver)
        env = {**receiver.env(), **self.env}
        self.workers = [DaphneWorker(env, app=APP, settings=SETTINGS, name=f"fuzz-{n}")
                        for n in ("a", "b")]
        # Tracebacks are checked by each test on its own part of the logs.
        self._stack.enter_context(running(*self.workers, join_timeout=60, log_tail=3000,
                                          tracebacks=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    @property
    def a(self) -> DaphneWorker:
        return self.workers[0]

    @property
    def b(self) -> DaphneWorker:
        return self.workers[1]

    def mark(self) -> dict[str, int]:
        """Where each log and the span list are now (see :meth:`since`)."""
        marks = {w.name: len(w.output()) for w in self.workers}
        with self.receiver.lock:
            marks["spans"] = len(self.receiver.spans)
        return marks

    def logs_since(self, mark: dict[str, int]) -> dict[str, str]:
        return {w.name: w.output()[mark[w.name]:] for w in self.workers}

    def spans_since(self, mark: dict[str, int]) -> list[Span]:
        with self.receiver.lock:
            return list(self.receiver.spans[mark["spans"]:])

    def alive(self) -> bool:
        return all(w.process is not None and w.process.poll() is None for w in self.workers)


def error_spans(spans: list[Span], allowed: tuple[str, ...] = (BAD_CARRIER,)) -> list[str]:
    """ERROR spans whose ``error.type`` is not in ``allowed`` (as ``service:name error.type``)."""
    return [f"{s.service}:{s.name} error.type={s.attributes.get('error.type')!r}"
            for s in spans if s.status_code == 2
            and s.attributes.get("error.type") not in allowed]


def tracebacks(logs: dict[str, str]) -> dict[str, list[str]]:
    """The last line of each traceback per worker (empty lists: none)."""
    from tests.support.reliability import exceptions_in

    return {name: exceptions_in(log) for name, log in logs.items()}


# -- producing ------------------------------------------------------------------------------


def redis_layer(redis_url: str, prefix: str, **config: Any) -> Any:
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(
        hosts=[redis_host(redis_url, max_connections=200)],
        prefix=prefix, **config)


async def raw_group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    """``layer.group_send`` without the instrumentor's wrapper: no carrier is added or
    replaced, so whatever ``message`` holds under ``_otel`` reaches the workers as is."""
    method = type(layer).group_send
    await getattr(method, "__wrapped__", method)(layer, group, message)


# -- clients --------------------------------------------------------------------------------


def untag(value: Any) -> Any:
    """Inverse of :func:`tests.fuzzproject.consumers.tag`."""
    if isinstance(value, dict):
        if set(value) == {BYTES_TAG}:
            return bytes.fromhex(value[BYTES_TAG])
        return {k: untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value


@dataclass
class WSClient:
    """A WebSocket to ``/ws/fuzz/<kind>/<room>/``; decodes forwarded events."""

    worker: DaphneWorker
    kind: str
    room: str
    hello: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    other: list[Any] = field(default_factory=list)  # frames that are not events
    channel: str | None = None
    closed: tuple[int | None, str] | None = None
    ws: Any = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.worker.name}/{self.kind}"

    @property
    def url(self) -> str:
        query = "?hello=1" if self.hello else ""
        return f"{self.worker.ws_url}/ws/fuzz/{self.kind}/{self.room}/{query}"

    async def open(self, timeout: float = 10.0) -> WSClient:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, open_timeout=timeout, ping_interval=None,
                                close_timeout=2, max_size=None, max_queue=None)
        if self.hello:
            hello = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            self.channel = hello["hello"]
        self.task = asyncio.ensure_future(self._read())
        return self

    def _decode(self, frame: str | bytes) -> dict[str, Any] | None:
        if KINDS[self.kind][1]:  # JSON consumers: {"event": tagged}
            if isinstance(frame, bytes):
                return None
            content = json.loads(frame)
            if isinstance(content, dict) and set(content) == {"event"}:
                return untag(content["event"])
            return None
        if isinstance(frame, str):
            return None
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self.ws:
                event = self._decode(frame)
                if event is None:
                    self.other.append(frame)
                else:
                    self.events.append(event)
        except ConnectionClosed as exc:
            self.closed = (exc.rcvd.code if exc.rcvd else None, str(exc))
            return
        rcvd = self.ws.close_code
        self.closed = (rcvd, "closed")

    def count(self, fuzz_id: str) -> int:
        return sum(1 for e in self.events if e.get("fuzz_id") == fuzz_id)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.task, 5)


@dataclass
class SSEClient:
    """An event stream read with httpx and the library's spec parser."""

    worker: DaphneWorker
    path: str
    events: list[Event] = field(default_factory=list)
    ended: bool = False
    error: str | None = None
    position: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.worker.name}/sse"

    async def open(self, timeout: float = 10.0) -> SSEClient:
        import httpx

        from otel_channels.eventstream import EventStreamParser

        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=None))
        self._context = self.client.stream("GET", f"{self.worker.url}{self.path}",
                                           headers={"accept": "text/event-stream"})
        response = await self._context.__aenter__()
        assert response.status_code == 200, response.status_code
        self.parser = EventStreamParser()
        chunks = response.aiter_raw()
        deadline = time.monotonic() + timeout
        while not self.parser.last_event_id:  # ": open", then the position
            assert time.monotonic() < deadline, "no position from the stream"
            for event in self.parser.feed(await asyncio.wait_for(chunks.__anext__(), timeout)):
                self._keep(event)
        self.position = self.parser.last_event_id
        self.task = asyncio.ensure_future(self._read(chunks))
        return self

    def _keep(self, event: Any) -> None:
        self.events.append(event)

    async def _read(self, chunks: Any) -> None:
        try:
            async for chunk in chunks:
                for event in self.parser.feed(chunk):
                    self._keep(event)
        except Exception as exc:  # noqa: BLE001 - recorded, the test asserts on it
            self.error = f"{type(exc).__name__}: {exc}"
        self.ended = True

    def fuzz_events(self, fuzz_id: str) -> list[Event]:
        found = []
        for event in self.events:
            if event.event != MESSAGE_TYPE:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(event.data)
                if isinstance(data, dict) and data.get("fuzz_id") == fuzz_id:
                    found.append(event)
        return found

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        with contextlib.suppress(Exception):
            await self._context.__aexit__(None, None, None)
        with contextlib.suppress(Exception):
            await self.client.aclose()


# -- comparing ------------------------------------------------------------------------------


class AnyStr:
    """Matches any ``str``: how an SSE stream renders ``bytes`` is the library's choice."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    def __repr__(self) -> str:
        return "<any str (was bytes)>"

    __hash__ = None  # type: ignore[assignment]


def sse_expected(value: Any) -> Any:
    """What the SSE ``data:`` JSON must equal: ``bytes`` become :class:`AnyStr`."""
    if isinstance(value, (bytes, bytearray)):
        return AnyStr()
    if isinstance(value, dict):
        return {k: sse_expected(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sse_expected(v) for v in value]
    return value


def strict_json(text: str) -> Any:
    """``json.loads`` refusing ``NaN`` / ``Infinity`` (not JSON: a browser's JSON.parse fails)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@contextlib.contextmanager
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A private loop for a sync (hypothesis) test: clients live across examples."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def examples(default: int) -> int:
    """``max_examples``: ``default``, or ``FUZZ_EXAMPLES`` for a longer local run."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


def hypothesis_profile() -> dict[str, Any]:
    """Settings shared by the property tests: bounded, no database in the work tree,
    deterministic unless ``FUZZ_RANDOM=1`` (then a failure prints its reproduction blob)."""
    from hypothesis import HealthCheck

    return {
        "deadline": None,
        "database": None,
        "derandomize": os.environ.get("FUZZ_RANDOM") != "1",
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                  HealthCheck.function_scoped_fixture],
    }
