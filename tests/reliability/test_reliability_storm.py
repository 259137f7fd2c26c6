"""Reconnect storm: hundreds of WebSocket and SSE clients connecting at once to two workers.

Two daphne workers share our own ``redis-server`` (so the storm never loads
the shared one). 300 WebSocket and 300 SSE clients, shuffled together and
alternating between the workers, connect in ten rooms at the same moment;
they stay idle for 6 s (longer than redis-py 8's default 5 s socket timeout),
then one broadcast per room must reach every one of them.

Side by side, the evidence for check ``otel_channels.W011``:

* the host dict the checks recommend (``socket_timeout: 30``,
  ``max_connections: 2000``): every handshake accepted, every SSE request
  200, no close, every broadcast delivered;
* the stock ``"redis://..."`` string: redis-py's pool of 100 connections per
  process raises ``MaxConnectionsError`` under the storm of per-WebSocket
  ``group_add`` calls and handshakes fail with HTTP 500 (99 served per
  worker); SSE mostly holds, its hub making one ``group_add`` per group per
  worker, but a join that lands on the exhausted pool fails and its streams
  end at once (browsers retry), and the 5 s ``socket_timeout`` closes the
  idle consumer holding the blocking read (W010).

Both runs give daphne ``--websocket_connect_timeout 30`` and a listen backlog
of 1024: by default daphne rejects a WebSocket not accepted within 5 s and
listens with Twisted's backlog of 50. On a shared two-core machine the whole
storm's CPU (two workers, Redis, the clients) can take longer than 5 s, and
connection attempts beyond the backlog are dropped by the kernel and retried
by the client seconds later; those are capacity limits of daphne's own
(``benchmarks/storm.py`` measures them at 1,000 + 1,000 with the defaults),
not the ones these tests are about.
"""

from __future__ import annotations

import json
import random

import pytest

from tests.support.reliability import (
    RECOMMENDED_HOSTS,
    STOCK_HOSTS,
    Cluster,
    RedisServer,
    StormResult,
    raise_nofile,
    require_redis_server,
    storm,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(90)]

N_WEBSOCKET = 300
N_SSE = 300
ROOMS = 10
#: Sockets this process holds at the peak, plus headroom for Redis, OTLP and pytest.
NEEDED_FDS = N_WEBSOCKET + N_SSE + 200


@pytest.fixture
def storm_ready() -> int:
    """``redis-server`` on PATH and enough file descriptors; returns the raised soft limit."""
    require_redis_server("the storm runs its own")
    soft, _ = raise_nofile()
    if soft < NEEDED_FDS:
        pytest.skip(f"RLIMIT_NOFILE hard limit {soft} < {NEEDED_FDS} needed for the storm")
    return soft


async def run_storm(hosts: str, nofile: int) -> StormResult:
    rooms = [str(random.randrange(10**9, 10**10)) for _ in range(ROOMS)]
    with RedisServer() as redis, Cluster(redis.url, hosts=hosts, connect_timeout=30,
                                         backlog=1024) as cluster:
        result = await storm(cluster, N_WEBSOCKET, N_SSE, rooms)
        print(f"storm ({hosts} hosts):", json.dumps(result.as_dict()))
        assert cluster.alive()
        # The workers inherited the raised limit and hold every socket of the storm.
        for worker in cluster.workers:
            assert result.worker_nofile[worker.name] == nofile
            assert result.worker_fds[worker.name] >= (N_WEBSOCKET + N_SSE) // 2
    return result


async def test_storm_served_with_the_recommended_host_config(storm_ready: int) -> None:
    result = await run_storm(RECOMMENDED_HOSTS, storm_ready)
    assert result.websocket == {"accepted": N_WEBSOCKET}
    assert result.sse == {"http 200": N_SSE}
    assert result.closed_while_idle == {}  # no 1011 after 6 s idle (W010's socket_timeout)
    assert result.broadcasts == {"202": ROOMS}
    assert result.delivered_websocket == N_WEBSOCKET
    assert result.delivered_sse == N_SSE and result.sse_ended == 0
    assert result.max_connections_errors == {"worker-a": 0, "worker-b": 0}
    assert result.exceptions == {"worker-a": {}, "worker-b": {}}


async def test_storm_fails_with_the_stock_host_string(storm_ready: int) -> None:
    result = await run_storm(STOCK_HOSTS, storm_ready)
    accepted = result.websocket.get("accepted", 0)
    refused = result.websocket.get("http 500", 0)
    # redis-py's pool: 100 connections per worker process, one held by the layer's
    # blocking read; group_add calls past that raise and the handshake fails.
    assert refused > 0 and accepted + refused == N_WEBSOCKET, result.websocket
    assert accepted <= 2 * 100, result.websocket
    # Each refused handshake is one MaxConnectionsError traceback in its worker's log
    # (an SSE join that hit the same exhausted pool adds its own).
    assert sum(result.max_connections_errors.values()) >= refused
    for found in result.exceptions.values():
        assert "redis.exceptions.MaxConnectionsError: Too many connections" in found
    # SSE: one group_add per group per worker, so most streams are served; a join that
    # lands on the pool the WebSocket storm exhausted fails, and its streams end at once
    # (200, empty body: EventSource retries); none hangs.
    assert result.sse == {"http 200": N_SSE}
    # How many joins hit the exhausted pool depends on timing (on a slow run all of them
    # did): the invariant is that every stream either got the broadcast or ended.
    assert result.delivered_sse + result.sse_ended == N_SSE, result.as_dict()
