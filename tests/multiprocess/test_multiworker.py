"""Cross-worker fan-out, proven with two real daphne processes sharing Redis.

Each test starts two ``daphne tests.project.asgi:application`` workers (A and
B) on one channel layer (``RedisChannelLayer`` or ``RedisPubSubChannelLayer``,
unique prefix per test), whose real OTLP/HTTP exporters send protobuf to an
:class:`~tests.support.otlp.OTLPReceiver` inside the test. WebSocket clients (the
``websockets`` library) sit on both workers: a traced ``ChatConsumer`` and a
plain Channels consumer per worker, all in one room.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.support.anyserver import new_room
from tests.support.otlp import Span, one_span, wait_spans
from tests.support.workers import (
    CHAT_ROUTE,
    TEMPLATE,
    assert_fanout,
    clients,
    cluster,
    latest,
    wait_metrics,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.redis, pytest.mark.timeout(60)]

BACKENDS = ("redis", "pubsub")
CARRIER_KEY = "_otel"


# -- tests -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_fanout_across_two_workers(backend: str, redis_url: str) -> None:
    room = new_room()
    group = f"room_{room}"
    started = time.monotonic()
    with cluster(redis_url, backend) as (receiver, a, b):
        async with clients(a, b, room) as ws:
            # Each worker exports its traced client as one active connection.
            await wait_metrics(receiver, lambda: all(
                (point := latest(receiver, "channels.server.active_connections", service))
                is not None and point.value == 1 for service in ("worker-a", "worker-b")))
            # (a) a chat frame from the traced client on worker A
            await ws["chat_a"].send_json({"text": "from-a"})
            for client in ws.values():
                assert await client.receive_json() == {
                    "type": "chat.message", "text": "from-a", "worker": a.port,
                }, client.name

            def chat_done(spans: list[Span]) -> bool:
                return sum(s.name == f"process {TEMPLATE}" for s in spans) >= 4 and any(
                    s.name == f"receive {CHAT_ROUTE}" for s in spans)

            spans = await wait_spans(receiver, chat_done)
            receive = one_span(spans, f"receive {CHAT_ROUTE}", "worker-a")
            assert receive.kind == "CONSUMER"
            producer = one_span(spans, f"group_send {TEMPLATE}", "worker-a")
            assert producer.trace_id == receive.trace_id
            assert producer.parent_span_id == receive.span_id
            assert_fanout(spans, producer, group, a, b)

            # (b) a broadcast from the sync HTTP view on worker B
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(f"{b.url}/broadcast/{room}/",
                                           json={"text": "from-http"})
            assert response.status_code == 202, response.text
            for client in ws.values():
                assert await client.receive_json() == {
                    "type": "chat.message", "text": "from-http", "via": "http",
                }, client.name

            spans = await wait_spans(
                receiver, lambda s: sum(x.name == f"process {TEMPLATE}" for x in s) >= 8)
            http_producer = one_span(spans, f"group_send {TEMPLATE}", "worker-b")
            assert http_producer.parent_span_id == ""  # no server span: a new trace
            assert http_producer.trace_id != producer.trace_id
            assert_fanout(spans, http_producer, group, a, b)
            assert len([s for s in spans if s.name == f"process {TEMPLATE}"]) == 8

        # (c) the carrier never reached a client
        for client in ws.values():
            assert len(client.frames) == 2
            for raw in client.frames:
                assert CARRIER_KEY not in raw and "traceparent" not in raw, raw

        # (d) metrics, from each worker's real OTLP metric exporter
        def metrics_settled() -> bool:
            for service in ("worker-a", "worker-b"):
                active = latest(receiver, "channels.server.active_connections", service,
                                **{"http.route": CHAT_ROUTE})
                consumed = latest(receiver, "messaging.client.consumed.messages", service)
                if active is None or active.value != 0 or consumed is None or consumed.value != 4:
                    return False
            return True

        await wait_metrics(receiver, metrics_settled)
        for service in ("worker-a", "worker-b"):  # one group_send each: (a) on A, (b) on B
            send_attrs = {
                "messaging.system": "channels", "messaging.operation.name": "group_send",
                "messaging.operation.type": "send", "messaging.destination.template": TEMPLATE,
            }
            sent = latest(receiver, "messaging.client.sent.messages", service)
            assert sent is not None and sent.value == 1 and sent.attributes == send_attrs
            duration = latest(receiver, "messaging.client.operation.duration", service)
            assert duration is not None and duration.count == 1
            process_attrs = {
                "messaging.system": "channels", "messaging.operation.type": "process",
                "messaging.destination.template": TEMPLATE,
            }
            consumed = latest(receiver, "messaging.client.consumed.messages", service)
            assert consumed is not None and consumed.value == 4
            assert consumed.attributes == process_attrs
            # Duration histograms: one point per message per worker (its first delivery
            # there), not one per member: two broadcasts, two points on each worker.
            for histogram in ("messaging.process.duration", "channels.message.delivery.duration"):
                point = latest(receiver, histogram, service)
                assert point is not None and point.count == 2, (service, histogram, point)
                assert point.attributes == process_attrs
            # The traced client on this worker was counted up, then down to 0 on close.
            with receiver.lock:
                active_values = [
                    p.value for p in receiver.metrics
                    if p.name == "channels.server.active_connections" and p.service == service
                ]
            assert 1 in active_values and active_values[-1] == 0, active_values

        # Low cardinality everywhere: the raw group name or room id never labels a metric.
        with receiver.lock:
            points = list(receiver.metrics)
        assert points
        for point in points:
            assert "messaging.destination.name" not in point.attributes, point
            assert all(room not in str(value) for value in point.attributes.values()), point
    assert time.monotonic() - started < 45


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sampling_keeps_or_drops_each_broadcast_on_every_worker(
    backend: str, redis_url: str
) -> None:
    frames = 40
    room = new_room()
    extra = {"OTEL_CHANNELS_JSON": json.dumps({"MESSAGE_SAMPLE_RATE": 0.5})}
    with cluster(redis_url, backend, extra) as (receiver, a, b):
        async with clients(a, b, room) as ws:
            for i in range(frames):
                await ws["chat_a"].send_json({"text": f"m{i}"})
            for client in ws.values():
                texts = [(await client.receive_json())["text"] for _ in range(frames)]
                # Sampling never changes delivery: everyone got every message, in order.
                assert texts == [f"m{i}" for i in range(frames)], client.name

            def consistent(spans: list[Span]) -> bool:
                producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
                processes = [s for s in spans if s.name == f"process {TEMPLATE}"]
                return len(processes) == 4 * len(producers) > 0

            await wait_spans(receiver, consistent)
            await asyncio.sleep(1.0)  # ten export intervals: anything late has arrived
            with receiver.lock:
                spans = list(receiver.spans)

        receives = [s for s in spans if s.name == f"receive {CHAT_ROUTE}"]
        producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
        processes = [s for s in spans if s.name == f"process {TEMPLATE}"]
        # Roughly half the frames traced (P(outside 5..35) ~ 1e-7 for a fair coin).
        assert 5 <= len(producers) <= 35, len(producers)
        assert len(receives) == len(producers)
        by_id = {p.span_id: p for p in producers}
        for producer in producers:
            mine = [s for s in processes if s.parent_span_id == producer.span_id]
            assert sorted(s.service for s in mine) == [
                "worker-a", "worker-a", "worker-b", "worker-b"], producer
            assert all(s.trace_id == producer.trace_id for s in mine)
        # No orphan: every process span belongs to a traced broadcast.
        assert all(s.parent_span_id in by_id for s in processes)
        assert len(processes) == 4 * len(producers)

        # Metrics do not depend on sampling: 40 broadcasts x 2 consumers per worker.
        def counted() -> bool:
            return all(
                (point := latest(receiver, "messaging.client.consumed.messages", service))
                is not None and point.value == 2 * frames
                for service in ("worker-a", "worker-b")
            )

        await wait_metrics(receiver, counted)
