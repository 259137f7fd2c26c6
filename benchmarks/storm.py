"""Reconnect storm, churn soak and Redis restart on two daphne workers: the full-size runs.

Usage::

    .venv/bin/python benchmarks/storm.py                     # all three, full size (~4 min)
    .venv/bin/python benchmarks/storm.py --only storm        # 1,000 WS + 1,000 SSE, 3 configs
    .venv/bin/python benchmarks/storm.py --only soak --soak-seconds 60
    .venv/bin/python benchmarks/storm.py --only faults --fault-clients 25
    .venv/bin/python benchmarks/storm.py --json /tmp/storm.json

Everything runs on 127.0.0.1: two ``daphne tests.project.asgi:application``
workers (the test suite's project, traced consumers and the SSE view) on a
``redis-server`` of the benchmark's own (no persistence, free port), with the
same harness as ``tests/reliability/test_reliability_*.py`` (``tests/support/reliability/``).
The benchmark raises its ``RLIMIT_NOFILE`` to the hard limit first; the
workers inherit it.

* **storm**: ``--websocket`` WebSocket and ``--sse`` SSE clients, shuffled
  together, connect at once (alternating workers, ten rooms), stay idle 6 s,
  then one broadcast per room must reach all of them. Three configurations:
  the recommended host dict under daphne's defaults (a WebSocket must be
  accepted within 5 s; ``-b``/``-p`` listen with Twisted's backlog of 50), the
  same with ``--websocket_connect_timeout 30`` and a 4096 backlog
  (``-e tcp:port=...:backlog=4096``), and the stock ``"redis://..."`` string
  (W010 / W011) on that tuned daphne. "listen overflows" is the kernel's
  machine-wide ``ListenOverflows`` count during the connects.
* **soak**: 30 concurrent users churn WebSocket chat sessions and SSE streams
  for ``--soak-seconds`` after a 10 s warm-up, ending most sessions with a TCP
  reset or a FIN without a close frame; RSS and the leak counters of
  ``/debug/state/`` are sampled every 10 s.
* **faults**: ``--fault-clients`` chat WebSockets and as many SSE streams per
  worker, a broadcast every 100 ms, Redis SIGKILLed for 3 s and restarted
  empty; events lost per client, by cause.

Prints markdown tables (the ``## Reconnect storm and soak`` section of
``benchmarks/README.md``) and, with ``--json``, the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.otlp import OTLPReceiver  # noqa: E402
from tests.support.reliability import (  # noqa: E402
    RECOMMENDED_HOSTS,
    STOCK_HOSTS,
    Cluster,
    RedisServer,
    active_connections,
    churn,
    exceptions_in,
    group_members,
    raise_nofile,
    redis_fault_run,
    storm,
    worker_state,
)

#: (label, hosts, daphne --websocket_connect_timeout, listen backlog); None: daphne's default.
STORM_CONFIGS = (
    ("recommended host dict; daphne defaults (5 s handshake, backlog 50)",
     RECOMMENDED_HOSTS, None, None),
    ("recommended host dict; daphne 30 s handshake, backlog 4096", RECOMMENDED_HOSTS, 30, 4096),
    ("stock 'redis://...' string; daphne 30 s handshake, backlog 4096", STOCK_HOSTS, 30, 4096),
)


def rooms(n: int) -> list[str]:
    return [str(random.randrange(10**9, 10**10)) for _ in range(n)]


async def run_storms(n_websocket: int, n_sse: int) -> list[dict[str, Any]]:
    results = []
    for label, hosts, timeout, backlog in STORM_CONFIGS:
        with RedisServer() as redis, Cluster(redis.url, hosts=hosts, connect_timeout=timeout,
                                             backlog=backlog) as cluster:
            result = await storm(cluster, n_websocket, n_sse, rooms(10))
            alive = cluster.alive()
        row = {"config": label, "alive": alive, **result.as_dict()}
        results.append(row)
        print(f"storm [{label}]: {json.dumps(row)}", flush=True)
    return results


async def run_soak(seconds: float, users: int = 30) -> dict[str, Any]:
    room_names = rooms(5)
    with RedisServer() as redis, OTLPReceiver() as receiver, \
            Cluster(redis.url, receiver) as cluster:
        fresh = {w.name: await worker_state(w) for w in cluster.workers}
        warm = await churn(cluster, room_names, 10.0, users=users, seed=1)
        await asyncio.sleep(12)  # daphne's 10 s application_close_timeout, then settled
        samples = [{"t": 0, **{w.name: await worker_state(w) for w in cluster.workers}}]
        totals: dict[str, Any] = {}
        for step in range(max(1, int(seconds // 10))):
            stats = await churn(cluster, room_names, 10.0, users=users, seed=100 + step)
            for key, value in stats.as_dict().items():
                if isinstance(value, dict):
                    bucket = totals.setdefault(key, {})
                    for k, v in value.items():
                        bucket[k] = bucket.get(k, 0) + v
                else:
                    totals[key] = totals.get(key, 0) + value
            samples.append({"t": (step + 1) * 10,
                            **{w.name: await worker_state(w) for w in cluster.workers}})
        await asyncio.sleep(12)
        after = {w.name: await worker_state(w) for w in cluster.workers}
        for _ in range(40):
            counts = {f"{w.name} {p}": active_connections(receiver, w.name, p)
                      for w in cluster.workers for p in ("websocket", "sse")}
            if all(v == 0 for v in counts.values()):
                break
            await asyncio.sleep(0.25)
        members = group_members(redis, cluster.prefix)
        result = {
            "seconds": seconds, "users": users, "warmup": warm.as_dict(), "soak": totals,
            "fresh": fresh, "samples": samples, "after": after, "active_connections": counts,
            "group_members": members, "alive": cluster.alive(),
            "tracebacks": {w.name: exceptions_in(w.output()) for w in cluster.workers},
            "killed_after_close_timeout": {
                w.name: w.output().count("took too long to shut down") for w in cluster.workers},
        }
    print(f"soak: {json.dumps(result)}", flush=True)
    return result


async def run_faults(per_worker: int) -> dict[str, Any]:
    with RedisServer() as redis, OTLPReceiver() as receiver, \
            Cluster(redis.url, receiver) as cluster:
        run = await redis_fault_run(redis, receiver, cluster, rooms(1)[0],
                                    chat_per_worker=per_worker, sse_per_worker=per_worker,
                                    recovery_timeout=30.0)
        report = run.accounting()
        report["alive"] = cluster.alive() and not run.died
        report["resets"] = {c.name: [r for _, r, _ in c.resets] for c in run.sse}
    print(f"faults: {json.dumps(report)}", flush=True)
    return report


# -- report ------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 1048576:.1f}"


def storm_table(results: list[dict[str, Any]], n_websocket: int, n_sse: int) -> str:
    lines = [
        f"Storm: {n_websocket:,} WebSocket + {n_sse:,} SSE clients at once, two workers, "
        "ten rooms; 6 s idle, then one broadcast per room.",
        "",
        "| configuration | WS handshakes accepted | WS failed (how) | SSE 200 | "
        "connect time | listen overflows | closed while idle | broadcast reached WS / SSE | "
        "MaxConnectionsError |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        failed = {k: v for k, v in r["websocket"].items() if k != "accepted"}
        lines.append(
            f"| {r['config']} | {r['websocket'].get('accepted', 0)} / {n_websocket} | "
            f"{', '.join(f'{v} {k}' for k, v in failed.items()) or '0'} | "
            f"{r['sse'].get('http 200', 0)} / {n_sse} | {r['connect_s']} s | "
            f"{r['listen_overflows']} | "
            f"{', '.join(f'{v} x {k}' for k, v in r['closed_while_idle'].items()) or '0'} | "
            f"{r['delivered_websocket']} / {r['delivered_sse']}"
            f"{f' ({n} SSE ended)' if (n := r.get('sse_ended')) else ''} | "
            f"{sum(r['max_connections_errors'].values())} |")
    nofile = results[0]["worker_nofile"] if results else {}
    fds = max((max(r["worker_fds"].values()) for r in results), default=0)
    lines += ["", f"Worker RLIMIT_NOFILE (inherited): {sorted(set(nofile.values()))}; "
              f"most open fds in one worker at the peak: {fds}."]
    return "\n".join(lines)


def soak_table(result: dict[str, Any]) -> str:
    soak = result["soak"]
    samples = result["samples"]
    names = [n for n in samples[0] if n != "t"]
    lines = [
        f"Soak: {result['users']} users for {result['seconds']:.0f} s after a 10 s warm-up: "
        f"{soak['websocket_sessions']:,} WebSocket sessions ({soak['frames_sent']:,} chat "
        f"frames, {soak['frames_received']:,} frames received), {soak['sse_sessions']:,} SSE "
        f"streams ({soak['events_received']:,} events); endings: "
        + ", ".join(f"{v:,} {k}" for k, v in sorted(soak["endings"].items())) + ".",
        "",
        "| worker | t (s) | RSS (MiB) | tasks | hub groups / streams | "
        "channels-redis orphan queues / messages | fds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for sample in [*samples, {"t": "after", **result["after"]}]:
            s = sample[name]
            lines.append(
                f"| {name} | {sample['t']} | {mib(s['rss_bytes'])} | {s['tasks']} | "
                f"{s['hub']['groups']} / {s['hub']['streams']} | "
                f"{s['receive_buffers']} / {s['receive_buffered_messages']} | {s['fds']} |")
    growth = {n: result["after"][n]["rss_bytes"] - samples[0][n]["rss_bytes"] for n in names}
    lines += [
        "",
        "RSS growth after warm-up: " + ", ".join(f"{n} {mib(g)} MiB" for n, g in growth.items())
        + f"; active connections after: {result['active_connections']}; group members left in "
        f"Redis: {sum(result['group_members'].values())}; tracebacks: "
        + ", ".join(f"{n} {len(t)}" for n, t in result["tracebacks"].items())
        + "; consumers killed after daphne's close timeout: "
        + ", ".join(f"{n} {k}" for n, k in result["killed_after_close_timeout"].items()) + ".",
    ]
    return "\n".join(lines)


def faults_table(report: dict[str, Any], per_worker: int) -> str:
    rows = report["clients"]
    lines = [
        f"Redis SIGKILL for {report['outage_s']} s, restarted empty: {2 * per_worker} chat "
        f"WebSockets + {2 * per_worker} SSE streams on two workers, a broadcast every 100 ms "
        f"({report['broadcasts']} sent: {report['accepted']} accepted, "
        f"{report['refused_during_outage']} refused during the outage, "
        f"{report['refused_in_flight_at_kill']} in flight at the kill, "
        f"{report['refused_after_restart']} after the restart); workers alive: "
        f"{report['alive']}; every client back {report['all_rejoined_after_restart_s']} s "
        "after the restart.",
        "",
        "| clients | lost in flight at the kill | lost after restart, before rejoin | "
        "lost after rejoin | rejoined after restart (s) | duplicates |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("ws", "sse"):
        mine = [r for n, r in rows.items() if n.split("-")[1].startswith(kind)]
        if not mine:
            continue

        def span(key: str, rows: list[dict[str, Any]] = mine) -> str:
            values = [r[key] for r in rows]
            return (f"{min(values)}–{max(values)} (median {statistics.median(values):g})"
                    if min(values) != max(values) else f"{values[0]}")

        lines.append(
            f"| {len(mine)} {'WebSocket' if kind == 'ws' else 'SSE'} | "
            f"{span('lost_in_flight_at_kill')} | {span('lost_after_restart_before_rejoin')} | "
            f"{span('lost_after_rejoin')} | {span('rejoined_after_restart_s')} | "
            f"{span('duplicates')} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("storm", "soak", "faults"))
    parser.add_argument("--websocket", type=int, default=1000)
    parser.add_argument("--sse", type=int, default=1000)
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--fault-clients", type=int, default=25, help="per kind per worker")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    soft, hard = raise_nofile()
    print(f"RLIMIT_NOFILE {soft} (hard {hard})", flush=True)
    need = args.websocket + args.sse + 500
    if soft < need and args.only in (None, "storm"):
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} the storm needs")
    started = time.monotonic()
    out: dict[str, Any] = {}
    tables = []
    if args.only in (None, "storm"):
        out["storm"] = await run_storms(args.websocket, args.sse)
        tables.append(storm_table(out["storm"], args.websocket, args.sse))
    if args.only in (None, "soak"):
        out["soak"] = await run_soak(args.soak_seconds)
        tables.append(soak_table(out["soak"]))
    if args.only in (None, "faults"):
        out["faults"] = await run_faults(args.fault_clients)
        tables.append(faults_table(out["faults"], args.fault_clients))
    print("\n\n".join(tables))
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
