"""The browser module end to end: one chat message from the sender's page to every receiver's.

Two daphne workers on Redis, headless Chromium with the OpenTelemetry JS web SDK
exporting (OTLP/HTTP JSON, cross-origin) to the in-test receiver. Page A (on
worker A) sends; page B (on worker B) and an SSE follower page (on worker B)
receive. One trace holds A's ``send``, the server's ``receive``, ``group_send``,
a ``process`` span on each worker, and the ``receive`` spans of B and of the
follower, whose parents are the server's ``process`` spans.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.browser import browser, context, flush, open_page  # noqa: F401
from tests.support.otlp import Span
from tests.support.servers import two_workers

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.multiprocess,
              pytest.mark.timeout(240)]

SSE_ROUTE = "/events/<room>/"
SETTINGS = {"QUERY_TRACEPARENT": True, "SSE_TRACEPARENT_FIELD": True}

CHAT = """([path, room, key]) => new Promise((resolve, reject) => {
  const { TracedWebSocket } = window.traced;
  const ws = new TracedWebSocket(`/ws/${path}/${room}/`, undefined,
                                 { route: `/ws/${path}/<room>/`, jsonTraceparentKey: key });
  window.ws = ws; window.got = []; window.handled = [];
  ws.addEventListener("message", (event) => {
    window.got.push(JSON.parse(event.data).text);
    // The app's own span, started in the listener: it joins the receive span's trace.
    const tracer = window.sdk.api.trace.getTracer("page");
    const span = tracer.startSpan("render message");
    window.handled.push(span.spanContext().traceId);
    span.end();
  });
  ws.onopen = () => resolve(ws.readyState);
  ws.onerror = () => reject(new Error("error"));
})"""

FOLLOW = """(room) => new Promise((resolve) => {
  const { TracedEventSource } = window.traced;
  const source = new TracedEventSource(`/events/${room}/`, {}, { route: "/events/<room>/" });
  window.source = source; window.got = [];
  source.addEventListener("chat.message", (event) => {
    window.got.push([event.lastEventId, JSON.parse(event.data).text]);
  });
  source.onopen = () => resolve(source.readyState);
})"""


def named(spans: list[Span], name: str, service: str | None = None) -> list[Span]:
    return [s for s in spans if s.name == name and (service is None or s.service == service)]


@pytest.mark.parametrize(("path", "key", "settings"), [
    # The consumer injects its process span's context itself (propagate.inject).
    ("chat-traced", "traceparent", {}),
    # A plain traced consumer with JSON_CONTEXT_TO_CLIENT, and a carrier object both ways.
    ("chat", "_ctx", {"JSON_CONTEXT_TO_CLIENT": True, "JSON_TRACEPARENT_KEY": "_ctx"}),
], ids=["inject-traceparent", "context-to-client-carrier"])
def test_one_trace_from_sender_page_to_every_receiving_page(
    context: Any, redis_url: str, path: str, key: str, settings: dict[str, Any],  # noqa: F811
) -> None:
    room = f"e{uuid.uuid4().hex[:8]}"
    env = {"OTEL_CHANNELS_JSON": json.dumps({**SETTINGS, **settings})}
    ws_route = f"/ws/{path}/<room>/"
    with two_workers(redis_url, prefix="browser", extra_env=env) as (receiver, a, b):
        otlp = receiver.endpoint
        page_a = open_page(context, a.url, otlp, "browser-a")
        page_b = open_page(context, b.url, otlp, "browser-b")
        follower = open_page(context, b.url, otlp, "follower")
        assert page_a.evaluate(CHAT, [path, room, key]) == 1
        assert page_b.evaluate(CHAT, [path, room, key]) == 1
        assert follower.evaluate(FOLLOW, room) == 1
        # The follower's stream is subscribed once its connect span is on the server.
        receiver.wait_for(lambda spans: any(
            s.name == f"connect {SSE_ROUTE}" and s.service == "worker-b" for s in spans), 30)

        page_a.evaluate("window.ws.send(JSON.stringify({ text: 'hello from A' }))")
        for page in (page_a, page_b):
            page.wait_for_function("window.got.includes('hello from A')")
        follower.wait_for_function("window.got.some(([, text]) => text === 'hello from A')")
        for page in (page_a, page_b, follower):
            flush(page)

        send_name, receive_ws = f"send {ws_route}", f"receive {ws_route}"

        def complete(spans: list[Span]) -> bool:
            sends = named(spans, send_name, "browser-a")
            if not sends:
                return False
            trace = [s for s in spans if s.trace_id == sends[0].trace_id]
            return (len(named(trace, receive_ws, "browser-b")) == 1
                    and len(named(trace, f"receive {SSE_ROUTE}", "follower")) == 1
                    and len(named(trace, receive_ws, "browser-a")) == 1
                    and {s.service for s in trace if s.name.startswith("process ")}
                    >= {"worker-a", "worker-b"})

        spans = receiver.wait_for(complete, 60)
        (send,) = named(spans, send_name, "browser-a")
        trace = [s for s in spans if s.trace_id == send.trace_id]
        by_id = {s.span_id: s for s in trace}

        assert send.kind == "PRODUCER"
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.attributes["url.template"] == ws_route
        assert send.attributes["websocket.message.type"] == "text"
        assert send.attributes["messaging.message.body.size"] > len('{"text":"hello from A"}')
        (server_receive,) = named(trace, receive_ws, "worker-a")
        assert server_receive.kind == "CONSUMER"
        assert server_receive.parent_span_id == send.span_id  # the frame's traceparent
        (group_send,) = [s for s in trace if s.name.startswith("group_send ")]
        assert group_send.service == "worker-a"
        assert by_id[group_send.parent_span_id] is server_receive
        processes = {s.service: s for s in trace if s.name.startswith("process ")
                     and s.parent_span_id == group_send.span_id
                     and "channels.sse.streams" not in s.attributes}  # the WebSocket deliveries
        assert set(processes) == {"worker-a", "worker-b"}

        # Browser B's receive: the child of worker B's process span (the frame's context).
        (receive_b,) = named(trace, receive_ws, "browser-b")
        assert receive_b.kind == "CONSUMER"
        assert receive_b.parent_span_id == processes["worker-b"].span_id
        assert receive_b.attributes["messaging.operation.type"] == "process"
        assert receive_b.attributes["websocket.message.type"] == "text"
        assert "messaging.message.body.size" in receive_b.attributes
        assert "text" not in json.dumps(receive_b.attributes).replace('"text"', "")  # no contents
        (receive_a,) = named(trace, receive_ws, "browser-a")
        assert receive_a.parent_span_id == processes["worker-a"].span_id
        # The follower's receive: the child of worker B's SSE delivery (the traceparent: field).
        (receive_f,) = named(trace, f"receive {SSE_ROUTE}", "follower")
        sse_process = by_id[receive_f.parent_span_id]
        assert sse_process.service == "worker-b" and sse_process.name.startswith("process ")
        assert by_id[sse_process.parent_span_id] is group_send
        assert sse_process.attributes["channels.sse.streams"] == 1
        assert receive_f.attributes["sse.event.type"] == "chat.message"
        assert receive_f.attributes["sse.last_event_id"]
        # The page's own span started in its listener is in the same trace.
        assert page_b.evaluate("window.handled")[-1] == send.trace_id
        (render,) = [s for s in trace if s.name == "render message" and s.service == "browser-b"]
        assert render.parent_span_id == receive_b.span_id

        # Each receive links its connection's connect span; the server's connect span is the
        # child of the browser's (the handshake's ?traceparent=).
        for service, receive in (("browser-b", receive_b), ("follower", receive_f)):
            route = SSE_ROUTE if service == "follower" else ws_route
            (connect,) = named(spans, f"connect {route}", service)
            assert connect.kind == "CLIENT"
            assert receive.links == [(connect.trace_id, connect.span_id)]
            server_connect = [s for s in spans if s.name == f"connect {route}"
                              and s.service == "worker-b" and s.parent_span_id == connect.span_id]
            assert len(server_connect) == 1, service
        for page in (page_a, page_b, follower):
            assert page.errors == []
