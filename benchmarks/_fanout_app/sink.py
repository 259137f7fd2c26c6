"""A local OTLP/HTTP receiver for ``python -m benchmarks.fanout`` runs with the real exporter
(a separate process).

``python -m benchmarks._fanout_app.sink PORT`` listens on 127.0.0.1:PORT and
accepts what the SDK's OTLP/HTTP exporters post: ``POST /v1/traces`` and
``POST /v1/metrics`` with a protobuf body (gzip or deflate if the exporter
compresses). Each body is parsed as an ``Export*ServiceRequest``, spans are
counted, and the reply is ``200`` with a serialized ``Export*ServiceResponse``,
as a collector answers: so the exporter pays its full cost (encoding, HTTP,
waiting for the response) and nothing is lost silently. A body that does not
parse gets ``400`` and is counted under ``errors``. ``GET /stats`` returns the
counters as JSON.
"""

from __future__ import annotations

import gzip
import http.server
import json
import sys
import threading
import zlib
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
_stats: dict[str, int] = {"trace_requests": 0, "spans": 0, "metric_requests": 0,
                          "data_points": 0, "log_requests": 0, "bytes": 0, "errors": 0}


def _spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans
               for scope in resource.scope_spans)


def _points(request: ExportMetricsServiceRequest) -> int:
    count = 0
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                count += len(getattr(metric, kind).data_points) if kind else 0
    return count


class Handler(http.server.BaseHTTPRequestHandler):
    """OTLP/HTTP protobuf: parse, count, answer like a collector."""

    protocol_version = "HTTP/1.1"  # keep-alive: the exporter's requests.Session reuses it

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        encoding = (self.headers.get("content-encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path.startswith("/v1/traces"):
                trace_request = ExportTraceServiceRequest.FromString(body)
                counts = {"trace_requests": 1, "spans": _spans(trace_request)}
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path.startswith("/v1/metrics"):
                metric_request = ExportMetricsServiceRequest.FromString(body)
                counts = {"metric_requests": 1, "data_points": _points(metric_request)}
                reply = ExportMetricsServiceResponse().SerializeToString()
            elif self.path.startswith("/v1/logs"):
                ExportLogsServiceRequest.FromString(body)
                counts = {"log_requests": 1}
                reply = ExportLogsServiceResponse().SerializeToString()
            else:
                self._reply(404, b"", "text/plain")
                return
        except Exception:  # a body that is not what it claims: count it, tell the exporter
            with _lock:
                _stats["errors"] += 1
            self._reply(400, b"", "text/plain")
            return
        with _lock:
            _stats["bytes"] += len(body)
            for key, value in counts.items():
                _stats[key] += value
        self._reply(200, reply, "application/x-protobuf")

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/stats":
            self._reply(404, b"", "text/plain")
            return
        with _lock:
            body = json.dumps(_stats).encode()
        self._reply(200, body, "application/json")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
