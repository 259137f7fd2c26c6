"""Redis Sentinel failover under load, core and pub/sub layers: nothing lost silently (issue 20).

A master, a replica and three sentinels of our own (``tests/support/sentinel.py``);
two daphne workers of ``tests.project`` whose channel layer has one Sentinel
host entry (the shape checks W010/W011/W012 accept); on each worker three chat
WebSockets and two SSE streams in one room; a producer calling ``abroadcast()``
(through ``POST /broadcast-event/<room>/``) every 100 ms, retrying a
``BroadcastMaybeDelivered`` (503) with the same idempotency key. The master is
SIGKILLed; the sentinels promote the replica.

Asserted for each layer:

* every WebSocket client stays connected or reconnects, every SSE stream
  resumes, and every broadcast accepted after every client is back reaches
  every client;
* no SSE stream shows an event twice (retries reuse the logged id);
* every broadcast a client missed is explained: a WebSocket client's reconnect
  (its close came after the broadcast was sent, within the in-flight margin,
  and before its next connect), a counted lost subscription on its worker
  (``channels.layer.subscription.lost``, pub/sub), or a ``stream-reset``;
* tracing went on through the failover: ``group_send`` and ``process`` spans
  for broadcasts after it, from both workers;
* the replay log followed the master: a stream opened after the failover with
  the ``Last-Event-ID`` of a pre-failover event gets what followed, or a reset.

The figures printed (``-s``) are those of docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import msgpack
import pytest

from tests.support.failover import failover_run
from tests.support.otlp import OTLPReceiver
from tests.support.reliability import Cluster, latest_by_attributes
from tests.support.sentinel import SentinelSetup, require_sentinel
from tests.support.sse import RawEventStream

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

LAYERS = {
    "core": ("redis", "count"),
    "pubsub": ("pubsub", "count"),
    "pubsub-close": ("pubsub", "close"),
}


def _lost(receiver: OTLPReceiver, service: str) -> float:
    points = latest_by_attributes(receiver, "channels.layer.subscription.lost", service)
    return sum(p.value or 0.0 for p in points.values())


@pytest.mark.parametrize("layer", list(LAYERS))
async def test_master_killed_under_load(layer: str) -> None:
    require_sentinel("the failover test runs its own master, replica and sentinels")
    backend, policy = LAYERS[layer]
    room = f"fo{uuid.uuid4().hex[:8]}"
    with SentinelSetup() as sentinel, OTLPReceiver() as receiver:
        env = {
            "CHANNEL_BACKEND": backend,
            "CHANNEL_HOSTS_JSON": json.dumps(sentinel.hosts()),
            "OTEL_CHANNELS_JSON": json.dumps({"ON_SUBSCRIPTION_LOST": policy}),
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }
        url = f"redis://127.0.0.1:{sentinel.master_port}/0"
        with Cluster(url, receiver, extra_env=env) as cluster:
            run = await failover_run(sentinel, cluster, room)
            for worker in cluster.workers:
                short = worker.name.rsplit("-", 1)[-1]
                run.lost_subscriptions[short] = _lost(receiver, worker.name)
            summary = run.summary()
            print(f"failover {layer}: {json.dumps(summary, indent=1)}")

            assert cluster.alive()
            assert run.unexplained() == {}, summary
            for client in [*run.chat, *run.sse]:
                late = [b.text for b in run.missed(client) if b.at > run.t_back + 0.5]
                assert late == [], (client.name, late)
            assert all(c.duplicates == 0 for c in run.sse), summary
            # Enough traffic after recovery for the assertions above to mean something.
            assert sum(1 for b in run.sent if b.accepted and b.at > run.t_back) >= 10
            if backend == "pubsub":
                assert sum(run.lost_subscriptions.values()) >= 1, summary
            if policy == "close":
                assert all(len(c.connects) >= 2 for c in run.chat), summary
                # 1012 Service Restart; daphne sends it as 4012 (autobahn refuses 1012).
                assert all({4012, 1012} & {code for _, code in c.closes} for c in run.chat), [
                    c.closes for c in run.chat]

            # Tracing went on: the last broadcast's group_send and its process spans, in
            # one trace, from both workers (after the failover).
            group = f"room_{room}"

            def traced(spans: list[Any]) -> bool:
                mine = [x for x in spans
                        if x.attributes.get("messaging.destination.name") == group]
                return ({x.service for x in mine if x.name.startswith("process ")}
                        == {"worker-a", "worker-b"}
                        and any(x.name.startswith("group_send ") for x in mine))

            spans = await asyncio.to_thread(receiver.wait_for, traced, 20)
            producers = [x for x in spans if x.name.startswith("group_send ")
                         and x.attributes.get("messaging.destination.name") == group]
            assert {x.service for x in producers} == {"worker-a", "worker-b"}

            # The replay log lives on the promoted master: a stream resuming from an
            # event sent before the kill gets exactly what the log holds after it.
            address = sentinel.master_address()
            assert address is not None
            log = sentinel.client(address[1]).xrange(f"{cluster.prefix}:sse:room_{room}")
            texts = [(i.decode(), msgpack.unpackb(f[b"m"])["text"]) for i, f in log]
            before = {b.text for b in run.sent if b.accepted and b.at < run.t_kill - 1}
            resume = max(i for i, (_, text) in enumerate(texts) if text in before)
            await _resume(cluster.b.port, room, texts[resume][0],
                          [text for _, text in texts[resume + 1:resume + 6]])


async def _resume(port: int, room: str, last_event_id: str, expected: list[str]) -> None:
    """Reopen a stream on worker B with ``Last-Event-ID``: the next events are ``expected``."""
    stream = RawEventStream("127.0.0.1", port, f"/events/{room}/")
    assert await stream.open(last_event_id, timeout=20) == 200
    try:
        seen: list[str] = []
        while len(seen) < len(expected):
            event = await stream.next_event(timeout=20)
            assert event is not None
            assert event.event != "stream-reset", event
            if event.event == "chat.message":
                seen.append(event.json()["text"])
        assert seen == expected
    finally:
        stream.abort()
