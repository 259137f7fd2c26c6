"""Two daphne workers of tests/project on one channel layer, their clients, and the
checks of a broadcast's fan-out across them (tests/multiprocess/test_multiworker.py,
tests/multiprocess/test_zero_code.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support.otlp import MetricPoint, OTLPReceiver, Span, one_span
from tests.support.servers import DaphneWorker, two_workers
from tests.support.websocket import WebSocketClient

CHAT_ROUTE = "/ws/chat/<room>/"
TEMPLATE = "room_{id}"


def group_send_attributes(group: str) -> dict[str, Any]:
    """All the attributes of the ``group_send`` span of a ``chat.message`` to ``group``."""
    return {
        "messaging.system": "channels",
        "messaging.operation.name": "group_send",
        "messaging.operation.type": "send",
        "messaging.destination.name": group,
        "messaging.destination.template": TEMPLATE,
        "channels.message.type": "chat.message",
    }


@contextmanager
def cluster(
    redis_url: str, backend: str, extra_env: dict[str, str] | None = None,
    command_prefix: list[str] | None = None,
) -> Iterator[tuple[OTLPReceiver, DaphneWorker, DaphneWorker]]:
    """An OTLP receiver and two daphne workers on one channel layer (unique prefix).

    ``command_prefix`` runs daphne under another command (``opentelemetry-instrument``).
    """
    with two_workers(redis_url, backend, "otelmw", extra_env, command_prefix,
                     join_timeout=40) as found:
        yield found


@asynccontextmanager
async def clients(a: DaphneWorker, b: DaphneWorker, room: str
                  ) -> AsyncIterator[dict[str, WebSocketClient]]:
    """Traced and plain consumers in ``room`` on both workers, closed normally on exit."""
    urls = {
        "chat_a": f"{a.ws_url}/ws/chat/{room}/", "plain_a": f"{a.ws_url}/ws/plain/{room}/",
        "chat_b": f"{b.ws_url}/ws/chat/{room}/", "plain_b": f"{b.ws_url}/ws/plain/{room}/",
    }
    async with AsyncExitStack() as stack:
        found = {}
        for name, url in urls.items():
            found[name] = WebSocketClient(name, await stack.enter_async_context(connect(url)))
        yield found


@asynccontextmanager
async def alternating(a: DaphneWorker, b: DaphneWorker, path: str, count: int
                      ) -> AsyncIterator[list[ClientConnection]]:
    """``count`` WebSocket clients of ``path``, alternating between the workers."""
    async with AsyncExitStack() as stack:
        found = []
        for i in range(count):
            worker = a if i % 2 == 0 else b
            found.append(await stack.enter_async_context(
                connect(f"{worker.ws_url}{path}", open_timeout=20)))
        yield found


async def broadcast(worker: DaphneWorker, room: str, text: str) -> None:
    """A broadcast from the test project's HTTP view (a sync view: outside any trace)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{worker.url}/broadcast/{room}/", json={"text": text})
    assert response.status_code == 202, response.text


def latest(
    receiver: OTLPReceiver, name: str, service: str, **attributes: Any
) -> MetricPoint | None:
    """The most recent exported point (cumulative) of one metric stream of one worker."""
    with receiver.lock:
        points = [
            p for p in receiver.metrics
            if p.name == name and p.service == service
            and all(p.attributes.get(k) == v for k, v in attributes.items())
        ]
    return points[-1] if points else None


async def wait_metrics(receiver: OTLPReceiver, predicate: Callable[[], bool],
                       timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            with receiver.lock:
                have = sorted({(p.service, p.name, p.value, p.count) for p in receiver.metrics},
                              key=str)[-40:]
            raise AssertionError(f"timed out waiting for metrics; latest points {have}")
        await asyncio.sleep(0.1)


def in_trace(spans: list[Span], trace_id: str, name: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id and s.name == name]


# -- the checks shared by the chat-frame and the HTTP broadcast cases ------------


def assert_fanout(spans: list[Span], producer: Span, group: str, a: DaphneWorker,
                  b: DaphneWorker) -> None:
    """Four ``process`` spans, two per worker, children of and linked to ``producer``."""
    assert producer.kind == "PRODUCER"
    assert producer.attributes == group_send_attributes(group)
    processes = in_trace(spans, producer.trace_id, f"process {TEMPLATE}")
    assert sorted(s.service for s in processes) == ["worker-a", "worker-a", "worker-b", "worker-b"]
    pids = {worker.name: worker.process.pid for worker in (a, b) if worker.process}
    for span in processes:
        assert span.kind == "CONSUMER"
        assert span.parent_span_id == producer.span_id
        assert (producer.trace_id, producer.span_id) not in span.links  # the parent already
        assert span.pid == pids[span.service]  # really two processes
        assert span.attributes["messaging.system"] == "channels"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.operation.name"] == "process"
        assert span.attributes["messaging.destination.name"] == group
        assert span.attributes["messaging.destination.template"] == TEMPLATE
        assert span.attributes["channels.message.type"] == "chat.message"
        assert span.attributes["channels.message.delivery.delay"] >= 0.0
    for service in ("worker-a", "worker-b"):
        connect_span = one_span(spans, f"connect {CHAT_ROUTE}", service)
        mine = [s for s in processes if s.service == service]
        traced = [s for s in mine if (connect_span.trace_id, connect_span.span_id) in s.links]
        plain = [s for s in mine if s not in traced]
        # The traced ChatConsumer links its own connect span; the plain consumer has
        # no connect span, so no link.
        assert len(traced) == 1 and len(plain) == 1, (service, [s.links for s in mine])
        assert traced[0].links == [(connect_span.trace_id, connect_span.span_id)]
        assert plain[0].links == []
        # Outbound frames are counted, not traced on their own (SEND_EVENTS is off).
        assert traced[0].events == []
        assert plain[0].events == []


