"""``python -m benchmarks.fanout --profile DIR``: where the worker time goes.

Each chosen variant runs once with ``py-spy record`` attached to both workers during the
measured phase (``pip install py-spy``); the collapsed stacks land in DIR and every sample is
put in one category (otel_channels, the SDK, the OTel API, channels-redis, daphne, ...).
(Named ``profiling``, not ``profile``: the standard library has a ``profile`` module.)
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


def start_profilers(workers: list[tuple[str, int]], directory: Path,
                    rate: int) -> list[subprocess.Popen[bytes]]:
    """A ``py-spy record`` per worker (name, pid), writing ``DIR/<name>.txt``."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    profilers = []
    for name, pid in workers:
        output = directory / f"{name}.txt"
        profilers.append(subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
             "--nonblocking", "--gil", "--full-filenames", "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    time.sleep(1.0)  # py-spy needs a moment to attach
    return profilers


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        if profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for profiler in profilers:
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait(5)
    profilers.clear()


#: (category, path fragment); a sample goes to the innermost frame that matches one, so
#: stdlib helpers (json, threading, contextvars) count for their caller.
_CATEGORIES = (
    ("otel_channels/delivery/process.py", "/otel_channels/delivery/process.py"),
    ("otel_channels/layer/producer.py", "/otel_channels/layer/producer.py"),
    ("otel_channels/websocket/", "/otel_channels/websocket/"),
    ("otel_channels/telemetry/carrier.py", "/otel_channels/telemetry/carrier.py"),
    ("otel_channels/other", "/otel_channels/"),
    ("SDK trace (span create/end)", "/opentelemetry/sdk/trace/"),
    ("SDK metrics (record)", "/opentelemetry/sdk/metrics/"),
    ("OTel ASGI middleware", "/opentelemetry/instrumentation/asgi/"),
    ("OTel API / context", "/opentelemetry/"),
    ("wrapt", "/wrapt/"),
    ("benchmark consumer", "/_fanout_app/"),
    ("channels_redis + redis-py + msgpack", "/channels_redis/"),
    ("channels_redis + redis-py + msgpack", "/redis/"),
    ("channels_redis + redis-py + msgpack", "/msgpack/"),
    ("channels (consumer, json)", "/channels/"),
    ("asgiref (sync_to_async per message)", "/asgiref/"),
    ("asgiref (sync_to_async per message)", "/concurrent/futures/"),
    ("daphne + twisted + autobahn", "/daphne/"),
    ("daphne + twisted + autobahn", "/twisted/"),
    ("daphne + twisted + autobahn", "/autobahn/"),
    ("daphne + twisted + autobahn", "/txaio/"),
    ("asyncio event loop", "/asyncio/"),
)
#: OpenTelemetry API helpers (attribute validation, context, use_span) count for their caller:
#: the SDK's span or metric code, or otel_channels.
_PASS_THROUGH = ("/opentelemetry/attributes/", "/opentelemetry/context/",
                 "/opentelemetry/util/", "/opentelemetry/trace/")
_EXPORT_THREADS = ("/opentelemetry/sdk/_shared_internal/", "/metrics/_internal/export/")
_FRAME = re.compile(r"\((.*?):\d+\)$")
OTEL_CATEGORIES = ("otel_channels/", "SDK ", "OTel ")


def categorize(stack: str) -> str:
    """The category of one collapsed stack (``frame;frame;...`` root to leaf)."""
    frames = stack.split(";")
    if any(fragment in frame for frame in frames for fragment in _EXPORT_THREADS):
        return "SDK export threads"  # BatchSpanProcessor / PeriodicExportingMetricReader
    through = None
    for frame in reversed(frames):
        match = _FRAME.search(frame)
        path = match.group(1) if match else frame
        if any(fragment in path for fragment in _PASS_THROUGH):
            through = through or "OTel API / context"
            continue
        for category, fragment in _CATEGORIES:
            if fragment in path:
                if through and not category.startswith(OTEL_CATEGORIES):
                    return through  # API called from outside OpenTelemetry code
                return category
    return through or "other (stdlib, interpreter)"


def summarize_profile(paths: list[Path]) -> Counter[str]:
    """Samples per category over py-spy raw (collapsed) outputs."""
    counts: Counter[str] = Counter()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, number = line.rpartition(" ")
            if stack and number.isdigit():
                counts[categorize(stack)] += int(number)
    return counts


def print_profile(name: str, result: Any, directory: Path) -> None:
    """Where one variant's worker CPU per delivery went, by category (``result``: a run's
    :class:`benchmarks.fanout.run.Result`)."""
    counts = summarize_profile(sorted(directory.glob("*.txt")))
    total = sum(counts.values()) or 1
    cpu_us = result.per_delivery(result.worker_cpu) * 1e6
    print(f"\n{name}: {total} samples, worker CPU {cpu_us:.0f} µs per delivery "
          "(under py-spy)")
    for category, samples in counts.most_common():
        print(f"  {samples / total:6.1%}  {samples / total * cpu_us:6.1f} µs  {category}")
    otel = sum(s for c, s in counts.items() if c.startswith(OTEL_CATEGORIES))
    print(f"  {otel / total:6.1%}  {otel / total * cpu_us:6.1f} µs  = all OpenTelemetry "
          "(otel_channels + SDK + API)\n", flush=True)
