"""The in-process fan-out, one variant in one process: what ``benchmarks/fanout_instructions.sh``
counts under callgrind and what ``python -m benchmarks.fanout --inproc`` runs in a child per
variant and round.

``python -m benchmarks.fanout.instructions VARIANT -n N -m M --warmup W`` drives N consumers of
one group through their ASGI interface (no daphne, no sockets), sends W unmeasured broadcasts,
then M measured ones, and prints one JSON line: CPU and wall time per delivery and what the
garbage collector did meanwhile. The layer is channels-redis (``FANOUT_PREFIX`` and
``REDIS_URL`` as the parent sets them), or in process: ``FANOUT_LAYER=redislike`` (delivers as
channels-redis does, see ``benchmarks/_fanout_app/layers.py``) or ``memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

from benchmarks.fanout.common import QUIET_WAIT
from benchmarks.fanout.variants import ALIASES, OTLP_SUFFIX, VARIANTS, resolve_variant

_SCOPE = {
    "type": "websocket", "path": "/ws/fanout/", "raw_path": b"/ws/fanout/", "query_string": b"",
    "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000), "subprotocols": [], "scheme": "ws",
}


async def fan_out_in_process(clients: int, broadcasts: int, warmup: int) -> dict[str, float]:
    """In a process configured for one variant: fan out, return CPU per delivery and what the
    garbage collector did meanwhile."""
    from channels.layers import get_channel_layer

    from benchmarks._fanout_app import asgi, otel  # SDK (or not) + django.setup()

    layer = get_channel_layer()
    counts = {"websocket.accept": 0, "websocket.send": 0}
    target = ("websocket.accept", clients)
    reached = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in counts:
            counts[kind] += 1
            if kind == target[0] and counts[kind] >= target[1]:
                reached.set()

    inboxes = [asyncio.Queue[dict[str, Any]]() for _ in range(clients)]
    tasks = [asyncio.create_task(asgi.websocket_app(dict(_SCOPE), inbox.get, send))
             for inbox in inboxes]
    for inbox in inboxes:
        await inbox.put({"type": "websocket.connect"})
    await asyncio.wait_for(reached.wait(), 30)  # every consumer joined the group and accepted

    async def fan_out(count: int) -> None:
        nonlocal target
        for i in range(count):
            target = ("websocket.send", counts["websocket.send"] + clients)
            reached.clear()
            await layer.group_send("fanout", {"type": "fanout.message", "i": i, "t": time.time()})
            await asyncio.wait_for(reached.wait(), 60)

    await fan_out(warmup)
    await asyncio.sleep(QUIET_WAIT)  # let the warm-up's ``deliver`` summaries be written
    tracked = len(gc.get_objects())  # what every full collection walks
    gc0 = dict(otel._state)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await fan_out(broadcasts)
    await asyncio.sleep(QUIET_WAIT)  # ... and the measured broadcasts' (in the count)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0 - QUIET_WAIT
    gc1 = dict(otel._state)  # before the teardown below, whose collections are not ours
    for inbox in inboxes:
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
    # Measured already. On the Redis layer, now and then one consumer (plain Channels
    # too) does not end: cancelled while it held channels-redis's shared blocking read,
    # it waits for a message that never comes. Do not fail the round for it.
    _, stuck = await asyncio.wait(tasks, timeout=10)
    for task in stuck:
        task.cancel()
    deliveries = clients * broadcasts
    return {
        "cpu_us": cpu / deliveries * 1e6, "wall_us": wall / deliveries * 1e6,
        "gc_us": (gc1["gc_seconds"] - gc0["gc_seconds"]) / deliveries * 1e6,
        "gc_full_us": (gc1["gc_full_seconds"] - gc0["gc_full_seconds"]) / deliveries * 1e6,
        "young_per_1k": (gc1["gc_young"] - gc0["gc_young"]) / deliveries * 1e3,
        "full_per_1k": (gc1["gc_full"] - gc0["gc_full"]) / deliveries * 1e3,
        "tracked": tracked,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout.instructions",
        description="One variant's in-process fan-out (the callgrind and --inproc child).")
    parser.add_argument("variant", help=f"one of: {', '.join([*VARIANTS, *ALIASES])}")
    parser.add_argument("-n", "--clients", type=int, default=200, help="consumers in the group")
    parser.add_argument("-m", "--broadcasts", type=int, default=200, help="measured broadcasts")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured broadcasts first")
    args = parser.parse_args(argv)
    try:
        variant = resolve_variant(args.variant)
    except (KeyError, ValueError):
        parser.error(f"unknown variant {args.variant!r}")
    if variant.env.get("FANOUT_EXPORTER"):
        parser.error(f"the in-process modes have no OTLP sink: drop {OTLP_SUFFIX}")
    if args.clients < 2 or args.broadcasts < 1:
        parser.error("need --clients >= 2, --broadcasts >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line with the result."""
    args = parse_args(argv)
    os.environ.update(resolve_variant(args.variant).env)
    result = asyncio.run(fan_out_in_process(args.clients, args.broadcasts, args.warmup))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
