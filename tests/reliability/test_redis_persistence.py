"""Redis killed and restarted *with persistence*: SSE streams replay instead of resetting.

docs/reliability.md says: "If replay across a Redis restart matters, run Redis
with persistence (AOF or RDB): group memberships and the replay log survive, and
streams replay instead of resetting (not measured here)." This measures it.

Same scenario as tests/reliability/test_reliability_redis_faults.py (``redis_fault_run``):
two ``tests.project`` workers, chat WebSockets and ``EventSource``-like SSE
streams on both, a broadcast every 50 ms alternating between the workers;
Redis is SIGKILLed for 3 s and started again, here on the same directory with
``--appendonly yes --appendfsync always --save ""`` (every acknowledged write is
on disk before the reply), and, for comparison, without persistence. One SSE
client reconnects while Redis is down (it comes back after the restart with a
``Last-Event-ID`` from before); one drops after recovery.

Asserted with AOF: no SSE stream gets a ``stream-reset``; the one that reconnects
across the restart resumes with a replay (no reset); no SSE stream loses a broadcast
that was accepted (HTTP 202) or gets one twice; nothing is lost by anyone after
being back. Without persistence: only the known baseline (nothing lost after being
back, no duplicate). Both print their figures (``-s``) for the README: per client,
broadcasts accepted / received / lost (by cause) / replayed (received after the
restart though sent before it) / duplicated, stream-resets, and the group
memberships left in Redis once every client has gone.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.otlp import OTLPReceiver
from tests.support.reliability import (
    ChatClient,
    Cluster,
    EventSourceClient,
    PersistentRedisServer,
    RedisServer,
    Sent,
    broadcaster,
    exceptions_in,
    group_members,
    require_redis_server,
)
from tests.support.reliability.clients import all_connected, close_all, room_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(150)]

#: What a worker may log while Redis is down (tests/reliability/test_reliability_redis_faults.py).
OUTAGE_ERRORS = ("redis.exceptions.ConnectionError", "ConnectionRefusedError",
                 "ConnectionResetError", "redis.exceptions.TimeoutError",
                 "redis.exceptions.BusyLoadingError")


@pytest.fixture
def redis_server_binary() -> str:
    return require_redis_server("this test kills and restarts its own")


@dataclass
class RestartRun:
    """What one kill-and-restart run saw (times are ``time.monotonic()``)."""

    chat: list[ChatClient]
    sse: list[EventSourceClient]
    sent: list[Sent]
    t_kill: float = 0.0
    t_up: float = 0.0
    t_drop: float = 0.0
    across: EventSourceClient | None = None
    dropped: EventSourceClient | None = None
    back: dict[str, float] = field(default_factory=dict)  # client -> live again after t_up

    def accounting(self) -> dict[str, Any]:
        accepted = [s for s in self.sent if s.status == 202]
        rows: dict[str, Any] = {}
        for client in [*self.chat, *self.sse]:
            back = self.back.get(client.name, float("inf"))
            missing = [s for s in accepted if s.text not in client.texts]
            row = {
                "accepted": len(accepted),
                "received": len(accepted) - len(missing),
                "lost_in_flight_at_kill": sum(1 for s in missing if s.at < self.t_kill),
                "lost_accepted_during_outage": sum(
                    1 for s in missing if self.t_kill <= s.at < self.t_up),
                "lost_after_restart_before_back": sum(
                    1 for s in missing if self.t_up <= s.at < back),
                "lost_after_back": sum(1 for s in missing if s.at >= back),
                "back_after_restart_s": round(back - self.t_up, 2),
                # received after the restart although sent before it: replayed from the log,
                # or read from a channel queue the AOF kept
                "replayed_after_restart": sum(
                    1 for s in accepted if s.at < self.t_up
                    and client.texts.get(s.text, 0) > self.t_up),
                "duplicates": client.duplicates,
                "failed_connects": dict(client.failures),
            }
            if isinstance(client, EventSourceClient):
                row["stream_resets"] = [(reason, i) for _, reason, i in client.resets]
                row["resumed_with_last_event_id"] = sum(1 for _, last in client.connects if last)
                # sent while this client was away (from the end of a stream to the next
                # one that resumed with Last-Event-ID) and still received: replayed
                replayed = 0
                for t_connect, last in client.connects:
                    ends = [t for t in client.ends if t < t_connect]
                    if last and ends:
                        replayed += sum(1 for s in accepted if ends[-1] <= s.at < t_connect
                                        and s.text in client.texts)
                row["replayed_on_resume"] = replayed
            rows[client.name] = row
        return {
            "broadcasts": len(self.sent),
            "accepted": len(accepted),
            "refused_during_outage": sum(1 for s in self.sent if s.status != 202
                                         and self.t_kill <= s.at < self.t_up),
            "refused_after_restart": sum(1 for s in self.sent if s.status != 202
                                         and s.at >= self.t_up),
            "outage_s": round(self.t_up - self.t_kill, 2),
            "all_back_after_restart_s": round(max(self.back.values()) - self.t_up, 2),
            "clients": rows,
        }


async def restart_run(redis: RedisServer, cluster: Cluster, room: str, chat_per_worker: int = 2,
                      sse_per_worker: int = 3, before: float = 2.0, down: float = 3.0,
                      tail: float = 3.0, interval: float = 0.05,
                      recovery_timeout: float = 20.0) -> RestartRun:
    """Like ``redis_fault_run``, but a client is *back* once it receives a broadcast sent
    after the restart (an SSE stream that replays is never reset nor reconnected)."""
    stop_clients, stop_sending = asyncio.Event(), asyncio.Event()
    chat, sse = room_clients(cluster.workers, room, chat_per_worker, sse_per_worker)
    clients = [*chat, *sse]
    tasks = [asyncio.create_task(c.run(stop_clients)) for c in clients]
    run = RestartRun(chat, sse, [])
    try:
        await all_connected(chat, sse)
        urls = {w.name: w.url for w in cluster.workers}
        sender = asyncio.create_task(broadcaster(urls, room, stop_sending, run.sent, interval))
        await asyncio.sleep(before)
        run.t_kill = time.monotonic()
        redis.kill()
        await asyncio.sleep(0.5)
        run.across = sse[1]
        run.across.drop(hold=down / 2)  # reconnects while Redis is down, then after
        await asyncio.sleep(down - 0.5)
        run.t_up = time.monotonic()
        redis.start()

        def live_again(client: ChatClient | EventSourceClient) -> float | None:
            after = [s.text for s in run.sent if s.at > run.t_up and s.status == 202]
            times = [client.texts[t] for t in after if t in client.texts]
            return min(times) if times else None

        for _ in range(int(recovery_timeout / 0.05)):
            for client in clients:
                if client.name not in run.back and (at := live_again(client)) is not None:
                    run.back[client.name] = at
            if len(run.back) == len(clients):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("not every client got a broadcast after the restart: " + repr(
                [(c.name, c.failures) for c in clients if c.name not in run.back]))
        await asyncio.sleep(0.5)
        run.t_drop = time.monotonic()
        run.dropped = sse[-1]
        run.dropped.drop(hold=1.0)  # misses ~20 broadcasts, then resumes
        await asyncio.sleep(tail)
        stop_sending.set()
        await sender
        await asyncio.sleep(1.0)  # the last deliveries
        return run
    finally:
        stop_sending.set()
        stop_clients.set()
        await close_all(clients, tasks)


async def settled_members(redis: RedisServer, prefix: str, timeout: float = 15.0
                          ) -> dict[str, int]:
    """Group memberships once every client has gone (daphne ends consumers within 10 s)."""
    members = group_members(redis, prefix)
    for _ in range(int(timeout / 0.5)):
        if not sum(members.values()):
            break
        await asyncio.sleep(0.5)
        members = group_members(redis, prefix)
    return members


@pytest.mark.parametrize("persistence", ["aof", "none"])
async def test_redis_restart_replay(redis_server_binary: str, persistence: str) -> None:
    room = str(random.randrange(10**9, 10**10))
    started = time.monotonic()
    server: RedisServer = PersistentRedisServer() if persistence == "aof" else RedisServer()
    with server as redis, OTLPReceiver() as receiver, Cluster(redis.url, receiver) as cluster:
        run = await restart_run(redis, cluster, room)
        report = run.accounting()
        report["persistence"] = persistence
        report["memberships_left_after_clients_left"] = await settled_members(
            redis, cluster.prefix)
        report["worker_exceptions"] = {w.name: sorted(set(exceptions_in(w.output())))
                                       for w in cluster.workers}
        print(f"redis restart ({persistence}):", json.dumps(report, indent=1))

        assert cluster.alive()
        for worker in cluster.workers:
            found = exceptions_in(worker.output())
            assert all(line.startswith(OUTAGE_ERRORS) for line in found), (
                worker.name, sorted(set(found)))
        for name, row in report["clients"].items():
            assert row["lost_after_back"] == 0, (name, row)
            assert row["duplicates"] == 0, (name, row)
        if persistence == "none":
            return

        problems = []
        for client in run.sse:
            row = report["clients"][client.name]
            if row["stream_resets"]:
                problems.append(f"{client.name}: stream-reset {row['stream_resets']} "
                                "(the log survived the restart: expected a replay)")
            lost = (row["lost_in_flight_at_kill"] + row["lost_accepted_during_outage"]
                    + row["lost_after_restart_before_back"])
            if lost:
                problems.append(f"{client.name}: lost {lost} accepted broadcasts "
                                f"({row['lost_in_flight_at_kill']} in flight at the kill, "
                                f"{row['lost_after_restart_before_back']} after the restart)")
        assert run.across is not None
        if not any(last for t, last in run.across.connects if t > run.t_up):
            problems.append(f"{run.across.name} did not resume with Last-Event-ID after the "
                            f"restart: {run.across.connects}")
        assert problems == [], "\n".join(problems)
    assert time.monotonic() - started < 140
