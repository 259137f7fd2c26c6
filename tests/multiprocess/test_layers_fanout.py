"""Works wherever Channels works: the same broadcast trace on every channel layer.

Two real daphne workers (A, B) per layer: channels-redis (core and pub/sub),
channels-postgres, channels-rabbitmq, channels-nats, channels-valkey (pub/sub on
Redis, core on a valkey-server started for the session). Each test skips when
its broker does not answer, unless ``REQUIRE_<BROKER>=1`` (see tests/conftest.py).

* a chat frame from a traced client on A is broadcast with ``group_send``: every
  client on both workers gets it, without a carrier key; there is one
  ``group_send room_{id}`` PRODUCER span, and every ``process room_{id}`` span, on
  both workers, is its child;
* three identical ``POST /broadcast/<room>/`` on A within a second reach an SSE
  stream on B as three events with three distinct ids.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.support.anyserver import (
    TEMPLATE,
    names,
    new_room,
    settle,
    warm_up,
)
from tests.support.otlp import OTLPReceiver, Span
from tests.support.redis_layer import delete_keys
from tests.support.servers import DaphneWorker, two_workers
from tests.support.services import REDIS_URL
from tests.support.sse import HttpEventStream
from tests.support.websocket import open_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(90)]

CHAT_ROUTE = "/ws/chat/<room>/"
#: CHANNEL_BACKEND value (tests/project/settings.py) -> the fixture giving its broker URL
#: and the variable the worker settings read it from.
LAYERS = {
    "redis": ("redis_url", "REDIS_URL"),
    "pubsub": ("redis_url", "REDIS_URL"),
    "postgres": ("postgres_url", "POSTGRES_URL"),
    "rabbitmq": ("rabbitmq_url", "RABBITMQ_URL"),
    "nats": ("nats_url", "NATS_URL"),
    "valkey-pubsub": ("redis_url", "REDIS_URL"),
    "valkey": ("valkey_url", "VALKEY_URL"),
}


@pytest.fixture(params=list(LAYERS))
def layer(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """``(CHANNEL_BACKEND, worker env)`` per layer; skips when its broker is absent."""
    fixture, variable = LAYERS[request.param]
    return request.param, {variable: request.getfixturevalue(fixture)}


def _cluster(
    layer: tuple[str, dict[str, str]],
) -> AbstractContextManager[tuple[OTLPReceiver, DaphneWorker, DaphneWorker]]:
    """Two workers (A, B) on ``layer`` under a unique ``CHANNEL_PREFIX``."""
    backend, env = layer
    return two_workers(env.get("REDIS_URL", REDIS_URL), backend, "otellayer", env,
                       join_timeout=40)


def _cleanup(layer: tuple[str, dict[str, str]], prefix: str) -> None:
    if layer[0] in ("redis", "pubsub", "valkey-pubsub"):
        delete_keys(layer[1]["REDIS_URL"], prefix)


async def test_chat_broadcast_is_one_trace_on_both_workers(
    layer: tuple[str, dict[str, str]],
) -> None:
    backend = layer[0]
    room = new_room()
    group = f"room_{room}"
    text = f"hello over {backend}"
    with _cluster(layer) as (receiver, a, b):
        prefix = a.env["CHANNEL_PREFIX"]
        try:
            if backend == "postgres":
                await warm_up(a, b)
            urls = {
                "chat_a": f"{a.ws_url}/ws/chat/{room}/", "plain_a": f"{a.ws_url}/ws/plain/{room}/",
                "chat_b": f"{b.ws_url}/ws/chat/{room}/", "plain_b": f"{b.ws_url}/ws/plain/{room}/",
            }
            async with open_clients(urls) as ws:
                await ws["chat_a"].send_json({"text": text})
                for client in ws.values():  # delivery itself must work on every layer
                    assert await client.receive_json() == {
                        "type": "chat.message", "text": text, "worker": a.port,
                    }, client.name

                def done(spans: list[Span]) -> bool:
                    producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
                    return bool(producers) and any(s.name == f"receive {CHAT_ROUTE}"
                                                   for s in spans) and sum(
                        s.name == f"process {TEMPLATE}" and s.trace_id == producers[0].trace_id
                        for s in spans) >= 4

                spans = await settle(receiver, done, timeout=10)
        finally:
            _cleanup(layer, prefix)
        frames = {name: client.frames for name, client in ws.items()}
        leaks = {name: client.leaked() for name, client in ws.items() if client.leaked()}

    # (a) one PRODUCER span for the broadcast, in the trace of the frame that caused it
    producers = [s for s in spans if s.name == f"group_send {TEMPLATE}"]
    assert len(producers) == 1, (
        f"{backend}: expected one 'group_send {TEMPLATE}' PRODUCER span on worker-a "
        f"(is the layer instrumented?), got {len(producers)}; spans: {names(spans)}")
    producer = producers[0]
    assert producer.kind == "PRODUCER" and producer.service == "worker-a"
    assert producer.attributes["messaging.destination.name"] == group
    receive = [s for s in spans if s.name == f"receive {CHAT_ROUTE}" and s.service == "worker-a"]
    assert len(receive) == 1, names(spans)
    assert producer.trace_id == receive[0].trace_id
    assert producer.parent_span_id == receive[0].span_id

    # (b) every process span, on both workers, is the producer's child
    processes = [s for s in spans if s.name == f"process {TEMPLATE}"]
    orphans = [(s.service, s.trace_id, s.parent_span_id) for s in processes
               if s.trace_id != producer.trace_id or s.parent_span_id != producer.span_id]
    assert not orphans, (
        f"{backend}: process spans not children of the producer {producer.span_id}: "
        f"{orphans} (the carrier did not cross the layer)")
    assert sorted(s.service for s in processes) == [
        "worker-a", "worker-a", "worker-b", "worker-b"], names(spans)
    for span in processes:
        assert span.kind == "CONSUMER"
        assert (producer.trace_id, producer.span_id) not in span.links  # the parent already
        assert span.attributes["messaging.destination.name"] == group

    # (c) no client ever saw the carrier
    assert not leaks, leaks
    assert all(len(got) == 1 for got in frames.values()), frames


async def test_sse_stream_gets_every_one_of_three_identical_broadcasts(
    layer: tuple[str, dict[str, str]],
) -> None:
    backend = layer[0]
    room = new_room()
    with _cluster(layer) as (_receiver, a, b):
        prefix = a.env["CHANNEL_PREFIX"]
        events = []
        try:
            if backend == "postgres":
                await warm_up(a, b)
            elif backend == "rabbitmq":
                # channels_rabbitmq trap: the layer refuses to be built outside a running
                # event loop, and the sync view's get_channel_layer() runs in a thread: a
                # consumer must have built it on the server's loop first.
                await warm_up(a, wait=0)
            async with HttpEventStream(f"{b.url}/events/{room}/") as stream:
                await stream.wait_position()
                async with httpx.AsyncClient(timeout=10) as http:
                    for _ in range(3):  # the same body three times, back to back
                        reply = await http.post(f"{a.url}/broadcast/{room}/",
                                                json={"text": "same"})
                        assert reply.status_code == 202, reply.text
                try:
                    for _ in range(3):
                        events.append(await stream.next_event(timeout=8))
                except TimeoutError:
                    pass
        finally:
            _cleanup(layer, prefix)

    assert len(events) == 3, (
        f"{backend}: the stream on worker B got {len(events)} of 3 identical broadcasts: "
        f"{events}")
    assert [json.loads(e.data) for e in events] == [{"text": "same", "via": "http"}] * 3
    assert all(e.event == "chat.message" for e in events)
    assert len({e.id for e in events}) == 3, [e.id for e in events]
    assert all(e.id and set(e.id) <= set("0123456789-.") for e in events), events
