"""Per-frame overhead of the traced consumers, in process, side by side.

Drives each consumer's ASGI app directly (an asyncio queue in, a counting
``send`` out: no network, no communicator) with N JSON echo frames and
reports frames per CPU-second and the ratio to plain Channels, median of
interleaved rounds:

* ``plain``        channels' AsyncJsonWebsocketConsumer
* ``asgi-mw``      plain, wrapped in OpenTelemetry's ASGI middleware (SDK on)
* ``traced-1.0``   TracedAsyncJsonWebsocketConsumer, SDK on, every frame sampled
* ``traced-0.0``   the same with MESSAGE_SAMPLE_RATE 0 (no span objects)
* ``traced-nosdk`` the same with the API's no-op providers (no SDK installed)
* ``traced-1.0-ctx``  rate 1.0 with ``JSON_CONTEXT_TO_CLIENT``: every echo gets the
  ``receive`` span's ``traceparent`` (a sampled send with context)
* ``traced-1.0-carrier`` rate 1.0, every inbound frame carries a carrier object under
  ``JSON_TRACEPARENT_KEY = "otel"`` (trace context and baggage), as a JS or Go client sends
* ``traced-route0`` rate 1.0, but the route at 0 in ``SAMPLE_RATES`` (not traced at all)
* ``traced-attr0``  rate 1.0, but the consumer class says ``otel_sample_rate = 0.0``

The SDK variants use a BatchSpanProcessor into an exporter that discards, and
a MeterProvider with a reader that is never collected, so the export path does
not dominate. Run: ``python benchmarks/frames.py [--frames N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks._frames_settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["channels", "otel_channels"],
        CHANNEL_LAYERS={},  # no layer: measure the frame path only
        OTEL_CHANNELS={},
        USE_TZ=True,
    )
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: E402
from opentelemetry.metrics import NoOpMeterProvider  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import NoOpTracerProvider  # noqa: E402

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer  # noqa: E402
from otel_channels.telemetry import instruments as _telemetry  # noqa: E402


class Discard(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


TRACER_PROVIDER = TracerProvider()
TRACER_PROVIDER.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
METER_PROVIDER = MeterProvider(metric_readers=[InMemoryMetricReader()])
trace.set_tracer_provider(TRACER_PROVIDER)
metrics.set_meter_provider(METER_PROVIDER)


class PlainEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


class TracedEcho(TracedAsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


class TracedEchoOff(TracedEcho):
    otel_sample_rate = 0.0


FRAME = json.dumps({"action": "chat", "user": "bench", "text": "hello world " * 4})
CARRIER_FRAME = json.dumps({"action": "chat", "user": "bench", "text": "hello world " * 4,
                            "otel": {"traceparent": f"00-{'4b' * 16}-{'0f' * 8}-01",
                                     "tracestate": "k=v", "baggage": "tenant=acme"}})
#: Variants whose frames carry client context (the others send FRAME, without the key).
FRAME_OF = {"traced-1.0-carrier": CARRIER_FRAME}


async def drive(app: Callable[..., Any], frames: int, frame: str = FRAME) -> float:
    """CPU seconds (all threads of this process) to push ``frames`` frames through ``app``
    and get every echo back: CPU time, not wall time, because this 2-core machine is
    shared and wall-clock rates swing 2x between identical runs."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    done = asyncio.Event()
    echoed = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal echoed
        if message["type"] == "websocket.send":
            echoed += 1
            if echoed == frames_total:
                done.set()

    scope = {"type": "websocket", "path": "/bench/", "query_string": b"", "headers": [],
             "subprotocols": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    await inbox.put({"type": "websocket.connect"})
    task = asyncio.create_task(app(scope, inbox.get, send))
    for _ in range(frames // 10):  # warm up: accept, first frames, caches
        inbox.put_nowait({"type": "websocket.receive", "text": frame})
    frames_total = frames + frames // 10
    while echoed < frames // 10:  # noqa: ASYNC110 - polling a counter the app bumps
        await asyncio.sleep(0.001)
    start = time.process_time()
    for _ in range(frames):
        inbox.put_nowait({"type": "websocket.receive", "text": frame})
    await asyncio.wait_for(done.wait(), 900)  # valgrind on a shared machine is slow
    elapsed = time.process_time() - start
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, 10)
    return elapsed


def variants() -> dict[str, tuple[Callable[..., Any], dict[str, Any], bool]]:
    """name -> (app, OTEL_CHANNELS, SDK on?)."""
    return {
        "plain": (PlainEcho.as_asgi(), {}, True),
        "asgi-mw": (OpenTelemetryMiddleware(PlainEcho.as_asgi()), {}, True),
        "traced-1.0": (TracedEcho.as_asgi(), {"MESSAGE_SAMPLE_RATE": 1.0}, True),
        "traced-0.0": (TracedEcho.as_asgi(), {"MESSAGE_SAMPLE_RATE": 0.0}, True),
        "traced-nosdk": (TracedEcho.as_asgi(), {}, False),
        "traced-1.0-ctx": (TracedEcho.as_asgi(), {"MESSAGE_SAMPLE_RATE": 1.0,
                                                  "JSON_CONTEXT_TO_CLIENT": True}, True),
        "traced-1.0-carrier": (TracedEcho.as_asgi(), {"MESSAGE_SAMPLE_RATE": 1.0,
                                                      "JSON_TRACEPARENT_KEY": "otel"}, True),
        # No router: the route is the class name (what http.route says then).
        "traced-route0": (TracedEcho.as_asgi(), {
            "MESSAGE_SAMPLE_RATE": 1.0, "SAMPLE_RATES": {"routes": {"TracedEcho": 0.0}}}, True),
        "traced-attr0": (TracedEchoOff.as_asgi(), {"MESSAGE_SAMPLE_RATE": 1.0}, True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="run one variant once and print its CPU seconds")
    args = parser.parse_args()
    if args.only:  # used by --instructions runs under callgrind
        app, config, sdk = variants()[args.only]
        if sdk:
            _telemetry.configure(TRACER_PROVIDER, METER_PROVIDER)
        else:
            _telemetry.configure(NoOpTracerProvider(), NoOpMeterProvider())
        with override_settings(OTEL_CHANNELS=config):
            print(asyncio.run(drive(app, args.frames, FRAME_OF.get(args.only, FRAME))))
        return
    results: dict[str, list[float]] = {name: [] for name in variants()}
    for round_number in range(args.rounds):
        order = list(variants().items())
        random.Random(round_number).shuffle(order)  # no variant always runs first
        for name, (app, config, sdk) in order:
            if sdk:
                _telemetry.configure(TRACER_PROVIDER, METER_PROVIDER)
            else:
                _telemetry.configure(NoOpTracerProvider(), NoOpMeterProvider())
            with override_settings(OTEL_CHANNELS=config):
                elapsed = asyncio.run(drive(app, args.frames, FRAME_OF.get(name, FRAME)))
            results[name].append(args.frames / elapsed)
            TRACER_PROVIDER.force_flush()
    base = statistics.median(results["plain"])
    print(f"{args.frames} frames x {args.rounds} rounds, median frames per CPU-second")
    print("| variant | frames/CPU-s | ratio to plain | CPU per frame vs plain |")
    print("|---|---:|---:|---:|")
    for name, values in results.items():
        rate = statistics.median(values)
        overhead_us = (1 / rate - 1 / base) * 1e6
        print(f"| {name} | {rate:,.0f} | {rate / base:.3f} | {overhead_us:+.1f} us |")


if __name__ == "__main__":
    main()
