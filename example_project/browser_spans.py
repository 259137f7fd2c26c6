"""``POST /otlp/v1/traces``: the example pages' spans, re-exported through the server's SDK.

The chat and follower pages trace their WebSocket / EventSource with the
OpenTelemetry JS web SDK and the app's browser module, and export OTLP/HTTP
JSON to this endpoint on their own origin (no CORS). Each span becomes an SDK
``ReadableSpan`` (its resource: the page's ``service.name`` and the JS SDK's
``telemetry.sdk.*``) handed to the worker's span processors, so it reaches the
live trace view (``LiveSpanProcessor``, which draws it as a browser) and any
OTLP exporter the worker has, next to the server's spans of the same trace.

An example, not a collector: bounded body and span count, only the fields the
OTLP/JSON encoding of the JS exporter writes. In production, point the web SDK
at a collector's OTLP/HTTP receiver with CORS allowed for your origin.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["MAX_BODY", "MAX_SPANS", "otlp_traces", "readable_spans"]

MAX_BODY = 1 << 20  # bytes of one export request (the JS exporter sends < 64 KiB batches)
MAX_SPANS = 2000  # spans of one request
# OTLP's span kind numbers (SPAN_KIND_INTERNAL = 1 ...) to the API's enum.
_KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT, 4: SpanKind.PRODUCER,
          5: SpanKind.CONSUMER}
_STATUS = {1: StatusCode.OK, 2: StatusCode.ERROR}


def _value(value: Mapping[str, Any]) -> Any:
    for kind, item in value.items():
        if kind == "intValue":
            return int(item)  # OTLP/JSON may write int64 as a string
        if kind == "arrayValue":
            return tuple(_value(v) for v in item.get("values", ()))
        if kind in ("stringValue", "boolValue", "doubleValue"):
            return item
    return None


def _attributes(items: Any) -> dict[str, Any]:
    found = {}
    for item in items or ():
        value = _value(item.get("value") or {})
        if value is not None:
            found[str(item["key"])] = value
    return found


def _context(trace_id: str, span_id: str, sampled: bool = True) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))


def readable_spans(body: Mapping[str, Any]) -> Iterator[ReadableSpan]:
    """The SDK spans of one OTLP/JSON ``ExportTraceServiceRequest`` (ids in hex)."""
    count = 0
    for resource_spans in body.get("resourceSpans", ()):
        resource = Resource(_attributes((resource_spans.get("resource") or {}).get("attributes")))
        for scope_spans in resource_spans.get("scopeSpans", ()):
            scope_data = scope_spans.get("scope") or {}
            scope = InstrumentationScope(str(scope_data.get("name", "")),
                                         scope_data.get("version") or None)
            for span in scope_spans.get("spans", ()):
                count += 1
                if count > MAX_SPANS:
                    return
                parent = span.get("parentSpanId")
                status = span.get("status") or {}
                yield ReadableSpan(
                    name=str(span["name"])[:200],
                    context=_context(span["traceId"], span["spanId"]),
                    parent=_context(span["traceId"], parent) if parent else None,
                    resource=resource,
                    attributes=_attributes(span.get("attributes")),
                    events=[Event(str(e.get("name", "")), _attributes(e.get("attributes")),
                                  int(e.get("timeUnixNano", 0))) for e in span.get("events", ())],
                    links=[Link(_context(link["traceId"], link["spanId"]),
                                _attributes(link.get("attributes")))
                           for link in span.get("links", ())],
                    kind=_KINDS.get(int(span.get("kind", 1)), SpanKind.INTERNAL),
                    status=Status(_STATUS.get(int(status.get("code", 0)), StatusCode.UNSET),
                                  status.get("message") or None),
                    start_time=int(span["startTimeUnixNano"]),
                    end_time=int(span["endTimeUnixNano"]),
                    instrumentation_scope=scope,
                )


@csrf_exempt
@require_POST
def otlp_traces(request: HttpRequest) -> HttpResponse:
    """Take an OTLP/HTTP JSON export from a page and hand its spans to this worker's SDK."""
    if int(request.headers.get("Content-Length") or 0) > MAX_BODY:
        return JsonResponse({"error": "too large"}, status=413)
    if not request.content_type.startswith("application/json"):
        return JsonResponse({"error": "OTLP/JSON only"}, status=415)
    try:
        spans = list(readable_spans(json.loads(request.body)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return JsonResponse({"error": "not an OTLP/JSON trace request"}, status=400)
    provider = trace.get_tracer_provider()
    # The SDK has no public "export this finished span" call: its active processor (every
    # processor added to the provider: the live view, the OTLP exporter) is what ends spans.
    processor = getattr(provider, "_active_span_processor", None)
    if isinstance(provider, TracerProvider) and processor is not None:
        for span in spans:
            processor.on_end(span)
    return JsonResponse({})  # an empty ExportTraceServiceResponse: everything accepted
