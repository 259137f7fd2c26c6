"""The example's OpenTelemetry SDK set-up, and the live span feed behind ``/traces/``.

:func:`configure` installs a ``TracerProvider`` whose ``service.name`` names
this worker (``WORKER_NAME``, else ``OTEL_SERVICE_NAME``, else ``chat-<port>``
from daphne's command line), adds :class:`LiveSpanProcessor`, and, when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, the standard OTLP/HTTP exporters. Under
``opentelemetry-instrument`` the provider already exists: only the live
processor is added to it.

:class:`LiveSpanProcessor` keeps finished spans in a bounded queue (``on_end``
is an append, nothing else) and a task on the server's event loop publishes
them every 250 ms as one ``spans`` event to the channel-layer group
``otel_traces`` with ``abroadcast()``, which also keeps it in the group's
bounded replay log (``SSE_REPLAY_MAXLEN`` batches, in Redis when the layer is).
The ``/traces/`` page follows that group through the project's own
``EventStreamView``, so with two workers on Redis the spans of both arrive in
one picture, and a page opened later first gets the log's tail (see
``TraceEventsView``). Publishing runs under ``suppress_instrumentation()``:
the ``group_send`` makes no span and its deliveries are not traced, otherwise
every batch would create spans for the next batch, forever.

Spans of the example's pages (the browser module with the OpenTelemetry JS web
SDK, posted to ``/otlp/v1/traces``, see ``browser_spans``) go through the same
processor; a batch names who made its spans, so theirs are published as the
page's (``"client": true``), not as this worker's.

Only names, ids, times, links and a short list of low-cardinality attributes
leave the process; message payloads never do.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

__all__ = [
    "KEY_ATTRIBUTES", "LiveSpanProcessor", "TRACE_GROUP", "Worker", "configure", "flush",
    "live_processor", "span_record", "start_publisher", "worker",
]

logger = logging.getLogger(__name__)

#: The channel-layer group the live view follows.
TRACE_GROUP = "otel_traces"
#: Routes whose own spans stay out of the live view (it should show the app, not itself).
LIVE_VIEW_ROUTES = frozenset({"/traces/events/"})
#: Attributes copied to the live view: low cardinality, never a payload, never a query.
KEY_ATTRIBUTES = (
    "http.route", "url.path", "http.request.method", "http.response.status_code",
    "network.protocol.name", "messaging.operation.name", "messaging.destination.name",
    "messaging.destination.template", "messaging.message.body.size", "channels.message.type",
    "channels.message.delivery.delay", "channels.consumer", "channels.connection.status",
    "channels.sse.streams", "websocket.close.code", "websocket.message.type", "error.type",
    "chat.room", "chat.message.id", "chat.action", "db.system.name", "url.template",
    "sse.event.type",
)


@dataclass(frozen=True)
class Worker:
    """Who this process is, as shown next to every span and message."""

    name: str
    pid: int
    port: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "port": self.port}


_PORT_ENDPOINT = re.compile(r"^tcp:(?:port=)?(\d+)")


def port_from_argv(argv: Sequence[str]) -> int | None:
    """The port daphne (``-p 8001``, ``--port=8001``, ``-e tcp:8001``) or runserver listens on."""
    args = list(argv)
    for index, arg in enumerate(args):
        value: str | None = None
        if arg in ("-p", "--port", "-e", "--endpoint") and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--port="):
            value = arg.partition("=")[2]
        elif arg.startswith("-p") and arg[2:].isdigit():
            value = arg[2:]
        if value is None:
            continue
        match = _PORT_ENDPOINT.match(value)
        if match:
            return int(match.group(1))
        if value.isdigit():
            return int(value)
    if "runserver" in args:  # manage.py runserver [addr:]port
        tail = args[args.index("runserver") + 1:]
        for arg in tail:
            if not arg.startswith("-"):
                port = arg.rpartition(":")[2]
                return int(port) if port.isdigit() else None
        return 8000
    return None


_worker: Worker | None = None


def worker() -> Worker:
    """This process's identity (computed once)."""
    global _worker
    if _worker is None:
        port = os.environ.get("WORKER_PORT")
        port_number = int(port) if port and port.isdigit() else port_from_argv(sys.argv)
        name = (
            os.environ.get("WORKER_NAME")
            or os.environ.get("OTEL_SERVICE_NAME")
            or (f"chat-{port_number}" if port_number else f"chat-pid{os.getpid()}")
        )
        _worker = Worker(name=name, pid=os.getpid(), port=port_number)
    return _worker


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as a small msgpack- and JSON-safe dict (times in microseconds)."""
    ctx = span.context
    parent = span.parent
    attributes = span.attributes or {}
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        # Microseconds keep JavaScript numbers exact (nanoseconds overflow 2**53).
        "start_us": (span.start_time or 0) // 1000,
        "end_us": (span.end_time or 0) // 1000,
        "status": span.status.status_code.name,
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
        "events": len(span.events),
        "attributes": {
            key: attributes[key] for key in KEY_ATTRIBUTES
            if key in attributes and isinstance(attributes[key], (str, int, float, bool))
        },
    }


class LiveSpanProcessor(SpanProcessor):
    """Publishes finished spans to a channel-layer group in batches.

    Args:
        who: the worker named on every batch.
        group: the channel-layer group (``otel_traces``).
        interval: seconds between publishes.
        max_batch: spans per channel-layer message.
        max_queue: spans kept while nothing publishes; older ones are dropped.
    """

    def __init__(
        self, who: Worker, group: str = TRACE_GROUP, interval: float = 0.25,
        max_batch: int = 200, max_queue: int = 5000,
    ) -> None:
        self.worker = who
        self.group = group
        self.interval = interval
        self.max_batch = max_batch
        self.queue: collections.deque[ReadableSpan] = collections.deque(maxlen=max_queue)
        self.published = 0
        self.task: asyncio.Task[None] | None = None

    # -- SpanProcessor -----------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes
        if attributes and (
            attributes.get("http.route") in LIVE_VIEW_ROUTES
            or attributes.get("messaging.destination.name") == self.group
        ):
            return
        self.queue.append(span)  # deque.append is atomic: safe from any thread

    def shutdown(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- publishing ----------------------------------------------------------------

    def start(self) -> None:
        """Start the publishing task on the running event loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if self.task is not None and not self.task.done() and self.task.get_loop() is loop:
            return
        self.task = loop.create_task(self._run(), name="live-span-publisher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish()
            except Exception:  # e.g. Redis restarting: keep the server, retry next tick
                logger.warning("live span publishing failed", exc_info=True)

    def _take(self) -> list[ReadableSpan]:
        batch: list[ReadableSpan] = []
        queue = self.queue
        while queue and len(batch) < self.max_batch:
            batch.append(queue.popleft())
        return batch

    def _origin(self, span: ReadableSpan) -> dict[str, Any]:
        """Who made ``span``: this worker, or a page whose spans came to ``/otlp/v1/traces``."""
        resource = span.resource.attributes if span.resource is not None else {}
        if resource.get("telemetry.sdk.language") == "webjs":  # the OpenTelemetry JS web SDK
            return {"name": str(resource.get("service.name", "browser")), "pid": None,
                    "port": None, "client": True}
        return self.worker.as_dict()

    async def publish(self) -> int:
        """Publish everything queued now; returns the number of spans sent."""
        from channels.layers import get_channel_layer

        from otel_channels.broadcast import abroadcast

        if get_channel_layer() is None:
            return 0
        sent = 0
        while True:
            batch = self._take()
            if not batch:
                return sent
            by_origin: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
            for span in batch:
                who = self._origin(span)
                by_origin.setdefault(who["name"], (who, []))[1].append(span_record(span))
            for who, records in by_origin.values():
                data = {"worker": who, "spans": records}
                with suppress_instrumentation():
                    # abroadcast(), not a plain group_send: the batch is logged for replay even
                    # while no page is open, so /traces/ opened later starts with recent spans.
                    await abroadcast(self.group, "spans", data)
            sent += len(batch)
            self.published += len(batch)


_processor: LiveSpanProcessor | None = None


def live_processor() -> LiveSpanProcessor | None:
    return _processor


def configure(name: str | None = None) -> LiveSpanProcessor:
    """Install the SDK (once per process) with the live processor; OTLP when configured."""
    global _processor, _worker
    if _processor is not None:
        return _processor
    if name is not None:
        _worker = Worker(name=name, pid=os.getpid(), port=None)
    who = worker()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        resource = Resource.create({
            "service.name": who.name,
            "service.instance.id": f"{who.name}-{who.pid}",
            "process.pid": who.pid,
        })
        provider = TracerProvider(resource=resource)
        if _otlp_configured():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _configure_metrics(resource)
        trace.set_tracer_provider(provider)
    else:  # opentelemetry-instrument configured the SDK: name spans as it does
        service = provider.resource.attributes.get("service.name")
        if isinstance(service, str) and not service.startswith("unknown_service"):
            _worker = who = Worker(name=service, pid=who.pid, port=who.port)
    _processor = LiveSpanProcessor(who)
    provider.add_span_processor(_processor)
    return _processor


def _otlp_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _configure_metrics(resource: Resource) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider":
        return  # somebody installed one already
    metrics.set_meter_provider(MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
    ))


def start_publisher() -> None:
    """Start publishing on the running loop (the ASGI wrapper calls this on first use)."""
    if _processor is not None:
        _processor.start()


def flush() -> None:
    """Publish what is queued from sync code (management commands), then flush exporters."""
    from asgiref.sync import async_to_sync

    if _processor is not None and _processor.queue:
        try:
            async_to_sync(_processor.publish)()
        except Exception:  # the live view is a nicety: never fail the command for it
            logger.warning("publishing spans to the live view failed", exc_info=True)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()


class LivePublisherMiddleware:
    """ASGI wrapper that starts the span publisher on the server's loop at the first request."""

    def __init__(self, application: Any) -> None:
        self.application = application
        self.started = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if not self.started:
            self.started = True
            start_publisher()
        return await self.application(scope, receive, send)
