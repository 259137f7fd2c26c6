"""Fan-out benchmark: broadcasts to N WebSocket clients across two daphne workers over Redis.

Usage::

    .venv/bin/python benchmarks/fanout.py                 # N=200, M=200, 3 rounds, default variants
    .venv/bin/python benchmarks/fanout.py --quick         # a smoke run, under a minute
    .venv/bin/python benchmarks/fanout.py --variants plain,otel-default --rounds 5
    .venv/bin/python benchmarks/fanout.py --scale 20,200,1000     # throughput/CPU/spans vs N
    .venv/bin/python benchmarks/fanout.py --variants plain,otel-default,otel-default+otlp
    .venv/bin/python benchmarks/fanout.py --exporter otlp          # every SDK variant via OTLP
    .venv/bin/python benchmarks/fanout.py --profile /tmp/prof --variants otel-default

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

``--scale 20,200,1000`` runs the variants (default: plain, otel-default,
otel-every) at each client count, with M chosen so N * M stays about
``--scale-deliveries`` (40,000; at least 20 broadcasts), and prints
throughput and worker CPU relative to plain and spans per broadcast by N.

``--profile DIR`` runs each chosen variant once with ``py-spy record`` attached
to both workers during the measured phase (``pip install py-spy``), writes the
collapsed stacks to DIR and prints where the worker time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is on the path, not its parent
    sys.path.insert(0, str(ROOT))

from benchmarks._worker_cpu import cpu_table  # noqa: E402

APP = "benchmarks._fanout_app.asgi:application"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Span name prefixes the workers count separately (``benchmarks/_fanout_app/otel.py``).
SPAN_KINDS = ("process", "deliver", "group_send", "receive", "other")


@dataclass(frozen=True)
class Variant:
    """One configuration of the workers."""

    name: str
    label: str
    env: dict[str, str]


_TRACED = {"FANOUT_CONSUMER": "traced", "FANOUT_APP": "1"}
_SDK = {**_TRACED, "FANOUT_SDK": "1"}

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("plain", "plain Channels", {"FANOUT_CONSUMER": "plain"}),
    Variant("otel-default", "otel_channels, default settings", {**_SDK, "FANOUT_RATE": "1.0"}),
    Variant("otel-every", "otel_channels, every delivery a span", {
        **_SDK, "FANOUT_RATE": "1.0", "FANOUT_BUDGET": "none"}),
    Variant("otel-0.01", "otel_channels, rate 0.01", {**_SDK, "FANOUT_RATE": "0.01"}),
    Variant("otel-nosdk", "otel_channels, no SDK", {**_TRACED, "FANOUT_RATE": "1.0"}),
    Variant("asgi-mw", "plain + OTel ASGI middleware", {
        "FANOUT_CONSUMER": "plain", "FANOUT_SDK": "1", "FANOUT_ASGI_MW": "1"}),
    Variant("otel-unsampled", "otel_channels, SDK, rate 0 (nothing sampled)", {
        **_SDK, "FANOUT_RATE": "0.0"}),
    Variant("otel-budget0", "otel_channels, rate 1.0, budget 0", {
        **_SDK, "FANOUT_RATE": "1.0", "FANOUT_BUDGET": "0"}),
    Variant("otel-group0", "otel_channels, rate 1.0, the group at 0 (SAMPLE_RATES)", {
        **_SDK, "FANOUT_RATE": "1.0", "FANOUT_GROUP_RATE": "0.0"}),
)}
ALIASES = {"otel-1.0": "otel-default"}
DEFAULT_VARIANTS = ("plain", "otel-default", "otel-every", "otel-0.01", "otel-nosdk", "asgi-mw")
SCALE_VARIANTS = ("plain", "otel-default", "otel-every")
OTLP_SUFFIX = "+otlp"


def resolve_variant(name: str) -> Variant:
    """A variant by name: an alias, or an SDK variant with ``+otlp`` (OTLP exporter for it)."""
    base, otlp = (name[:-len(OTLP_SUFFIX)], True) if name.endswith(OTLP_SUFFIX) else (name, False)
    base = ALIASES.get(base, base)
    if base not in VARIANTS:
        raise KeyError(name)
    variant = VARIANTS[base]
    if not otlp:
        return variant
    if variant.env.get("FANOUT_SDK") != "1":
        raise ValueError(f"{name}: {base} has no SDK, so no exporter (+otlp is for SDK variants)")
    return Variant(base + OTLP_SUFFIX, variant.label + ", OTLP exporter",
                   {**variant.env, "FANOUT_EXPORTER": "otlp"})


def uses_otlp(variant: Variant, exporter: str) -> bool:
    return variant.env.get("FANOUT_SDK") == "1" and (
        variant.env.get("FANOUT_EXPORTER", exporter) == "otlp")


# -- workers ---------------------------------------------------------------------------------


#: daphne's listen backlog (its ``-b``/``-p`` use Twisted's 50) and WebSocket handshake timeout
#: (default 5 s): 1,000 clients connecting in batches must neither overflow the accept queue
#: nor time out while the workers are busy (see ``benchmarks/storm.py``).
BACKLOG = 4096
HANDSHAKE_TIMEOUT = 30


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def raise_nofile() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (workers started later inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One daphne process running the benchmark app."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OTEL_", "FANOUT_")) and k != "PYTHONDEVMODE"}
        self.env = {
            **base,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PYTHONUNBUFFERED": "1",
            "OTEL_SERVICE_NAME": name,
            **env,
        }
        self.log = Path(tempfile.mkstemp(prefix=f"fanout-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne",
                 "-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={BACKLOG}",
                 "--websocket_connect_timeout", str(HANDSHAKE_TIMEOUT), APP],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} not listening after {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cpu(self) -> float:
        """User + system CPU seconds of the worker process (all its threads)."""
        return proc_cpu(self.pid)

    def stats(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        self.log.unlink(missing_ok=True)


# -- clients ---------------------------------------------------------------------------------


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


# -- one run ---------------------------------------------------------------------------------


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


def _redis_cleanup(url: str, prefix: str) -> None:
    """Delete this run's keys (group zsets expire only after a day)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))[:100_000]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()


#: Wait after the warm-up and after the measured phase before reading the workers' stats:
#: a worker writes its ``deliver`` summary span 0.25 s after a broadcast went quiet on it.
QUIET_WAIT = 0.75


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
        for worker in workers:
            worker.start()
        for worker in workers:
            await asyncio.to_thread(worker.wait_ready)

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
            profilers = _start_profilers(workers, variant, profile_dir, args.profile_rate)
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
        _stop_profilers(profilers)
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
        _stop_profilers(profilers)
        await asyncio.gather(*(_close(ws) for ws in clients), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(_redis_cleanup, args.redis_url, prefix)
    return result


async def _close(ws: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), 5)


# -- in-process mode ---------------------------------------------------------------------------


_SCOPE = {
    "type": "websocket", "path": "/ws/fanout/", "raw_path": b"/ws/fanout/", "query_string": b"",
    "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000), "subprotocols": [], "scheme": "ws",
}


async def _inproc(clients: int, broadcasts: int, warmup: int) -> dict[str, float]:
    """In a child process configured for one variant: fan out, return CPU per delivery
    and what the garbage collector did meanwhile.

    The layer is channels-redis (``--inproc``), or in process as
    ``fanout_instructions.sh`` runs it (``FANOUT_LAYER=redislike`` or ``memory``).
    """
    from channels.layers import get_channel_layer

    from benchmarks._fanout_app import asgi, otel  # SDK (or not) + django.setup()

    layer = get_channel_layer()
    counts = {"websocket.accept": 0, "websocket.send": 0}
    target = ("websocket.accept", clients)
    reached = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in counts:
            counts[kind] += 1
            if kind == target[0] and counts[kind] >= target[1]:
                reached.set()

    inboxes = [asyncio.Queue[dict[str, Any]]() for _ in range(clients)]
    tasks = [asyncio.create_task(asgi.websocket_app(dict(_SCOPE), inbox.get, send))
             for inbox in inboxes]
    for inbox in inboxes:
        await inbox.put({"type": "websocket.connect"})
    await asyncio.wait_for(reached.wait(), 30)  # every consumer joined the group and accepted

    async def fan_out(count: int) -> None:
        nonlocal target
        for i in range(count):
            target = ("websocket.send", counts["websocket.send"] + clients)
            reached.clear()
            await layer.group_send("fanout", {"type": "fanout.message", "i": i, "t": time.time()})
            await asyncio.wait_for(reached.wait(), 60)

    await fan_out(warmup)
    await asyncio.sleep(QUIET_WAIT)  # let the warm-up's ``deliver`` summaries be written
    tracked = len(gc.get_objects())  # what every full collection walks
    gc0 = dict(otel._state)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await fan_out(broadcasts)
    await asyncio.sleep(QUIET_WAIT)  # ... and the measured broadcasts' (in the count)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0 - QUIET_WAIT
    gc1 = dict(otel._state)  # before the teardown below, whose collections are not ours
    for inbox in inboxes:
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
    # Measured already. On the Redis layer, now and then one consumer (plain Channels
    # too) does not end: cancelled while it held channels-redis's shared blocking read,
    # it waits for a message that never comes. Do not fail the round for it.
    _, stuck = await asyncio.wait(tasks, timeout=10)
    for task in stuck:
        task.cancel()
    deliveries = clients * broadcasts
    return {
        "cpu_us": cpu / deliveries * 1e6, "wall_us": wall / deliveries * 1e6,
        "gc_us": (gc1["gc_seconds"] - gc0["gc_seconds"]) / deliveries * 1e6,
        "gc_full_us": (gc1["gc_full_seconds"] - gc0["gc_full_seconds"]) / deliveries * 1e6,
        "young_per_1k": (gc1["gc_young"] - gc0["gc_young"]) / deliveries * 1e3,
        "full_per_1k": (gc1["gc_full"] - gc0["gc_full"]) / deliveries * 1e3,
        "tracked": tracked,
    }


def inproc_child(name: str, clients: int, broadcasts: int, warmup: int) -> None:
    """Entry point of ``--_inproc-child``: print one JSON line with the result."""
    os.environ.update(resolve_variant(name).env)
    sys.path.insert(0, str(ROOT))
    print(json.dumps(asyncio.run(_inproc(clients, broadcasts, warmup))), flush=True)


def run_inproc(args: argparse.Namespace) -> int:
    """Each variant in a fresh child process, rounds interleaved; median CPU per delivery."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in args.variant_list}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FANOUT_"))}
    for round_no in range(1, args.rounds + 1):
        for name in args.variant_list:
            prefix = f"fanout-{uuid.uuid4().hex[:10]}:"
            env = {**base, "FANOUT_PREFIX": prefix, "REDIS_URL": args.redis_url}
            try:
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--_inproc-child", name,
                     "-n", str(args.clients), "-m", str(args.broadcasts),
                     "--warmup", str(args.warmup)],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout,
                )
            finally:
                _redis_cleanup(args.redis_url, prefix)
            if done.returncode != 0:
                print(f"  round {round_no} {name:<11} FAILED:\n{done.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            samples[name].append(result)
            print(f"  round {round_no} {name:<11} {result['cpu_us']:6.1f} µs CPU per delivery "
                  f"({result['wall_us']:.1f} µs wall, GC {result['gc_us']:.1f} µs)", flush=True)

    def median(name: str, key: str) -> float:
        return _median([r[key] for r in samples[name]])

    plain = median("plain", "cpu_us") if samples.get("plain") else 0.0
    print(f"\nin-process fan-out (one process, RedisChannelLayer, no daphne, no client "
          f"sockets), medians of {args.rounds}:\n\n"
          "| variant | CPU / delivery | over plain | GC / delivery (full collections) "
          "| collections per 1,000 deliveries, young / full | tracked objects |\n"
          "|---|--:|--:|--:|--:|--:|")
    for name in args.variant_list:
        if not samples[name]:
            continue
        cpu = median(name, "cpu_us")
        print(f"| {resolve_variant(name).label} | {cpu:.1f} µs | {cpu - plain:+.1f} µs "
              f"| {median(name, 'gc_us'):.1f} µs ({median(name, 'gc_full_us'):.1f} µs) "
              f"| {median(name, 'young_per_1k'):.1f} / {median(name, 'full_per_1k'):.2f} "
              f"| {median(name, 'tracked'):,.0f} |")
    return 0


# -- profiling -------------------------------------------------------------------------------


def _start_profilers(workers: list[Worker], variant: Variant, directory: Path,
                     rate: int) -> list[subprocess.Popen[bytes]]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    profilers = []
    for worker in workers:
        output = directory / f"{worker.name}.txt"
        profilers.append(subprocess.Popen(
            [py_spy, "record", "--pid", str(worker.pid), "--format", "raw", "--rate", str(rate),
             "--nonblocking", "--gil", "--full-filenames", "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    time.sleep(1.0)  # py-spy needs a moment to attach
    return profilers


def _stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
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


# -- reporting -------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


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


def scale_table(rows: list[dict[str, Any]]) -> str:
    """``--scale``: one line per (client count, variant); ratios to plain at that count."""
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


def _print_run(result: Result) -> None:
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


def source_fingerprint() -> str:
    """Git HEAD plus a hash of ``otel_channels/*.py`` as measured (the tree may be uncommitted)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "otel_channels").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "otel_channels"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "?", ""
    return f"git {head or '?'}{' + uncommitted otel_channels changes' if dirty else ''}, " \
           f"otel_channels sources sha256 {digest.hexdigest()[:12]}"


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [*VARIANTS, *ALIASES]
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--_inproc-child", dest="inproc_child", help=argparse.SUPPRESS)
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
    if (args.inproc or args.inproc_child) and any(
            resolve_variant(v).env.get("FANOUT_EXPORTER") for v in args.variant_list):
        parser.error(f"the in-process modes have no OTLP sink: drop {OTLP_SUFFIX}")
    if args.clients < 2 or args.broadcasts < 1 or args.rounds < 1 or args.window < 1:
        parser.error("need --clients >= 2, --broadcasts >= 1, --rounds >= 1, --window >= 1")
    if args.connect_concurrency < 1 or args.scale_deliveries < 1:
        parser.error("need --connect-concurrency >= 1 and --scale-deliveries >= 1")
    return args


class OTLPSink:
    """The local OTLP/HTTP receiver (``benchmarks/_fanout_app/sink.py``), a separate process.

    It parses every protobuf request and answers 200 with an ``Export*ServiceResponse``;
    ``stats()`` returns what it received (the benchmark checks the span count against
    the workers' own). Its CPU is not in the worker CPU column (a collector runs
    elsewhere), but it shares the machine's cores.
    """

    def __init__(self) -> None:
        self.port = free_port()
        env = {**os.environ,
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._fanout_app.sink", str(self.port)], cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"OTLP sink exited with {self.process.returncode}")
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

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


def _header(args: argparse.Namespace, what: str) -> None:
    soft, _ = resource_limits()
    print(f"fan-out: {what}, window {args.window}, exporter {args.exporter}, "
          f"variants {', '.join(args.variant_list)}\n{source_fingerprint()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"RLIMIT_NOFILE {soft}", flush=True)


def resource_limits() -> tuple[int, int]:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _sink_note(rows: list[dict[str, Any]]) -> str:
    otlp = [r for r in rows if r["sink_cpu_us"] == r["sink_cpu_us"]]
    if not otlp:
        return ""
    return "\nOTLP sink CPU per delivery (not in the worker column): " + ", ".join(
        f"{r['variant']} {r['sink_cpu_us']:.1f} µs" for r in otlp)


async def run_scale(args: argparse.Namespace, results: list[Result]) -> list[dict[str, Any]]:
    """``--scale``: every variant at every client count, rounds interleaved within a count."""
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
                _print_run(result)
                batch.append(result)
        results.extend(batch)
        rows.extend(summarize(batch, args.variant_list))
    return rows


def round_order(variants: list[str], round_no: int) -> list[str]:
    """The variants of one round in a shuffled order (seeded: a run can be repeated).

    A fixed order would give the first variant of every round the same position in
    whatever drifts on a shared machine (other jobs, Redis, the CPU's clock).
    """
    order = list(variants)
    random.Random(round_no).shuffle(order)
    return order


async def main_async(args: argparse.Namespace) -> int:
    results: list[Result] = []
    started = time.monotonic()
    if args.profile is not None:
        _header(args, f"{args.clients} clients, {args.broadcasts} broadcasts, profile, 1 run each")
        for name in args.variant_list:
            directory = args.profile / name
            result = await run_variant(resolve_variant(name), 1, args, directory)
            _print_run(result)
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
        return 0
    if args.scale_counts:
        _header(args, f"scaling over {args.scale} clients, about {args.scale_deliveries:,} "
                      f"deliveries per run, {args.rounds} round(s)")
        rows = await run_scale(args, results)
        print(f"\nmedian of {args.rounds} round(s) per client count, "
              f"{time.monotonic() - started:.0f} s in all, "
              f"load average now {os.getloadavg()[0]:.1f}:\n")
        print(scale_table(rows) + _sink_note(rows))
    else:
        _header(args, f"{args.clients} clients, {args.broadcasts} broadcasts, "
                      f"{args.rounds} round(s)")
        for round_no in range(1, args.rounds + 1):
            for name in round_order(args.variant_list, round_no):
                result = await run_variant(resolve_variant(name), round_no, args)
                _print_run(result)
                results.append(result)
        rows = summarize(results, args.variant_list)
        print(f"\nmedian of {args.rounds} round(s), {time.monotonic() - started:.0f} s in all, "
              f"load average now {os.getloadavg()[0]:.1f}:\n")
        print(markdown_table(rows) + _sink_note(rows))
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
    if args.inproc_child:
        inproc_child(args.inproc_child, args.clients, args.broadcasts, args.warmup)
        return 0
    if args.inproc:
        print(f"in-process: {args.clients} consumers, {args.broadcasts} broadcasts, "
              f"{args.rounds} round(s)\n{source_fingerprint()}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
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
