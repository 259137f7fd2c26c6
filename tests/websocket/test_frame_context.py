"""Trace context from and to clients that are not ours (issue 18), through communicators.

Frames are spelled byte for byte as the clients write them:

* an OpenTelemetry JS client: ``propagation.inject(context.active(), carrier)`` into an
  object under a key (``JSON.stringify``: no spaces), or into the frame itself (top level);
* a Go client following the design guide: ``TracedMessage`` with the ``trace_flags`` map
  filled by ``otel.GetTextMapPropagator().Inject`` (the guide's example, as printed);
* a B3 carrier with the B3 propagator configured.

Replies (``JSON_CONTEXT_TO_CLIENT``) are parsed back with the W3C propagator.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.auth import UserLazyObject
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from django.urls import path
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.b3 import B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_channels import replay
from otel_channels.broadcast import abroadcast
from otel_channels.client.websocket import _encode
from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer, TracedJsonWebsocketConsumer
from otel_channels.sse import EventStreamView
from otel_channels.telemetry import carrier as _carrier
from otel_channels.testing import EventStreamCommunicator

ROUTE = "/chat/<room>/"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{SPAN}-01"

#: OpenTelemetry JS: propagation.inject(ctx, carrier) into frame.otel (JSON.stringify).
JS_CARRIER = ('{"type":"chat","text":"hi","otel":{"traceparent":"' + TP + '",'
              '"tracestate":"k=v","baggage":"tenant=acme,user.tier=gold"}}')
#: OpenTelemetry JS: propagation.inject(ctx, frame) on the frame itself.
JS_TOP_LEVEL = ('{"type":"chat","text":"hi","traceparent":"' + TP + '","tracestate":"k=v",'
                '"baggage":"tenant=acme"}')
#: The design guide's TracedMessage, as the guide prints it.
GO_GUIDE = ('{"action": "chat", "data": {"text": "hi"}, "trace_id": "' + TRACE + '", '
            '"span_id": "' + SPAN + '", "trace_flags": {"traceparent": "' + TP + '", '
            '"tracestate": "k=v"}}')

SEEN: list[dict[str, Any]] = []
SENT: list[tuple[Any, Any]] = []


def handle(content: Any) -> Any:
    SEEN.append({"content": content, "baggage": dict(baggage.get_all()),
                 "span": trace.get_current_span().get_span_context()})
    reply = content.get("reply", {"ok": True}) if isinstance(content, dict) else {"ok": True}
    SENT.append((reply, copy.deepcopy(reply)))
    return reply


class Chat(TracedAsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(handle(content))


class SyncChat(TracedJsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json(handle(content))


class WithUser:
    """What Channels' AuthMiddleware leaves in the scope: a resolved ``UserLazyObject``."""

    def __init__(self, inner: Any, user: Any) -> None:
        self.inner, self.user = inner, user

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        lazy = UserLazyObject()
        lazy._wrapped = self.user
        return await self.inner({**scope, "user": lazy}, receive, send)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    SEEN.clear()
    SENT.clear()
    yield


async def exchange(frames: list[str], consumer: type = Chat, user: Any = None,
                   headers: list[tuple[bytes, bytes]] | None = None) -> list[str]:
    """Send ``frames`` one by one; the raw replies."""
    app: Any = URLRouter([path("chat/<str:room>/", consumer.as_asgi())])
    if user is not None:
        app = WithUser(app, user)
    comm = WebsocketCommunicator(app, "/chat/lobby/", headers=headers or [])
    connected, _ = await comm.connect()
    assert connected
    replies = []
    for frame in frames:
        await comm.send_to(text_data=frame)
        replies.append(await comm.receive_from())
    await comm.disconnect()
    return replies


def ids(ctx: Any) -> tuple[str, str]:
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def assert_child_of_client(spans: Any) -> Any:
    receive = spans.one(f"receive {ROUTE}")
    connect = spans.one(f"connect {ROUTE}")
    assert receive.parent is not None and ids(receive.parent) == (TRACE, SPAN)
    assert ids(receive.context)[0] == TRACE
    assert [link.context.span_id for link in receive.links] == [connect.context.span_id]
    return receive


def assert_plain_frame(spans: Any) -> None:
    """A frame whose context was ignored: a new trace linking only ``connect``."""
    receive = spans.one(f"receive {ROUTE}")
    connect = spans.one(f"connect {ROUTE}")
    assert receive.parent is None and ids(receive.context)[0] != TRACE
    assert [link.context.span_id for link in receive.links] == [connect.context.span_id]


# -- inbound: the shapes clients write --------------------------------------------------------


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel"})
async def test_js_carrier_object_is_the_parent_and_its_baggage_reaches_the_handler(spans):
    await exchange([JS_CARRIER])
    receive = assert_child_of_client(spans)
    assert receive.context.trace_state.to_header() == "k=v"
    assert SEEN[0]["baggage"] == {"tenant": "acme", "user.tier": "gold"}
    assert SEEN[0]["content"] == json.loads(JS_CARRIER)  # the handler gets the frame as sent
    assert ids(SEEN[0]["span"]) == ids(receive.context)


async def test_js_top_level_traceparent_and_baggage(spans):
    await exchange([JS_TOP_LEVEL])
    assert_child_of_client(spans)
    assert SEEN[0]["baggage"] == {"tenant": "acme"}


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "trace_flags"})
async def test_go_guide_traced_message(spans):
    await exchange([GO_GUIDE])
    receive = assert_child_of_client(spans)
    assert receive.context.trace_state.to_header() == "k=v"
    assert SEEN[0]["content"]["data"] == {"text": "hi"}


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "trace_flags"})
async def test_sync_json_consumer_reads_the_carrier_too(spans):
    await exchange([GO_GUIDE], consumer=SyncChat)
    assert_child_of_client(spans)


@pytest.fixture
def b3_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([B3SingleFormat(), W3CBaggagePropagator()]))
    try:
        yield
    finally:
        propagate.set_global_textmap(previous)


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel"})
async def test_b3_carrier_with_the_b3_propagator(spans, b3_propagator):
    frame = ('{"type":"chat","text":"hi","otel":{"b3":"' + TRACE + "-" + SPAN + '-1",'
             '"baggage":"tenant=b3"}}')
    await exchange([frame])
    assert_child_of_client(spans)
    assert SEEN[0]["baggage"] == {"tenant": "b3"}


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel"})
async def test_frame_baggage_wins_over_the_handshake_baggage(spans):
    await exchange([JS_CARRIER, '{"type":"chat"}'],
                   headers=[(b"baggage", b"tenant=handshake,region=eu")])
    assert SEEN[0]["baggage"] == {"tenant": "acme", "user.tier": "gold", "region": "eu"}
    assert SEEN[1]["baggage"] == {"tenant": "handshake", "region": "eu"}  # per frame only


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel", "MESSAGE_SAMPLE_RATE": 0.0})
async def test_baggage_reaches_the_handler_of_an_unsampled_frame(spans):
    await exchange([JS_CARRIER, '{"type":"chat"}'], headers=[(b"baggage", b"region=eu")])
    assert spans.named(f"receive {ROUTE}") == []
    assert SEEN[0]["baggage"] == {"tenant": "acme", "user.tier": "gold", "region": "eu"}
    assert SEEN[1]["baggage"] == {"region": "eu"}
    assert not SEEN[0]["span"].trace_flags.sampled


@pytest.mark.parametrize("carrier", [
    {f"k{n}": "v" for n in range(16)} | {"traceparent": TP},  # 17 entries
    {"traceparent": TP, "baggage": "tenant=" + "a" * 8200},  # over 8 KiB
    {"traceparent": TP, "n": 1},  # not all strings
    {"traceparent": TP, "nested": {"a": "b"}},
    {"traceparent": 42},
    {"traceparent": "00-" + "0" * 32 + "-" + SPAN + "-01"},  # invalid trace id
    {"traceparent": TP[:-1]},
    [TP],
    None,
    42,
    "not a traceparent",
])
@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel"})
async def test_oversized_or_malformed_carriers_are_ignored(spans, carrier):
    frame = json.dumps({"type": "chat", "otel": carrier})
    await exchange([frame])
    assert_plain_frame(spans)
    assert SEEN[0]["content"] == json.loads(frame)
    assert SEEN[0]["baggage"] == {}


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel"})
async def test_the_key_as_a_value_or_in_broken_json_is_no_context(spans):
    await exchange(['{"note": "otel", "x": 1}'])
    assert_plain_frame(spans)
    assert SEEN[0]["content"] == {"note": "otel", "x": 1}


async def test_a_frame_with_the_key_is_parsed_once(spans, monkeypatch):
    calls = []
    loads = json.loads

    def counting(text: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(text)
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    await exchange([JS_TOP_LEVEL, '{"type":"chat"}'])
    assert calls.count(JS_TOP_LEVEL) == 1
    assert calls.count('{"type":"chat"}') == 1
    assert SEEN[0]["content"]["text"] == "hi"


@override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": "otel", "CLIENT_CONTEXT": "link",
                                  "MESSAGE_SAMPLE_RATE": 0.0})
async def test_link_never_forces_sampling(spans):
    await exchange([JS_CARRIER])
    assert spans.named(f"receive {ROUTE}") == []
    assert SEEN[0]["baggage"]["tenant"] == "acme"


# -- CLIENT_CONTEXT = "authenticated" ----------------------------------------------------------


HANDSHAKE = [(b"traceparent", f"00-{TRACE}-{'ab' * 8}-01".encode())]


@override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": "authenticated"})
async def test_authenticated_user_client_context_is_the_parent(spans):
    await exchange([JS_TOP_LEVEL], user=User(username="ann"), headers=HANDSHAKE)
    connect = spans.one(f"connect {ROUTE}")
    assert connect.parent is not None and ids(connect.parent) == (TRACE, "ab" * 8)
    assert_child_of_client(spans)
    assert SEEN[0]["baggage"] == {"tenant": "acme"}


@pytest.mark.parametrize("user", [AnonymousUser(), None], ids=["anonymous", "no-auth-middleware"])
@override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": "authenticated"})
async def test_anonymous_client_context_is_only_a_link(spans, user):
    await exchange([JS_TOP_LEVEL], user=user, headers=HANDSHAKE)
    connect = spans.one(f"connect {ROUTE}")
    receive = spans.one(f"receive {ROUTE}")
    assert connect.parent is None and ids(connect.context)[0] != TRACE
    assert [ids(link.context) for link in connect.links] == [(TRACE, "ab" * 8)]
    assert receive.parent is None and ids(receive.context)[0] != TRACE
    assert [ids(link.context) for link in receive.links] == [ids(connect.context), (TRACE, SPAN)]


class Broken:
    @property
    def is_authenticated(self) -> bool:
        raise RuntimeError("needs the database")


@override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": "authenticated"})
async def test_a_user_that_fails_is_not_trusted(spans):
    await exchange([JS_TOP_LEVEL], user=Broken())
    assert spans.one(f"receive {ROUTE}").parent is None


# -- outbound: JSON_CONTEXT_TO_CLIENT ---------------------------------------------------------


def w3c(carrier: dict[str, str]) -> SpanContext:
    ctx = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier))
    return ctx.get_span_context()


@pytest.mark.parametrize("consumer", [Chat, SyncChat])
@override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True})
async def test_reply_carries_the_server_span_top_level(spans, consumer):
    reply = json.loads((await exchange(['{"type":"chat"}'], consumer=consumer))[0])
    receive = spans.one(f"receive {ROUTE}")
    if receive.context.trace_flags & TraceFlags.RANDOM_TRACE_ID:  # SDK >= 1.39: "-03" roots
        assert _carrier.format_traceparent(receive.context).endswith("-03")
    assert reply["traceparent"] == f"00-{ids(receive.context)[0]}-{ids(receive.context)[1]}-01"
    assert set(reply) == {"ok", "traceparent"}  # no tracestate on this span, no baggage
    parsed = w3c(reply)
    assert ids(parsed) == ids(receive.context) and parsed.trace_flags == TraceFlags.SAMPLED
    assert SENT[0][0] == SENT[0][1] == {"ok": True}  # the caller's dict is untouched


@override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True,
                                  "JSON_TRACEPARENT_KEY": "trace_flags"})
async def test_go_guide_round_trip(spans):
    reply = json.loads((await exchange([GO_GUIDE], headers=[(b"baggage", b"secret=1")]))[0])
    receive = assert_child_of_client(spans)
    assert reply["trace_flags"] == {
        "traceparent": f"00-{TRACE}-{ids(receive.context)[1]}-01", "tracestate": "k=v"}
    assert ids(w3c(reply["trace_flags"])) == ids(receive.context)
    assert "baggage" not in reply["trace_flags"]  # server baggage never goes to a client


@override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True, "JSON_TRACEPARENT_KEY": "otel"})
async def test_reply_carrier_through_the_b3_propagator(spans, b3_propagator):
    reply = json.loads((await exchange(['{"type":"chat"}']))[0])
    receive = spans.one(f"receive {ROUTE}")
    assert reply["otel"] == {"b3": f"{ids(receive.context)[0]}-{ids(receive.context)[1]}-1"}


@pytest.mark.parametrize(("key", "own"), [
    ("traceparent", {"traceparent": "the app's", "x": 1}),
    ("otel", {"otel": {"mine": "1"}}),
    ("otel", {"otel": None}),
])
async def test_the_applications_own_key_is_never_overwritten(spans, key, own):
    with override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True,
                                          "JSON_TRACEPARENT_KEY": key}):
        reply = json.loads((await exchange([json.dumps({"reply": own})]))[0])
    assert reply == own


@pytest.mark.parametrize(("settings", "frame"), [
    ({"MESSAGE_SAMPLE_RATE": 0.0}, '{"type":"chat"}'),
    ({}, '{"traceparent":"00-' + TRACE + "-" + SPAN + '-00"}'),  # a not-sampled parent
    ({"JSON_CONTEXT_TO_CLIENT": False}, '{"type":"chat"}'),
])
async def test_nothing_is_added_when_not_sampled_or_off(spans, settings, frame):
    with override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True, **settings}):
        replies = await exchange([frame])
    assert json.loads(replies[0]) == {"ok": True}


@override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True})
async def test_only_dict_frames_get_context(spans):
    replies = await exchange([json.dumps({"reply": [1, 2]}), json.dumps({"reply": "text"})])
    assert [json.loads(r) for r in replies] == [[1, 2], "text"]


# -- what we write for clients: only the sampled flag bit --------------------------------------


def test_client_traceparent_writes_only_the_sampled_bit(spans):
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("root") as root:
        ctx = root.get_span_context()
        expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
        assert _carrier.client_traceparent(ctx) == expected
        # The Python client's frames too (otel_channels.client).
        assert json.loads(_encode({"x": 1}, "traceparent", ctx))["traceparent"] == expected
    unsampled = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(0x02))
    assert _carrier.client_traceparent(unsampled).endswith("-00")


class Events(EventStreamView):
    groups = ["flags"]


urlpatterns = [path("events/", Events.as_view())]


@pytest.mark.urls(__name__)
@override_settings(OTEL_CHANNELS={"SSE_TRACEPARENT_FIELD": True})
async def test_sse_traceparent_field_has_only_the_sampled_bit(spans):
    replay.reset()
    comm = EventStreamCommunicator(ASGIHandler(), "/events/")
    status, _ = await comm.connect()
    assert status == 200
    await comm.receive_chunk()  # ": open"
    await comm.receive_chunk()  # the position
    # With baggage the carrier goes through the W3C propagator, which keeps the SDK's
    # random-trace-id bit: the hub's process span is "-03" on the layer.
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        await abroadcast("flags", "ping", {})
    finally:
        otel_context.detach(token)
    await comm.receive_event()
    process = spans.one("process flags")
    trace_id, span_id = ids(process.context)
    if process.context.trace_flags & TraceFlags.RANDOM_TRACE_ID:
        assert f"traceparent: 00-{trace_id}-{span_id}-03".encode() not in comm.body
    assert f"traceparent: 00-{trace_id}-{span_id}-01\n".encode() in comm.body
    await comm.disconnect()
    replay.reset()


def test_the_python_client_reads_a_carrier_object_in_replies():
    from otel_channels.client.websocket import _traceparent_of

    reply = json.dumps({"ok": True, "trace_flags": {"traceparent": TP, "tracestate": "k=v"}})
    found = _traceparent_of(reply, '"trace_flags"', "trace_flags")
    assert found is not None and ids(found) == (TRACE, SPAN)
    assert found.trace_state.to_header() == "k=v"
    too_big = json.dumps({"trace_flags": {f"k{n}": "v" for n in range(17)} | {"traceparent": TP}})
    assert _traceparent_of(too_big, '"trace_flags"', "trace_flags") is None


class OwnSendJson(Chat):
    async def send_json(self, content: Any, close: bool = False) -> None:
        await super().send_json({**content, "own": True}, close)


@override_settings(OTEL_CHANNELS={"JSON_CONTEXT_TO_CLIENT": True})
async def test_a_consumer_with_its_own_send_json_gets_context_too(spans):
    reply = json.loads((await exchange(['{"type":"chat"}'], consumer=OwnSendJson))[0])
    receive = spans.one(f"receive {ROUTE}")
    assert reply == {"ok": True, "own": True,
                     "traceparent": f"00-{ids(receive.context)[0]}-{ids(receive.context)[1]}-01"}
