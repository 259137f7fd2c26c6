#!/usr/bin/env bash
# Instructions per delivery under callgrind for the in-process fan-out:
# `python -m benchmarks.fanout.instructions VARIANT` (benchmarks/fanout/instructions.py) drives
# N consumers of one group through their ASGI interface in one process, on an in-process
# layer that delivers as channels-redis does (LAYER=redislike, the default: msgpack once per
# send, one shared dict per worker, see _fanout_app/layers.py) or on
# Channels' InMemoryChannelLayer (LAYER=memory: a deepcopy and a task per member); LAYER=redis
# runs channels-redis against the local Redis instead (counts then vary a little). No Redis
# round trips whose timing would vary under valgrind, no daphne, no sockets: deterministic
# where CPU time on this shared machine is not.
#
#   benchmarks/fanout_instructions.sh                    # the default variants, ~25 min
#   VARIANTS="plain otel-default" N1=10 N2=50 M1=20 M2=60 benchmarks/fanout_instructions.sh
#
# Variants (see benchmarks/fanout/): plain, otel-nosdk (no SDK), otel-unsampled (SDK, rate 0),
# otel-budget0 (rate 1.0, every delivery past the budget), otel-default (rate 1.0, default
# budget: 10 process spans per broadcast), otel-every (rate 1.0, a span per delivery), asgi-mw,
# also otel-0.01.
#
# Two figures per variant, from a 2 x 2 design (members N1, N2 x broadcasts M1, M2):
# * "per delivery at N2 members": (C(N2, M2) - C(N2, M1)) / (N2 * (M2 - M1)), which includes
#   the per-broadcast work (the group_send span, one `deliver` summary and one histogram
#   point per broadcast and worker) spread over N2 deliveries;
# * "marginal": the cost of one more delivery, C(N2,M2) - C(N2,M1) - C(N1,M2) + C(N1,M1)
#   divided by (N2 - N1)(M2 - M1): per-connection and per-broadcast work cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
# The SDK's background work on timers (span batches every 5 s, metric collections) would
# depend on how fast valgrind runs, i.e. on the machine's load: export spans only when a
# batch is full and never collect metrics during the run, so the counts repeat.
export OTEL_BSP_SCHEDULE_DELAY=3600000 FANOUT_METRIC_INTERVAL=3600000
n1=${N1:-10}; n2=${N2:-50}; m1=${M1:-20}; m2=${M2:-60}; layer=${LAYER:-redislike}
variants=${VARIANTS:-plain otel-nosdk otel-unsampled otel-budget0 otel-default otel-every asgi-mw}
out=$(mktemp -d)
echo "callgrind outputs in $out" >&2
for variant in $variants; do
    for clients in "$n1" "$n2"; do
        for broadcasts in "$m1" "$m2"; do
            log="$out/$variant.$clients.$broadcasts.log"
            if ! FANOUT_LAYER="$layer" FANOUT_PREFIX="fanout-cg-$RANDOM:" \
                valgrind --tool=callgrind --callgrind-out-file="$out/$variant.$clients.$broadcasts" \
                .venv/bin/python -m benchmarks.fanout.instructions "$variant" \
                -n "$clients" -m "$broadcasts" --warmup 5 >/dev/null 2>"$log"; then
                echo "$variant at N=$clients M=$broadcasts FAILED (log $log):" >&2
                grep -v '^==' "$log" | tail -25 >&2
                exit 1
            fi
            echo "$variant, N=$clients, M=$broadcasts: done" >&2
        done
    done
done
python3 - "$out" "$n1" "$n2" "$m1" "$m2" "$layer" $variants <<'PY'
import re, sys
out, n1, n2, m1, m2, layer, *variants = sys.argv[1], *map(int, sys.argv[2:6]), *sys.argv[6:]
def refs(v, n, m):
    text = open(f"{out}/{v}.{n}.{m}.log").read()
    return int(re.search(r"Collected : (\d+)", text).group(1))
at_n2 = {v: (refs(v, n2, m2) - refs(v, n2, m1)) / (n2 * (m2 - m1)) for v in variants}
marginal = {v: (refs(v, n2, m2) - refs(v, n2, m1) - refs(v, n1, m2) + refs(v, n1, m1))
            / ((n2 - n1) * (m2 - m1)) for v in variants}
print(f"layer {layer}; N = {n1}, {n2} members; M = {m1}, {m2} broadcasts\n")
print(f"| variant | per delivery at {n2} members | ratio | marginal per delivery | ratio |")
print("|---|--:|--:|--:|--:|")
for v in variants:
    print(f"| {v} | {at_n2[v]:,.0f} | {at_n2[v] / at_n2['plain']:.3f} "
          f"| {marginal[v]:,.0f} | {marginal[v] / marginal['plain']:.3f} |")
PY
