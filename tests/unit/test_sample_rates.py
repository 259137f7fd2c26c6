"""Per-route and per-group sampling (``SAMPLE_RATES``, ``otel_sample_rate``) in one process.

A route or group at rate 0 next to one at 1.0: spans only for the traced one,
counters for both; the consumer class attribute; decisions from the trace id
(inside a trace) and from the message id (a producer that sent no context).
"""

from __future__ import annotations

import random

from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_channels.conf import get_config
from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from otel_channels.telemetry import carrier as _carrier
from otel_channels.telemetry import rates as _rates
from otel_channels.telemetry import sampling as _sampling

CHAT, CURSORS = "/ws/chat/<room>/", "/ws/cursors/<room>/"


class Member(TracedAsyncJsonWebsocketConsumer):
    """Joins ``chat_<room>`` and ``cursors_<room>``; ``{"to": group}`` broadcasts, else echo."""

    async def connect(self):
        room = self.scope["url_route"]["kwargs"]["room"]
        for group in (f"chat_{room}", f"cursors_{room}"):
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def receive_json(self, content, **kwargs):
        if "to" in content:
            await self.channel_layer.group_send(content["to"], {"type": "relay", "n": 1})
        else:
            await self.send_json({"echo": content})

    async def relay(self, event):
        await self.send_json(event)


class Off(Member):
    otel_sample_rate = 0.0


class On(Member):
    otel_sample_rate = 1.0


class NotARate(Member):
    otel_sample_rate = "0"  # ignored: the route's rate applies


def app(chat=Member, cursors=Member):
    return URLRouter([path("ws/chat/<str:room>/", chat.as_asgi()),
                      path("ws/cursors/<str:room>/", cursors.as_asgi())])


def room() -> str:
    return str(random.randrange(10**9, 10**10))


def of_route(spans, route):
    return [s for s in spans.all()
            if s.attributes.get("http.route") == route or route in s.name]


async def test_route_at_zero_next_to_route_at_one(spans, metric_reader):
    r = room()
    with override_settings(OTEL_CHANNELS={"SEND_SPANS": True,
                                          "SAMPLE_RATES": {"routes": {CURSORS: 0.0}}}):
        application = app()
        chat = WebsocketCommunicator(application, f"/ws/chat/{r}/")
        cursors = WebsocketCommunicator(application, f"/ws/cursors/{r}/")
        assert (await chat.connect())[0] and (await cursors.connect())[0]
        for comm in (chat, cursors):
            for i in range(3):
                await comm.send_json_to({"i": i})
                assert await comm.receive_json_from() == {"echo": {"i": i}}
        # A broadcast from the rate-0 route runs in no sampled trace: untraced everywhere.
        await cursors.send_json_to({"to": f"chat_{r}"})
        for comm in (chat, cursors):
            assert await comm.receive_json_from() == {"type": "relay", "n": 1}
        await chat.send_json_to({"to": f"chat_{r}"})
        for comm in (chat, cursors):
            assert await comm.receive_json_from() == {"type": "relay", "n": 1}
        await chat.disconnect()
        await cursors.disconnect()

    assert of_route(spans, CURSORS) == []
    assert len(spans.named(f"connect {CHAT}")) == 1
    assert len(spans.named(f"disconnect {CHAT}")) == 1
    assert len(spans.named(f"receive {CHAT}")) == 4
    assert len(spans.named(f"send {CHAT}")) == 4  # 3 echoes + the traced relay
    # One traced broadcast (the chat route's); its delivery to the rate-0 connection has
    # no span either: one process span, a child of the producer, linking chat's connect.
    (producer,) = spans.named("group_send chat_{id}")
    assert producer.kind is SpanKind.PRODUCER
    (process,) = spans.named("process chat_{id}")
    assert process.parent.span_id == producer.context.span_id
    connect = spans.one(f"connect {CHAT}")
    assert [link.context.span_id for link in process.links] == [connect.context.span_id]
    # Counters count both routes alike.
    for route in (CHAT, CURSORS):
        messages = {"http.route": route, "network.io.direction": "receive"}
        assert metric_reader.sum("channels.websocket.messages", **messages) == 4
        messages["network.io.direction"] = "transmit"
        assert metric_reader.sum("channels.websocket.messages", **messages) == 5
    template = {"messaging.destination.template": "chat_{id}"}
    assert metric_reader.sum("messaging.client.sent.messages", **template) == 2
    assert metric_reader.sum("messaging.client.consumed.messages", **template) == 4
    assert metric_reader.sum("channels.server.active_connections",
                             **{"http.route": CURSORS}) == 0


async def test_group_at_zero_next_to_group_at_one(spans, metric_reader):
    r = room()
    tracer = trace.get_tracer("test")
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": {"groups": {"cursors_{id}": 0.0}}}):
        comm = WebsocketCommunicator(app(), f"/ws/chat/{r}/")
        assert (await comm.connect())[0]
        layer = get_channel_layer()
        await layer.group_send(f"cursors_{r}", {"type": "relay", "n": 1})  # outside any trace
        await layer.group_send(f"chat_{r}", {"type": "relay", "n": 2})
        with tracer.start_as_current_span("job") as job:  # inside a sampled trace
            assert job.get_span_context().trace_flags.sampled
            await layer.group_send(f"cursors_{r}", {"type": "relay", "n": 3})
            await layer.group_send(f"chat_{r}", {"type": "relay", "n": 4})
        # From a frame's sampled receive span, too.
        await comm.send_json_to({"to": f"cursors_{r}"})
        for n in (1, 2, 3, 4, 1):
            assert await comm.receive_json_from() == {"type": "relay", "n": n}
        await comm.disconnect()

    assert [s for s in spans.all() if "cursors_" in s.name] == []
    producers = spans.named("group_send chat_{id}")
    assert len(producers) == 2
    assert producers[0].parent is None
    assert producers[1].parent.span_id == spans.one("job").context.span_id
    processes = spans.named("process chat_{id}")
    assert sorted(p.parent.span_id for p in processes) == sorted(
        p.context.span_id for p in producers)
    assert len(spans.named(f"receive {CHAT}")) == 1  # the frame itself is traced
    for template, sent in (("cursors_{id}", 3), ("chat_{id}", 2)):
        attributes = {"messaging.destination.template": template}
        assert metric_reader.sum("messaging.client.sent.messages", **attributes) == sent
        assert metric_reader.sum("messaging.client.consumed.messages", **attributes) == sent
    # Durations only for what is traced.
    assert metric_reader.count("messaging.process.duration",
                               **{"messaging.destination.template": "cursors_{id}"}) == 0
    assert metric_reader.count("messaging.process.duration",
                               **{"messaging.destination.template": "chat_{id}"}) == 2


async def test_group_rate_over_a_message_rate_of_zero(spans):
    r = room()
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.0,
                                          "SAMPLE_RATES": {"groups": {"chat_{id}": 1.0}}}):
        comm = WebsocketCommunicator(app(), f"/ws/chat/{r}/")
        assert (await comm.connect())[0]
        await get_channel_layer().group_send(f"chat_{r}", {"type": "relay", "n": 1})
        await get_channel_layer().group_send(f"cursors_{r}", {"type": "relay", "n": 2})
        for n in (1, 2):
            assert await comm.receive_json_from() == {"type": "relay", "n": n}
        await comm.disconnect()
    assert len(spans.named("group_send chat_{id}")) == 1
    assert len(spans.named("process chat_{id}")) == 1
    assert spans.named("group_send cursors_{id}") == spans.named("process cursors_{id}") == []
    # MESSAGE_SAMPLE_RATE = 0 keeps the lifecycle spans, as it always has.
    assert len(spans.named(f"connect {CHAT}")) == 1


async def test_consumer_class_attribute_wins_over_the_route(spans, metric_reader):
    r = room()
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": {"routes": {CURSORS: 0.0}}}):
        application = app(chat=Off, cursors=On)
        off = WebsocketCommunicator(application, f"/ws/chat/{r}/")
        on = WebsocketCommunicator(application, f"/ws/cursors/{r}/")
        for comm in (off, on):
            assert (await comm.connect())[0]
            await comm.send_json_to({"i": 1})
            assert await comm.receive_json_from() == {"echo": {"i": 1}}
            await comm.disconnect()
        ignored = WebsocketCommunicator(app(cursors=NotARate), f"/ws/cursors/{r}/")
        assert (await ignored.connect())[0]
        await ignored.send_json_to({"i": 2})
        await ignored.receive_json_from()
        await ignored.disconnect()
    assert of_route(spans, CHAT) == []  # Off: rate 0 on a route with no rate of its own
    # On: traced on a route at 0; NotARate: the route's 0 applies (no second connect span).
    assert len(spans.named(f"connect {CURSORS}")) == 1
    assert len(spans.named(f"receive {CURSORS}")) == 1
    assert metric_reader.sum("channels.websocket.messages", **{
        "http.route": CHAT, "network.io.direction": "receive"}) == 1
    assert metric_reader.sum("channels.websocket.messages", **{
        "http.route": CURSORS, "network.io.direction": "receive"}) == 2


async def test_half_a_group_is_decided_from_the_trace_id(spans):
    """Inside a sampled trace, a group at 0.5 keeps exactly the trace ids TraceIdRatioBased
    would: retries of one trace, and every worker it reaches, agree."""
    tracer = trace.get_tracer("test")
    kept = []
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": {"groups": {"half_{id}": 0.5}}}):
        layer = get_channel_layer()
        for _ in range(40):
            with tracer.start_as_current_span("job") as job:
                await layer.group_send(f"half_{room()}", {"type": "x"})
                trace_id = job.get_span_context().trace_id
                if _sampling.keep_trace(trace_id, 0.5):
                    kept.append(trace_id)
    producers = spans.named("group_send half_{id}")
    assert sorted(p.context.trace_id for p in producers) == sorted(kept)
    assert 0 < len(kept) < 40


def test_untraced_producer_decided_from_the_message_id():
    """No trace context in the carrier: every worker decides the same from the message id."""
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": {"groups": {"half_{id}": 0.5}}}):
        config = get_config()
        ids = [_carrier.new_id() for _ in range(4000)]
        first = [_rates.keep_untraced(config, "half_{id}", i) for i in ids]
        again = [_rates.keep_untraced(config, "half_{id}", i) for i in ids]
        assert first == again
        assert 0.45 < sum(first) / len(first) < 0.55
        assert all(_rates.keep_untraced(config, "other_{id}", i) for i in ids[:100])  # 1.0
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": {"groups": {"off_{id}": 0.0}}}):
        assert not any(_rates.keep_untraced(get_config(), "off_{id}", i) for i in ids[:100])


def test_route_rate_resolution():
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.3,
                                          "SAMPLE_RATES": {"routes": {CURSORS: 0.0, CHAT: 0.5}}}):
        config = get_config()
        assert _rates.route_rate(config, CHAT, Member) == (0.5, False)
        assert _rates.route_rate(config, CURSORS, Member) == (0.0, True)
        assert _rates.route_rate(config, "/other/", Member) == (0.3, False)
        assert _rates.route_rate(config, CHAT, Off) == (0.0, True)
        assert _rates.route_rate(config, CURSORS, On) == (1.0, False)
        assert _rates.route_rate(config, CURSORS, NotARate) == (0.0, True)
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.0}):
        assert _rates.route_rate(get_config(), CHAT, Member) == (0.0, False)  # not off
