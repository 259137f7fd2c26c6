"""SSE burst: N clients connect at once to ONE daphne worker on the Redis layer.

Usage::

    .venv/bin/python benchmarks/sse_burst.py                  # N=2000, writes benchmarks/README.md
    .venv/bin/python benchmarks/sse_burst.py --clients 300 --no-write   # a smoke run

Scenarios, each on a fresh worker (``daphne benchmarks.sse_burst:application``)
with a channel-layer prefix of its own:

* ``hub``: :class:`otel_channels.sse.EventStreamView` (one ``group_add`` per
  group per worker, in-process fan-out), the recommended host dict
  (``socket_timeout`` 30, ``max_connections`` 2000);
* ``naive (stock hosts)``: the view people write first (``new_channel`` +
  ``group_add`` per stream, ``receive`` per stream), with the stock host string
  ``["redis://..."]`` (redis-py 8: a 100-connection pool that raises past it,
  5 s socket timeout);
* ``naive (tuned hosts)``: the same view with the recommended host dict.

Measured: HTTP statuses of the burst (and connections that failed outright),
streams still open 10 s later, worker RSS per open stream (``/proc``), the
latency from ``abroadcast()`` to the last client's receipt (median of 5),
Redis commands per broadcast (``MONITOR`` lines naming the run's key prefix,
with all N streams and again with 20), and the group's members in Redis.
The SDK is off in the worker (spans are short; none is held per stream).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import resource
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from django.http import HttpRequest, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views import View  # noqa: E402

from benchmarks.fanout.common import proc_cpu  # noqa: E402
from otel_channels.sse import EventStreamView  # noqa: E402
from tests.support.redis_layer import CommandLog, redis_layer_config  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SECTION = "## SSE burst"

# -- the worker side (imported by daphne) -----------------------------------------------


class HubEvents(EventStreamView):
    """The hub: one subscription per group per worker."""

    def get_groups(self, request: HttpRequest, *args: Any, **kwargs: Any) -> list[str]:
        return [f"room_{kwargs['room']}"]


class NaiveEvents(View):
    """What a first attempt looks like: one channel and one group_add per stream."""

    async def get(self, request: HttpRequest, room: str) -> StreamingHttpResponse:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        group = f"room_{room}"
        channel = await layer.new_channel()
        await layer.group_add(group, channel)  # a Redis round trip per stream, all at once

        async def stream() -> Any:
            try:
                yield b": open\n\n"
                while True:
                    message = await layer.receive(channel)
                    data = {k: v for k, v in message.items() if k not in ("type", "_otel")}
                    yield f"event: {message['type']}\ndata: {json.dumps(data)}\n\n".encode()
            finally:
                await layer.group_discard(group, channel)

        response = StreamingHttpResponse(stream(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        return response


urlpatterns = [
    path("hub/<str:room>/", HubEvents.as_view()),
    path("naive/<str:room>/", NaiveEvents.as_view()),
]

_application: Any = None


def __getattr__(name: str) -> Any:
    """``application`` is built on first access (daphne's import), never by the runner."""
    global _application
    if name != "application":
        raise AttributeError(name)
    if _application is None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
        import django
        from django.conf import settings

        django.setup()
        settings.ROOT_URLCONF = "benchmarks.sse_burst"
        if os.environ.get("SSE_BURST_STOCK_HOSTS") == "1":
            settings.CHANNEL_LAYERS = {"default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL], "prefix": os.environ["CHANNEL_PREFIX"]},
            }}
        from django.core.asgi import get_asgi_application

        _application = get_asgi_application()
    return _application


# -- the runner -----------------------------------------------------------------------------


class Client:
    """One raw HTTP/1.1 event-stream client (cheap enough to hold thousands)."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.error: str | None = None
        self.expect: bytes | None = None
        self.got_at: float | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, target: str) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 60)
            self.writer = writer
            writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            self.status = int(head.split(b" ", 2)[1])
        except Exception as exc:
            self.error = type(exc).__name__
            self.closed = True
            return
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                tail = tail[-64:] + data
                if self.expect is not None and self.expect in tail:
                    self.got_at = time.perf_counter()
                    self.expect = None
        except (ConnectionError, OSError):
            pass
        self.closed = True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 5)
        if self.task is not None:
            self.task.cancel()


@functools.cache
def _install_runner_sdk() -> None:
    """SDK providers in the runner, once, as the conftest import did: the runner's
    ``group_send`` is traced, so its messages carry a trace context."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) if match else 0


async def broadcast_round(clients: list[Client], group: str, n: int) -> float | None:
    """Seconds from abroadcast() to the last open client's receipt (None: not all got it)."""
    from otel_channels.broadcast import abroadcast

    token = f"tok{uuid.uuid4().hex[:12]}"
    live = [c for c in clients if c.status == 200 and not c.closed]
    for client in live:
        client.expect, client.got_at = token.encode(), None
    start = time.perf_counter()
    await abroadcast(group, "bench", {"token": token, "n": n})
    deadline = start + 30
    while time.perf_counter() < deadline:
        if all(c.got_at is not None or c.closed for c in live):
            break
        await asyncio.sleep(0.005)
    got = [c.got_at for c in live if c.got_at is not None]
    if len(got) < len(live) or not got:
        return None
    return max(got) - start


async def run_scenario(kind: str, stock: bool, clients_n: int) -> dict[str, Any]:
    import redis

    BurstWorker = _burst_worker_class()  # noqa: N806
    from django.test import override_settings

    _install_runner_sdk()

    prefix = f"sseburst{uuid.uuid4().hex[:10]}"
    room = "bench"
    group = f"room_{room}"
    env = {"CHANNEL_BACKEND": "redis", "CHANNEL_PREFIX": prefix, "REDIS_URL": REDIS_URL}
    if stock:
        env["SSE_BURST_STOCK_HOSTS"] = "1"
    worker = BurstWorker(env, app="benchmarks.sse_burst:application",
                         name=f"sse-burst-{kind}").start()
    assert worker.process is not None
    pid = worker.process.pid
    result: dict[str, Any] = {"kind": kind, "stock": stock, "clients": clients_n}
    layers = {"default": redis_layer_config(REDIS_URL, prefix=prefix)}
    monitor: CommandLog | None = None
    clients = [Client() for _ in range(clients_n)]
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        with override_settings(CHANNEL_LAYERS=layers):
            await asyncio.sleep(1.0)
            rss_before = rss_kib(pid)
            start = time.perf_counter()
            await asyncio.gather(*(c.open(worker.port, f"/{kind}/{room}/") for c in clients))
            result["burst_seconds"] = round(time.perf_counter() - start, 2)
            statuses = Counter(str(c.status) if c.status else f"failed ({c.error})"
                               for c in clients)
            result["statuses"] = dict(statuses)
            await asyncio.sleep(10)  # past redis-py's 5 s socket timeout
            open_now = [c for c in clients if c.status == 200 and not c.closed]
            result["open_after_10s"] = len(open_now)
            rss_after = rss_kib(pid)
            result["rss_mib_before"] = round(rss_before / 1024, 1)
            result["rss_mib_after"] = round(rss_after / 1024, 1)
            result["rss_kib_per_stream"] = (
                round((rss_after - rss_before) / len(open_now), 1) if open_now else None)
            result["group_members_in_redis"] = admin.zcard(f"{prefix}:group:{group}")

            latencies = []
            cpu_start = proc_cpu(pid)
            for n in range(5):
                latency = await broadcast_round(clients, group, n)
                latencies.append(latency)
                await asyncio.sleep(0.2)  # let the worker go idle between rounds
            result["worker_cpu_ms_per_broadcast"] = round(
                (proc_cpu(pid) - cpu_start) * 1000 / 5, 1)
            done = [x for x in latencies if x is not None]
            result["broadcasts_reaching_all"] = f"{len(done)}/5"
            result["latency_ms_median"] = (
                round(statistics.median(done) * 1000, 1) if done else None)

            monitor = CommandLog(REDIS_URL, prefix)
            await asyncio.sleep(0.2)
            mark = len(monitor.lines)
            await broadcast_round(clients, group, 100)
            await asyncio.sleep(0.5)
            result["redis_commands_per_broadcast_all"] = len(monitor.lines) - mark
            result["redis_kib_per_broadcast_all"] = round(
                sum(len(line) for line in monitor.lines[mark:]) / 1024, 1)
            for client in [c for c in clients if c.status == 200][20:]:
                await client.close()
            settle = time.monotonic() + 30  # until the naive view's group_discards are done
            previous = -1
            while time.monotonic() < settle:
                await asyncio.sleep(1)
                members = admin.zcard(f"{prefix}:group:{group}")
                if members == previous:
                    break
                previous = members
            mark = len(monitor.lines)
            await broadcast_round(clients, group, 101)
            await asyncio.sleep(0.5)
            result["redis_commands_per_broadcast_20"] = len(monitor.lines) - mark
            result["redis_kib_per_broadcast_20"] = round(
                sum(len(line) for line in monitor.lines[mark:]) / 1024, 1)
    finally:
        for client in clients:
            await client.close()
        if monitor is not None:
            monitor.close()
        await asyncio.sleep(1)
        log = worker.output()
        result["worker_errors"] = {
            "Too many connections": log.count("Too many connections"),
            "Timeout reading": log.count("Timeout reading"),
            "Traceback": log.count("Traceback"),
        }
        worker.stop()
        keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            admin.delete(*keys)
        admin.close()
    return result


def _burst_worker_class() -> Any:
    from tests.support.servers import DaphneWorker

    class BurstWorker(DaphneWorker):
        """A DaphneWorker whose listen backlog takes a burst (Twisted's default is 50)."""

        def command(self) -> list[str]:
            endpoint = f"tcp:port={self.port}:interface=127.0.0.1:backlog=4096"
            return [str(Path(sys.executable).parent / "daphne"), "-e", endpoint, self.app]

    return BurstWorker


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # daphne inherits it


def table(results: list[dict[str, Any]]) -> str:
    label = {("hub", False): "hub (EventStreamView), tuned hosts",
             ("naive", True): "naive group_add per stream, stock hosts",
             ("naive", False): "naive group_add per stream, tuned hosts"}
    rows = [
        ("HTTP statuses of the burst", lambda r: ", ".join(
            f"{k}: {v}" for k, v in sorted(r["statuses"].items()))),
        ("burst accepted in", lambda r: f"{r['burst_seconds']} s"),
        ("streams still open 10 s later", lambda r: str(r["open_after_10s"])),
        ("worker RSS before / after", lambda r:
         f"{r['rss_mib_before']} / {r['rss_mib_after']} MiB"),
        ("RSS per open stream", lambda r: f"{r['rss_kib_per_stream']} KiB"
         if set(r["statuses"]) == {"200"} else "n/a (failed requests' tracebacks)"),
        ("group members in Redis", lambda r: str(r["group_members_in_redis"])),
        ("broadcasts reaching every open stream", lambda r: r["broadcasts_reaching_all"]),
        ("worker CPU per broadcast", lambda r: f"{r['worker_cpu_ms_per_broadcast']} ms"),
        ("broadcast to last receipt (median of 5)", lambda r:
         f"{r['latency_ms_median']} ms" if r["latency_ms_median"] is not None else "never"),
        ("Redis commands per broadcast, all streams / 20 streams", lambda r:
         f"{r['redis_commands_per_broadcast_all']} / {r['redis_commands_per_broadcast_20']}"),
        ("command bytes sent to Redis per broadcast, all / 20 streams", lambda r:
         f"{r['redis_kib_per_broadcast_all']} / {r['redis_kib_per_broadcast_20']} KiB"),
        ("worker log: Too many connections / Traceback", lambda r:
         f"{r['worker_errors']['Too many connections']} / {r['worker_errors']['Traceback']}"),
    ]
    head = "| | " + " | ".join(label[(r["kind"], r["stock"])] for r in results) + " |"
    sep = "|---" * (len(results) + 1) + "|"
    body = [f"| {name} | " + " | ".join(get(r) for r in results) + " |" for name, get in rows]
    return "\n".join([head, sep, *body])


def write_readme(text: str) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    current = readme.read_text() if readme.exists() else "# Benchmarks\n"
    start = current.find(SECTION)
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        following = current.find("\n## ", start + len(SECTION))
        end = len(current) if following < 0 else following + 1
        updated = current[:start] + text + ("\n" + current[end:] if following >= 0 else "")
    readme.write_text(updated.rstrip("\n") + "\n")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for kind, stock in (("hub", False), ("naive", True), ("naive", False)):
        print(f"--- {kind} stock={stock} N={args.clients}", flush=True)
        result = await run_scenario(kind, stock, args.clients)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true", help="do not update the README")
    args = parser.parse_args()
    raise_fd_limit(args.clients * 3 + 1024)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
    os.environ.setdefault("CHANNEL_BACKEND", "redis")
    import django

    django.setup()
    results = asyncio.run(main_async(args))
    text = section(results, args.clients)
    print(text)
    if not args.no_write:
        write_readme(text)


def section(results: list[dict[str, Any]], clients: int) -> str:
    """The ``## SSE burst`` section of benchmarks/README.md."""
    return (
        f"{SECTION}\n\n"
        f"`benchmarks/sse_burst.py`: {clients} SSE clients open their streams in one "
        "burst against one daphne worker (RedisChannelLayer, 127.0.0.1, 2 shared cores), "
        "then 5 broadcasts. Clients are raw asyncio sockets in one process; daphne listens "
        "with a 4096 backlog (Twisted's default of 50 makes a burst wait for SYN retries).\n\n"
        + table(results) + "\n\n"
        "Redis commands are `MONITOR` lines naming the run's key prefix during one "
        "broadcast (the hub's include the replay log's `EVALSHA`/`XREVRANGE`/`XADD`/`EXPIRE`; "
        "a 5 s `BZPOPMIN` re-issue can add one). Command bytes are the lengths of those lines "
        "(the naive layout sends every member channel's name with each message). Worker CPU "
        "is utime + stime from `/proc` over the 5 broadcasts. RSS per stream is (RSS after "
        "the burst - RSS before) / open streams, OpenTelemetry SDK off. Re-run: "
        "`.venv/bin/python benchmarks/sse_burst.py` (about 4 minutes).\n"
    )


if __name__ == "__main__":
    main()
