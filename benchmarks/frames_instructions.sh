#!/usr/bin/env bash
# Instructions per frame under callgrind: deterministic, unlike wall or CPU time on a
# shared machine. Runs each variant at two frame counts; the difference divided by the
# extra frames is the per-frame cost (start-up and warm-up cancel out).
set -euo pipefail
cd "$(dirname "$0")/.."
# Span batches exported only when full (not every 5 s of valgrind time): counts repeat.
export OTEL_BSP_SCHEDULE_DELAY=3600000
small=${SMALL:-100}; large=${LARGE:-600}
# VARIANTS="plain traced-1.0-ctx" measures some (plain first: the ratios are to it).
variants=${VARIANTS:-plain traced-nosdk traced-0.0 traced-route0 traced-attr0 traced-1.0 traced-1.0-ctx traced-1.0-carrier asgi-mw}
out=$(mktemp -d)
for variant in $variants; do
    for frames in "$small" "$large"; do
        valgrind --tool=callgrind --callgrind-out-file="$out/$variant.$frames" \
            .venv/bin/python benchmarks/frames.py --only "$variant" --frames "$frames" \
            >/dev/null 2>"$out/$variant.$frames.log"
    done
done
python3 - "$out" "$small" "$large" $variants <<'PY'
import re, sys
out, small, large, *variants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
def refs(variant, frames):
    text = open(f"{out}/{variant}.{frames}.log").read()
    return int(re.search(r"Collected : (\d+)", text).group(1))
extra = (large + large // 10) - (small + small // 10)
per = {v: (refs(v, large) - refs(v, small)) / extra
       for v in variants}
print("| variant | instructions per frame | ratio to plain |")
print("|---|---:|---:|")
for v, n in per.items():
    print(f"| {v} | {n:,.0f} | {n / per['plain']:.3f} |")
PY
