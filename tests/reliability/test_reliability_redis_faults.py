"""Redis killed and restarted under live WebSocket and SSE traffic on two daphne workers.

The last two tests replay the same fault in process against a flaky in-memory
layer (no Redis needed): the SSE hub's resubscription, and the view ending a
stream it cannot join instead of leaving the client on a silent connection.

The Redis is our own ``redis-server`` (no persistence) on a free port, never
the shared one. Two workers run ``tests.project`` on it; on each, two chat
WebSockets (traced ``ChatConsumer``) and two ``EventSource``-like SSE streams
sit in one room, and ``POST /broadcast/<room>/`` alternates between the workers
every 100 ms. Redis is SIGKILLed for 3 s, then started again, empty.

What the run shows (and the README's reliability section reports):

* no worker dies; every traceback in their logs is a Redis connection error;
* every broadcast tried while Redis is down fails at the producer (HTTP 500,
  an ERROR ``group_send`` span with ``error.type``, an error duration point);
* WebSocket consumers die with close 1011 when their channel read fails
  (Channels' behaviour); the pages reconnect and ``group_add`` again;
* SSE streams stay open: the worker's hub resubscribes with backoff (0.1 s
  doubling to 2 s) and, as the restarted Redis lost the replay log, writes a
  ``stream-reset`` (``resubscribed``) at the new log's start, then everything
  after it; a browser that reconnects while Redis is down gets a stream that
  ends at once (and retries), and once Redis is back, with an id the new log
  does not hold, ``stream-reset`` (``last_event_id_unknown``); one that drops
  after recovery gets its missed events replayed from the new log;
* after each client is back in the group, nothing is lost; what was lost is
  counted per client and by cause (in flight at the kill, accepted after the
  restart before the client rejoined).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from django.urls import path

from otel_channels import replay
from otel_channels.broadcast import abroadcast
from otel_channels.sse import _hub
from otel_channels.testing import EventStreamCommunicator
from tests.project.sse import RoomEvents
from tests.support.otlp import OTLPReceiver, Span
from tests.support.reliability import (
    Cluster,
    RedisServer,
    exceptions_in,
    latest_by_attributes,
    redis_fault_run,
    require_redis_server,
)

pytestmark = [pytest.mark.timeout(90)]

TEMPLATE = "room_{id}"
GROUP_SEND = f"group_send {TEMPLATE}"
PROCESS = f"process {TEMPLATE}"
#: What a worker may log while Redis is down: connection errors, nothing else.
OUTAGE_ERRORS = ("redis.exceptions.ConnectionError", "ConnectionRefusedError",
                 "ConnectionResetError", "redis.exceptions.TimeoutError")


@pytest.fixture
def redis_server_binary() -> str:
    return require_redis_server("this test kills and restarts its own")


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric_total(receiver: OTLPReceiver, name: str, service: str, **attributes: Any) -> float:
    """Sum of the latest cumulative values (or histogram counts) matching ``attributes``."""
    total = 0.0
    for point in latest_by_attributes(receiver, name, service).values():
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            total += point.count if point.count is not None else (point.value or 0.0)
    return total


@pytest.mark.multiprocess
@pytest.mark.slow
async def test_redis_restart_under_websocket_and_sse_load(redis_server_binary: str) -> None:
    room = str(random.randrange(10**9, 10**10))  # digits: the group template is room_{id}
    started = time.monotonic()
    with RedisServer() as redis, OTLPReceiver() as receiver, \
            Cluster(redis.url, receiver) as cluster:
        run = await redis_fault_run(redis, receiver, cluster, room)
        report = run.accounting()
        print("redis fault run:", json.dumps(report, indent=1))

        # -- the workers survived ------------------------------------------------------
        assert run.died == [] and cluster.alive()
        for worker in cluster.workers:
            found = exceptions_in(worker.output())
            assert found, "the outage left no trace in the log"
            assert all(line.startswith(OUTAGE_ERRORS) for line in found), (
                worker.name, sorted(set(found)))

        # -- producers: accepted before, refused during, accepted again after ----------
        before = [s for s in run.sent if s.done < run.t_kill]
        during = [s for s in run.sent if run.t_kill <= s.at < run.t_up]
        after = [s for s in run.sent if s.at >= run.t_up]
        assert len(before) >= 10 and all(s.status == 202 for s in before)
        assert len(during) >= 15 and all(s.status == 500 for s in during), during
        # After the restart a connection pooled before the kill fails once on first use
        # (redis-py finds it stale); every other broadcast is accepted again.
        assert len(after) >= 30
        assert sum(s.status != 202 for s in after) <= 4, [
            (s.text, s.status) for s in after if s.status != 202]

        # -- every client: nothing lost once it is back in the group -------------------
        for name, row in report["clients"].items():
            assert row["lost_after_rejoin"] == 0, (name, row)
            assert row["duplicates"] == 0, (name, row)
            assert row["lost_in_flight_at_kill"] <= 2, (name, row)
            assert row["rejoined_after_restart_s"] < 10, (name, row)
        for client in run.chat:  # the consumer died with its channel read: 1011, then back
            assert [code for t, code in client.closes if run.t_kill <= t < run.t_up] == [1011]
            assert not client.failures or set(client.failures) <= {"http 500", "InvalidMessage",
                                                                   "InvalidStatus"}, client.failures
        stayed = [c for c in run.sse if c is not run.across]
        for client in stayed:  # the stream stayed open; its hub resubscribed and said so
            assert [t for t in client.ends if t < run.t_drop] == [], client.name
            resets = [(reason, event_id) for t, reason, event_id in client.resets]
            assert resets == [("resubscribed", "0-0")], (client.name, resets)
        assert run.across is not None
        # Reconnected while Redis was down: 200, then the stream ended at once (no event,
        # no hang), and the client tried again.
        down_tries = [t for t, _ in run.across.connects if run.t_kill < t < run.t_up]
        assert down_tries and all(
            any(t <= end < run.t_up + 0.5 for end in run.across.ends) for t in down_tries)
        reasons = [reason for t, reason, _ in run.across.resets]
        assert reasons[0] == "last_event_id_unknown", reasons
        assert set(reasons) <= {"last_event_id_unknown", "resubscribed"}, reasons
        # The drop after recovery: resumed with Last-Event-ID, replayed, no reset.
        dropped = run.dropped
        resumed = [(t, last) for t, last in dropped.connects if t > run.t_drop]
        assert len(resumed) == 1 and resumed[0][1] is not None, dropped.connects
        assert not [r for r in dropped.resets if r[0] > run.t_drop], dropped.resets
        missed = [s for s in run.sent if s.status == 202 and run.t_drop < s.at < resumed[0][0]]
        assert len(missed) >= 5 and all(s.text in dropped.texts for s in missed)

        # -- telemetry recorded the outage ---------------------------------------------
        spans = await _spans(receiver, len(run.sent))
        for worker in cluster.workers:
            mine = [s for s in run.sent if s.worker == worker.name]
            refused = [s for s in mine if s.status != 202]
            producers = [s for s in spans if s.name == GROUP_SEND and s.service == worker.name]
            failed = [s for s in producers if s.status_code == 2]
            assert len(producers) == len(mine)
            assert len(failed) == len(refused) > 0
            for span in failed:
                assert span.kind == "PRODUCER"
                assert span.attributes["error.type"] == "ConnectionError"
                assert "exception" in span.events
            # Counts of the sent-messages counter: successes only; durations carry error.type.
            assert metric_total(receiver, "messaging.client.sent.messages",
                                worker.name) == len(mine) - len(refused)
            assert metric_total(receiver, "messaging.client.operation.duration", worker.name,
                                **{"error.type": "ConnectionError"}) == len(refused)
            # Nothing consumed while Redis was down; consumption resumed after.
            assert run.metrics_at_up[worker.name] == run.metrics_at_kill[worker.name]
            processes = [s for s in spans if s.name == PROCESS and s.service == worker.name]
            name, count = worker.name, len(processes)
            await wait_until(lambda: metric_total(
                receiver, "messaging.client.consumed.messages", name) == count,  # noqa: B023
                10, f"consumed == process spans on {name}")
            assert len(processes) > run.metrics_at_up[worker.name]

        # -- every connection counted down, WebSocket and SSE -------------------------
        def settled() -> bool:
            return all(
                metric_total(receiver, "channels.server.active_connections", w.name,
                             **{"network.protocol.name": protocol}) == 0
                for w in cluster.workers for protocol in ("websocket", "sse"))

        await wait_until(settled, 15, "active connections back to 0")
    assert time.monotonic() - started < 85


async def _spans(receiver: OTLPReceiver, broadcasts: int) -> list[Span]:
    """The received spans once every broadcast's ``group_send`` span has arrived."""
    for _ in range(100):
        with receiver.lock:
            spans = list(receiver.spans)
        if sum(s.name == GROUP_SEND for s in spans) >= broadcasts:
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {sum(s.name == GROUP_SEND for s in spans)} of {broadcasts} "
                         "group_send spans arrived")


# -- the same fault in process: the hub and the view, deterministic and fast -------------


class FlakyLayer(InMemoryChannelLayer):
    """The in-memory layer with a Redis-like outage switch: reads fail while it is down."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.broken = asyncio.Event()  # set: every blocked read fails now
        self.group_adds = 0

    async def group_add(self, group: str, channel: str) -> None:
        self.group_adds += 1
        if self.down:
            raise ConnectionError("Error 111 connecting to redis")
        await super().group_add(group, channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("Error 111 connecting to redis")
        read = asyncio.ensure_future(super().receive(channel))
        broken = asyncio.ensure_future(self.broken.wait())
        try:
            await asyncio.wait({read, broken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (read, broken):
                if not future.done():
                    future.cancel()
        if read.done() and not read.cancelled():
            return read.result()
        raise ConnectionError("Connection closed by server.")

    async def restart(self, lose: bool) -> None:
        """Fail the blocked reads; ``lose``: like a Redis without persistence, forget the
        groups (members) and the replay log."""
        self.down = True
        self.broken.set()
        await asyncio.sleep(0)
        self.broken.clear()
        if lose:
            self.groups.clear()
            replay.reset()
        self.down = False


FLAKY = {"default": {"BACKEND": f"{__name__}.FlakyLayer"}}
urlpatterns = [path("events/<str:room>/", RoomEvents.as_view())]


@pytest.fixture
def flaky() -> Iterator[FlakyLayer]:
    replay.reset()
    with override_settings(CHANNEL_LAYERS=FLAKY, ROOT_URLCONF=__name__):
        yield get_channel_layer()
    replay.reset()


async def test_stream_ends_at_once_when_the_layer_is_down(flaky: FlakyLayer, spans: Any) -> None:
    """A join that fails (Redis down, MaxConnectionsError) ends the body at once.

    Raising instead left the client with a 200 start and nothing else, for ever:
    daphne cannot send a 500 once the response has started, and EventSource
    only reconnects after the body ends.
    """
    flaky.down = True
    comm = EventStreamCommunicator(ASGIHandler(), "/events/down/")
    status, _ = await comm.connect()
    assert status == 200
    assert await comm.receive_chunk() == b""  # the end of the body: EventSource retries
    await comm.wait(1)
    connect = spans.one("connect /events/<room>/")
    assert connect.attributes["error.type"] == "ConnectionError"
    assert connect.status.status_code.name == "ERROR"
    assert not [h.subscriptions for h in _hub.hubs() if h.subscriptions]


async def test_hub_resubscribes_then_replays_or_resets(flaky: FlakyLayer) -> None:
    comm = EventStreamCommunicator(ASGIHandler(), "/events/flaky/")
    assert (await comm.connect())[0] == 200
    assert await comm.receive_chunk() == b": open\n\n"
    await comm.receive_chunk()  # the position
    first = await abroadcast("room_flaky", "chat.message", {"text": "e1"})
    assert (await comm.receive_event()).id == first
    adds = flaky.group_adds

    # Reads fail, the membership is gone, and an event is logged meanwhile: the hub
    # joins again after its backoff and replays that event from the log.
    sub = _hub.hubs()[0].subscriptions["room_flaky"]
    await flaky.restart(lose=False)
    await flaky.group_discard("room_flaky", sub.channel)
    missed = await abroadcast("room_flaky", "chat.message", {"text": "e2"})
    event = await comm.receive_event(timeout=3)
    assert (event.event, event.id, json.loads(event.data)) == (
        "chat.message", missed, {"text": "e2"})
    assert flaky.group_adds == adds + 1

    # A restart that loses the log too: a stream-reset at the new log's start, then on.
    await flaky.restart(lose=True)
    event = await comm.receive_event(timeout=3)
    assert (event.event, event.id, json.loads(event.data)) == (
        "stream-reset", "0-0", {"reason": "resubscribed"})
    after = await abroadcast("room_flaky", "chat.message", {"text": "e3"})
    event = await comm.receive_event(timeout=3)
    assert (event.id, json.loads(event.data)) == (after, {"text": "e3"})
    await comm.disconnect()
