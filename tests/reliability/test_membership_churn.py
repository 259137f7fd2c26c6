"""Group memberships under churn: nothing left in Redis for a consumer that is gone.

Two ``tests.fuzzproject`` workers on a ``redis-server`` of our own. For
:data:`CHURN_S` seconds, :data:`USERS` concurrent users open short WebSocket
sessions on the four traced consumer kinds (async / sync, JSON / text), each
joining ``fuzz_<room>`` in ``connect`` and leaving it in ``disconnect`` (the
documented pattern, tests/fuzzproject/consumers.py), while a broadcast storm
(``group_send`` to the rooms from both workers, back to back) keeps every
consumer sending: sessions end by a normal close, a TCP reset or a FIN without a
close frame, often right after sending a chat frame whose broadcast is on its
way back to them. Eight *stayers* (one per worker and kind) stay connected
throughout. Every consumer tells its channel name on connect (``?hello=1``).

Afterwards:

* while the stayers are still connected, each room's group zset
  (``{prefix}:group:fuzz_<room>``, ``ZRANGE``) holds exactly the stayers' channels:
  every member is a live consumer;
* once they left too, every group zset is empty;
* ``channels.server.active_connections`` (websocket) is 0 on both workers.

Expected to fail today (channels#1820): a consumer that sends while daphne's
protocol is no longer open but has not told the application yet gets autobahn's
``Disconnected: Attempt to send on a closed protocol`` raised into its handler and
dies; Channels runs no ``websocket_disconnect``, so its ``group_discard`` never
happens and the member stays for channels-redis's ``group_expiry`` (86400 s).
Measured here, the window is the clean close: on a client's close frame autobahn
replies, marks the protocol CLOSED and waits for TCP to finish (``dropConnection``
with ``abort=False``, longer when frames are still buffered for a slow reader);
``onClose``, which tells daphne, only runs on ``connectionLost``. A TCP reset or a
FIN goes straight to ``connectionLost``: no window. Every leaked member in the runs
so far ended with ``close 1000`` (printed as ``leaked_by_ending`` with ``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from typing import Any

import pytest

from tests.fuzzproject.harness import SEND_AFTER_RESET, FuzzWorkers, WSClient, tracebacks
from tests.support.reliability import (
    RedisServer,
    active_connections,
    raise_nofile,
    require_redis_server,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(150)]

CHURN_S = 30.0
USERS = 30
MAX_SESSIONS = 4000
TRACED_KINDS = ("async-json", "sync-json", "async", "sync")
ROOMS = 3
#: Characters added to each storm broadcast: a client that stops reading makes daphne
#: buffer frames, so a close handshake takes a while to finish (the window in which
#: daphne's protocol is no longer open but the consumer has not been told yet).
PAD = 8192


@pytest.fixture
def redis_server_binary() -> str:
    return require_redis_server("the churn runs its own")


def group_sets(redis: RedisServer, prefix: str) -> dict[str, set[str]]:
    """Every channels-redis group of ``prefix``: ``ZRANGE`` of its zset (members)."""
    client = redis.client()
    try:
        return {key.decode().rsplit(":group:", 1)[1]:
                {m.decode() for m in client.zrange(key, 0, -1)}
                for key in client.scan_iter(match=f"{prefix}:group:*", count=1000)}
    finally:
        client.close()


async def storm(workers: FuzzWorkers, rooms: list[str], stop: asyncio.Event,
                statuses: Counter[str], max_count: int = 20_000) -> None:
    """Broadcasts to random rooms from both workers, back to back (bounded)."""
    import httpx

    rng = random.Random(7)

    async def one_worker(url: str) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for n in range(max_count):
                if stop.is_set():
                    return
                try:
                    reply = await http.post(f"{url}/fuzz/broadcast/{rng.choice(rooms)}/",
                                            json={"text": f"storm {n}", "pad": PAD})
                    statuses[str(reply.status_code)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                await asyncio.sleep(0.005)

    await asyncio.gather(*(one_worker(w.url) for w in workers.workers))


async def churn(workers: FuzzWorkers, rooms: list[str], seconds: float,
                sessions: dict[str, str], endings: Counter[str], failures: Counter[str],
                ended: dict[str, str]) -> None:
    """``USERS`` loops of short sessions; ``sessions``: channel name -> kind; ``ended``:
    channel name -> how the session ended."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    rng = random.Random(11)
    end = time.monotonic() + seconds
    budget = [MAX_SESSIONS]

    async def session() -> None:
        worker, kind, room = (rng.choice(workers.workers), rng.choice(TRACED_KINDS),
                              rng.choice(rooms))
        url = f"{worker.ws_url}/ws/fuzz/{kind}/{room}/?hello=1"
        try:
            # max_queue: the client stops reading past 16 frames (backpressure).
            ws = await connect(url, open_timeout=10, ping_interval=None, close_timeout=2,
                               max_queue=16)
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except InvalidStatus as exc:
            failures[f"http {exc.response.status_code}"] += 1
            return
        except (OSError, ConnectionClosed, asyncio.TimeoutError, TimeoutError, EOFError) as exc:
            failures[type(exc).__name__] += 1
            return
        channel = sessions_key = hello["hello"]
        sessions[sessions_key] = kind
        try:
            if kind.endswith("json"):
                for _ in range(rng.randint(0, 3)):
                    await ws.send(json.dumps({"__fuzz_group_send__": "chat"}))
            if rng.random() < 0.3:  # read what arrives for a moment (the storm keeps coming)
                deadline = time.monotonic() + rng.uniform(0.0, 0.3)
                while time.monotonic() < deadline:
                    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.05)
            else:  # or not at all: the frames pile up in daphne
                await asyncio.sleep(rng.uniform(0.0, 0.3))
        except ConnectionClosed:
            endings["closed by server"] += 1
            ended[channel] = "closed by server"
            return
        how = rng.random()
        if how < 0.4:
            how = "close 1000"
            await ws.close()
        elif how < 0.7:
            how = "tcp reset"
            ws.transport.abort()
        else:
            how = "fin, no close frame"
            ws.transport.close()
        endings[how] += 1
        ended[channel] = how

    async def user() -> None:
        while time.monotonic() < end and budget[0] > 0:
            budget[0] -= 1
            await session()

    await asyncio.gather(*(user() for _ in range(USERS)))


async def wait_for(predicate: Any, timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


async def test_churn_leaves_no_membership_of_a_closed_consumer(redis_server_binary: str) -> None:
    raise_nofile()
    started = time.monotonic()
    rooms = [str(random.randrange(10**9, 10**10)) for _ in range(ROOMS)]
    with RedisServer() as redis, FuzzWorkers(redis.url) as workers:
        stayers = [WSClient(w, kind, rooms[0], hello=True)
                   for w in workers.workers for kind in TRACED_KINDS]
        await asyncio.gather(*(s.open() for s in stayers))
        live = {s.channel for s in stayers}
        sessions: dict[str, str] = {}
        ended: dict[str, str] = {}
        endings: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        stop = asyncio.Event()
        storming = asyncio.ensure_future(storm(workers, rooms, stop, statuses))
        await churn(workers, rooms, CHURN_S, sessions, endings, failures, ended)
        await asyncio.sleep(1.0)  # the storm reaches the stayers once more
        stop.set()
        await storming
        churn_s = round(time.monotonic() - started, 1)

        # Every churned client is gone; daphne ends its application instances (up to its
        # 10 s application_close_timeout for one stuck in channels-redis's shared read).
        def only_stayers() -> bool:
            members = group_sets(redis, workers.prefix)
            return (members.get(f"fuzz_{rooms[0]}", set()) == live
                    and all(not m for g, m in members.items() if g != f"fuzz_{rooms[0]}"))

        await wait_for(only_stayers, 20)
        with_stayers = group_sets(redis, workers.prefix)
        stayer_events = {s.name: len(s.events) for s in stayers}
        stayers_closed = [s.name for s in stayers if s.closed]
        for stayer in stayers:
            await stayer.close()

        def empty() -> bool:
            return all(not m for m in group_sets(redis, workers.prefix).values())

        await wait_for(empty, 15)
        after = group_sets(redis, workers.prefix)

        def counted_down() -> bool:
            return all(active_connections(workers.receiver, w.name, "websocket") == 0
                       for w in workers.workers)

        await wait_for(counted_down, 15)
        counts = {w.name: active_connections(workers.receiver, w.name, "websocket")
                  for w in workers.workers}
        found = tracebacks({w.name: w.output() for w in workers.workers})
        leaked = {g: sorted(m) for g, m in after.items() if m}
        leaked_all = [c for m in after.values() for c in m]
        strangers = {g: sorted(m - live) for g, m in with_stayers.items() if m - live}
        report = {
            "churn_s": churn_s,
            "sessions": len(sessions),
            "sessions_by_kind": dict(Counter(sessions.values())),
            "endings": dict(endings),
            "failed_connects": dict(failures),
            "storm_broadcasts": dict(statuses),
            "stayer_frames": stayer_events,
            "members_not_live_while_stayers_connected": sum(len(m) for m in strangers.values()),
            "memberships_left_after_everyone_left": len(leaked_all),
            "leaked_by_kind": dict(Counter(sessions.get(c, "stayer") for c in leaked_all)),
            "leaked_by_ending": dict(Counter(ended.get(c, "stayer") for c in leaked_all)),
            "active_connections_websocket": counts,
            "tracebacks": {n: dict(Counter(lines)) for n, lines in found.items()},
            "killed_after_close_timeout": {w.name: w.output().count("took too long to shut down")
                                           for w in workers.workers},
        }
        print("membership churn:", json.dumps(report, indent=1))

        problems = []
        if not workers.alive():
            problems.append("a worker died")
        if len(sessions) < 200:
            problems.append(f"too little churn: {len(sessions)} sessions")
        if stayers_closed:
            problems.append(f"stayers closed during the churn: {stayers_closed}")
        if strangers:
            problems.append(
                f"{report['members_not_live_while_stayers_connected']} members are no live "
                f"consumer while the stayers are connected, e.g. {sorted(strangers.items())[:1]}")
        if leaked:
            problems.append(
                f"{len(leaked_all)} memberships left after every client left (of "
                f"{len(sessions)} sessions; by kind {report['leaked_by_kind']}, by ending "
                f"{report['leaked_by_ending']}); tracebacks {report['tracebacks']}")
        if any(value != 0 for value in counts.values()):
            problems.append(f"active_connections not back to 0: {counts}")
        unexpected = {n: sorted({x for x in lines if not x.startswith(SEND_AFTER_RESET)})
                      for n, lines in found.items()}
        if any(unexpected.values()):
            problems.append(f"tracebacks: {unexpected}")
        assert problems == [], "\n".join(problems)
    assert time.monotonic() - started < 140
