"""The network run's tables: medians per variant over rounds, per client count for ``--scale``,
and the one line printed after each run."""

from __future__ import annotations

from typing import Any

from benchmarks.fanout.common import median as _median
from benchmarks.fanout.run import Result
from benchmarks.fanout.variants import resolve_variant


def summarize(results: list[Result], variants: list[str]) -> list[dict[str, Any]]:
    """Median per variant; the ratio is the median of per-round ratios to ``plain``.

    ``results`` must share one client count (``--scale`` calls this once per count).
    """
    plain = {r.round: r.rate for r in results if r.variant == "plain" and not r.error}
    plain_cpu = {r.round: r.per_delivery(r.worker_cpu) for r in results
                 if r.variant == "plain" and not r.error}
    rows = []
    for name in variants:
        runs = [r for r in results if r.variant == name and not r.error]
        ratios = [r.rate / plain[r.round] for r in runs if plain.get(r.round)]
        rows.append({
            "variant": name,
            "label": resolve_variant(name).label,
            "clients": runs[0].clients if runs else None,
            "broadcasts": runs[0].broadcasts if runs else None,
            "runs": len(runs),
            "failed": sum(1 for r in results if r.variant == name and r.error),
            "rate": _median([r.rate for r in runs]),
            "ratio": _median(ratios),
            "ratios": ratios,
            "p50_ms": _median([r.percentile(0.50) * 1e3 for r in runs]),
            "p99_ms": _median([r.percentile(0.99) * 1e3 for r in runs]),
            "worker_cpu_us": _median([r.per_delivery(r.worker_cpu) * 1e6 for r in runs]),
            "worker_cpu_vs_plain": _median([r.per_delivery(r.worker_cpu) / plain_cpu[r.round]
                                            for r in runs if plain_cpu.get(r.round)]),
            "client_cpu_us": _median([r.per_delivery(r.client_cpu) * 1e6 for r in runs]),
            "client_core": _median([r.client_cpu / r.elapsed for r in runs]),
            "redis_cpu_us": _median([r.per_delivery(r.redis_cpu) * 1e6 for r in runs]),
            "spans_per_delivery": _median([r.per_delivery(r.spans) for r in runs]),
            "process_per_broadcast": _median([r.per_broadcast("process") for r in runs]),
            "deliver_per_broadcast": _median([r.per_broadcast("deliver") for r in runs]),
            "spans_per_broadcast": _median([r.per_broadcast() for r in runs]),
            "gc_us": _median([r.per_delivery(r.gc_seconds) * 1e6 for r in runs]),
            "sink_cpu_us": _median([r.per_delivery(r.sink_cpu) * 1e6 for r in runs
                                    if r.sink_spans is not None]),
            "lost": sum(r.expected - r.delivered for r in runs),
            "unexpected": sum(r.unexpected for r in runs),
        })
    return rows


def _spans_cell(row: dict[str, Any]) -> str:
    return (f"{row['spans_per_broadcast']:.1f} ({row['process_per_broadcast']:.1f}, "
            f"{row['deliver_per_broadcast']:.1f})")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | deliveries/s | ratio to plain | p50 latency | p99 latency "
        "| worker CPU / delivery (vs plain) | of which GC | client CPU / delivery "
        "(share of a core) | spans / delivery | spans / broadcast (process, deliver) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['rate']:,.0f} | {row['ratio']:.3f} "
            f"| {row['p50_ms']:.1f} ms | {row['p99_ms']:.1f} ms "
            f"| {row['worker_cpu_us']:.0f} µs ({row['worker_cpu_vs_plain']:.2f}×) "
            f"| {row['gc_us']:.0f} µs | {row['client_cpu_us']:.0f} µs "
            f"({row['client_core']:.0%}) | {row['spans_per_delivery']:.3f} "
            f"| {_spans_cell(row)} |"
        )
    return "\n".join(lines)


def print_run(result: Result) -> None:
    head = f"  round {result.round} N={result.clients:<5} {result.variant:<18}"
    if result.error:
        print(f"{head} FAILED: {result.error}", flush=True)
        return
    sink = ""
    if result.sink_spans is not None:
        sink = (f"  sink got {result.sink_spans}/{result.spans} spans, "
                f"{result.per_delivery(result.sink_cpu) * 1e6:.0f} µs/d")
    print(
        f"{head} {result.rate:8,.0f} deliveries/s  "
        f"p50 {result.percentile(0.5) * 1e3:6.1f} ms  p99 {result.percentile(0.99) * 1e3:6.1f} ms"
        f"  worker {result.per_delivery(result.worker_cpu) * 1e6:4.0f} µs/d"
        f" (gc {result.per_delivery(result.gc_seconds) * 1e6:3.0f})"
        f"  client {result.per_delivery(result.client_cpu) * 1e6:3.0f} µs/d"
        f" ({result.client_cpu / result.elapsed:.0%} core)"
        f"  spans/d {result.per_delivery(result.spans):.3f}"
        f"  spans/broadcast {result.per_broadcast():.1f}"
        f" (process {result.per_broadcast('process'):.1f},"
        f" deliver {result.per_broadcast('deliver'):.1f})"
        f"  lost {result.expected - result.delivered}" + sink
        + (f"  UNEXPECTED {result.unexpected}" if result.unexpected else ""),
        flush=True,
    )


def sink_note(rows: list[dict[str, Any]]) -> str:
    otlp = [r for r in rows if r["sink_cpu_us"] == r["sink_cpu_us"]]
    if not otlp:
        return ""
    return "\nOTLP sink CPU per delivery (not in the worker column): " + ", ".join(
        f"{r['variant']} {r['sink_cpu_us']:.1f} µs" for r in otlp)


