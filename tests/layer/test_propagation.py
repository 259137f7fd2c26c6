"""Trace context through the channel layer, in one process.

The app's ``ready()`` has instrumented Channels (``AUTO_INSTRUMENT`` default),
so every ``group_send`` / ``send`` below goes through the producer wrapper and
every consumer, plain or traced, through the ``process`` side. Layers:
``InMemoryChannelLayer`` and, against Redis, ``RedisChannelLayer`` and
``RedisPubSubChannelLayer`` (unique prefix per test). This module is also the
URLconf of its view tests.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import django
import msgpack
import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.management import call_command
from django.dispatch import Signal
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from otel_channels.consumers import (
    TracedAsyncJsonWebsocketConsumer,
    TracedAsyncWebsocketConsumer,
    TracedJsonWebsocketConsumer,
    TracedWebsocketConsumer,
)
from otel_channels.instrumentation import ChannelsInstrumentor
from otel_channels.layer.patches import raw_receive
from tests.support.redis_layer import redis_layer_config
from tests.support.telemetry import Metrics, Spans
from tests.support.workers import group_send_attributes

CARRIER_KEY = "_otel"
TEMPLATE = "room_{id}"
GROUP_SEND = f"group_send {TEMPLATE}"
PROCESS = f"process {TEMPLATE}"
ROUTE = "/ws/<room>/"
MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
BACKENDS = {
    "memory": "channels.layers.InMemoryChannelLayer",
    "redis": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
tracer = trace.get_tracer("tests.propagation")


# -- fixtures and helpers ----------------------------------------------------------


def new_group() -> str:
    return f"room_{uuid.uuid4().int % 10**12}"  # digits: the template is room_{id}


def new_prefix() -> str:
    return f"otelprop{uuid.uuid4().hex[:12]}"


async def close_layer(layer: Any) -> None:
    """Delete this test's keys (unique prefix only) and close its Redis connections."""
    await layer.flush()
    if hasattr(layer, "close_pools"):
        await layer.close_pools()


@pytest.fixture(params=list(BACKENDS))
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The default channel layer of the settings, one backend per parameter."""
    backend = BACKENDS[request.param]
    if request.param == "memory":
        config: dict[str, Any] = {"BACKEND": backend}
    else:
        config = redis_layer_config(request.getfixturevalue("redis_url"), backend,
                                    prefix=new_prefix())
    # channels.layers drops its cached layers on setting_changed(CHANNEL_LAYERS).
    with override_settings(CHANNEL_LAYERS={"default": config}):
        channel_layer = get_channel_layer()
        assert type(channel_layer).__module__ + "." + type(channel_layer).__name__ == backend
        try:
            yield channel_layer
        finally:
            await close_layer(channel_layer)


@pytest.fixture
def instrumentor() -> Iterator[ChannelsInstrumentor]:
    """The (singleton) instrumentor; instrumented again with the defaults afterwards."""
    instance = ChannelsInstrumentor()
    yield instance
    if not instance.is_instrumented_by_opentelemetry:
        instance.instrument()


SEEN: list[dict[str, Any]] = []


class AsyncForward:
    """Handler of ``chat.message``: records the event and forwards it as a frame."""

    async def chat_message(self, event: dict[str, Any]) -> None:
        SEEN.append(dict(event))
        await self.send(text_data=json.dumps(event))  # type: ignore[attr-defined]


class SyncForward:
    def chat_message(self, event: dict[str, Any]) -> None:
        SEEN.append(dict(event))
        self.send(text_data=json.dumps(event))  # type: ignore[attr-defined]


CONSUMERS: dict[str, tuple[type, type]] = {
    "plain-async": (AsyncForward, AsyncWebsocketConsumer),
    "plain-async-json": (AsyncForward, AsyncJsonWebsocketConsumer),
    "plain-sync": (SyncForward, WebsocketConsumer),
    "plain-sync-json": (SyncForward, JsonWebsocketConsumer),
    "traced-async": (AsyncForward, TracedAsyncWebsocketConsumer),
    "traced-async-json": (AsyncForward, TracedAsyncJsonWebsocketConsumer),
    "traced-sync": (SyncForward, TracedWebsocketConsumer),
    "traced-sync-json": (SyncForward, TracedJsonWebsocketConsumer),
}


async def join(kind: str, group: str) -> WebsocketCommunicator:
    """A connected client of a ``kind`` consumer that joined ``group`` (Channels' ``groups``)."""
    consumer = type(f"Room_{kind.replace('-', '_')}", CONSUMERS[kind], {"groups": [group]})
    app = URLRouter([path("ws/<str:room>/", consumer.as_asgi())])
    communicator = WebsocketCommunicator(app, f"/ws/{group}/")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


def ids(context: SpanContext) -> tuple[int, int]:
    return context.trace_id, context.span_id


def link_ids(span: ReadableSpan) -> list[tuple[int, int]]:
    return [ids(link.context) for link in span.links]


def traceparent(span: ReadableSpan) -> str:
    """W3C traceparent of a sampled span (flags as the SDK set them, e.g. 03 = random)."""
    flags = int(span.context.trace_flags)
    assert flags & TraceFlags.SAMPLED
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{flags:02x}"


def parent_ids(span: ReadableSpan) -> tuple[int, int] | None:
    return ids(span.parent) if span.parent is not None else None


def assert_carrier(carrier: Any, producer: ReadableSpan, destination: str | None) -> None:
    """A plain msgpack-safe dict: traceparent, destination (groups only), sent_at, id."""
    assert type(carrier) is dict
    expected = {"traceparent", "sent_at", "id"} | ({"destination"} if destination else set())
    assert set(carrier) == expected, carrier
    assert carrier["traceparent"] == traceparent(producer)
    if destination:
        assert carrier["destination"] == destination
    assert type(carrier["sent_at"]) is float and abs(time.time() - carrier["sent_at"]) < 10
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", carrier["id"]), carrier["id"]
    assert msgpack.unpackb(msgpack.packb(carrier)) == carrier
    assert json.loads(json.dumps(carrier)) == carrier


# -- producer spans and the carrier ------------------------------------------------------


async def test_group_send_span_carrier_and_metrics(
    layer: Any, spans: Spans, metric_reader: Metrics
) -> None:
    group = new_group()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    message = {"type": "chat.message", "text": "x", "nested": {"n": [1, 2]}}
    before = copy.deepcopy(message)
    nested = message["nested"]

    await layer.group_send(group, message)

    # The caller's dict (and what it holds) is untouched.
    assert message == before and CARRIER_KEY not in message and message["nested"] is nested
    received = await asyncio.wait_for(raw_receive(layer.receive)(channel), 5)
    carrier = received.pop(CARRIER_KEY)
    assert received == before
    producer = spans.one(GROUP_SEND)
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is None
    assert dict(producer.attributes or {}) == group_send_attributes(group)
    assert_carrier(carrier, producer, group)
    # Metrics carry the template, never the group name.
    assert metric_reader.sum("messaging.client.sent.messages",
                             messaging__operation__name="group_send") == 1
    assert metric_reader.count("messaging.client.operation.duration",
                               messaging__operation__name="group_send") == 1
    for name in ("messaging.client.sent.messages", "messaging.client.operation.duration"):
        for attributes in metric_reader.attributes(name):
            assert attributes["messaging.destination.template"] == TEMPLATE
            assert "messaging.destination.name" not in attributes
            assert group not in attributes.values()


async def test_send_span_and_carrier(layer: Any, spans: Spans, metric_reader: Metrics) -> None:
    channel = await layer.new_channel()
    message = {"type": "direct.message", "n": 1}
    await layer.send(channel, message)
    assert message == {"type": "direct.message", "n": 1}
    received = await asyncio.wait_for(raw_receive(layer.receive)(channel), 5)
    producer = spans.one("send")  # the channel name is temporary: never in the span name
    assert producer.kind is SpanKind.PRODUCER
    assert dict(producer.attributes or {}) == {
        "messaging.system": "channels",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": channel,
        "messaging.destination.temporary": True,
        "channels.message.type": "direct.message",
    }
    assert_carrier(received.pop(CARRIER_KEY), producer, None)
    assert received == message
    assert metric_reader.sum("messaging.client.sent.messages",
                             messaging__operation__name="send") == 1
    assert all(channel not in a.values()
               for a in metric_reader.attributes("messaging.client.sent.messages"))


async def test_carrier_keeps_parent_trace_and_tracestate(spans: Spans) -> None:
    parent = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7,
        is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room_9", channel)
    with trace.use_span(NonRecordingSpan(parent)):
        await layer.group_send("room_9", {"type": "chat.message"})
    carrier = (await raw_receive(layer.receive)(channel))[CARRIER_KEY]
    producer = spans.one(GROUP_SEND)
    assert producer.context.trace_id == parent.trace_id
    assert parent_ids(producer) == ids(parent)
    assert carrier["traceparent"] == traceparent(producer)
    assert carrier["tracestate"] == "vendor=v1"
    assert msgpack.unpackb(msgpack.packb(carrier)) == carrier


# -- every kind of caller ------------------------------------------------------------------


def receive_sync(layer: Any, channel: str) -> dict[str, Any]:
    return async_to_sync(asyncio.wait_for)(raw_receive(layer.receive)(channel), 5)  # type: ignore[arg-type]


def sync_setup(group: str) -> tuple[Any, str]:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return layer, channel


def assert_sent_under(spans: Spans, received: dict[str, Any], outer: ReadableSpan | None) -> None:
    """One producer span, child of ``outer`` (the caller's span); the carrier names it."""
    producer = spans.one(GROUP_SEND)
    if outer is None:
        assert producer.parent is None
    else:
        assert parent_ids(producer) == ids(outer.context)
    assert received[CARRIER_KEY]["traceparent"] == traceparent(producer)


def test_group_send_from_sync_code(spans: Spans) -> None:
    group = new_group()
    with override_settings(CHANNEL_LAYERS=MEMORY):
        layer, channel = sync_setup(group)
        with tracer.start_as_current_span("job"):
            async_to_sync(layer.group_send)(group, {"type": "chat.message", "text": "sync"})
        received = receive_sync(layer, channel)
    assert received["text"] == "sync"
    assert_sent_under(spans, received, spans.one("job"))


@csrf_exempt
def sync_view(request: HttpRequest, group: str) -> JsonResponse:
    async_to_sync(get_channel_layer().group_send)(
        group, {"type": "chat.message", "text": "sync-view"})
    return JsonResponse({"ok": True}, status=202)


async def async_view(request: HttpRequest, group: str) -> JsonResponse:
    # not @csrf_exempt: on Django 4.2 it wraps an async view in a sync function
    await get_channel_layer().group_send(group, {"type": "chat.message", "text": "async-view"})
    return JsonResponse({"ok": True}, status=202)


urlpatterns = [
    path("sync/<str:group>/", sync_view),
    path("async/<str:group>/", async_view),
]


def test_group_send_from_sync_view(spans: Spans) -> None:
    group = new_group()
    with override_settings(CHANNEL_LAYERS=MEMORY, ROOT_URLCONF=__name__):
        layer, channel = sync_setup(group)
        with tracer.start_as_current_span("request"):
            response = Client().post(f"/sync/{group}/")
        assert response.status_code == 202
        received = receive_sync(layer, channel)
    assert received["text"] == "sync-view"
    assert_sent_under(spans, received, spans.one("request"))


async def test_group_send_from_async_view(spans: Spans) -> None:
    group = new_group()
    with override_settings(CHANNEL_LAYERS=MEMORY, ROOT_URLCONF=__name__):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        with tracer.start_as_current_span("request"):
            response = await AsyncClient().post(f"/async/{group}/")
        assert response.status_code == 202
        received = await asyncio.wait_for(raw_receive(layer.receive)(channel), 5)
    assert received["text"] == "async-view"
    assert_sent_under(spans, received, spans.one("request"))


saved = Signal()


def _sync_receiver(sender: Any, group: str, **kwargs: Any) -> None:
    async_to_sync(get_channel_layer().group_send)(group, {"type": "chat.message", "text": "sync"})


async def _async_receiver(sender: Any, group: str, **kwargs: Any) -> None:
    await get_channel_layer().group_send(group, {"type": "chat.message", "text": "async"})


def test_group_send_from_signal_receiver(spans: Spans) -> None:
    group = new_group()
    saved.connect(_sync_receiver)
    try:
        with override_settings(CHANNEL_LAYERS=MEMORY):
            layer, channel = sync_setup(group)
            saved.send(sender=None, group=group)
            received = receive_sync(layer, channel)
    finally:
        saved.disconnect(_sync_receiver)
    assert received["text"] == "sync"
    assert_sent_under(spans, received, None)


@pytest.mark.skipif(django.VERSION < (5, 0), reason="Signal.asend arrived in Django 5.0")
async def test_group_send_from_async_signal_receivers(spans: Spans) -> None:
    group = new_group()
    saved.connect(_sync_receiver)
    saved.connect(_async_receiver)
    try:
        with override_settings(CHANNEL_LAYERS=MEMORY):
            layer = get_channel_layer()
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            with tracer.start_as_current_span("save"):
                await saved.asend(sender=None, group=group)
            first = await asyncio.wait_for(raw_receive(layer.receive)(channel), 5)
            second = await asyncio.wait_for(raw_receive(layer.receive)(channel), 5)
    finally:
        saved.disconnect(_sync_receiver)
        saved.disconnect(_async_receiver)
    assert {first["text"], second["text"]} == {"sync", "async"}
    producers = spans.named(GROUP_SEND)
    save = spans.one("save")
    # The sync receiver ran in a thread (sync_to_async), the async one in the loop:
    # both producer spans are children of the caller's span.
    assert len(producers) == 2
    assert all(parent_ids(p) == ids(save.context) for p in producers)
    assert {first[CARRIER_KEY]["traceparent"], second[CARRIER_KEY]["traceparent"]} == {
        traceparent(p) for p in producers}


def test_group_send_from_management_command(spans: Spans) -> None:
    group = new_group()
    apps = [*settings.INSTALLED_APPS, "tests.project"]  # tests/project/management/commands
    with override_settings(CHANNEL_LAYERS=MEMORY, INSTALLED_APPS=apps):
        layer, channel = sync_setup(group)
        call_command("broadcast", group, "from-command")
        received = receive_sync(layer, channel)
    assert received["text"] == "from-command" and received["via"] == "command"
    assert_sent_under(spans, received, None)


# -- the consumer side -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CONSUMERS))
async def test_handlers_never_see_the_carrier(layer: Any, kind: str, spans: Spans) -> None:
    group = new_group()
    communicator = await join(kind, group)
    SEEN.clear()
    await layer.group_send(group, {"type": "chat.message", "text": "hi"})
    frame = await communicator.receive_from(timeout=5)
    await communicator.disconnect()

    assert json.loads(frame) == {"type": "chat.message", "text": "hi"}
    assert CARRIER_KEY not in frame
    assert SEEN == [{"type": "chat.message", "text": "hi"}]
    producer = spans.one(GROUP_SEND)
    process = spans.one(PROCESS)
    assert process.kind is SpanKind.CONSUMER
    assert parent_ids(process) == ids(producer.context)
    assert process.attributes is not None
    assert process.attributes["messaging.destination.name"] == group
    assert process.attributes["messaging.destination.template"] == TEMPLATE
    assert process.attributes["messaging.operation.type"] == "process"
    # A child of the producer, not also linked to it (the link would repeat the parent);
    # a traced consumer's process span links its connection's connect span.
    if kind.startswith("traced"):
        connect = spans.one(f"connect {ROUTE}")
        assert link_ids(process) == [ids(connect.context)]
    else:
        assert link_ids(process) == []


async def test_group_message_parent_link_starts_new_traces(layer: Any, spans: Spans) -> None:
    group = new_group()
    with override_settings(OTEL_CHANNELS={"GROUP_MESSAGE_PARENT": "link"}):
        plain = await join("plain-async-json", group)
        traced = await join("traced-async-json", group)
        await layer.group_send(group, {"type": "chat.message", "text": "hi"})
        for communicator in (plain, traced):
            assert json.loads(await communicator.receive_from(timeout=5))["text"] == "hi"
            await communicator.disconnect()

    producer = spans.one(GROUP_SEND)
    connect = spans.one(f"connect {ROUTE}")
    processes = spans.named(PROCESS)
    assert len(processes) == 2
    for process in processes:
        assert process.parent is None
        assert process.context.trace_id != producer.context.trace_id
    assert sorted(link_ids(p) for p in processes) == sorted([
        [ids(producer.context)], [ids(producer.context), ids(connect.context)]])


async def test_message_without_carrier_still_gets_a_process_span(
    layer: Any, spans: Spans, instrumentor: ChannelsInstrumentor
) -> None:
    group = new_group()
    plain = await join("plain-async-json", group)
    traced = await join("traced-async-json", group)
    instrumentor.uninstrument()  # an untraced producer: no span, no carrier
    try:
        await layer.group_send(group, {"type": "chat.message", "text": "bare"})
    finally:
        instrumentor.instrument()
    for communicator in (plain, traced):
        assert json.loads(await communicator.receive_from(timeout=5)) == {
            "type": "chat.message", "text": "bare"}
        await communicator.disconnect()

    assert not spans.named(GROUP_SEND)
    processes = spans.named("process")  # no carrier: no destination, no template
    assert len(processes) == 2
    connect = spans.one(f"connect {ROUTE}")
    assert all(p.parent is None for p in processes)
    assert sorted(link_ids(p) for p in processes) == [[], [ids(connect.context)]]
    for process in processes:
        assert process.attributes is not None
        assert "messaging.destination.name" not in process.attributes


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_channel_full_recorded_on_send_and_group_send_never_raises(
    kind: str, spans: Spans, metric_reader: Metrics, request: pytest.FixtureRequest
) -> None:
    if kind == "memory":
        channel_layer: Any = InMemoryChannelLayer(capacity=1)
    else:
        from channels_redis.core import RedisChannelLayer

        config = redis_layer_config(request.getfixturevalue("redis_url"), prefix=new_prefix(),
                                    capacity=1)["CONFIG"]
        channel_layer = RedisChannelLayer(**config)
    try:
        channel = await channel_layer.new_channel()
        await channel_layer.send(channel, {"type": "first.message"})
        with pytest.raises(ChannelFull):
            await channel_layer.send(channel, {"type": "second.message"})
        group = new_group()
        await channel_layer.group_add(group, channel)
        await channel_layer.group_send(group, {"type": "chat.message"})  # full: dropped, no raise
    finally:
        await close_layer(channel_layer)

    ok, failed = spans.named("send")
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "ChannelFull"
    assert [event.name for event in failed.events] == ["exception"]
    group_send = spans.one(GROUP_SEND)
    assert group_send.status.status_code is StatusCode.UNSET
    assert "error.type" not in (group_send.attributes or {})
    assert metric_reader.sum("messaging.client.sent.messages",
                             messaging__operation__name="send") == 1
    assert metric_reader.count("messaging.client.operation.duration",
                               messaging__operation__name="send", error__type="ChannelFull") == 1
    assert metric_reader.count("messaging.client.operation.duration",
                               messaging__operation__name="send") == 2


async def test_sampling_keeps_or_drops_every_delivery_of_a_broadcast(
    layer: Any, spans: Spans
) -> None:
    broadcasts = 60
    kinds = ["plain-async-json", "plain-sync", "traced-async-json", "traced-sync-json",
             "plain-async", "traced-async"]
    group = new_group()
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.5}):
        communicators = [await join(kind, group) for kind in kinds]
        for i in range(broadcasts):
            await layer.group_send(group, {"type": "chat.message", "text": f"m{i}"})
        for communicator in communicators:
            texts = [json.loads(await communicator.receive_from(timeout=5))["text"]
                     for _ in range(broadcasts)]
            assert texts == [f"m{i}" for i in range(broadcasts)]  # delivery never changes
            await communicator.disconnect()

    producers = spans.named(GROUP_SEND)
    processes = spans.named(PROCESS)
    # Binomial(60, 0.5) outside 10..50 has a probability of about 1e-8.
    assert 10 <= len(producers) <= 50, len(producers)
    by_producer: dict[tuple[int, int], list[ReadableSpan]] = {ids(p.context): [] for p in producers}
    for process in processes:
        parent = parent_ids(process)
        assert parent in by_producer, "a delivery of a dropped broadcast was traced"
        by_producer[parent].append(process)
    for deliveries in by_producer.values():
        assert len(deliveries) == len(kinds), "a traced broadcast lost some deliveries"
