"""A group at rate 0.5 across two real daphne workers on Redis: the producer's decision rules.

``SAMPLE_RATES = {"groups": {"room_{id}": 0.5}}`` on both workers, a ``process``
span per delivery. Broadcasts come from an HTTP view (outside any trace: the
producer draws) and from WebSocket frames (inside the frame's sampled
``receive`` span: decided from its trace id). Every broadcast reaches every
client; a traced one has its ``group_send`` span and exactly one ``process``
span per client, on both workers; an untraced one has none anywhere: no
``process`` span without its producer, none missing. Counters count them all.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from websockets.asyncio.client import connect

from otel_channels.telemetry.sampling import keep_trace
from tests.support.otlp import OTLPReceiver, Span, wait_spans
from tests.support.servers import two_workers
from tests.support.workers import alternating, broadcast

pytestmark = [pytest.mark.multiprocess, pytest.mark.redis, pytest.mark.timeout(120)]

TEMPLATE = "room_{id}"
CLIENTS = 20
FROM_HTTP = FROM_FRAMES = 10


def consumed(receiver: OTLPReceiver, service: str) -> float:
    """The latest cumulative ``messaging.client.consumed.messages`` of one worker."""
    with receiver.lock:
        points = [p.value for p in receiver.metrics
                  if p.name == "messaging.client.consumed.messages" and p.service == service
                  and p.attributes.get("messaging.destination.template") == TEMPLATE]
    return (points[-1] or 0) if points else 0


def settled(spans: list[Span]) -> bool:
    producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
    receives = [s for s in spans if s.name == "receive /ws/chat/<room>/"]
    processes = [s for s in spans if s.name == f"process {TEMPLATE}"]
    return len(receives) == FROM_FRAMES and len(processes) == len(producers) * CLIENTS


async def test_group_at_half_every_worker_follows_the_producer(redis_url: str) -> None:
    room = str(random.randrange(10**9, 10**10))
    env = {"OTEL_CHANNELS_JSON": json.dumps({
        "MAX_PROCESS_SPANS_PER_BROADCAST": None,
        "SAMPLE_RATES": {"groups": {TEMPLATE: 0.5}},
    })}
    with two_workers(redis_url, "redis", "otelrates", env) as (receiver, a, b):
        async with alternating(a, b, f"/ws/chat/{room}/", CLIENTS) as clients:
            for n in range(FROM_HTTP + FROM_FRAMES):
                text = f"m{n}"
                if n < FROM_HTTP:
                    await broadcast(a if n % 2 == 0 else b, room, text)
                else:
                    await clients[n % CLIENTS].send(json.dumps({"text": text}))
                for ws in clients:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert message["text"] == text
            spans = await wait_spans(receiver, settled, timeout=20)
            await asyncio.sleep(1.0)  # anything late (an orphan process span) arrives too
            spans = await wait_spans(receiver, settled, timeout=5)
            deadline = time.monotonic() + 15
            total = (FROM_HTTP + FROM_FRAMES) * CLIENTS // 2
            while (consumed(receiver, "worker-a"), consumed(receiver, "worker-b")) != (
                    total, total):
                assert time.monotonic() < deadline, (
                    consumed(receiver, "worker-a"), consumed(receiver, "worker-b"), total)
                await asyncio.sleep(0.1)

    producers = {s.span_id: s for s in spans if s.name == f"group_send {TEMPLATE}"}
    processes = [s for s in spans if s.name == f"process {TEMPLATE}"]
    # The rate applies: some broadcasts traced, some not (all or none: p = 2**-19).
    assert 0 < len(producers) < FROM_HTTP + FROM_FRAMES
    for span in processes:  # no process span without its producer
        producer = producers.get(span.parent_span_id)
        assert producer is not None, span
        assert span.trace_id == producer.trace_id
    for producer in producers.values():  # none missing, on either worker
        children = [s for s in processes if s.parent_span_id == producer.span_id]
        assert sorted(s.service for s in children) == (
            ["worker-a"] * (CLIENTS // 2) + ["worker-b"] * (CLIENTS // 2))
    assert [s for s in spans if s.name.startswith("deliver ")] == []
    # A broadcast from a frame is decided from the frame's trace id, like TraceIdRatioBased.
    receives = [s for s in spans if s.name == "receive /ws/chat/<room>/"]
    assert len(receives) == FROM_FRAMES
    for receive in receives:
        children = [p for p in producers.values() if p.parent_span_id == receive.span_id]
        assert len(children) == keep_trace(int(receive.trace_id, 16), 0.5), receive.trace_id


async def test_group_at_zero_no_trace_anywhere(redis_url: str) -> None:
    room = str(random.randrange(10**9, 10**10))
    env = {"OTEL_CHANNELS_JSON": json.dumps({"SAMPLE_RATES": {"groups": {TEMPLATE: 0.0}}})}
    with two_workers(redis_url, "redis", "otelrates0", env) as (receiver, a, b):
        async with connect(f"{a.ws_url}/ws/chat/{room}/", open_timeout=20) as first, \
                connect(f"{b.ws_url}/ws/chat/{room}/", open_timeout=20) as second:
            await broadcast(a, room, "http")
            await first.send(json.dumps({"text": "frame"}))
            for ws in (first, second):
                for text in ("http", "frame"):
                    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["text"] == text
            spans = await wait_spans(
                receiver, lambda s: any(x.name == "receive /ws/chat/<room>/" for x in s))
            deadline = time.monotonic() + 15
            while (consumed(receiver, "worker-a"), consumed(receiver, "worker-b")) != (2, 2):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            with receiver.lock:
                spans = list(receiver.spans)
    names = [s.name for s in spans]
    assert f"group_send {TEMPLATE}" not in names
    assert f"process {TEMPLATE}" not in names
    assert f"deliver {TEMPLATE}" not in names
    assert names.count("connect /ws/chat/<room>/") == 2  # the route itself is traced
