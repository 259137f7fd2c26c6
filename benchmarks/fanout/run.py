"""One network run of one variant: two daphne workers on Redis, N WebSocket clients, M broadcasts.

``run_variant`` starts a fresh pair of workers (``benchmarks/_fanout_app``) sharing a
``RedisChannelLayer`` with a prefix unique to the run, connects the clients (alternating
between the workers, all in one group), sends the warm-up and the measured broadcasts with
at most ``--window`` in flight, and returns a :class:`Result`: deliveries, latencies, CPU of
the workers, the clients, Redis and the OTLP sink, and the spans the workers exported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fanout.common import QUIET_WAIT, ROOT, proc_cpu
from benchmarks.fanout.profiling import start_profilers, stop_profilers
from benchmarks.fanout.variants import Variant, uses_otlp
from tests.support.redis_layer import delete_keys
from tests.support.servers import DaphneWorker, free_port, wait_for_port

APP = "benchmarks._fanout_app.asgi:application"
SETTINGS = "benchmarks._fanout_app.settings"
#: Span name prefixes the workers count separately (``benchmarks/_fanout_app/otel.py``).
SPAN_KINDS = ("process", "deliver", "group_send", "receive", "other")
#: daphne's listen backlog (its ``-b``/``-p`` use Twisted's 50) and WebSocket handshake timeout
#: (default 5 s): 1,000 clients connecting in batches must neither overflow the accept queue
#: nor time out while the workers are busy (see ``benchmarks/storm.py``).
BACKLOG = 4096
HANDSHAKE_TIMEOUT = 30


class Worker(DaphneWorker):
    """One daphne process running the benchmark app, with a deep backlog and a long handshake
    timeout; none of the caller's ``OTEL_*`` / ``FANOUT_*`` variables leak into it."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        super().__init__(env, app=APP, settings=SETTINGS, name=name)
        self.env = {k: v for k, v in self.env.items()
                    if k in env or k == "OTEL_SERVICE_NAME"
                    or not k.startswith(("OTEL_", "FANOUT_"))}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "daphne",
                "-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={BACKLOG}",
                "--websocket_connect_timeout", str(HANDSHAKE_TIMEOUT), self.app]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def cpu(self) -> float:
        """User + system CPU seconds of the worker process (all its threads)."""
        return proc_cpu(self.pid)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self, timeout: float = 10.0) -> int | None:
        code = super().stop(timeout)
        self.log.unlink(missing_ok=True)  # a run of many rounds starts many workers
        return code


class OTLPSink:
    """The local OTLP/HTTP receiver (``benchmarks/_fanout_app/sink.py``), a separate process.

    It parses every protobuf request and answers 200 with an ``Export*ServiceResponse``;
    ``stats()`` returns what it received (the benchmark checks the span count against
    the workers' own). Its CPU is not in the worker CPU column (a collector runs
    elsewhere), but it shares the machine's cores. Not the tests' in-process
    ``OTLPReceiver``: that one would charge its parsing to the clients' CPU and keep
    every span.
    """

    def __init__(self) -> None:
        self.port = free_port()
        env = {**os.environ,
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._fanout_app.sink", str(self.port)], cwd=ROOT,
            env=env,
        )
        try:
            wait_for_port(self.port, 30, self.process)
        except Exception:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.endpoint}/stats", timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def cpu(self) -> float:
        return proc_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Collector:
    """Counts deliveries per broadcast and records latencies; paces the sender."""

    def __init__(self, clients: int, broadcasts: int, window: int, measured_from: int) -> None:
        self.clients = clients
        self.counts = [0] * broadcasts
        self.measured_from = measured_from
        self.latencies: list[float] = []
        self.window = asyncio.Semaphore(window)
        self.complete = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.last_delivery = 0.0
        self.unexpected = 0

    def expect(self, target: int) -> None:
        self.target = target
        self.reached = asyncio.Event()
        if self.complete >= target:
            self.reached.set()

    def on_message(self, text: str | bytes) -> None:
        now = time.time()
        try:
            data = json.loads(text)
            i, sent = data["i"], data["t"]
            count = self.counts[i] + 1
        except (ValueError, KeyError, IndexError, TypeError):
            self.unexpected += 1
            return
        self.counts[i] = count
        if i >= self.measured_from:
            self.latencies.append(now - sent)
            self.last_delivery = now
        if count == self.clients:
            self.complete += 1
            self.window.release()
            if self.complete >= self.target:
                self.reached.set()


async def _read(ws: Any, collector: Collector) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for text in ws:
            collector.on_message(text)
    except ConnectionClosed:
        pass


async def _connect(url: str, timeout: float) -> Any:
    from websockets.asyncio.client import connect

    # No compression (daphne has none), no keepalive pings during a bounded run.
    return await connect(url, compression=None, ping_interval=None, open_timeout=timeout,
                         close_timeout=5, max_size=2**20)


async def _close(ws: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 5)


@dataclass
class Result:
    """Numbers of one run of one variant."""

    variant: str
    round: int
    clients: int
    broadcasts: int
    delivered: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    worker_cpu: float = 0.0
    client_cpu: float = 0.0
    redis_cpu: float = 0.0
    spans: int = 0
    spans_by_name: dict[str, int] = field(default_factory=dict)
    gc_seconds: float = 0.0
    unexpected: int = 0
    exporter: str = "discard"
    sink_spans: int | None = None  # OTLP runs: spans the sink received in the measured phase
    sink_cpu: float = 0.0
    error: str | None = None

    @property
    def expected(self) -> int:
        return self.clients * self.broadcasts

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def per_delivery(self, value: float) -> float:
        return value / self.delivered if self.delivered else float("nan")

    def per_broadcast(self, kind: str | None = None) -> float:
        """Spans (all, or of one name prefix) per measured broadcast."""
        if not self.broadcasts or self.error:
            return float("nan")
        count = self.spans if kind is None else self.spans_by_name.get(kind, 0)
        return count / self.broadcasts


def _redis_cpu(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def round_order(variants: list[str], round_no: int) -> list[str]:
    """The variants of one round in a shuffled order (seeded: a run can be repeated).

    A fixed order would give the first variant of every round the same position in
    whatever drifts on a shared machine (other jobs, Redis, the CPU's clock).
    """
    order = list(variants)
    random.Random(round_no).shuffle(order)
    return order
async def run_variant(variant: Variant, round_no: int, args: argparse.Namespace,
                      profile_dir: Path | None = None) -> Result:
    """Start two workers, connect the clients, broadcast, measure, tear everything down."""
    prefix = f"fanout-{uuid.uuid4().hex[:10]}:"
    otlp = uses_otlp(variant, args.exporter)
    env = {"FANOUT_PREFIX": prefix, "REDIS_URL": args.redis_url,
           "FANOUT_GC_FREEZE": "1" if args.gc_freeze else "0",
           **variant.env, "FANOUT_EXPORTER": "otlp" if otlp else "discard"}
    sink: OTLPSink | None = args.sink if otlp else None
    if otlp:
        assert sink is not None, "OTLP variant without a sink"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
    workers = [Worker(f"{variant.name}-a", env), Worker(f"{variant.name}-b", env)]
    result = Result(variant.name, round_no, args.clients, args.broadcasts,
                    exporter="otlp" if otlp else "discard")
    clients: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        # Both at once: Django's import dominates start-up.
        await asyncio.gather(*(asyncio.to_thread(worker.start, 60.0) for worker in workers))

        warmup = args.warmup
        total = warmup + args.broadcasts
        collector = Collector(args.clients, total, args.window, warmup)
        deadline = time.monotonic() + args.timeout
        urls = [f"ws://127.0.0.1:{w.port}/ws/fanout/" for w in workers]
        limit = asyncio.Semaphore(args.connect_concurrency)

        async def open_one(k: int) -> Any:
            async with limit:
                return await _connect(urls[k % 2], max(1.0, deadline - time.monotonic()))

        clients = list(await asyncio.wait_for(
            asyncio.gather(*(open_one(k) for k in range(args.clients))),
            max(1.0, deadline - time.monotonic()),
        ))
        readers = [asyncio.create_task(_read(ws, collector)) for ws in clients]

        async def broadcast(first: int, last: int) -> None:
            collector.expect(last)
            for i in range(first, last):
                await asyncio.wait_for(collector.window.acquire(), deadline - time.monotonic())
                # Client k is on worker k % 2: senders alternate between the workers.
                await clients[i % len(clients)].send(json.dumps({"i": i, "t": time.time()}))
            await asyncio.wait_for(collector.reached.wait(), deadline - time.monotonic())

        await broadcast(0, warmup)
        await asyncio.sleep(QUIET_WAIT)  # the warm-up's summary spans are not measured
        before = [await asyncio.to_thread(w.stats) for w in workers]
        sink0 = await asyncio.to_thread(sink.stats) if sink else None
        if profile_dir is not None:
            profilers = start_profilers([(w.name, w.pid) for w in workers], profile_dir,
                                        args.profile_rate)
        cpu0 = sum(w.cpu() for w in workers)
        sink_cpu0 = sink.cpu() if sink else 0.0
        redis0 = await asyncio.to_thread(_redis_cpu, args.redis_url)
        client0 = time.process_time()
        t0 = time.time()
        try:
            await broadcast(warmup, total)
        except (asyncio.TimeoutError, TimeoutError):
            result.error = f"timed out after {args.timeout} s"
        end = collector.last_delivery or time.time()
        result.client_cpu = time.process_time() - client0
        stop_profilers(profilers)
        # Wall time ends with the last delivery; CPU and spans include the summaries that
        # the measured broadcasts' quiet ends trigger (as the warm-up's were excluded).
        await asyncio.sleep(QUIET_WAIT)
        result.worker_cpu = sum(w.cpu() for w in workers) - cpu0
        result.redis_cpu = await asyncio.to_thread(_redis_cpu, args.redis_url) - redis0
        result.elapsed = max(1e-9, end - t0)
        result.delivered = sum(collector.counts[warmup:])
        result.latencies = collector.latencies
        result.unexpected = collector.unexpected
        after = [await asyncio.to_thread(w.stats) for w in workers]
        pairs = list(zip(after, before, strict=True))
        result.spans = sum(a["spans"] - b["spans"] for a, b in pairs)
        result.spans_by_name = {
            kind: sum(a["spans_by_name"][kind] - b["spans_by_name"][kind] for a, b in pairs)
            for kind in SPAN_KINDS
        }
        result.gc_seconds = sum(a["gc_seconds"] - b["gc_seconds"] for a, b in pairs)
        if sink is not None and sink0 is not None:
            # The workers' stats flushed their span queues into the sink, which counts a
            # request before answering it: the two counts must agree.
            sink1 = await asyncio.to_thread(sink.stats)
            result.sink_cpu = sink.cpu() - sink_cpu0
            result.sink_spans = sink1["spans"] - sink0["spans"]
            if sink1["errors"] != sink0["errors"]:
                result.error = f"OTLP sink rejected {sink1['errors'] - sink0['errors']} requests"
    except Exception as exc:  # report the run as failed, keep benchmarking the others
        result.error = f"{type(exc).__name__}: {exc}"
        for worker in workers:
            if worker.process is not None and worker.process.poll() is not None:
                result.error += f"\n{worker.name} log:\n{worker.tail()}"
    finally:
        stop_profilers(profilers)
        await asyncio.gather(*(_close(ws) for ws in clients), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(delete_keys, args.redis_url, prefix)
    return result
