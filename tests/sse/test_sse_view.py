"""EventStreamView through Django's ASGI handler, read event by event."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.layers import get_channel_layer
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path, re_path
from opentelemetry.trace import SpanKind

from otel_channels import replay
from otel_channels.broadcast import abroadcast
from otel_channels.instrumentation import ChannelsInstrumentor
from otel_channels.sse import EventStreamView, ServerSentEvent, _hub
from otel_channels.testing import EventStreamCommunicator

ROUTE = "/events/<room>/"
ROUTE_ATTRS = {"network.protocol.name": "sse", "http.route": ROUTE}


class Room(EventStreamView):
    def get_groups(self, request, room):
        if room == "forbidden":
            raise PermissionDenied
        return [f"room_{room}"]


class AsyncRoom(EventStreamView):
    heartbeat = 0.2

    async def get_groups(self, request, room):
        await asyncio.sleep(0)
        return f"room_{room}"


class Shaped(EventStreamView):
    groups = ["shaped"]

    def format_event(self, message):
        if message.get("skip"):
            return None
        return ServerSentEvent(data=f"{message['type']}|{message.get('text')}\nline2", event="x")


class Tiny(EventStreamView):
    groups = ["tiny"]
    queue_size = 2


class Both(EventStreamView):
    groups = ["alpha", "beta"]


def big(request):
    return HttpResponse("x" * 1000)


urlpatterns = [
    path("events/<str:room>/", Room.as_view()),
    path("async/<str:room>/", AsyncRoom.as_view()),
    re_path(r"^re/(?P<room>\w+)/$", Room.as_view()),
    path("shaped/", Shaped.as_view()),
    path("tiny/", Tiny.as_view()),
    path("both/", Both.as_view()),
    path("big/", big),
]

pytestmark = pytest.mark.urls(__name__)


@pytest.fixture(autouse=True)
async def fresh_logs():
    """A fresh in-memory log per test; after it, no hub may still hold a group."""
    replay.reset()
    yield
    await asyncio.sleep(0.01)  # the background group_discard tasks
    assert [hub.subscriptions for hub in _hub.hubs()] in ([], [{}])
    replay.reset()


def app():
    return ASGIHandler()


async def open_stream(path, **kwargs):
    comm = EventStreamCommunicator(app(), path, **kwargs)
    status, headers = await comm.connect()
    assert status == 200, comm
    assert await comm.receive_chunk() == b": open\n\n"
    await comm.receive_chunk()  # the position (id) block, or the replay
    return comm


def carrier_free(data):
    return json.loads(data)


# -- headers, first write, events -------------------------------------------------------


async def test_headers_first_write_position_and_events():
    comm = EventStreamCommunicator(app(), "/events/lobby/")
    status, headers = await comm.connect()
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["content-encoding"] == ""
    assert "connection" not in headers
    assert await comm.receive_chunk() == b": open\n\n"  # subscribed: nothing missed from here
    assert await comm.receive_chunk() == b"id: 0-0\n\n"  # the position in an empty log

    layer = get_channel_layer()
    await layer.group_send("room_lobby", {"type": "chat.message", "text": "a\nb", "n": 1})
    event = await comm.receive_event()
    assert event.event == "chat.message"
    assert carrier_free(event.data) == {"text": "a\nb", "n": 1}  # no "type", no "_otel"
    assert "_otel" not in comm.body.decode()
    first_id = event.id
    assert replay.parse_id(first_id) is not None

    sent_id = await abroadcast("room_lobby", "score", {"home": 2})
    event = await comm.receive_event()
    assert (event.event, event.data, event.id) == ("score", '{"home":2}', sent_id)
    assert replay.parse_id(sent_id) > replay.parse_id(first_id)
    assert comm.body.endswith(f'event: score\nid: {sent_id}\ndata: {{"home":2}}\n\n'.encode())
    await comm.disconnect()


async def test_async_get_groups_and_regex_route(spans):
    comm = await open_stream("/async/x1/")
    await abroadcast("room_x1", "ping", {})
    assert (await comm.receive_event()).event == "ping"
    await comm.disconnect()
    comm = await open_stream("/re/x2/")
    await comm.disconnect()
    assert spans.named("connect /async/<room>/")
    assert spans.named("connect /re/<room>/")


async def test_format_event_shapes_and_skips():
    comm = await open_stream("/shaped/")
    layer = get_channel_layer()
    await layer.group_send("shaped", {"type": "t.a", "text": "one", "skip": True})
    await layer.group_send("shaped", {"type": "t.b", "text": "two"})
    event = await comm.receive_event()
    assert (event.event, event.data) == ("x", "t.b|two\nline2")
    assert replay.parse_id(event.id) is not None  # the view filled in the id
    assert comm.body.endswith(b"event: x\nid: " + event.id.encode() + b"\ndata: t.b|two\n"
                              b"data: line2\n\n")
    await comm.disconnect()


# -- 403, HEAD, GZip, retry, heartbeat --------------------------------------------------


async def test_permission_denied_is_403_before_streaming(spans, metric_reader):
    comm = EventStreamCommunicator(app(), "/events/forbidden/")
    status, headers = await comm.connect()
    assert status == 403
    assert not headers["content-type"].startswith("text/event-stream")
    await comm.wait()
    connect = spans.one(f"connect {ROUTE}")
    assert connect.kind is SpanKind.SERVER
    assert connect.attributes["http.response.status_code"] == 403
    assert connect.attributes["channels.connection.status"] == "rejected"
    assert not spans.named(f"disconnect {ROUTE}")
    assert metric_reader.sum("channels.server.active_connections") == 0
    assert _hub.hubs() == [] or all(not h.subscriptions for h in _hub.hubs())


async def test_head_gets_headers_only_and_no_subscription():
    comm = EventStreamCommunicator(app(), "/events/lobby/", method="HEAD")
    status, headers = await comm.connect()
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert await comm.receive_chunk() == b""
    assert comm.ended
    await comm.wait()
    assert all(not hub.subscriptions for hub in _hub.hubs())
    comm = EventStreamCommunicator(app(), "/events/forbidden/", method="HEAD")
    assert (await comm.connect())[0] == 403
    await comm.wait()


@override_settings(MIDDLEWARE=["django.middleware.gzip.GZipMiddleware"])
async def test_gzip_middleware_leaves_the_stream_alone():
    gzip = [(b"accept-encoding", b"gzip, deflate, br")]
    plain = EventStreamCommunicator(app(), "/big/", headers=gzip)
    status, headers = await plain.connect()
    assert headers["content-encoding"] == "gzip"  # the middleware is really there
    await plain.receive_chunk()
    await plain.wait()

    comm = EventStreamCommunicator(app(), "/events/lobby/", headers=gzip)
    status, headers = await comm.connect()
    assert headers["content-encoding"] == ""
    assert await comm.receive_chunk() == b": open\n\n"
    assert await comm.receive_chunk() == b"id: 0-0\n\n"
    await abroadcast("room_lobby", "ping", {"x": 1})
    event = await comm.receive_event()
    assert event.data == '{"x":1}'
    await comm.disconnect()


@override_settings(OTEL_CHANNELS={"SSE_RETRY": 1500})
async def test_retry_is_in_the_first_write():
    comm = EventStreamCommunicator(app(), "/events/lobby/")
    await comm.connect()
    assert await comm.receive_chunk() == b": open\nretry: 1500\n\n"
    assert comm.parser.retry == 1500
    await comm.disconnect()


async def test_heartbeats_fill_silence_at_the_interval():
    comm = await open_stream("/async/hb/")  # heartbeat = 0.2 s
    stamps = []
    for _ in range(3):
        await comm.receive_until_comment(timeout=1)
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0.15 < gap < 0.35 for gap in gaps), gaps
    assert comm.body.count(b":\n\n") >= 3
    await comm.disconnect()


@override_settings(OTEL_CHANNELS={"SSE_HEARTBEAT": 0.15})
async def test_heartbeat_setting_and_events_reset_the_timer():
    comm = await open_stream("/events/hbs/")
    start = time.monotonic()
    await comm.receive_until_comment(timeout=1)
    assert 0.1 < time.monotonic() - start < 0.3
    await comm.disconnect()


# -- disconnect cleanup, metrics, spans -------------------------------------------------


async def test_disconnect_releases_everything_at_once(spans, metric_reader):
    layer = get_channel_layer()
    one = await open_stream("/events/clean/")
    two = await open_stream("/events/clean/")
    (hub,) = _hub.hubs()
    sub = hub.subscriptions["room_clean"]
    assert len(sub.streams) == 2
    assert list(layer.groups["room_clean"]) == [sub.channel]  # ONE membership for two streams
    assert metric_reader.sum("channels.server.active_connections", **_dotted(ROUTE_ATTRS)) == 2

    await abroadcast("room_clean", "ping", {})
    await one.receive_event()
    await two.receive_event()
    await one.disconnect()
    assert len(sub.streams) == 1  # at once, before any other await
    assert metric_reader.sum("channels.server.active_connections", **_dotted(ROUTE_ATTRS)) == 1
    await two.disconnect()
    assert "room_clean" not in hub.subscriptions
    assert sub.task.cancelled() or sub.task.done() or sub.task.cancelling()
    await asyncio.sleep(0.01)
    assert "room_clean" not in layer.groups  # group_discard ran
    assert metric_reader.sum("channels.server.active_connections", **_dotted(ROUTE_ATTRS)) == 0
    assert metric_reader.count("channels.server.connection.duration",
                               **_dotted(ROUTE_ATTRS)) == 2

    disconnects = spans.named(f"disconnect {ROUTE}")
    connects = spans.named(f"connect {ROUTE}")
    assert len(disconnects) == 2 and len(connects) == 2
    for span in disconnects:
        assert span.kind is SpanKind.INTERNAL
        assert span.attributes["channels.sse.events.sent"] == 1
        assert span.attributes["channels.connection.status"] == "closed"
        assert span.attributes["channels.connection.duration"] > 0
        assert span.links[0].context.span_id in {c.context.span_id for c in connects}


async def test_disconnect_while_the_first_subscription_is_being_made():
    gate = asyncio.Event()
    layer = get_channel_layer()
    original = layer.group_add

    async def slow_group_add(group, channel):
        await gate.wait()
        await original(group, channel)

    layer.group_add = slow_group_add
    try:
        comm = EventStreamCommunicator(app(), "/events/slow/")
        await comm.connect()
        assert await comm.receive_nothing(0.05)  # ": open" waits for the subscription
        (hub,) = _hub.hubs()
        assert not hub.subscriptions["room_slow"].ready.done()
        await comm.disconnect()
        gate.set()
        await asyncio.sleep(0.01)
        assert "room_slow" not in hub.subscriptions
        assert "room_slow" not in layer.groups
    finally:
        del layer.group_add


async def test_connect_and_process_spans(spans):
    one = await open_stream("/events/42/")
    two = await open_stream("/events/42/")
    spans.clear()
    layer = get_channel_layer()
    await layer.group_send("room_42", {"type": "chat.message", "text": "hi"})
    await one.receive_event()
    await two.receive_event()

    producer = spans.one("group_send room_{id}")
    process = spans.one("process room_{id}")  # ONE receipt for two streams
    assert producer.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.parent.span_id == producer.context.span_id
    assert list(process.links) == []  # a child of the producer; no link repeating it
    assert process.attributes["channels.sse.streams"] == 2
    assert process.attributes["messaging.destination.name"] == "room_42"
    assert process.attributes["messaging.message.id"] == one.last_event_id
    await one.disconnect()
    await two.disconnect()

    connect = spans.named(f"connect {ROUTE}")
    assert connect == []  # cleared above; take a fresh one
    comm = await open_stream("/events/42/?token=abc")
    connect = spans.one(f"connect {ROUTE}")
    assert connect.kind is SpanKind.SERVER
    assert connect.attributes["http.route"] == ROUTE
    assert connect.attributes["url.path"] == "/events/42/"
    assert connect.attributes["url.query"] == "token=REDACTED"
    assert connect.attributes["network.protocol.name"] == "sse"
    # The same request attributes as a WebSocket connect span (one builder for both).
    assert connect.attributes["client.address"] == "127.0.0.1"
    assert connect.attributes["client.port"] == 40000
    assert connect.attributes["url.scheme"] == "http"
    assert connect.attributes["http.request.method"] == "GET"
    assert connect.attributes["http.response.status_code"] == 200
    assert connect.attributes["channels.connection.status"] == "accepted"
    assert connect.end_time is not None
    await comm.disconnect()


async def test_client_traceparent_header_is_the_connect_parent(spans):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    comm = await open_stream("/events/tp/", headers=[(b"traceparent", parent.encode())])
    connect = spans.one(f"connect {ROUTE}")
    assert f"{connect.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert connect.parent.span_id == 0xB7AD6B7169203331
    await comm.disconnect()


@override_settings(OTEL_CHANNELS={"SSE_TRACEPARENT_FIELD": True})
async def test_traceparent_field_carries_the_process_span(spans):
    comm = await open_stream("/events/tpf/")
    await abroadcast("room_tpf", "ping", {})
    await comm.receive_event()
    process = spans.one("process room_tpf")
    expected = f"00-{process.context.trace_id:032x}-{process.context.span_id:016x}-01"
    assert f"traceparent: {expected}\n".encode() in comm.body
    await comm.disconnect()


# -- slow clients -----------------------------------------------------------------------


async def slow_stream(path, **kwargs):
    """A stream whose client reads only when asked: the server's send() blocks meanwhile."""
    comm = EventStreamCommunicator(app(), path, **kwargs)
    comm._output_queue = asyncio.Queue(maxsize=1)  # real backpressure on the view's writes
    await comm.connect()
    assert await comm.receive_chunk() == b": open\n\n"
    await comm.receive_chunk()
    return comm


async def test_slow_client_reset_drops_oldest_and_says_so(metric_reader):
    comm = await slow_stream("/tiny/")  # queue_size = 2
    layer = get_channel_layer()
    for n in range(12):
        await layer.group_send("tiny", {"type": "n", "n": n})
    await asyncio.sleep(0.05)
    received, dropped = [], 0
    while len(received) + dropped < 12:
        event = await comm.receive_event()
        if event.event == "stream-reset":
            body = json.loads(event.data)
            assert body["reason"] == "slow_client"
            dropped += body["dropped"]
        else:
            received.append(json.loads(event.data)["n"])
    assert dropped > 0
    assert received == sorted(received) and received[-2:] == [10, 11]  # oldest went first
    assert len(received) + dropped == 12
    assert metric_reader.sum("channels.sse.dropped", http__route="/tiny/") == dropped
    await comm.disconnect()


@override_settings(OTEL_CHANNELS={"SSE_SLOW_CLIENT_POLICY": "close"})
async def test_slow_client_close_ends_the_stream_and_replay_recovers(metric_reader, spans):
    comm = await slow_stream("/tiny/")
    position = comm.last_event_id
    layer = get_channel_layer()
    for n in range(8):
        await layer.group_send("tiny", {"type": "n", "n": n})
    await asyncio.sleep(0.05)
    delivered = []
    while await comm.receive_chunk():
        pass
    assert comm.ended  # the server closed it: the browser reconnects
    await comm.wait()
    while comm._events:
        delivered.append(json.loads(comm._events.popleft().data)["n"])
    dropped = metric_reader.sum("channels.sse.dropped", http__route="/tiny/")
    assert dropped > 0 and len(delivered) + dropped == 8
    disconnect = spans.one("disconnect /tiny/")
    assert disconnect.attributes["channels.connection.status"] == "slow_client"
    assert disconnect.attributes["error.type"] == "slow_client"

    again = EventStreamCommunicator(app(), "/tiny/", last_event_id=position)
    await again.connect()
    assert await again.receive_chunk() == b": open\n\n"
    assert [json.loads((await again.receive_event()).data)["n"] for _ in range(8)] == list(range(8))
    assert metric_reader.sum("channels.sse.replay", channels__sse__replay__outcome="hit") == 1
    await again.disconnect()


# -- ids and replay in memory -----------------------------------------------------------


async def test_replay_from_header_and_query_then_live():
    ids = [await abroadcast("room_rp", "n", {"n": n}) for n in range(4)]
    comm = EventStreamCommunicator(app(), "/events/rp/", last_event_id=ids[0])
    await comm.connect()
    assert await comm.receive_chunk() == b": open\n\n"
    replayed = [await comm.receive_event() for _ in range(3)]
    assert [(e.id, json.loads(e.data)["n"]) for e in replayed] == [
        (ids[1], 1), (ids[2], 2), (ids[3], 3)]
    live = await abroadcast("room_rp", "n", {"n": 4})
    event = await comm.receive_event()
    assert (event.id, event.data) == (live, '{"n":4}')
    await comm.disconnect()

    comm = EventStreamCommunicator(app(), f"/events/rp/?lastEventId={ids[2]}")
    await comm.connect()
    await comm.receive_chunk()
    assert [(await comm.receive_event()).id for _ in range(2)] == [ids[3], live]
    await comm.disconnect()


async def test_replay_unknown_or_malformed_id_is_a_stream_reset(metric_reader):
    head = await abroadcast("room_rs", "n", {"n": 0})
    for bad in ("1-0", "garbage", "99999999999999-0"):
        comm = EventStreamCommunicator(app(), "/events/rs/", last_event_id=bad)
        await comm.connect()
        await comm.receive_chunk()
        reset = await comm.receive_event()
        assert reset.event == "stream-reset"
        assert json.loads(reset.data) == {"reason": "last_event_id_unknown"}
        assert reset.id == head  # the client resumes from here next time
        await comm.disconnect()
    assert metric_reader.sum("channels.sse.replay", channels__sse__replay__outcome="miss") == 3


@override_settings(OTEL_CHANNELS={"SSE_REPLAY_MAXLEN": 3})
async def test_replay_older_than_the_log_is_a_stream_reset():
    ids = [await abroadcast("room_old", "n", {"n": n}) for n in range(6)]
    comm = EventStreamCommunicator(app(), "/events/old/", last_event_id=ids[1])
    await comm.connect()
    await comm.receive_chunk()
    assert (await comm.receive_event()).event == "stream-reset"
    await comm.disconnect()
    comm = EventStreamCommunicator(app(), "/events/old/", last_event_id=ids[2])  # prev of oldest
    await comm.connect()
    await comm.receive_chunk()
    assert [(await comm.receive_event()).id for _ in range(3)] == ids[3:]
    await comm.disconnect()


async def test_fresh_stream_position_makes_a_later_reconnect_lossless():
    comm = await open_stream("/events/pos/")
    position = comm.last_event_id
    await comm.disconnect()
    missed = await abroadcast("room_pos", "n", {"n": 1})
    again = EventStreamCommunicator(app(), "/events/pos/", last_event_id=position)
    await again.connect()
    await again.receive_chunk()
    assert (await again.receive_event()).id == missed
    await again.disconnect()


async def test_two_groups_get_composite_ids_and_resume_per_group():
    comm = await open_stream("/both/")
    assert comm.last_event_id == "0-0.0-0"
    a1 = await abroadcast("alpha", "a", {"n": 1})
    first = await comm.receive_event()
    assert first.id == f"{a1}.0-0"
    b1 = await abroadcast("beta", "b", {"n": 1})
    assert (await comm.receive_event()).id == f"{a1}.{b1}"
    await comm.disconnect()
    a2 = await abroadcast("alpha", "a", {"n": 2})
    again = EventStreamCommunicator(app(), "/both/", last_event_id=first.id)
    await again.connect()
    await again.receive_chunk()
    events = [await again.receive_event() for _ in range(2)]
    assert [(e.event, e.id) for e in events] == [("b", f"{a1}.{b1}"), ("a", f"{a2}.{b1}")]
    await again.disconnect()


async def test_out_of_order_arrival_is_delivered_in_log_order_once():
    log = replay.get_log("default")
    comm = await open_stream("/events/ooo/")
    first = await log.append("room_ooo", {"type": "n", "n": 1}, None)
    second = await log.append("room_ooo", {"type": "n", "n": 2}, None)
    layer = get_channel_layer()

    def carried(entry_id, prev, n):
        return {"type": "n", "n": n,
                "_otel": {"sse_id": entry_id, "sse_prev": prev, "sse_group": "room_ooo"}}

    await layer.group_send("room_ooo", carried(*second, 2))  # arrives first
    await layer.group_send("room_ooo", carried(*first, 1))  # late: already delivered
    third = await abroadcast("room_ooo", "n", {"n": 3})
    events = [await comm.receive_event() for _ in range(3)]
    assert [(e.id, json.loads(e.data)["n"]) for e in events] == [
        (first[0], 1), (second[0], 2), (third, 3)]
    await comm.disconnect()


async def test_plain_group_send_is_numbered_once_per_message():
    comm = await open_stream("/events/plain/")
    layer = get_channel_layer()
    for _ in range(3):  # identical payloads: the carrier's send time tells them apart
        await layer.group_send("room_plain", {"type": "same", "v": 1})
    events = [await comm.receive_event() for _ in range(3)]
    positions = [replay.parse_id(e.id) for e in events]
    assert positions == sorted(set(positions))
    await comm.disconnect()


async def test_equal_messages_without_a_carrier_are_three_events():
    """A producer without otel_channels sends no carrier: equal messages stay distinct."""
    comm = await open_stream("/events/bare/")
    layer = get_channel_layer()
    instrumentor = ChannelsInstrumentor()
    instrumentor.uninstrument()  # the producer side of another service: no carrier at all
    try:
        for _ in range(3):
            await layer.group_send("room_bare", {"type": "same", "v": 1})
    finally:
        instrumentor.instrument()
    events = [await comm.receive_event() for _ in range(3)]
    assert [(e.event, json.loads(e.data)) for e in events] == [("same", {"v": 1})] * 3
    assert len({e.id for e in events}) == 3
    await comm.disconnect()


@pytest.mark.parametrize("numbered_first", [True, False], ids=["numbered", "log-down"])
async def test_a_redelivered_message_is_not_a_second_event(numbered_first, monkeypatch):
    """channels-redis delivers at least once: a message popped just before Redis dies
    stays in its ``$inflight`` backup queue (kept by an AOF) and is received again after
    the restart, carrier and all. The stream must not show it twice, whether the first
    receipt was numbered or went out without an id because the log was down then."""
    comm = await open_stream("/events/again/")
    hub = _hub.get_hub("default")
    sub = hub.subscriptions["room_again"]
    raw = {"type": "chat.message", "text": "once",
           "_otel": {"id": "5f1c0e9a2b7d4c11-2a", "sent_at": time.time()}}
    log = replay.get_log("default")
    append = log.append
    if not numbered_first:
        async def down(*args, **kwargs):
            raise ConnectionError("Redis is down")

        monkeypatch.setattr(log, "append", down)
    await hub.handle(sub, dict(raw))
    monkeypatch.setattr(log, "append", append)
    await hub.handle(sub, dict(raw))  # the layer's redelivery
    await hub.handle(sub, {"type": "chat.message", "text": "next",
                           "_otel": {"id": "5f1c0e9a2b7d4c11-2b", "sent_at": time.time()}})
    texts = [json.loads((await comm.receive_event()).data)["text"] for _ in range(2)]
    assert texts == ["once", "next"]
    await comm.disconnect()


async def test_a_message_sent_without_an_id_is_not_sent_again_by_a_gap_read(monkeypatch):
    """The log fails as Redis goes down: this hub sends a message without an id while
    another worker had numbered it. The next message follows that entry: the gap read
    must not send it again, with its id, to the streams that have it already."""
    comm = await open_stream("/events/bare-gap/")
    hub = _hub.get_hub("default")
    sub = hub.subscriptions["room_bare-gap"]
    log = replay.get_log("default")
    append = log.append

    async def down(group, message, traceparent, **kwargs):
        await append(group, message, traceparent, **kwargs)  # the other worker's numbering
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(log, "append", down)
    await hub.handle(sub, {"type": "chat.message", "text": "bare",
                           "_otel": {"id": "5f1c0e9a2b7d4c11-3a", "sent_at": time.time()}})
    monkeypatch.setattr(log, "append", append)
    await hub.handle(sub, {"type": "chat.message", "text": "next",
                           "_otel": {"id": "5f1c0e9a2b7d4c11-3b", "sent_at": time.time()}})
    events = [await comm.receive_event() for _ in range(2)]
    assert [json.loads(e.data)["text"] for e in events] == ["bare", "next"]
    await comm.disconnect()


async def test_group_membership_is_refreshed_before_group_expiry():
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer",
                          "CONFIG": {"group_expiry": 1}}}
    with override_settings(CHANNEL_LAYERS=layers):
        comm = await open_stream("/events/fresh/")
        await asyncio.sleep(2.2)  # two expiries: only the hub's refresh keeps it in
        await get_channel_layer().group_send("room_fresh", {"type": "still.here"})
        assert (await comm.receive_event()).event == "still.here"
        await comm.disconnect()


def _dotted(attributes):
    return {key.replace(".", "__"): value for key, value in attributes.items()}
