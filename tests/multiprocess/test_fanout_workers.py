"""The fan-out budget across two real daphne workers on Redis, 100 WebSocket clients.

Spans come from each worker's real OTLP exporter. Per broadcast: at most
workers x budget ``process`` spans plus one ``deliver`` summary per worker
(each worker appears in the trace), every failing delivery an ERROR span
whatever the budget, and no carrier ever reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from tests.support.otlp import Span, wait_spans
from tests.support.servers import two_workers
from tests.support.workers import alternating, broadcast

pytestmark = [pytest.mark.multiprocess, pytest.mark.redis, pytest.mark.timeout(120)]

TEMPLATE = "room_{id}"
CLIENTS = 100


def in_trace(spans: list[Span], trace_id: str, prefix: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id and s.name.startswith(prefix)]


async def test_spans_per_broadcast_stay_within_workers_times_budget(redis_url: str) -> None:
    room = str(random.randrange(10**9, 10**10))
    env = {"OTEL_CHANNELS_JSON": json.dumps({"MAX_PROCESS_SPANS_PER_BROADCAST": 10})}
    with two_workers(redis_url, "redis", "otelbudget", env) as (receiver, a, b):
        async with alternating(a, b, f"/ws/chat/{room}/", CLIENTS) as clients:
            for n in range(3):
                await broadcast(a if n % 2 == 0 else b, room, f"m{n}")
                for ws in clients:
                    raw = await asyncio.wait_for(ws.recv(), 10)
                    assert json.loads(raw) == {"type": "chat.message", "text": f"m{n}",
                                               "via": "http"}
                    assert "_otel" not in raw and "traceparent" not in raw
            spans = await wait_spans(
                receiver, lambda s: sum(x.name == f"deliver {TEMPLATE}" for x in s) >= 6)
    producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
    assert len(producers) == 3
    for producer in producers:
        processes = in_trace(spans, producer.trace_id, "process ")
        summaries = in_trace(spans, producer.trace_id, "deliver ")
        assert len(processes) == 2 * 10  # O(workers), not O(members)
        assert sorted(s.service for s in summaries) == ["worker-a", "worker-b"]
        for summary in summaries:
            assert summary.parent_span_id == producer.span_id
            assert summary.attributes["messaging.batch.message_count"] == CLIENTS // 2
            assert summary.attributes["channels.deliveries.recorded"] == 10
            assert summary.attributes["channels.deliveries.unrecorded"] == CLIENTS // 2 - 10
            assert summary.attributes["process.pid"] == summary.pid
        for span in processes:
            assert span.parent_span_id == producer.span_id


@pytest.mark.parametrize("budget", [10, None])
async def test_every_failing_delivery_is_an_error_span(redis_url: str, budget: int | None) -> None:
    room = str(random.randrange(10**9, 10**10))
    env = {"OTEL_CHANNELS_JSON": json.dumps({"MAX_PROCESS_SPANS_PER_BROADCAST": budget})}
    with two_workers(redis_url, "redis", "otelflaky", env, tracebacks=True) as (receiver, a, b):
        async with alternating(a, b, f"/ws/flaky/{room}/", CLIENTS) as clients:
            await broadcast(a, room, "once")
            replies = await asyncio.gather(*(asyncio.wait_for(ws.recv(), 10) for ws in clients),
                                           return_exceptions=True)
            closed = [r for r in replies if isinstance(r, Exception)]
            # Each worker's FlakyConsumer raises on its 7th, 14th ... delivery (50 each).
            assert len(closed) == 2 * (CLIENTS // 2 // 7)
            for reply in replies:
                if isinstance(reply, str):
                    assert "_otel" not in reply and "traceparent" not in reply
            spans = await wait_spans(receiver, lambda s: sum(
                x.name == f"process {TEMPLATE}" and x.status_code == 2 for x in s) >= len(closed))
            if budget is not None:
                spans = await wait_spans(
                    receiver, lambda s: sum(x.name == f"deliver {TEMPLATE}" for x in s) >= 2)
    (producer,) = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
    processes = in_trace(spans, producer.trace_id, "process ")
    errors = [s for s in processes if s.status_code == 2]  # STATUS_CODE_ERROR
    assert len(errors) == len(closed)
    assert {s.service for s in errors} == {"worker-a", "worker-b"}
    for span in errors:
        assert span.attributes["error.type"] == "RuntimeError"
        assert span.events == ["exception"]
    if budget is None:
        assert len(processes) == CLIENTS  # one per delivery
        assert in_trace(spans, producer.trace_id, "deliver ") == []
    else:
        # Per worker: 10 in the budget (one of them, the 7th, failed) + the 6 failures past it.
        assert len(processes) == 2 * (10 + 6)
        summaries = in_trace(spans, producer.trace_id, "deliver ")
        assert sorted(s.service for s in summaries) == ["worker-a", "worker-b"]
        for summary in summaries:
            assert summary.attributes["channels.deliveries.failed"] == 7
            assert summary.attributes["messaging.batch.message_count"] == CLIENTS // 2
