"""The global propagator: workers started with ``OTEL_PROPAGATORS=b3`` (or ``b3multi``).

* a client sending B3 headers on the WebSocket handshake (``b3: {trace}-{span}-1``
  or ``X-B3-TraceId`` / ``X-B3-SpanId`` / ``X-B3-Sampled``) is the parent of the
  ``connect`` span: same trace id, parent span id = the client's span id;
* a broadcast across two b3 workers still makes every ``process`` span the
  producer's child, and the carrier in the channel-layer message (read raw from
  the Redis pub/sub channel of the group) holds the b3 key, not only W3C's.
"""

from __future__ import annotations

import asyncio
import os

import msgpack
import pytest
import redis.asyncio as aioredis

from tests.support.anyserver import TEMPLATE, names, new_room, settle
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import DaphneWorker, running, two_workers
from tests.support.websocket import open_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(60)]

ECHO_ROUTE = "/ws/echo/<room>/"
CARRIER_KEY = "_otel"


def b3_headers(form: str, trace_id: str, span_id: str) -> dict[str, str]:
    if form == "single":
        return {"b3": f"{trace_id}-{span_id}-1"}
    return {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": "1"}


@pytest.mark.parametrize("propagator", ["b3", "b3multi"])
async def test_b3_handshake_headers_parent_the_connect_span(propagator: str) -> None:
    clients = {new_room(): (form, os.urandom(16).hex(), os.urandom(8).hex())
               for form in ("single", "multi")}
    env = {"OTEL_PROPAGATORS": propagator}
    with OTLPReceiver() as receiver, running(
            DaphneWorker({**receiver.env(), **env}, name=f"{propagator}-worker"),
            join_timeout=40) as (worker,):
        for room, (form, trace_id, span_id) in clients.items():
            async with open_clients({form: f"{worker.ws_url}/ws/echo/{room}/"},
                                    headers=b3_headers(form, trace_id, span_id),
                                    settle_time=0) as ws:
                await ws[form].send_json({"n": 1})
                await ws[form].receive_json()

        def connects(spans: list[Span]) -> list[Span]:
            return [s for s in spans if s.name == f"connect {ECHO_ROUTE}"]

        spans = await settle(receiver, lambda s: len(connects(s)) >= 2, timeout=10)
    found = {s.attributes.get("url.path"): s for s in connects(spans)}
    for room, (form, trace_id, span_id) in clients.items():
        span = found.get(f"/ws/echo/{room}/")
        assert span is not None, names(spans)
        assert (span.trace_id, span.parent_span_id) == (trace_id, span_id), (
            f"{propagator} worker, {form} B3 headers: connect span in trace {span.trace_id} "
            f"(parent {span.parent_span_id!r}), client sent {trace_id}/{span_id}")


@pytest.mark.redis
async def test_b3_broadcast_across_workers_keeps_the_producer_parent(redis_url: str) -> None:
    room = new_room()
    group = f"room_{room}"
    env = {"OTEL_PROPAGATORS": "b3"}
    with two_workers(redis_url, "pubsub", "otelb3", env, join_timeout=40) as (receiver, a, b):
        raw = aioredis.Redis.from_url(redis_url)
        pubsub = raw.pubsub()
        # channels_redis's pub/sub layer publishes a group's messages on this channel.
        await pubsub.subscribe(f"{a.env['CHANNEL_PREFIX']}__group__{group}")
        try:
            urls = {"chat_a": f"{a.ws_url}/ws/chat/{room}/",
                    "chat_b": f"{b.ws_url}/ws/chat/{room}/",
                    "plain_b": f"{b.ws_url}/ws/plain/{room}/"}
            async with open_clients(urls) as ws:
                await ws["chat_a"].send_json({"text": "b3"})
                for client in ws.values():
                    assert (await client.receive_json())["text"] == "b3", client.name
                published = None
                for _ in range(100):
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=0.1)
                    if message is not None:
                        published = msgpack.unpackb(message["data"], raw=False)
                        break
                    await asyncio.sleep(0)

                def done(spans: list[Span]) -> bool:
                    return any(s.name == f"group_send {TEMPLATE}" for s in spans) and sum(
                        s.name == f"process {TEMPLATE}" for s in spans) >= 3

                spans = await settle(receiver, done, timeout=10)
            leaks = {name: client.leaked() for name, client in ws.items() if client.leaked()}
        finally:
            await pubsub.aclose()
            await raw.aclose()

    producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
    assert len(producers) == 1, names(spans)
    producer = producers[0]
    processes = [s for s in spans if s.name == f"process {TEMPLATE}"]
    assert sorted(s.service for s in processes) == ["worker-a", "worker-b", "worker-b"]
    for span in processes:
        assert (span.trace_id, span.parent_span_id) == (producer.trace_id, producer.span_id), (
            span.service, span.trace_id, span.parent_span_id)
    assert not leaks, leaks

    assert published is not None, "nothing published on the group's pub/sub channel"
    carrier = published.get(CARRIER_KEY)
    assert isinstance(carrier, dict), published
    assert "b3" in carrier, f"carrier without the b3 key under OTEL_PROPAGATORS=b3: {carrier}"
    trace_id, span_id = carrier["b3"].split("-")[:2]
    assert (trace_id, span_id) == (producer.trace_id, producer.span_id), carrier
