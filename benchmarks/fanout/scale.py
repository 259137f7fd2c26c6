"""``python -m benchmarks.fanout --scale 20,200,1000``: throughput, worker CPU and spans by N.

The variants (default: plain, otel-default, otel-every) run at each client count, with M
chosen so N * M stays about ``--scale-deliveries`` (40,000; at least 20 broadcasts); ratios
are to plain at the same count.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.fanout.report import print_run, summarize
from benchmarks.fanout.run import Result, round_order, run_variant
from benchmarks.fanout.variants import resolve_variant


async def run_scale(args: argparse.Namespace, results: list[Result]) -> list[dict[str, Any]]:
    """Every variant at every client count, rounds interleaved within a count."""
    rows: list[dict[str, Any]] = []
    for clients in args.scale_counts:
        broadcasts = max(20, round(args.scale_deliveries / clients))
        warmup = max(3, min(args.warmup, broadcasts // 4))
        run_args = argparse.Namespace(**{**vars(args), "clients": clients,
                                         "broadcasts": broadcasts, "warmup": warmup})
        print(f"N={clients}: {broadcasts} broadcasts ({clients * broadcasts:,} deliveries), "
              f"warm-up {warmup}", flush=True)
        batch: list[Result] = []
        for round_no in range(1, args.rounds + 1):
            for name in round_order(args.variant_list, round_no):
                result = await run_variant(resolve_variant(name), round_no, run_args)
                print_run(result)
                batch.append(result)
        results.extend(batch)
        rows.extend(summarize(batch, args.variant_list))
    return rows


def scale_table(rows: list[dict[str, Any]]) -> str:
    """One line per (client count, variant); ratios to plain at that count."""
    lines = [
        "| clients | broadcasts | variant | deliveries/s (ratio to plain) "
        "| worker CPU / delivery (vs plain) | process spans / broadcast "
        "| all spans / broadcast |",
        "|--:|--:|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['clients'] or '-'} | {row['broadcasts'] or '-'} | {row['label']} "
            f"| {row['rate']:,.0f} ({row['ratio']:.3f}) "
            f"| {row['worker_cpu_us']:.0f} µs ({row['worker_cpu_vs_plain']:.2f}×) "
            f"| {row['process_per_broadcast']:.1f} | {row['spans_per_broadcast']:.1f} |"
        )
    return "\n".join(lines)
