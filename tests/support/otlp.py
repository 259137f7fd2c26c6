"""An OTLP/HTTP receiver inside the test process.

Workers export with the real ``OTLPSpanExporter`` / ``OTLPMetricExporter``
(protobuf over HTTP) to ``receiver.endpoint``; the receiver decodes each
request with ``opentelemetry-proto`` and keeps flat span and metric records.
Browser pages export with the OpenTelemetry JS web SDK's OTLP/HTTP exporter
(JSON, from another origin): the receiver answers CORS preflights and reads
OTLP/JSON trace requests too.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _json_value(value: dict[str, Any]) -> Any:
    for kind, item in value.items():
        if kind == "arrayValue":
            return [_json_value(v) for v in item.get("values", [])]
        if kind == "intValue":
            return int(item)  # JSON int64 may come as a string
        return item
    return None


def _json_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _json_value(item.get("value", {})) for item in items}


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@dataclass
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    links: list[tuple[str, str]]
    attributes: dict[str, Any]
    service: str
    pid: Any
    status_code: int
    events: list[str] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricPoint:
    name: str
    service: str
    attributes: dict[str, Any]
    value: float | None
    count: int | None


class OTLPReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[MetricPoint] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _cors(self) -> None:
                # Browsers post OTLP/JSON cross-origin: a preflight (Content-Type is not a
                # CORS-safelisted value) then the POST, whose response must allow the origin.
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
                self.send_header("Access-Control-Allow-Methods", "POST")
                self.send_header("Access-Control-Allow-Headers", "Content-Type")
                self.send_header("Access-Control-Max-Age", "600")

            def do_OPTIONS(self) -> None:  # noqa: N802
                self.send_response(204)
                self._cors()
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _body(self) -> bytes:
                # Node's OTLP/HTTP exporter pipes its request (Transfer-Encoding: chunked,
                # no Content-Length); browsers and the Python exporters send a length.
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length", 0)))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailer lines, up to the blank line
                return b"".join(chunks)

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                as_json = self.headers.get("Content-Type", "").startswith("application/json")
                if self.path.endswith("/v1/traces"):
                    receiver._traces_json(body) if as_json else receiver._traces(body)
                elif self.path.endswith("/v1/metrics"):
                    receiver._metrics(body)
                self.send_response(200)
                self._cors()
                self.send_header("Content-Type",
                                 "application/json" if as_json else "application/x-protobuf")
                self.send_header("Content-Length", "2" if as_json else "0")
                self.end_headers()
                if as_json:
                    self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Standard OTLP variables pointing a worker's exporters here, exporting fast."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(Span(
                        name=span.name, kind=KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        attributes=_attributes(span.attributes),
                        service=str(resource.get("service.name")),
                        pid=resource.get("process.pid"),
                        status_code=span.status.code,
                        events=[event.name for event in span.events],
                        resource=resource,
                    ))
        with self.lock:
            self.spans.extend(found)

    def _traces_json(self, body: bytes) -> None:
        """OTLP/JSON (the JS exporters): ids in hex, kinds and values as in the protobuf."""
        request = json.loads(body)
        found = []
        for resource_spans in request.get("resourceSpans", []):
            resource = _json_attributes(resource_spans.get("resource", {}).get("attributes", []))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    found.append(Span(
                        name=span["name"], kind=KINDS.get(span.get("kind", 0), "?"),
                        trace_id=span["traceId"], span_id=span["spanId"],
                        parent_span_id=span.get("parentSpanId") or "",
                        links=[(link["traceId"], link["spanId"]) for link in span.get("links", [])],
                        attributes=_json_attributes(span.get("attributes", [])),
                        service=str(resource.get("service.name")),
                        pid=resource.get("process.pid"),
                        status_code=int(span.get("status", {}).get("code", 0)),
                        events=[event["name"] for event in span.get("events", [])],
                        resource=resource,
                    ))
        with self.lock:
            self.spans.extend(found)

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        found = []
        for resource_metrics in request.resource_metrics:
            service = str(_attributes(resource_metrics.resource.attributes).get("service.name"))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = metric.WhichOneof("data")
                    for point in getattr(metric, data).data_points:
                        value = None
                        if hasattr(point, "as_int") or hasattr(point, "as_double"):
                            which = point.WhichOneof("value") if data in ("sum", "gauge") else None
                            value = getattr(point, which) if which else None
                        found.append(MetricPoint(
                            name=metric.name, service=service,
                            attributes=_attributes(point.attributes), value=value,
                            count=getattr(point, "count", None) if data == "histogram" else None,
                        ))
        with self.lock:
            self.metrics.extend(found)

    def ready(self, predicate: Any, deadline: float) -> list[Span] | None:
        """The spans if ``predicate(spans)`` is truthy, else None; raises past ``deadline``."""
        with self.lock:
            spans = list(self.spans)
        if predicate(spans):
            return spans
        if time.monotonic() > deadline:
            names = sorted(f"{s.service}:{s.name}" for s in spans)
            raise AssertionError(f"timed out waiting for spans; have {names}")
        return None

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[Span]:
        """Wait until ``predicate(spans)`` is truthy; return the spans."""
        deadline = time.monotonic() + timeout
        while (spans := self.ready(predicate, deadline)) is None:
            time.sleep(0.05)
        return spans

    def __enter__(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


async def wait_spans(receiver: OTLPReceiver, predicate: Callable[[list[Span]], bool],
                     timeout: float = 15.0) -> list[Span]:
    """The received spans once ``predicate`` holds (polled without blocking the event loop)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.ready(predicate, deadline)
        if spans is not None:
            return spans
        await asyncio.sleep(0.05)


def one_span(spans: list[Span], name: str, service: str) -> Span:
    """The only span named ``name`` exported by ``service``."""
    found = [s for s in spans if s.name == name and s.service == service]
    assert len(found) == 1, (name, service, [f"{s.service}:{s.name}" for s in spans])
    return found[0]
