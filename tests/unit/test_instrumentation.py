"""``ChannelsInstrumentor``: what it wraps, what uninstrument restores, providers, settings.

The app's ``ready()`` instruments at ``django.setup()`` (``AUTO_INSTRUMENT``
default), so these tests start instrumented with the global providers. Every
test that changes that goes through the ``instrumentor`` fixture, which leaves
Channels instrumented with the default providers again, whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import channels.consumer
import channels.utils
import pytest
import wrapt
from channels.layers import (
    BaseChannelLayer,
    ChannelLayerManager,
    InMemoryChannelLayer,
    get_channel_layer,
)
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from django.apps import apps
from django.test import override_settings
from django.urls import path
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from otel_channels.instrumentation import ChannelsInstrumentor
from otel_channels.layer.patches import raw_receive
from otel_channels.telemetry import instruments as _telemetry
from tests.support.telemetry import Metrics, Spans

ROOT = Path(__file__).resolve().parents[2]

#: Everything the instrumentor wraps: (owner, attribute). Layer classes are found as
#: BaseChannelLayer subclasses (channels_redis's was imported after instrument()).
TARGETS: list[tuple[Any, str]] = [
    (BaseChannelLayer, "send"), (BaseChannelLayer, "group_send"),
    (InMemoryChannelLayer, "send"), (InMemoryChannelLayer, "group_send"),
    (RedisChannelLayer, "send"), (RedisChannelLayer, "group_send"),
    (ChannelLayerManager, "_make_backend"),
    (URLRouter, "__call__"),
    (channels.consumer, "await_many_dispatch"),
]


def attribute(owner: Any, name: str) -> Any:
    """The attribute as stored (a class's ``__dict__`` entry, not a bound method)."""
    return owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)


def unwrapped(owner: Any, name: str) -> Any:
    value = attribute(owner, name)
    return value.__wrapped__ if isinstance(value, wrapt.FunctionWrapper) else value


#: The functions Channels and channels-redis define, captured under the wrappers.
ORIGINALS = {(owner, name): unwrapped(owner, name) for owner, name in TARGETS}


def assert_original(owner: Any, name: str) -> None:
    value = attribute(owner, name)
    assert value is ORIGINALS[owner, name], (owner, name, value)
    assert type(value) is types.FunctionType, (owner, name, type(value))


def assert_wrapped_once_anywhere(cls: type, name: str) -> None:
    value = vars(cls)[name]
    assert isinstance(value, wrapt.FunctionWrapper), (cls, name, value)
    assert type(value.__wrapped__) is types.FunctionType


def assert_wrapped_once(owner: Any, name: str) -> None:
    value = attribute(owner, name)
    assert isinstance(value, wrapt.FunctionWrapper), (owner, name, value)
    assert value.__wrapped__ is ORIGINALS[owner, name], (owner, name)


@pytest.fixture
def instrumentor() -> Iterator[ChannelsInstrumentor]:
    """The singleton instrumentor; re-instrumented with the default providers afterwards."""
    instance = ChannelsInstrumentor()
    yield instance
    instance.uninstrument()  # a no-op if it already is
    instance.instrument()
    for owner, name in TARGETS:
        assert_wrapped_once(owner, name)


class Chat(TracedAsyncJsonWebsocketConsumer):
    groups = ["room_1"]

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


def chat_router() -> URLRouter:
    return URLRouter([path("chat/<str:room>/", Chat.as_asgi())])


async def roundtrip(router: URLRouter) -> dict[str, Any]:
    """Connect a Chat client, broadcast to its group, return the frame it got."""
    communicator = WebsocketCommunicator(router, "/chat/1/")
    connected, _ = await communicator.connect()
    assert connected
    await get_channel_layer().group_send("room_1", {"type": "chat.message", "n": 1})
    frame: dict[str, Any] = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    return frame


class DelegatingLayer:
    """A layer that is no BaseChannelLayer and finds every method in ``__getattr__``,
    like channels_redis's and channels-valkey's pub/sub layers."""

    def __init__(self, **config: Any) -> None:
        self.inner = InMemoryChannelLayer(**config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- tests ----------------------------------------------------------------------


def test_the_app_instrumented_everything_once() -> None:
    assert ChannelsInstrumentor().is_instrumented_by_opentelemetry
    for owner, name in TARGETS:
        assert_wrapped_once(owner, name)
    # channels.consumer imports await_many_dispatch from channels.utils: the original.
    assert ORIGINALS[channels.consumer, "await_many_dispatch"] is channels.utils.await_many_dispatch
    assert ORIGINALS[InMemoryChannelLayer, "send"].__qualname__ == "InMemoryChannelLayer.send"
    # The pub/sub proxy class is left alone (its instances are wrapped), and so is the
    # per-loop layer it forwards to: one span per send, not two.
    assert "send" not in vars(RedisPubSubChannelLayer)
    assert "group_send" not in vars(RedisPubSubChannelLayer)
    assert type(vars(RedisPubSubLoopLayer)["send"]) is types.FunctionType


async def test_uninstrument_restores_exactly(
    instrumentor: ChannelsInstrumentor, spans: Spans
) -> None:
    router = chat_router()
    assert await roundtrip(router) == {"type": "chat.message", "n": 1}
    route = router.routes[0]
    recorder = route.callback
    assert type(recorder).__name__ == "_RouteRecorder"  # the router recorded its template
    assert spans.one("connect /chat/<room>/")
    assert spans.one("group_send room_{id}")
    spans.clear()

    instrumentor.uninstrument()
    for owner, name in TARGETS:
        assert_original(owner, name)
    assert route.callback is recorder.application  # the route's own application is back
    assert _telemetry._current is None

    # Nothing of ours is left: no producer span, no carrier, no route template.
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x.y"})
    assert await layer.receive(channel) == {"type": "x.y"}
    assert await roundtrip(chat_router()) == {"type": "chat.message", "n": 1}
    names = spans.names()
    assert not [n for n in names if n.startswith(("group_send", "send"))], names
    # The traced consumer still traces itself, named after its class without the router.
    assert "connect Chat" in names and "connect /chat/<room>/" not in names

    instrumentor.uninstrument()  # twice: harmless
    for owner, name in TARGETS:
        assert_original(owner, name)


async def test_a_layer_class_defined_later_is_traced(spans: Spans) -> None:
    class ThirdPartyLayer(BaseChannelLayer):  # defined after instrument(): the hook wraps it
        def __init__(self) -> None:
            super().__init__()
            self.queues: dict[str, list[dict[str, Any]]] = {}

        async def send(self, channel: str, message: dict[str, Any]) -> None:
            self.queues.setdefault(channel, []).append(message)

        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            for channel in ("a", "b"):
                await self.send(channel, message)  # its own send: no second span

    assert_wrapped_once_anywhere(ThirdPartyLayer, "send")
    assert_wrapped_once_anywhere(ThirdPartyLayer, "group_send")
    layer = ThirdPartyLayer()
    await layer.group_send("room_3", {"type": "chat.message"})
    assert spans.names() == ["group_send room_{id}"]
    for channel in ("a", "b"):
        (message,) = layer.queues[channel]
        assert set(message["_otel"]) == {"traceparent", "destination", "sent_at", "id"}


async def test_a_delegating_layer_is_traced_once_per_call(
    instrumentor: ChannelsInstrumentor, spans: Spans
) -> None:
    backend = {"default": {"BACKEND": "tests.unit.test_instrumentation.DelegatingLayer"}}
    with override_settings(CHANNEL_LAYERS=backend):
        layer = get_channel_layer()
        assert isinstance(layer, DelegatingLayer)
        assert {"send", "group_send"} <= set(vars(layer))
        channel = await layer.new_channel()
        await layer.group_add("room_4", channel)
        await layer.group_send("room_4", {"type": "chat.message"})
        received = await raw_receive(layer.receive)(channel)
        assert spans.names() == ["group_send room_{id}"]  # not one more from the inner layer
        assert received["_otel"]["destination"] == "room_4"
        await layer.send(channel, {"type": "x.y"})
        assert await layer.receive(channel) == {"type": "x.y"}  # user code: no carrier
        instrumentor.uninstrument()
        assert "send" not in vars(layer) and "group_send" not in vars(layer)
        assert "__init_subclass__" not in vars(BaseChannelLayer)


async def test_double_instrument_is_harmless(spans: Spans) -> None:
    instrumentor = ChannelsInstrumentor()
    assert instrumentor is ChannelsInstrumentor()  # BaseInstrumentor is a singleton
    before = {target: attribute(*target) for target in TARGETS}
    instrumentor.instrument()
    apps.get_app_config("otel_channels").ready()  # e.g. apps re-populated by a test
    for target in TARGETS:
        assert attribute(*target) is before[target]
        assert_wrapped_once(*target)

    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room_5", channel)
    await layer.group_send("room_5", {"type": "chat.message"})
    received = await raw_receive(layer.receive)(channel)
    assert len(spans.named("group_send room_{id}")) == 1  # one span, not two
    assert spans.names() == ["group_send room_{id}"]  # InMemory's inner send adds none
    assert set(received["_otel"]) == {"traceparent", "destination", "sent_at", "id"}  # not nested


async def test_tracer_and_meter_provider_are_honoured(
    instrumentor: ChannelsInstrumentor, spans: Spans, metric_reader: Metrics
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        assert await roundtrip(chat_router()) == {"type": "chat.message", "n": 1}
    finally:
        instrumentor.uninstrument()
        instrumentor.instrument()

    mine = sorted(span.name for span in exporter.get_finished_spans())
    assert mine == ["connect /chat/<room>/", "disconnect /chat/<room>/",
                    "group_send room_{id}", "process room_{id}"]
    assert spans.names() == []  # nothing reached the global provider
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"messaging.client.sent.messages", "messaging.client.consumed.messages",
            "messaging.process.duration", "channels.server.active_connections"} <= names
    assert metric_reader.sum("messaging.client.sent.messages") == 0
    tracer_provider.shutdown()
    meter_provider.shutdown()

    # Back on the global providers.
    assert await roundtrip(chat_router()) == {"type": "chat.message", "n": 1}
    assert len(spans.named("group_send room_{id}")) == 1
    assert len(exporter.get_finished_spans()) == 4
    assert metric_reader.sum("messaging.client.sent.messages") == 1


def test_ready_honours_auto_instrument(instrumentor: ChannelsInstrumentor) -> None:
    config = apps.get_app_config("otel_channels")
    instrumentor.uninstrument()
    with override_settings(OTEL_CHANNELS={"AUTO_INSTRUMENT": False}):
        config.ready()
    assert not instrumentor.is_instrumented_by_opentelemetry
    for owner, name in TARGETS:
        assert_original(owner, name)
    config.ready()  # default settings: instruments
    assert instrumentor.is_instrumented_by_opentelemetry
    for owner, name in TARGETS:
        assert_wrapped_once(owner, name)


_PROBE = """
import json, django, wrapt
django.setup()
from channels.layers import (
    BaseChannelLayer,
    ChannelLayerManager,
    InMemoryChannelLayer,
    get_channel_layer,
)
from otel_channels.instrumentation import ChannelsInstrumentor
print(json.dumps([ChannelsInstrumentor().is_instrumented_by_opentelemetry,
                  isinstance(InMemoryChannelLayer.__dict__["group_send"], wrapt.FunctionWrapper)]))
"""


@pytest.mark.parametrize(("otel_channels", "expected"), [
    ("{}", [True, True]),
    ('{"AUTO_INSTRUMENT": false}', [False, False]),
])
def test_django_setup_honours_auto_instrument(otel_channels: str, expected: list[bool]) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(DJANGO_SETTINGS_MODULE="tests.project.settings", OTEL_CHANNELS_JSON=otel_channels,
               PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
