"""Issue 20: an open event stream holds no OS thread (see ``otel_channels/sse/_threads.py``).

Django serves each request in its own asgiref ``ThreadSensitiveContext``; its first
thread-sensitive ``sync_to_async`` (``request_started``'s sync receivers) starts an
executor thread that used to live as long as the response: one per open stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async

from otel_channels.sse._threads import release_request_thread
from tests.support.redis_layer import delete_keys
from tests.support.servers import DaphneWorker

STREAMS = 40


def os_threads(pid: int) -> int:
    match = re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1))


async def settled_threads(pid: int, at_most: int, seconds: float = 10.0) -> int:
    """The worker's thread count once it is at most ``at_most`` (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    count = os_threads(pid)
    while count > at_most and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        count = os_threads(pid)
    return count


async def open_stream(port: int, room: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events/{room}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    assert head.startswith(b"HTTP/1.1 200"), head
    await asyncio.wait_for(reader.readuntil(b": open"), 20)
    return reader, writer


async def post_broadcast(port: int, room: str, text: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"text": text}).encode()
    writer.write(f"POST /broadcast/{room}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    assert (await asyncio.wait_for(reader.read(), 20)).startswith(b"HTTP/1.1 202")
    writer.close()


async def test_open_streams_hold_no_thread_on_a_real_daphne(redis_url: str) -> None:
    env = {"CHANNEL_BACKEND": "redis", "CHANNEL_PREFIX": f"otelthr{uuid.uuid4().hex[:10]}",
           "REDIS_URL": redis_url}
    room = f"thr{uuid.uuid4().hex[:8]}"
    with DaphneWorker(env, name="sse-threads") as worker:
        assert worker.process is not None
        pid = worker.process.pid
        warm = await open_stream(worker.port, room)  # imports, the hub's subscription
        warm[1].close()
        before = await settled_threads(pid, at_most=1, seconds=5)

        streams = [await open_stream(worker.port, room) for _ in range(STREAMS)]
        # Every stream is live: a broadcast (from a sync view) reaches each one.
        await post_broadcast(worker.port, room, "to-all")
        for reader, _ in streams:
            await asyncio.wait_for(reader.readuntil(b'"to-all"'), 20)
        # The broadcast view's own request thread may still be on its way out.
        during = await settled_threads(pid, at_most=before)
        assert during <= before + 1, (before, during)  # was before + STREAMS

        for _, writer in streams:
            writer.close()
        after = await settled_threads(pid, at_most=before)
        assert after <= before, (before, after)  # the ends' threads were joined too
        assert "Traceback" not in worker.output(), worker.output()[-3000:]
    delete_keys(redis_url, env["CHANNEL_PREFIX"])


async def test_release_request_thread_ends_the_contexts_executor_thread() -> None:
    async with ThreadSensitiveContext():
        first = await sync_to_async(threading.current_thread)()
        assert first.is_alive()
        assert release_request_thread() is True
        first.join(5)
        assert not first.is_alive()
        # Later sync code of the request (Django's response.close()) gets a new thread.
        second = await sync_to_async(threading.current_thread)()
        assert second is not first and second.is_alive()
        assert release_request_thread() is True
        second.join(5)
    assert release_request_thread() is False  # outside a request's context: nothing to do


async def test_a_context_with_its_own_executor_is_left_alone() -> None:
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=1)
    try:
        async with ThreadSensitiveContext(executor=executor):
            thread = await sync_to_async(threading.current_thread)()
            assert release_request_thread() is False
            assert await sync_to_async(threading.current_thread)() is thread
            context = SyncToAsync.thread_sensitive_context.get()
            assert SyncToAsync.context_to_thread_executor[context] is executor
    finally:
        executor.shutdown()


async def test_the_requests_database_connections_are_closed_on_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections are per thread: they are closed on the thread that opened them."""
    from otel_channels.sse import _threads

    closed_on: list[threading.Thread] = []

    class Connections:
        def close_all(self) -> None:
            closed_on.append(threading.current_thread())

    monkeypatch.setattr(_threads, "connections", Connections())
    async with ThreadSensitiveContext():
        thread = await sync_to_async(threading.current_thread)()
        assert release_request_thread() is True
        thread.join(5)
    assert closed_on == [thread]
