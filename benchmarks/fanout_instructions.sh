#!/usr/bin/env bash
# Instructions per delivery under callgrind for the in-process fan-out: `fanout.py
# --_inproc-child VARIANT` drives 50 consumers of one group through their ASGI interface in one
# process, on an in-process layer that delivers as channels-redis does (LAYER=redislike, the
# default: msgpack once per send, one shared dict per worker, see _fanout_app/layers.py) or on
# Channels' InMemoryChannelLayer (LAYER=memory: a deepcopy and a task per member). No Redis
# round trips whose timing would vary under valgrind, no daphne, no sockets. Deterministic
# where CPU time on this shared machine is not. Each variant runs at two broadcast counts; the difference divided by
# the extra deliveries is the per-delivery cost (start-up cancels out). A `deliver` summary span
# per broadcast and worker (budgeted variants) is part of that difference, spread over the
# broadcast's deliveries.
#
#   benchmarks/fanout_instructions.sh                       # the default variants, ~10-15 min
#   VARIANTS="plain otel-default" CLIENTS=50 SMALL=20 LARGE=60 benchmarks/fanout_instructions.sh
#
# Variants (see benchmarks/fanout.py): plain, otel-nosdk (no SDK), otel-unsampled (SDK, rate 0),
# otel-budget0 (rate 1.0, every delivery past the budget), otel-default (rate 1.0, default
# budget: 10 process spans per broadcast), otel-every (rate 1.0, a span per delivery), asgi-mw,
# also otel-0.01.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${CLIENTS:-50}; small=${SMALL:-20}; large=${LARGE:-60}; layer=${LAYER:-redislike}
variants=${VARIANTS:-plain otel-nosdk otel-unsampled otel-budget0 otel-default otel-every asgi-mw}
out=$(mktemp -d)
echo "callgrind outputs in $out" >&2
for variant in $variants; do
    for broadcasts in "$small" "$large"; do
        log="$out/$variant.$broadcasts.log"
        if ! FANOUT_LAYER="$layer" FANOUT_PREFIX="fanout-cg-$RANDOM:" \
            valgrind --tool=callgrind --callgrind-out-file="$out/$variant.$broadcasts" \
            .venv/bin/python benchmarks/fanout.py --_inproc-child "$variant" \
            -n "$clients" -m "$broadcasts" --warmup 5 >/dev/null 2>"$log"; then
            echo "$variant at $broadcasts broadcasts FAILED (log $log):" >&2
            grep -v '^==' "$log" | tail -25 >&2
            exit 1
        fi
        echo "$variant, $broadcasts broadcasts: done" >&2
    done
done
python3 - "$out" "$clients" "$small" "$large" $variants <<'PY'
import re, sys
out, clients, small, large, *variants = sys.argv[1], *map(int, sys.argv[2:5]), *sys.argv[5:]
def refs(v, m):
    return int(re.search(r"Collected : (\d+)", open(f"{out}/{v}.{m}.log").read()).group(1))
extra = clients * (large - small)
per = {v: (refs(v, large) - refs(v, small)) / extra for v in variants}
print(f"| variant | instructions per delivery | ratio to plain |  ({clients} consumers)")
print("|---|---:|---:|")
for v, n in per.items():
    print(f"| {v} | {n:,.0f} | {n / per['plain']:.3f} |")
PY
