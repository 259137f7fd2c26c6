#!/usr/bin/env bash
# Instructions per delivery under callgrind for the in-process fan-out (one process, 50
# consumers in one group on the in-memory layer, so no Redis round trips whose timing
# would vary under valgrind): deterministic where CPU time on this shared machine is not. Each variant runs at two broadcast counts; the difference
# divided by the extra deliveries is the per-delivery cost (start-up cancels out).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${CLIENTS:-50}; small=${SMALL:-20}; large=${LARGE:-60}
variants=${VARIANTS:-plain otel-nosdk otel-0.01 otel-1.0 asgi-mw}
out=$(mktemp -d)
for variant in $variants; do
    for broadcasts in "$small" "$large"; do
        FANOUT_LAYER=memory FANOUT_PREFIX="fanout-cg-$RANDOM:" \
        valgrind --tool=callgrind --callgrind-out-file="$out/$variant.$broadcasts" \
            .venv/bin/python benchmarks/fanout.py --_inproc-child "$variant" \
            -n "$clients" -m "$broadcasts" --warmup 5 >/dev/null 2>"$out/$variant.$broadcasts.log"
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
