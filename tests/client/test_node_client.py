"""A real Node client, built from public packages only, against real daphne workers (issue 18,
"how it will be checked from outside").

``tests/clients/node_client.mjs`` runs on ``ws`` and the OpenTelemetry JS API/SDK that
``js/package-lock.json`` pins (``@opentelemetry/core``'s W3C trace-context and baggage
propagators, ``sdk-trace-base``'s ``BasicTracerProvider``, the OTLP/HTTP exporter). It sends
one frame per connection, each inside its own PRODUCER span, the way docs/clients.md tells a
JavaScript team to:

* ``top``: ``propagation.inject`` into a plain object copied to the frame's top level
  (worker ``top``, default ``JSON_TRACEPARENT_KEY``), baggage ``tenant=node``;
* ``carrier``: the object under ``otel`` (worker ``otel``, ``JSON_TRACEPARENT_KEY = "otel"``),
  baggage ``tenant=acme``;
* ``go``: the design guide's ``TracedMessage`` spelled exactly (``action``, ``data``,
  ``trace_id``, ``span_id``, ``trace_flags``; worker ``go``, ``JSON_TRACEPARENT_KEY =
  "trace_flags"``), baggage ``tenant=acme``: a broadcast, answered from the ``process`` span.

All workers run with ``JSON_CONTEXT_TO_CLIENT``. The client's spans and the workers' spans
reach the same in-test OTLP receiver: each frame's ``receive`` span is the child of the Node
span that sent it, the handler saw the frame's baggage, and the context the client extracted
from each reply is the server span that sent it (flags ``01``), so the client's own
``receive`` span continues the server's trace.

Needs node and ``npm ci`` in ``js/`` (.ci/run does it); skipped without them unless
``REQUIRE_BROWSER`` is set, like the other tests that run the JS packages.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.anyserver import TEMPLATE, names, new_room, settle
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import DaphneWorker, running

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
CLIENT = ROOT / "tests" / "clients" / "node_client.mjs"
ROUTE = "/ws/baggage/<room>/"
NEEDED = ("ws", "@opentelemetry/api", "@opentelemetry/core", "@opentelemetry/sdk-trace-base",
          "@opentelemetry/exporter-trace-otlp-http", "@opentelemetry/resources")


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not all((JS / "node_modules" / name).is_dir() for name in NEEDED):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but node or js/node_modules is missing (npm ci)")
        pytest.skip("needs node and `npm ci` in js/")
    return node


def run_client(node: str, config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run([node, str(CLIENT), json.dumps(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


def one(spans: list[Span], **fields: str) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in fields.items())]
    assert len(found) == 1, (fields, names(spans))
    return found[0]


async def test_node_client_frames_and_replies_under_daphne() -> None:
    node = node_or_skip()
    on = {"JSON_CONTEXT_TO_CLIENT": True}
    keys = {"top": None, "otel": "otel", "go": "trace_flags"}
    with OTLPReceiver() as receiver:
        workers = {
            name: DaphneWorker({**receiver.env(), "OTEL_CHANNELS_JSON": json.dumps(
                on if key is None else {**on, "JSON_TRACEPARENT_KEY": key})}, name=name)
            for name, key in keys.items()
        }
        with running(*workers.values(), join_timeout=60):
            def url(name: str) -> str:
                return f"{workers[name].ws_url}/ws/baggage/{new_room()}/"

            result = await asyncio.to_thread(run_client, node, {
                "otlp": receiver.endpoint,
                "frames": [
                    {"style": "top", "url": url("top"), "baggage": {"tenant": "node"}},
                    {"style": "carrier", "url": url("otel"), "baggage": {"tenant": "acme"}},
                    {"style": "go", "url": url("go"), "baggage": {"tenant": "acme"}},
                ],
            })

            def done(spans: list[Span]) -> bool:
                return (sum(s.name == f"receive {ROUTE}" and s.service in keys for s in spans) >= 3
                        and any(s.name == f"process {TEMPLATE}" for s in spans)
                        and sum(s.service == "node-client" for s in spans) >= 6)

            spans = await settle(receiver, done, timeout=15)

    frames = {frame["style"]: frame for frame in result["frames"]}
    top, carrier, go = frames["top"], frames["carrier"], frames["go"]

    # What the Node SDK put on the wire: each shape as docs/clients.md describes it.
    assert set(top["frame"]) == {"echo", "traceparent", "baggage"}, top["frame"]
    assert top["frame"]["traceparent"] == (
        f"00-{top['send']['traceId']}-{top['send']['spanId']}-01")
    assert top["frame"]["baggage"] == "tenant=node"
    assert set(carrier["frame"]["otel"]) == {"traceparent", "baggage"}, carrier["frame"]
    assert carrier["frame"]["otel"]["baggage"] == "tenant=acme"
    assert list(go["frame"]) == ["action", "data", "trace_id", "span_id", "trace_flags"]
    assert (go["frame"]["trace_id"], go["frame"]["span_id"]) == (
        go["send"]["traceId"], go["send"]["spanId"])
    assert set(go["frame"]["trace_flags"]) == {"traceparent", "baggage"}

    for style, worker in (("top", "top"), ("carrier", "otel"), ("go", "go")):
        frame = frames[style]
        sent = one(spans, service="node-client", span_id=frame["send"]["spanId"])
        assert (sent.name, sent.kind, sent.parent_span_id) == (f"send {ROUTE}", "PRODUCER", "")

        # The frame's receive span is the child of the Node span that sent it.
        receive = one(spans, service=worker, name=f"receive {ROUTE}")
        assert (receive.trace_id, receive.parent_span_id) == (sent.trace_id, sent.span_id), style

        # The reply carries the span that sent it (receive for an echo, process for the
        # broadcast), which the Node propagator extracts as a remote, sampled parent...
        if style == "go":
            server = one(spans, service=worker, name=f"process {TEMPLATE}")
            assert server.trace_id == sent.trace_id
        else:
            server = receive
        assert frame["extracted"] == {"traceId": sent.trace_id, "spanId": server.span_id,
                                      "traceFlags": 1, "isRemote": True}, style
        # ... and the client's own receive span continues the server's trace.
        received = one(spans, service="node-client", span_id=frame["receive"]["spanId"])
        assert (received.name, received.kind) == (f"receive {ROUTE}", "CONSUMER")
        assert (received.trace_id, received.parent_span_id) == (sent.trace_id, server.span_id)

    # The handler saw each frame's baggage (the broadcast's handler too, across the layer).
    assert top["reply"]["receive"] == "node" and top["reply"]["connect"] is None
    assert carrier["reply"]["receive"] == "acme" and carrier["reply"]["connect"] is None
    assert go["reply"]["type"] == "chat.message" and go["reply"]["tenant"] == "acme"
    # Replies in the shape each client reads: top-level, under "otel", the guide's map; the
    # server never sends baggage back.
    assert top["reply"]["traceparent"].endswith("-01") and "baggage" not in top["reply"]
    assert set(carrier["reply"]["otel"]) == {"traceparent"}, carrier["reply"]
    assert set(go["reply"]["trace_flags"]) == {"traceparent"}, go["reply"]
