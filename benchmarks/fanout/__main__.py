"""Fan-out benchmark: broadcasts to N WebSocket clients across two daphne workers over Redis.

Usage::

    .venv/bin/python -m benchmarks.fanout                 # N=200, M=200, 3 rounds, default variants
    .venv/bin/python -m benchmarks.fanout --quick         # a smoke run, under a minute
    .venv/bin/python -m benchmarks.fanout --variants plain,otel-default --rounds 5
    .venv/bin/python -m benchmarks.fanout --scale 20,200,1000     # throughput/CPU/spans vs N
    .venv/bin/python -m benchmarks.fanout --variants plain,otel-default,otel-default+otlp
    .venv/bin/python -m benchmarks.fanout --exporter otlp          # every SDK variant via OTLP
    .venv/bin/python -m benchmarks.fanout --profile /tmp/prof --variants otel-default
    .venv/bin/python -m benchmarks.fanout --inproc -n 100 -m 200 -r 3

Each run starts a fresh pair of daphne workers (``benchmarks/_fanout_app``) on
127.0.0.1 sharing a ``RedisChannelLayer`` with a prefix unique to the run,
connects N clients (alternating between the two workers, all in one group),
and sends M broadcasts. A broadcast is a client frame ``{"i": n, "t": now}``;
the consumer that receives it calls ``group_send`` and every consumer forwards
the message to its client, which computes the delivery latency from ``t``.
At most ``--window`` broadcasts are in flight (sent but not yet received by
all N clients), so the workers stay busy without unbounded queues. The
workers listen with a 4096 backlog and a 30 s WebSocket handshake timeout and
the benchmark raises its ``RLIMIT_NOFILE`` to the hard limit, so 1,000 clients
connect (in batches of ``--connect-concurrency``).

Variants (each round runs them in order, so rounds interleave: ABCDE ABCDE);
``*`` marks the default list:

* ``plain``*          plain Channels consumer, no otel_channels app, no SDK;
* ``otel-default``*   Traced consumer, app installed, SDK, rate 1.0, default
  ``MAX_PROCESS_SPANS_PER_BROADCAST`` (10 ``process`` spans per broadcast per
  worker, a ``deliver`` summary span for the rest); ``otel-1.0`` is an alias;
* ``otel-every``*     the same with the budget off (``None``): a span per delivery;
* ``otel-0.01``*      the same as ``otel-default`` at rate 0.01;
* ``otel-nosdk``*     Traced consumer and app, no SDK (the API's no-op providers);
* ``asgi-mw``*        plain consumer wrapped in OpenTelemetry's ASGI middleware, SDK;
* ``otel-unsampled``  SDK, rate 0.0: every delivery unsampled (for instruction counts);
* ``otel-group0``     SDK, rate 1.0 but ``SAMPLE_RATES`` puts the group at 0 (instruction counts);
* ``otel-budget0``    SDK, rate 1.0, budget 0: every delivery past the budget.

Exporters: SDK variants export through a ``BatchSpanProcessor`` into an
exporter that counts and discards (``--exporter discard``, the default: what
the instrumentation costs), or into the real OTLP/HTTP span and metric
exporters (``--exporter otlp``) posting to a local sink process
(``benchmarks/_fanout_app/sink.py``) that parses every protobuf request and
answers 200 like a collector, so the exporter's whole cost is paid. A
``+otlp`` suffix selects OTLP for one variant only, so one run can compare
both: ``--variants plain,otel-default,otel-default+otlp,asgi-mw,asgi-mw+otlp``
(SDK variants only).

Reported per variant (median over rounds): deliveries/s and its ratio to
``plain`` (median of the per-round ratios), p50 / p99 delivery latency, CPU
time of the two workers per delivery (read from ``/proc``: less noisy than
wall-clock throughput on a shared machine), CPU of the client side per
delivery and its share of one core (to show the clients are not the
bottleneck), spans exported per delivery and per broadcast (``process``,
``deliver`` and all spans, counted by the workers' exporters over the
measured phase; the workers' ``deliver`` summaries are written 0.25 s after a
broadcast goes quiet, so the stats are read after a short quiet wait).

``--scale 20,200,1000`` (:mod:`.scale`) runs the variants (default: plain, otel-default,
otel-every) at each client count, with M chosen so N * M stays about
``--scale-deliveries`` (40,000; at least 20 broadcasts), and prints
throughput and worker CPU relative to plain and spans per broadcast by N.

``--profile DIR`` (:mod:`.profiling`) runs each chosen variant once with ``py-spy record`` attached
to both workers during the measured phase (``pip install py-spy``), writes the
collapsed stacks to DIR and prints where the worker time goes.

``--inproc`` (:mod:`.inproc`) drives the consumers in one process per variant and round
(:mod:`.instructions`, also the program ``benchmarks/fanout_instructions.sh`` counts under
callgrind) and prints CPU per delivery and what the garbage collector did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from benchmarks._worker_cpu import cpu_table
from benchmarks.fanout.common import source_fingerprint
from benchmarks.fanout.inproc import run_inproc
from benchmarks.fanout.profiling import print_profile
from benchmarks.fanout.report import markdown_table, print_run, sink_note, summarize
from benchmarks.fanout.run import OTLPSink, Result, round_order, run_variant
from benchmarks.fanout.scale import run_scale, scale_table
from benchmarks.fanout.variants import (
    ALIASES,
    DEFAULT_VARIANTS,
    OTLP_SUFFIX,
    SCALE_VARIANTS,
    VARIANTS,
    resolve_variant,
    uses_otlp,
)
from tests.support.reliability import raise_nofile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [*VARIANTS, *ALIASES]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout",
        description="Fan-out benchmark: plain Channels vs otel_channels vs the OTel ASGI "
                    "middleware, two daphne workers + Redis, side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-n", "--clients", type=int, default=200,
                        help="WebSocket clients in the group (split across the two workers)")
    parser.add_argument("-m", "--broadcasts", type=int, default=200,
                        help="measured broadcasts per run (each reaches every client)")
    parser.add_argument("-r", "--rounds", type=int, default=3,
                        help="rounds; each runs every variant once, in order (interleaved)")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated list of: {', '.join(names)}; an SDK variant with "
                             f"a '{OTLP_SUFFIX}' suffix uses the OTLP exporter (e.g. "
                             f"otel-default{OTLP_SUFFIX}). Default: {','.join(DEFAULT_VARIANTS)} "
                             f"(with --scale: {','.join(SCALE_VARIANTS)})")
    parser.add_argument("--window", type=int, default=2,
                        help="broadcasts in flight (sent, not yet received by every client)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured broadcasts first")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds one run may take before it is reported as failed")
    parser.add_argument("--exporter", choices=("discard", "otlp"), default="discard",
                        help="span/metric exporter of every SDK variant: count-and-discard, or "
                             "the real OTLP/HTTP exporters posting to a local sink process that "
                             f"parses them (per variant: the '{OTLP_SUFFIX}' suffix)")
    parser.add_argument("--scale", metavar="N,N,...",
                        help="run the variants at each of these client counts (M scaled so "
                             "N*M is about --scale-deliveries) and print a table by N")
    parser.add_argument("--scale-deliveries", type=int, default=40_000,
                        help="--scale: measured deliveries per run (M = this / N, at least 20)")
    parser.add_argument("--connect-concurrency", type=int, default=50,
                        help="client connections opened at once")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="workers call gc.freeze() after start-up (every variant)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--quick", action="store_true",
                        help="N=50, M=60, 1 round: a smoke run under a minute (with --scale: "
                             "1 round, a quarter of the deliveries)")
    parser.add_argument("--json", type=Path, help="also write all runs and the summary here")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="instead of the comparison: run each variant once under py-spy "
                             "and print where the worker time goes")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument("--inproc", action="store_true",
                        help="instead of the comparison: one process, consumers driven directly "
                             "(Redis layer, no daphne, no client sockets), CPU per delivery of "
                             "each variant; less noisy, isolates the consumer-side cost")
    args = parser.parse_args(argv)
    args.scale_counts = []
    if args.scale:
        try:
            args.scale_counts = [int(n) for n in args.scale.split(",") if n.strip()]
        except ValueError:
            parser.error(f"--scale wants comma-separated client counts, got {args.scale!r}")
        if not args.scale_counts or min(args.scale_counts) < 2:
            parser.error("--scale: every client count must be >= 2")
        if args.profile or args.inproc:
            parser.error("--scale does not combine with --profile or --inproc")
    if args.quick:
        if args.scale_counts:
            args.rounds, args.scale_deliveries = 1, args.scale_deliveries // 4
        else:
            args.clients, args.broadcasts, args.rounds, args.warmup = 50, 60, 1, 10
    default = SCALE_VARIANTS if args.scale_counts else DEFAULT_VARIANTS
    requested = [v.strip() for v in (args.variants or ",".join(default)).split(",") if v.strip()]
    args.variant_list = []
    for name in requested:
        try:
            canonical = resolve_variant(name).name  # aliases resolve to their variant
        except KeyError:
            parser.error(f"unknown variant {name!r}; choose from {names} "
                         f"(SDK ones optionally with {OTLP_SUFFIX})")
        except ValueError as exc:
            parser.error(str(exc))
        if canonical not in args.variant_list:
            args.variant_list.append(canonical)
    if args.inproc and any(
            resolve_variant(v).env.get("FANOUT_EXPORTER") for v in args.variant_list):
        parser.error(f"the in-process modes have no OTLP sink: drop {OTLP_SUFFIX}")
    if args.clients < 2 or args.broadcasts < 1 or args.rounds < 1 or args.window < 1:
        parser.error("need --clients >= 2, --broadcasts >= 1, --rounds >= 1, --window >= 1")
    if args.connect_concurrency < 1 or args.scale_deliveries < 1:
        parser.error("need --connect-concurrency >= 1 and --scale-deliveries >= 1")
    return args


def _header(args: argparse.Namespace, what: str) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"fan-out: {what}, window {args.window}, exporter {args.exporter}, "
          f"variants {', '.join(args.variant_list)}\n{source_fingerprint()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"RLIMIT_NOFILE {soft}", flush=True)


async def main_async(args: argparse.Namespace) -> int:
    results: list[Result] = []
    started = time.monotonic()
    if args.profile is not None:
        _header(args, f"{args.clients} clients, {args.broadcasts} broadcasts, profile, 1 run each")
        for name in args.variant_list:
            directory = args.profile / name
            result = await run_variant(resolve_variant(name), 1, args, directory)
            print_run(result)
            print_profile(name, result, directory)
        return 0
    if args.scale_counts:
        _header(args, f"scaling over {args.scale} clients, about {args.scale_deliveries:,} "
                      f"deliveries per run, {args.rounds} round(s)")
        rows = await run_scale(args, results)
        print(f"\nmedian of {args.rounds} round(s) per client count, "
              f"{time.monotonic() - started:.0f} s in all, "
              f"load average now {os.getloadavg()[0]:.1f}:\n")
        print(scale_table(rows) + sink_note(rows))
    else:
        _header(args, f"{args.clients} clients, {args.broadcasts} broadcasts, "
                      f"{args.rounds} round(s)")
        for round_no in range(1, args.rounds + 1):
            for name in round_order(args.variant_list, round_no):
                result = await run_variant(resolve_variant(name), round_no, args)
                print_run(result)
                results.append(result)
        rows = summarize(results, args.variant_list)
        print(f"\nmedian of {args.rounds} round(s), {time.monotonic() - started:.0f} s in all, "
              f"load average now {os.getloadavg()[0]:.1f}:\n")
        print(markdown_table(rows) + sink_note(rows))
        print("\nworker CPU per delivery, each round paired with plain's (what the targets "
              "are judged on):\n")
        print(cpu_table(results, args.variant_list,
                        {name: resolve_variant(name).label for name in args.variant_list}))
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items() if k != "sink"},
            "source": source_fingerprint(),
            "summary": rows,
            "runs": [{**{k: v for k, v in vars(r).items() if k != "latencies"},
                      "rate": r.rate, "p50": r.percentile(0.5), "p99": r.percentile(0.99)}
                     for r in results],
        }, indent=2))
    failed = [r for r in results if r.error or r.unexpected
              or (r.sink_spans is not None and r.sink_spans != r.spans)]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.inproc:
        return run_inproc(args)
    soft, hard = raise_nofile()  # before the workers start: they inherit it
    need = max([args.clients, *args.scale_counts]) * 2 + 500
    if soft < need:
        print(f"warning: RLIMIT_NOFILE {soft} (hard {hard}) may be too low for {need // 2 - 250} "
              "clients", file=sys.stderr, flush=True)
    otlp = any(uses_otlp(resolve_variant(v), args.exporter) for v in args.variant_list)
    args.sink = OTLPSink() if otlp else None
    try:
        return asyncio.run(main_async(args))
    finally:
        if args.sink is not None:
            args.sink.stop()


if __name__ == "__main__":
    sys.exit(main())
