"""Client context both ways under real daphne workers (issue 18), frames as foreign clients
write them:

* worker ``go`` (``JSON_TRACEPARENT_KEY = "trace_flags"``): the design guide's Go
  ``TracedMessage``, ``encoding/json`` output (no spaces, map keys sorted) with the map
  filled by ``otel.GetTextMapPropagator().Inject`` (trace context and baggage);
* worker ``js`` (default key): an OpenTelemetry JS client's ``propagation.inject(ctx, frame)``
  on the frame itself, with baggage.

Both run with ``JSON_CONTEXT_TO_CLIENT``: each frame's ``receive`` span is the child of
the client's span, the handler sees the frame's baggage (also across the channel layer),
and the context in each reply, read back with the W3C propagator, is the server span
that sent it, flags ``01``.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.support.anyserver import TEMPLATE, names, new_room, settle
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import DaphneWorker, running
from tests.support.websocket import open_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(90)]

ROUTE = "/ws/baggage/<room>/"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GO_SPAN, JS_SPAN = "00f067aa0ba902b7", "b7ad6b7169203331"


def go_frame(extra: str = "") -> str:
    """A TracedMessage as Go's encoding/json writes it (struct order; map keys sorted)."""
    return ('{"action":"chat",' + extra + '"data":{"text":"hi"},"trace_id":"' + TRACE + '",'
            '"span_id":"' + GO_SPAN + '","trace_flags":{"baggage":"tenant=acme",'
            '"traceparent":"00-' + TRACE + "-" + GO_SPAN + '-01","tracestate":"k=v"}}')


JS_FRAME = ('{"echo":true,"traceparent":"00-' + TRACE + "-" + JS_SPAN + '-01",'
            '"tracestate":"k=v","baggage":"tenant=js"}')


def w3c(carrier: dict[str, str]) -> tuple[str, str, int]:
    ctx = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier))
    found = ctx.get_span_context()
    return f"{found.trace_id:032x}", f"{found.span_id:016x}", int(found.trace_flags)


async def test_foreign_client_frames_and_replies_under_daphne() -> None:
    room_go, room_js = new_room(), new_room()
    on = {"JSON_CONTEXT_TO_CLIENT": True}
    with OTLPReceiver() as receiver:
        go = DaphneWorker({**receiver.env(), "OTEL_CHANNELS_JSON": json.dumps(
            {**on, "JSON_TRACEPARENT_KEY": "trace_flags"})}, name="go")
        js = DaphneWorker({**receiver.env(), "OTEL_CHANNELS_JSON": json.dumps(on)}, name="js")
        with running(go, js, join_timeout=60):
            async with open_clients({"go": f"{go.ws_url}/ws/baggage/{room_go}/",
                                     "js": f"{js.ws_url}/ws/baggage/{room_js}/"}) as ws:
                await ws["go"].ws.send(go_frame('"echo":true,'))
                echo_go = await ws["go"].receive_json()
                await ws["go"].ws.send(go_frame())  # the guide's message: a broadcast
                chat_go = await ws["go"].receive_json()
                await ws["js"].ws.send(JS_FRAME)
                echo_js = await ws["js"].receive_json()

            def done(spans: list[Span]) -> bool:
                return (sum(s.name == f"receive {ROUTE}" for s in spans) >= 3
                        and any(s.name == f"process {TEMPLATE}" for s in spans))

            spans = await settle(receiver, done, timeout=15)

    receives = [s for s in spans if s.name == f"receive {ROUTE}"]
    go_receives = [s for s in receives if s.service == "go"]
    js_receives = [s for s in receives if s.service == "js"]
    assert (len(go_receives), len(js_receives)) == (2, 1), names(spans)
    for span in go_receives:
        assert (span.trace_id, span.parent_span_id) == (TRACE, GO_SPAN)
    js_receive = js_receives[0]
    assert (js_receive.trace_id, js_receive.parent_span_id) == (TRACE, JS_SPAN)

    # The handler saw each frame's baggage (and so did the broadcast's handler).
    assert echo_go["receive"] == "acme" and echo_go["connect"] is None
    assert chat_go["tenant"] == "acme"
    assert echo_js["receive"] == "js"

    # Replies: the span that sent them, sampled bit only, as the client reads them back.
    process = [s for s in spans if s.name == f"process {TEMPLATE}" and s.service == "go"]
    assert len(process) == 1, names(spans)
    echo_span = next(s for s in go_receives if w3c(echo_go["trace_flags"])[1] == s.span_id)
    assert w3c(echo_go["trace_flags"]) == (TRACE, echo_span.span_id, 1)
    assert echo_go["trace_flags"]["traceparent"].endswith("-01")
    assert echo_go["trace_flags"]["tracestate"] == "k=v"
    assert "baggage" not in echo_go["trace_flags"]
    assert w3c(chat_go["trace_flags"]) == (TRACE, process[0].span_id, 1)
    assert w3c(echo_js) == (TRACE, js_receive.span_id, 1)
    assert echo_js["traceparent"] == f"00-{TRACE}-{js_receive.span_id}-01"
    assert echo_js["tracestate"] == "k=v" and "baggage" not in echo_js
