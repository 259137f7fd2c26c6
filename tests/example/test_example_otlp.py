"""The example's ``/otlp/v1/traces``: a page's OTLP/JSON export becomes SDK spans of the worker.

The view hands each span to the provider's processors, so here they reach the
session's in-memory exporter with their ids, parent, links, kind, status,
times and the page's resource, exactly as the JS exporter encoded them.
"""

from __future__ import annotations

import json
from typing import Any

from django.test import RequestFactory
from opentelemetry.trace import SpanKind, StatusCode

from example_project.browser_spans import MAX_BODY, otlp_traces

TRACE = "5b8efff798038103d269b633813fc60c"


def _export(*spans: dict[str, Any]) -> dict[str, Any]:
    """An ExportTraceServiceRequest as @opentelemetry/exporter-trace-otlp-http writes it."""
    return {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "room@chat-8000"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "webjs"}},
        ]},
        "scopeSpans": [{"scope": {"name": "otel_channels.browser", "version": "0.1.0"},
                        "spans": list(spans)}],
    }]}


SEND = {
    "traceId": TRACE, "spanId": "eee19b7ec3c1b174", "name": "send /ws/chat/<room>/",
    "kind": 4, "startTimeUnixNano": "1765100000000000000", "endTimeUnixNano": 1765100000000300000,
    "attributes": [
        {"key": "messaging.message.body.size", "value": {"intValue": 57}},
        {"key": "url.template", "value": {"stringValue": "/ws/chat/<room>/"}},
    ],
    "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
               "attributes": []}],
    "events": [], "status": {"code": 0},
}
RECEIVE = {
    "traceId": TRACE, "spanId": "00f067aa0ba902b7", "parentSpanId": "53995c3f42cd8ad8",
    "name": "receive /ws/chat/<room>/", "kind": 5, "startTimeUnixNano": "1765100000010000000",
    "endTimeUnixNano": "1765100000012000000", "attributes": [],
    "status": {"code": 2, "message": "boom"},
    "events": [{"name": "exception", "timeUnixNano": "1765100000011000000", "attributes": []}],
}


def _post(body: bytes, content_type: str = "application/json") -> Any:
    request = RequestFactory().post("/otlp/v1/traces", data=body, content_type=content_type)
    return otlp_traces(request)


def test_page_spans_reach_the_workers_processors(spans: Any) -> None:
    response = _post(json.dumps(_export(SEND, RECEIVE)).encode())
    assert response.status_code == 200 and json.loads(response.content) == {}
    send = spans.one("send /ws/chat/<room>/")
    assert (f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}") == (
        TRACE, "eee19b7ec3c1b174")
    assert send.parent is None and send.kind is SpanKind.PRODUCER
    assert (send.start_time, send.end_time) == (1765100000000000000, 1765100000000300000)
    assert send.attributes == {"messaging.message.body.size": 57,
                               "url.template": "/ws/chat/<room>/"}
    assert [f"{link.context.span_id:016x}" for link in send.links] == ["b7ad6b7169203331"]
    assert send.resource.attributes["service.name"] == "room@chat-8000"
    assert send.instrumentation_scope is not None
    assert send.instrumentation_scope.name == "otel_channels.browser"
    receive = spans.one("receive /ws/chat/<room>/")
    assert receive.parent is not None and f"{receive.parent.span_id:016x}" == "53995c3f42cd8ad8"
    assert receive.kind is SpanKind.CONSUMER
    assert receive.status.status_code is StatusCode.ERROR and receive.status.description == "boom"
    assert [event.name for event in receive.events] == ["exception"]


def test_bad_requests_are_refused_and_export_nothing(spans: Any) -> None:
    assert _post(b"\x0a\x00", "application/x-protobuf").status_code == 415
    assert _post(b"{not json").status_code == 400
    assert _post(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"name": "x"}]}]}]}).encode()).status_code == 400  # no ids
    assert _post(b"{" + b" " * MAX_BODY + b"}").status_code == 413
    assert spans.all() == []
