"""The traced consumers through WebsocketCommunicator: spans, links, attributes."""

from __future__ import annotations

import json

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path, re_path
from opentelemetry.trace import SpanKind, StatusCode

from otel_channels.consumers import (
    TracedAsyncJsonWebsocketConsumer,
    TracedAsyncWebsocketConsumer,
    TracedJsonWebsocketConsumer,
    TracedWebsocketConsumer,
)

SECRET = "s3cr3t-payload-content"


class EchoJson(TracedAsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content})


class SyncEchoJson(TracedJsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json({"echo": content})


class Echo(TracedAsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class SyncEcho(TracedWebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data, bytes_data=bytes_data)


def router(consumer):
    return URLRouter([path("chat/<str:room>/", consumer.as_asgi())])


async def test_json_consumer_spans_kinds_links_and_attributes(spans):
    app = router(EchoJson)
    comm = WebsocketCommunicator(app, "/chat/lobby/?token=abc&x=1",
                                 headers=[(b"user-agent", b"pytest-agent")])
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"message": SECRET})
    assert await comm.receive_json_from() == {"echo": {"message": SECRET}}
    await comm.disconnect()

    connect = spans.one("connect /chat/<room>/")
    receive = spans.one("receive /chat/<room>/")
    disconnect = spans.one("disconnect /chat/<room>/")
    assert connect.kind is SpanKind.SERVER
    assert receive.kind is SpanKind.CONSUMER
    assert disconnect.kind is SpanKind.INTERNAL
    # receive: a new trace linking connect (FRAME_TRACE_MODE="link")
    assert receive.parent is None
    assert receive.context.trace_id != connect.context.trace_id
    assert [link.context.span_id for link in receive.links] == [connect.context.span_id]
    assert [link.context.span_id for link in disconnect.links] == [connect.context.span_id]
    assert connect.attributes["http.route"] == "/chat/<room>/"
    assert connect.attributes["url.path"] == "/chat/lobby/"
    assert connect.attributes["url.query"] == "token=REDACTED&x=1"
    assert connect.attributes["url.scheme"] == "ws"
    assert connect.attributes["network.protocol.name"] == "websocket"
    assert connect.attributes["user_agent.original"] == "pytest-agent"
    assert connect.attributes["channels.connection.status"] == "accepted"
    assert connect.attributes["channels.consumer"] == "EchoJson"
    assert receive.attributes["websocket.message.type"] == "text"
    assert receive.attributes["messaging.message.body.size"] == len(json.dumps({"message": SECRET}))
    assert receive.events == ()  # an outbound frame is counted, not traced (SEND_EVENTS off)
    assert disconnect.attributes["websocket.close.code"] == 1000
    assert disconnect.attributes["channels.connection.status"] == "closed"
    assert disconnect.attributes["channels.frames.received"] == 1
    assert disconnect.attributes["channels.frames.sent"] == 1
    for span in spans.all():
        for value in span.attributes.values():
            assert SECRET not in str(value)
            assert "abc" not in str(value)
        for event in span.events:
            assert SECRET not in str(dict(event.attributes))


@pytest.mark.parametrize("consumer", [Echo, SyncEcho, EchoJson, SyncEchoJson])
async def test_send_events_setting_records_each_outbound_frame(spans, metric_reader, consumer):
    with override_settings(OTEL_CHANNELS={"SEND_EVENTS": True}):
        comm = WebsocketCommunicator(router(consumer), "/chat/r1/")
        assert (await comm.connect())[0]
        await comm.send_to(text_data=json.dumps({"a": 1}))
        reply = await comm.receive_from()
        await comm.disconnect()
    receive = spans.one("receive /chat/<room>/")
    (event,) = receive.events
    assert event.name == "websocket.send"
    assert dict(event.attributes) == {
        "websocket.message.type": "text", "messaging.message.body.size": len(reply),
    }
    assert spans.named("send /chat/<room>/") == []  # an event, not a span
    size = {"name": "channels.websocket.message.size", "network__io__direction": "transmit"}
    assert metric_reader.count(**size) == 1
    assert metric_reader.total(**size) == len(reply)


@pytest.mark.parametrize("consumer", [Echo, SyncEcho, EchoJson, SyncEchoJson])
async def test_every_consumer_kind_traces_frames(spans, consumer):
    comm = WebsocketCommunicator(router(consumer), "/chat/r1/")
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps({"a": 1}))
    assert json.loads(await comm.receive_from())
    await comm.disconnect()
    assert sorted(spans.names()) == sorted([
        "connect /chat/<room>/", "receive /chat/<room>/", "disconnect /chat/<room>/",
    ])


async def test_sample_rate_zero_creates_no_receive_span(spans):
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.0}):
        comm = WebsocketCommunicator(router(EchoJson), "/chat/r/")
        await comm.connect()
        for i in range(20):
            await comm.send_json_to({"i": i})
            await comm.receive_json_from()
        await comm.disconnect()
    assert spans.named("receive /chat/<room>/") == []
    assert len(spans.named("connect /chat/<room>/")) == 1


async def test_child_mode_and_json_traceparent(spans):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with override_settings(OTEL_CHANNELS={"FRAME_TRACE_MODE": "child"}):
        comm = WebsocketCommunicator(router(EchoJson), "/chat/r/")
        await comm.connect()
        await comm.send_json_to({"x": 1})
        await comm.receive_json_from()
        await comm.send_json_to({"x": 2, "traceparent": parent})
        await comm.receive_json_from()
        await comm.disconnect()
    connect = spans.one("connect /chat/<room>/")
    first, second = spans.named("receive /chat/<room>/")
    assert first.parent.span_id == connect.context.span_id
    assert first.context.trace_id == connect.context.trace_id
    assert second.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert second.parent.span_id == 0xB7AD6B7169203331


async def test_handshake_traceparent_parent_link_ignore(spans):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for mode in ("parent", "link", "ignore"):
        spans.clear()
        with override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": mode}):
            comm = WebsocketCommunicator(router(EchoJson), "/chat/r/",
                                         headers=[(b"traceparent", tp.encode())])
            await comm.connect()
            await comm.disconnect()
        connect = spans.one("connect /chat/<room>/")
        if mode == "parent":
            assert connect.parent.span_id == 0xB7AD6B7169203331
            assert connect.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        elif mode == "link":
            assert connect.parent is None
            assert connect.context.trace_id != 0x0AF7651916CD43DD8448EB211C80319C
            assert [link.context.span_id for link in connect.links] == [0xB7AD6B7169203331]
        else:
            assert connect.parent is None and not connect.links


async def test_query_traceparent_only_when_enabled(spans):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for enabled in (False, True):
        spans.clear()
        with override_settings(OTEL_CHANNELS={"QUERY_TRACEPARENT": enabled}):
            comm = WebsocketCommunicator(router(EchoJson), f"/chat/r/?traceparent={tp}")
            await comm.connect()
            await comm.disconnect()
        connect = spans.one("connect /chat/<room>/")
        assert (connect.parent is not None) is enabled


class Denier(TracedAsyncWebsocketConsumer):
    async def connect(self):
        from channels.exceptions import DenyConnection

        raise DenyConnection


class Exploder(TracedAsyncWebsocketConsumer):
    async def connect(self):
        raise RuntimeError("boom in connect")


class FrameExploder(TracedAsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        raise KeyError("boom")


async def test_denied_connection_span(spans, metric_reader):
    comm = WebsocketCommunicator(router(Denier), "/chat/r/")
    connected, code = await comm.connect()
    assert not connected
    connect = spans.one("connect /chat/<room>/")
    assert connect.attributes["channels.connection.status"] == "rejected"
    assert connect.attributes["http.response.status_code"] == 403
    assert metric_reader.sum("channels.server.active_connections") == 0


async def test_exception_in_connect_recorded_and_reraised(spans):
    comm = WebsocketCommunicator(router(Exploder), "/chat/r/")
    with pytest.raises(RuntimeError, match="boom in connect"):
        await comm.connect()
    connect = spans.one("connect /chat/<room>/")
    assert connect.status.status_code is StatusCode.ERROR
    assert connect.attributes["error.type"] == "RuntimeError"
    assert [event.name for event in connect.events] == ["exception"]


async def test_exception_in_receive_recorded_and_reraised(spans):
    comm = WebsocketCommunicator(router(FrameExploder), "/chat/r/")
    await comm.connect()
    await comm.send_to(text_data="x")
    with pytest.raises(KeyError):
        await comm.receive_output()
    receive = spans.one("receive /chat/<room>/")
    assert receive.attributes["error.type"] == "KeyError"
    assert receive.status.status_code is StatusCode.ERROR


async def test_close_codes_classified(spans):
    for code, error in ((1000, None), (1001, None), (1006, "1006"), (1011, "1011"), (4003, "4003")):
        spans.clear()
        comm = WebsocketCommunicator(router(Echo), "/chat/r/")
        await comm.connect()
        await comm.disconnect(code=code)
        span = spans.one("disconnect /chat/<room>/")
        assert span.attributes["websocket.close.code"] == code
        assert span.attributes.get("error.type") == error
        assert (span.status.status_code is StatusCode.ERROR) is (error is not None)


async def test_send_spans_when_enabled(spans):
    with override_settings(OTEL_CHANNELS={"SEND_SPANS": True}):
        comm = WebsocketCommunicator(router(EchoJson), "/chat/r/")
        await comm.connect()
        await comm.send_json_to({"a": 1})
        await comm.receive_json_from()
        await comm.disconnect()
    send = spans.one("send /chat/<room>/")
    receive = spans.one("receive /chat/<room>/")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent.span_id == receive.context.span_id
    assert receive.events == ()


async def test_max_frame_size_closes_1009(spans):
    with override_settings(OTEL_CHANNELS={"MAX_FRAME_SIZE": 10}):
        comm = WebsocketCommunicator(router(EchoJson), "/chat/r/")
        await comm.connect()
        await comm.send_to(text_data=json.dumps({"big": "x" * 100}))
        assert await comm.receive_output() == {"type": "websocket.close", "code": 1009}
        await comm.disconnect(code=1009)
    receive = spans.one("receive /chat/<room>/")
    assert receive.attributes["error.type"] == "frame_too_large"


async def test_ignored_frames_and_span_cap(spans):
    with override_settings(OTEL_CHANNELS={"IGNORED_FRAMES": ['"ping"'],
                                          "MAX_SPANS_PER_CONNECTION": 3}):
        comm = WebsocketCommunicator(router(EchoJson), "/chat/r/")
        await comm.connect()
        await comm.send_to(text_data='"ping"')
        await comm.receive_json_from()
        for i in range(5):
            await comm.send_json_to({"i": i})
            await comm.receive_json_from()
        await comm.disconnect()
    assert len(spans.named("receive /chat/<room>/")) == 3
    assert spans.one("disconnect /chat/<room>/").attributes["channels.spans.dropped"] == 2


async def test_nested_routers_and_regex_routes(spans):
    app = URLRouter([
        path("ws/", URLRouter([re_path(r"^room/(?P<room>\w+)/$", Echo.as_asgi())])),
    ])
    comm = WebsocketCommunicator(app, "/ws/room/abc/")
    await comm.connect()
    await comm.disconnect()
    assert spans.one("connect /ws/room/<room>/").attributes["http.route"] == "/ws/room/<room>/"


async def test_route_falls_back_to_class_name(spans):
    comm = WebsocketCommunicator(Echo.as_asgi(), "/whatever/123/")
    await comm.connect()
    await comm.disconnect()
    assert spans.names() == ["connect Echo", "disconnect Echo"]


class Grouped(TracedAsyncJsonWebsocketConsumer):
    groups = ["room_7"]

    async def chat_message(self, event):
        await self.send_json(event)


class Plain(AsyncJsonWebsocketConsumer):
    groups = ["room_7"]

    async def chat_message(self, event):
        await self.send_json(event)


async def test_group_send_process_spans_and_carrier_never_reaches_client(spans):
    a = WebsocketCommunicator(router(Grouped), "/chat/a/")
    b = WebsocketCommunicator(router(Plain), "/chat/b/")
    await a.connect()
    await b.connect()
    message = {"type": "chat.message", "text": "hi"}
    await get_channel_layer().group_send("room_7", message)
    assert message == {"type": "chat.message", "text": "hi"}  # caller's dict untouched
    assert await a.receive_json_from() == message
    assert await b.receive_json_from() == message
    await a.disconnect()
    await b.disconnect()
    producer = spans.one("group_send room_{id}")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.attributes["messaging.destination.name"] == "room_7"
    assert producer.attributes["messaging.destination.template"] == "room_{id}"
    processes = spans.named("process room_{id}")
    assert len(processes) == 2
    connect_a = [s for s in spans.named("connect /chat/<room>/")
                 if s.attributes["url.path"] == "/chat/a/"][0]
    for span in processes:
        assert span.kind is SpanKind.CONSUMER
        assert span.parent.span_id == producer.context.span_id
        assert span.context.trace_id == producer.context.trace_id
        assert producer.context.span_id not in [link.context.span_id for link in span.links]
    traced = [s for s in processes if len(s.links) == 1]
    assert len(traced) == 1
    assert connect_a.context.span_id in [link.context.span_id for link in traced[0].links]


def tenant_hook(span, scope, message):
    span.set_attribute("app.tenant", scope["url_route"]["kwargs"]["room"])


def tenant_group_template(group):
    return group.split("_")[0] + "_{tenant}"


async def test_span_hook_and_group_template_settings(spans):
    with override_settings(OTEL_CHANNELS={
        "SPAN_HOOK": "tests.websocket.test_consumers.tenant_hook",
        "GROUP_TEMPLATE": tenant_group_template,
    }):
        comm = WebsocketCommunicator(router(EchoJson), "/chat/acme/")
        await comm.connect()
        await comm.send_json_to({"a": 1})
        await comm.receive_json_from()
        await comm.disconnect()
        await get_channel_layer().group_send("orders_acme", {"type": "x"})
    assert spans.one("receive /chat/<room>/").attributes["app.tenant"] == "acme"
    producer = spans.one("group_send orders_{tenant}")
    assert producer.attributes["messaging.destination.name"] == "orders_acme"
