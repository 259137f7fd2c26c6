"""The Sentinel failover run of issue 20: clients on two workers, the master killed under load.

:func:`failover_run` starts WebSocket (:class:`~tests.support.reliability.ChatClient`)
and SSE (:class:`~tests.support.reliability.EventSourceClient`) clients on both
workers, a producer that POSTs ``/broadcast-event/<room>/`` (``abroadcast()``
with the text as idempotency key) alternately to each worker every 100 ms and
retries a 503 ``maybe_delivered`` with the same key, kills the Sentinel master,
waits until every client is back, sends on for ``tail`` seconds and returns
what everyone saw. :meth:`FailoverRun.unexplained` lists, per client, every
accepted broadcast it missed that nothing explains.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.reliability import TIMEOUTS, ChatClient, Cluster, EventSourceClient
from tests.support.reliability.clients import close_all, room_clients, until
from tests.support.sentinel import SentinelSetup

#: A broadcast accepted this long before a client's close (or a failover) may have been
#: in flight on the killed master: the close that follows explains its loss.
IN_FLIGHT = 2.0


@dataclass
class Broadcast:
    text: str
    at: float
    status: int | str = 0
    attempts: int = 0
    done: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.status == 202


@dataclass
class FailoverRun:
    chat: list[ChatClient]
    sse: list[EventSourceClient]
    sent: list[Broadcast]
    t_kill: float
    t_promoted: float = 0.0
    t_back: float = 0.0
    lost_subscriptions: dict[str, float] = field(default_factory=dict)  # worker -> count

    def back_at(self, client: ChatClient | EventSourceClient) -> float:
        """When ``client`` got its first broadcast sent after the new master took writes."""
        received = [t for text, t in client.texts.items()
                    if self._sent_at(text) > self.t_promoted]
        return min(received) if received else float("inf")

    def _sent_at(self, text: str) -> float:
        for broadcast in self.sent:
            if broadcast.text == text:
                return broadcast.at
        return 0.0

    def missed(self, client: ChatClient | EventSourceClient) -> list[Broadcast]:
        return [b for b in self.sent if b.accepted and b.text not in client.texts]

    def explanation(self, client: ChatClient | EventSourceClient, b: Broadcast) -> str | None:
        """Why ``client`` missed ``b``, or None when nothing explains it."""
        if isinstance(client, ChatClient):
            connects = sorted(client.connects)
            for closed, _code in client.closes:
                after = [t for t in connects if t > closed]
                if closed - IN_FLIGHT <= b.at and (not after or b.at < after[0]):
                    return "reconnect"
            worker = client.name.split("-")[0]
            if self.lost_subscriptions.get(worker, 0) > 0 and (
                    self.t_kill - IN_FLIGHT <= b.at < self.back_at(client)):
                return "lost subscription (counted)"
            return None
        if any(b.at - IN_FLIGHT <= t for t, _reason, _id in client.resets):
            return "stream-reset"
        return None

    def unexplained(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for client in [*self.chat, *self.sse]:
            bad = [b.text for b in self.missed(client) if self.explanation(client, b) is None]
            if bad:
                found[client.name] = bad
        return found

    def summary(self) -> dict[str, Any]:
        """The figures docs/reliability.md reports."""
        def kinds(clients: list[Any]) -> dict[str, Any]:
            causes: dict[str, int] = {}
            for client in clients:
                for b in self.missed(client):
                    cause = self.explanation(client, b) or "unexplained"
                    causes[cause] = causes.get(cause, 0) + 1
            return {
                "clients": len(clients),
                "missed_per_client_max": max(len(self.missed(c)) for c in clients),
                "missed_total": sum(len(self.missed(c)) for c in clients),
                "by_cause": causes,
                "duplicates": sum(c.duplicates for c in clients),
                "reconnected": sum(1 for c in clients if len(getattr(c, "connects", [])) > 1),
                "close_codes": sorted({code for c in clients
                                       for t, code in getattr(c, "closes", ())
                                       if t < self.t_back + 1}, key=str),
                "resets": sum(len(getattr(c, "resets", ())) for c in clients),
            }

        return {
            "broadcasts": len(self.sent),
            "accepted": sum(1 for b in self.sent if b.accepted),
            "refused": sum(1 for b in self.sent if not b.accepted),
            "retried": sum(1 for b in self.sent if b.attempts > 1),
            "promoted_after_s": round(self.t_promoted - self.t_kill, 2),
            "every_client_back_after_s": round(self.t_back - self.t_kill, 2),
            "lost_subscriptions": self.lost_subscriptions,
            "websocket": kinds(self.chat),
            "sse": kinds(self.sse),
        }


async def _producer(urls: list[str], room: str, stop: asyncio.Event, sent: list[Broadcast],
                    interval: float = 0.1, retries: int = 5, max_count: int = 2000) -> None:
    """POST numbered broadcasts; a 503 (maybe delivered) is retried with the same key."""
    import httpx

    async with httpx.AsyncClient(timeout=5) as http:
        for i in range(max_count):
            if stop.is_set():
                return
            broadcast = Broadcast(f"b{i:05d}", time.monotonic())
            sent.append(broadcast)
            for attempt in range(1, retries + 1):
                broadcast.attempts = attempt
                url = f"{urls[(i + attempt - 1) % len(urls)]}/broadcast-event/{room}/"
                try:
                    response = await http.post(url, json={"text": broadcast.text})
                    broadcast.status = response.status_code
                except httpx.HTTPError as exc:
                    broadcast.status = type(exc).__name__
                if broadcast.status != 503:
                    break
                await asyncio.sleep(0.3)
            broadcast.done = time.monotonic()
            with contextlib.suppress(*TIMEOUTS):
                await asyncio.wait_for(stop.wait(), interval)


async def failover_run(sentinel: SentinelSetup, cluster: Cluster, room: str,
                       chat_per_worker: int = 3, sse_per_worker: int = 2,
                       before: float = 2.0, tail: float = 3.0,
                       recovery_timeout: float = 40.0) -> FailoverRun:
    stop_clients, stop_sending = asyncio.Event(), asyncio.Event()
    chat, sse = room_clients(cluster.workers, room, chat_per_worker, sse_per_worker)
    tasks = [asyncio.create_task(c.run(stop_clients)) for c in [*chat, *sse]]
    sent: list[Broadcast] = []
    sender: asyncio.Task[None] | None = None
    try:
        await until(lambda: all(c.connects for c in [*chat, *sse]), 20, "clients connected")
        sender = asyncio.create_task(
            _producer([w.url for w in cluster.workers], room, stop_sending, sent))
        await until(lambda: all(c.texts for c in [*chat, *sse]), 20, "first broadcasts")
        await asyncio.sleep(before)
        run = FailoverRun(chat, sse, sent, time.monotonic())
        old = await asyncio.to_thread(sentinel.kill_master)
        await asyncio.to_thread(sentinel.wait_failover, old, recovery_timeout)
        run.t_promoted = time.monotonic()
        await until(lambda: all(run.back_at(c) < float("inf") for c in [*chat, *sse]),
                     recovery_timeout, "every client receiving again")
        run.t_back = max(run.back_at(c) for c in [*chat, *sse])
        await asyncio.sleep(tail)
        stop_sending.set()
        await sender
        await asyncio.sleep(1.5)  # the last deliveries
        return run
    finally:
        stop_sending.set()
        stop_clients.set()
        if sender is not None and not sender.done():
            sender.cancel()
        await close_all([*chat, *sse], tasks)
