"""Ids and replay on Redis Streams: the log itself, the view in-process, two daphne workers."""

from __future__ import annotations

import asyncio
import json
import random
import string
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from otel_channels import replay
from otel_channels.broadcast import abroadcast, broadcast
from otel_channels.sse import _hub
from otel_channels.testing import EventStreamCommunicator
from tests.support.otlp import OTLPReceiver
from tests.support.redis_layer import CommandLog, delete_keys, redis_layer_config
from tests.support.servers import DaphneWorker, running
from tests.support.sse import HttpEventStream

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]
ROUTE = "/events/<room>/"


@contextmanager
def redis_layer(redis_url: str, backend: str = "channels_redis.core.RedisChannelLayer",
                **config: Any):
    """The default layer on Redis under a unique prefix; its keys are deleted after."""
    prefix = f"ssetest{uuid.uuid4().hex[:10]}"
    layers = {"default": redis_layer_config(redis_url, backend, prefix=prefix, **config)}
    replay.reset()
    with override_settings(CHANNEL_LAYERS=layers, ROOT_URLCONF="tests.project.urls"):
        try:
            yield prefix
        finally:
            replay.reset()
            delete_keys(redis_url, prefix)


# -- the log on Redis Streams -----------------------------------------------------------


async def test_redis_log_ids_prev_chain_ttl_and_maxlen(redis_url):
    with override_settings(OTEL_CHANNELS={"SSE_REPLAY_MAXLEN": 5, "SSE_REPLAY_TTL": 120}), \
            redis_layer(redis_url) as prefix:
        log = replay.get_log("default")
        assert isinstance(log, replay.RedisLog)
        assert await log.head("g") == "0-0"
        appended = [await log.append("g", {"type": "t", "n": n, "b": b"\x00"}, None)
                    for n in range(3)]
        assert appended[0][1] == "0-0"
        assert [prev for _, prev in appended[1:]] == [event_id for event_id, _ in appended[:2]]
        ids = [event_id for event_id, _ in appended]
        assert [replay.parse_id(i) for i in ids] == sorted({replay.parse_id(i) for i in ids})
        assert all(len(i) <= 24 and set(i) <= set("0123456789-") for i in ids)  # CORS-safe
        assert await log.head("g") == ids[-1]

        entries = await log.since("g", ids[0], ids[-1])
        assert [(e.id, e.message["n"], e.message["b"]) for e in entries] == [
            (ids[1], 1, b"\x00"), (ids[2], 2, b"\x00")]
        assert await log.since("g", "0-0", ids[-1]) is not None  # first prev is 0-0
        assert await log.since("g", "1-0", ids[-1]) is None  # never in this log
        assert [e.id for e in await log.between("g", ids[0], ids[1])] == [ids[1]]

        client = redis.Redis.from_url(redis_url)
        assert 0 < client.ttl(f"{prefix}:sse:g") <= 120
        client.close()

        # MAXLEN ~ trims whole nodes: after 300 appends the oldest ids are gone.
        for n in range(300):
            await log.append("g", {"type": "t", "n": n}, None)
        assert await log.since("g", ids[0], await log.head("g")) is None


async def test_redis_log_fingerprint_numbers_a_message_once_across_clients(redis_url):
    with redis_layer(redis_url):
        log = replay.get_log("default")
        message = {"type": "t", "_otel": {"sent_at": 1.5}}
        fp = replay.fingerprint(message)
        other = replay.RedisLog(dict(log.host), log.prefix)  # another worker's client
        first, second = await asyncio.gather(
            log.append("g", {"type": "t"}, None, fingerprint=fp),
            other.append("g", {"type": "t"}, None, fingerprint=fp),
        )
        assert first == second
        assert len(await log.since("g", "0-0", await log.head("g"))) == 1
        await other._client()[0].aclose(close_connection_pool=True)


async def test_explicit_ids_must_grow(redis_url):
    with redis_layer(redis_url):
        assert await abroadcast("g_ids", "t", {}, id=5) == "5-0"
        assert await abroadcast("g_ids", "t", {}, id="5-7") == "5-7"
        with pytest.raises(ValueError, match="not greater"):
            await abroadcast("g_ids", "t", {}, id="5-7")
        with pytest.raises(ValueError, match="ms-seq"):
            await abroadcast("g_ids", "t", {}, id="abc")
        auto = await abroadcast("g_ids", "t", {})
        assert replay.parse_id(auto) > (5, 7)


async def test_view_on_redis_replays_from_the_stream_log(redis_url, metric_reader):
    with redis_layer(redis_url):
        app = ASGIHandler()
        ids = [await abroadcast("room_rr", "n", {"n": n}) for n in range(3)]
        comm = EventStreamCommunicator(app, "/events/rr/", last_event_id=ids[0])
        await comm.connect()
        assert await comm.receive_chunk() == b": open\n\n"
        events = [await comm.receive_event() for _ in range(2)]
        assert [(e.id, json.loads(e.data)["n"]) for e in events] == [(ids[1], 1), (ids[2], 2)]
        live = await abroadcast("room_rr", "n", {"n": 3})
        assert (await comm.receive_event()).id == live
        await comm.disconnect()
        await asyncio.sleep(0.05)
        assert all(not hub.subscriptions for hub in _hub.hubs())
        assert metric_reader.sum("channels.sse.replay", channels__sse__replay__outcome="hit") == 1


async def test_redis_commands_per_broadcast_do_not_grow_with_streams(redis_url):
    """One hub membership per worker: a broadcast costs the same for 1 or 30 streams."""
    with redis_layer(redis_url) as prefix:
        app = ASGIHandler()
        monitor = CommandLog(redis_url, prefix)

        async def cost(streams: int, room: str) -> list[str]:
            comms = []
            for _ in range(streams):
                comm = EventStreamCommunicator(app, f"/events/{room}/")
                await comm.connect()
                await comm.receive_chunk()
                await comm.receive_chunk()
                comms.append(comm)
            await abroadcast(f"room_{room}", "warm", {})
            for comm in comms:
                await comm.receive_event()
            await asyncio.sleep(0.1)
            start = monitor.mark()
            await abroadcast(f"room_{room}", "n", {})
            for comm in comms:
                await comm.receive_event()
            await asyncio.sleep(0.1)  # the hub's backup cleaning after its receive
            used = monitor.lines[start:]
            for comm in comms:
                await comm.disconnect()
            return [line.split(b'"')[1].decode() for line in used]

        one, many = await cost(1, "c1"), await cost(30, "c30")
        monitor.close()
        assert sorted(one) == sorted(many), (one, many)
        print("commands per broadcast:", sorted(many))
        assert len(many) < 30, many


def test_sync_broadcast_reuses_one_loop_and_pool(redis_url):
    """broadcast() outside ASGI: one background loop, so one pool, for every call."""
    with redis_layer(redis_url):
        client = redis.Redis.from_url(redis_url)

        def connections() -> int:
            return int(client.info("stats")["total_connections_received"])

        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.extend(broadcast("g_sync", "t", {"n": n}) for n in range(20))
        )
        before = connections()
        thread.start()
        thread.join(30)
        opened = connections() - before - 1  # the INFO call's own connection is reused
        assert len(results) == 20
        positions = [replay.parse_id(r) for r in results]
        assert positions == sorted(positions)
        assert opened <= 3, opened  # log client + layer pool, not 20 or 40

        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        # What broadcast() avoids: async_to_sync outside a request opens a loop per call.
        before = connections()
        thread = threading.Thread(target=lambda: [
            async_to_sync(get_channel_layer().group_send)("g_sync", {"type": "t"})
            for _ in range(5)])
        thread.start()
        thread.join(30)
        assert connections() - before >= 5
        client.close()


def test_broadcast_refuses_a_running_loop():
    async def inside() -> None:
        broadcast("g", "t", {})

    with pytest.raises(RuntimeError, match="abroadcast"):
        asyncio.run(inside())


# -- two real daphne workers --------------------------------------------------------------


@contextmanager
def two_workers(redis_url: str, prefix: str, receiver: OTLPReceiver, backend: str = "redis"):
    env = {**receiver.env(), "CHANNEL_BACKEND": backend, "CHANNEL_PREFIX": prefix,
           "REDIS_URL": redis_url}
    workers = [DaphneWorker(env, name="sse-a"), DaphneWorker(env, name="sse-b")]
    with running(*workers, join_timeout=40, log_tail=3000):
        for worker in workers:
            assert worker.process is not None and worker.process.poll() is None, worker.output()
        yield workers


def latest_value(receiver: OTLPReceiver, name: str, service: str, route: str) -> float | None:
    with receiver.lock:
        points = [p for p in receiver.metrics if p.name == name and p.service == service
                  and p.attributes.get("http.route") == route]
    return points[-1].value if points else None


async def eventually(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.mark.multiprocess
@pytest.mark.parametrize("backend", ["redis", "pubsub"])
async def test_resume_on_another_worker_loses_and_repeats_nothing(redis_url, backend):
    room = "r" + "".join(random.choice(string.ascii_lowercase) for _ in range(10))
    group = f"room_{room}"  # no digits: the group is its own template
    pubsub = "channels_redis.pubsub.RedisPubSubChannelLayer"
    layer = {"backend": pubsub} if backend == "pubsub" else {}
    with redis_layer(redis_url, **layer) as prefix, OTLPReceiver() as receiver, \
            two_workers(redis_url, prefix, receiver, backend) as (a, b):
        members = redis.Redis.from_url(redis_url)
        group_key = f"{prefix}:group:{group}"
        sent: list[tuple[str, str]] = []  # (how, text) in send order

        watcher: HttpEventStream

        async def observed(text: str) -> None:
            # Sends are sequential: the next starts once the watcher has this one. (A plain
            # group_send is numbered when a hub first receives it, so a broadcast() racing it
            # from another process may be ordered before it; every worker agrees either way.)
            event = await watcher.next_event()
            assert json.loads(event.data)["text"] == text

        async def post(worker: DaphneWorker, text: str) -> None:
            async with httpx.AsyncClient() as http:
                reply = await http.post(f"{worker.url}/broadcast/{room}/", json={"text": text})
                assert reply.status_code == 202
            sent.append(("plain", text))
            await observed(text)

        async def send(text: str) -> None:
            await abroadcast(group, "chat.message", {"text": text, "via": "broadcast"})
            sent.append(("broadcast", text))
            await observed(text)

        async with HttpEventStream(f"{b.url}/events/{room}/") as watcher:  # stays on B throughout
            await watcher.wait_position()
            async with HttpEventStream(f"{a.url}/events/{room}/") as roamer:
                await roamer.wait_position()
                if backend == "redis":  # one channel per worker, not one per stream
                    assert members.zcard(group_key) == 2
                await send("e1")
                await post(a, "e2")  # plain group_send: both hubs number it, one id
                await send("e3")
                seen_a = [await roamer.next_event() for _ in range(3)]
            # The roamer left A: A's hub leaves the group, A's count drops back to 0.
            if backend == "redis":
                await eventually(lambda: members.zcard(group_key) == 1)
            await eventually(lambda: latest_value(
                receiver, "channels.server.active_connections", "sse-a", ROUTE) == 0)

            await send("e4")
            await post(b, "e5")  # logged by B's hub (the watcher's)
            await post(a, "e6")  # A has no stream; B's hub still numbers it
            last = seen_a[-1].id
            async with HttpEventStream(f"{b.url}/events/{room}/", last_event_id=last) as roamer:
                seen_b = [await roamer.next_event() for _ in range(3)]
                await send("e7")
                seen_b.append(await roamer.next_event())
            seen_watcher = watcher.events
        members.close()

        texts = [text for _, text in sent]
        assert texts == [f"e{n}" for n in range(1, 8)]
        roamed = seen_a + seen_b
        assert [json.loads(e.data)["text"] for e in roamed] == texts  # nothing lost or repeated
        assert [json.loads(e.data)["text"] for e in seen_watcher] == texts
        assert [e.id for e in roamed] == [e.id for e in seen_watcher]  # same ids on both workers
        positions = [replay.parse_id(e.id) for e in roamed]
        assert positions == sorted(set(positions))  # strictly increasing
        assert all(e.event == "chat.message" for e in roamed)
        assert "_otel" not in "".join(e.data for e in roamed)

        # One process span per receipt per worker, never one per stream: A saw e1-e3,
        # B all seven (to the watcher, and to the roamer too once it came back).
        name = f"process {group}"
        producer_name = f"group_send {group}"
        spans = receiver.wait_for(lambda s: len([x for x in s if x.name == name]) >= 10
                                  and len([x for x in s if x.name == producer_name]) >= 3)
        process = [s for s in spans if s.name == name]
        assert sorted(s.service for s in process) == ["sse-a"] * 3 + ["sse-b"] * 7
        assert {s.kind for s in process} == {"CONSUMER"}
        fanout = sorted((s.service, s.attributes["channels.sse.streams"]) for s in process)
        assert fanout == [("sse-a", 1)] * 3 + [("sse-b", 1)] * 6 + [("sse-b", 2)]  # e7: two
        # The POSTed (plain group_send) ones are children of the worker's producer span.
        producers = {s.span_id: s for s in spans if s.name == producer_name}
        children = [s for s in process if s.parent_span_id in producers]
        assert sorted(s.service for s in children) == ["sse-a", "sse-b", "sse-b", "sse-b"]
        assert all((producers[s.parent_span_id].trace_id, s.parent_span_id) not in s.links
                   for s in children)  # children, with no link repeating the parent
