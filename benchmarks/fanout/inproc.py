"""``python -m benchmarks.fanout --inproc``: CPU per delivery of each variant in one process.

Each variant runs in a fresh child (``benchmarks.fanout.instructions``) per round, rounds
interleaved, on channels-redis with a prefix unique to the run: consumers driven directly,
no daphne, no client sockets. Less noisy than the network run, and it isolates the
consumer-side cost; the table adds what the garbage collector did.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid

from benchmarks.fanout.common import ROOT, median, source_fingerprint
from benchmarks.fanout.variants import resolve_variant
from tests.support.redis_layer import delete_keys


def run_inproc(args: argparse.Namespace) -> int:
    """Each variant in a fresh child process, rounds interleaved; median CPU per delivery."""
    print(f"in-process: {args.clients} consumers, {args.broadcasts} broadcasts, "
          f"{args.rounds} round(s)\n{source_fingerprint()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in args.variant_list}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FANOUT_"))}
    for round_no in range(1, args.rounds + 1):
        for name in args.variant_list:
            prefix = f"fanout-{uuid.uuid4().hex[:10]}:"
            env = {**base, "FANOUT_PREFIX": prefix, "REDIS_URL": args.redis_url}
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "benchmarks.fanout.instructions", name,
                     "-n", str(args.clients), "-m", str(args.broadcasts),
                     "--warmup", str(args.warmup)],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout,
                )
            finally:
                delete_keys(args.redis_url, prefix)
            if done.returncode != 0:
                print(f"  round {round_no} {name:<11} FAILED:\n{done.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            samples[name].append(result)
            print(f"  round {round_no} {name:<11} {result['cpu_us']:6.1f} µs CPU per delivery "
                  f"({result['wall_us']:.1f} µs wall, GC {result['gc_us']:.1f} µs)", flush=True)

    def middle(name: str, key: str) -> float:
        return median([r[key] for r in samples[name]])

    plain = middle("plain", "cpu_us") if samples.get("plain") else 0.0
    print(f"\nin-process fan-out (one process, RedisChannelLayer, no daphne, no client "
          f"sockets), medians of {args.rounds}:\n\n"
          "| variant | CPU / delivery | over plain | GC / delivery (full collections) "
          "| collections per 1,000 deliveries, young / full | tracked objects |\n"
          "|---|--:|--:|--:|--:|--:|")
    for name in args.variant_list:
        if not samples[name]:
            continue
        cpu = middle(name, "cpu_us")
        print(f"| {resolve_variant(name).label} | {cpu:.1f} µs | {cpu - plain:+.1f} µs "
              f"| {middle(name, 'gc_us'):.1f} µs ({middle(name, 'gc_full_us'):.1f} µs) "
              f"| {middle(name, 'young_per_1k'):.1f} / {middle(name, 'full_per_1k'):.2f} "
              f"| {middle(name, 'tracked'):,.0f} |")
    return 0
