"""The Redis fault scenario: Redis killed and restarted under live traffic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from tests.support.otlp import OTLPReceiver
from tests.support.reliability.clients import (
    ChatClient,
    EventSourceClient,
    Sent,
    all_connected,
    broadcaster,
    close_all,
    room_clients,
)
from tests.support.reliability.cluster import Cluster
from tests.support.reliability.receiver_metrics import sum_metric
from tests.support.reliability.redis_server import RedisServer

# -- the Redis fault scenario ---------------------------------------------------------


@dataclass
class FaultRun:
    """Everything a Redis kill-and-restart run observed (see :func:`redis_fault_run`)."""

    chat: list[ChatClient]
    sse: list[EventSourceClient]
    sent: list[Sent]
    t_kill: float
    t_up: float
    t_recovered: float
    t_drop: float
    dropped: EventSourceClient
    across: EventSourceClient | None
    died: list[str]
    metrics_at_kill: dict[str, float]
    metrics_at_up: dict[str, float]

    def rejoined(self, client: ChatClient | EventSourceClient) -> float:
        """When ``client`` was back in the group after the restart."""
        limit = self.t_drop or float("inf")  # not the deliberate drop at the end
        if isinstance(client, ChatClient):  # group_add runs before the accept
            # The last connect: one made right after the restart may still die on a
            # pooled connection to the old Redis (redis-py finds it stale on first use).
            return max(t for t in client.connects if self.t_up < t < limit)
        marks = [t for t, _ in client.connects if self.t_up < t < limit]
        marks += [t for t, _, _ in client.resets if self.t_up < t < limit]
        return max(marks)

    def accounting(self) -> dict[str, Any]:
        """Per client: broadcasts accepted (202) vs received, losses by cause."""
        accepted = [s for s in self.sent if s.status == 202]
        refused = [s for s in self.sent if s.status != 202]
        rows = {}
        for client in [*self.chat, *self.sse]:
            back = self.rejoined(client)
            missing = [s for s in accepted if s.text not in client.texts]
            rows[client.name] = {
                "accepted": len(accepted),
                "received": sum(1 for s in accepted if s.text in client.texts),
                "lost_in_flight_at_kill": sum(1 for s in missing if s.at < self.t_kill),
                "lost_after_restart_before_rejoin": sum(
                    1 for s in missing if self.t_up <= s.at < back),
                "lost_after_rejoin": sum(1 for s in missing if s.at >= back),
                "rejoined_after_restart_s": round(back - self.t_up, 2),
                "duplicates": client.duplicates,
                "failed_connects": dict(client.failures),
            }
        return {
            "broadcasts": len(self.sent),
            "accepted": len(accepted),
            "refused_in_flight_at_kill": sum(1 for s in refused if s.at < self.t_kill),
            "refused_during_outage": sum(1 for s in refused if self.t_kill <= s.at < self.t_up),
            "refused_after_restart": sum(1 for s in refused if s.at >= self.t_up),
            "outage_s": round(self.t_up - self.t_kill, 2),
            "all_rejoined_after_restart_s": round(self.t_recovered - self.t_up, 2),
            "clients": rows,
        }


async def redis_fault_run(redis: RedisServer, receiver: OTLPReceiver, cluster: Cluster,
                          room: str, chat_per_worker: int = 2, sse_per_worker: int = 2,
                          before: float = 2.0, down: float = 3.0, tail: float = 3.0,
                          interval: float = 0.1, recovery_timeout: float = 20.0) -> FaultRun:
    """Clients on both workers and broadcasts flowing; Redis killed, restarted, recovered.

    After every client is back in the group, one SSE client drops its connection
    for a second and reconnects with ``Last-Event-ID`` (replay from the new log).
    """
    stop_clients, stop_sending = asyncio.Event(), asyncio.Event()
    chat, sse = room_clients(cluster.workers, room, chat_per_worker, sse_per_worker)
    tasks = [asyncio.create_task(c.run(stop_clients)) for c in [*chat, *sse]]
    died: list[str] = []

    def watch() -> None:
        for worker in cluster.workers:
            gone = worker.process is None or worker.process.poll() is not None
            if gone and worker.name not in died:
                died.append(worker.name)

    sent: list[Sent] = []
    try:
        await all_connected(chat, sse)
        urls = {w.name: w.url for w in cluster.workers}
        sender = asyncio.create_task(
            broadcaster(urls, room, stop_sending, sent, interval, on_tick=watch))
        await asyncio.sleep(before)

        def snapshot() -> dict[str, float]:
            return {w.name: sum_metric(receiver, "messaging.client.consumed.messages", w.name)
                    for w in cluster.workers}

        t_kill = time.monotonic()
        redis.kill()
        await asyncio.sleep(0.5)
        # A browser losing its network mid-outage: it reconnects while Redis is down
        # (the stream ends at once, it retries) and again once Redis is back, with a
        # Last-Event-ID the restarted log does not know.
        across = sse[1] if len(sse) > 2 else None
        if across is not None:
            across.drop(hold=down / 2)
        await asyncio.sleep(0.5)  # a metric export (0.5 s) after the last delivery
        metrics_at_kill = snapshot()
        await asyncio.sleep(max(0.0, down - 1.0))
        metrics_at_up = snapshot()
        t_up = time.monotonic()
        redis.start()

        def back() -> bool:
            return (all(any(t > t_up for t in c.connects) for c in chat)
                    and all(any(t > t_up for t, _, _ in c.resets)
                            or any(t > t_up for t, _ in c.connects) for c in sse))

        for _ in range(int(recovery_timeout / 0.05)):
            if back():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("not every client rejoined: " + repr(
                [(c.name, c.failures, c.connects[-1:]) for c in [*chat, *sse]]))
        run = FaultRun(chat, sse, sent, t_kill, t_up, 0.0, 0.0, sse[-1], across, died,
                       metrics_at_kill, metrics_at_up)
        run.t_recovered = max(run.rejoined(c) for c in [*chat, *sse])
        await asyncio.sleep(0.5)
        run.t_drop = time.monotonic()
        run.dropped.drop(hold=1.0)  # misses ~10 broadcasts, then resumes
        await asyncio.sleep(tail)
        stop_sending.set()
        await sender
        await asyncio.sleep(1.0)  # the last deliveries
        watch()
        return run
    finally:
        stop_sending.set()
        stop_clients.set()
        await close_all([*chat, *sse], tasks)


