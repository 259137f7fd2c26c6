"""Client-supplied trace context obeys CLIENT_CONTEXT; secrets never reach telemetry."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from otel_channels.telemetry import instruments as _telemetry

FORGED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # sampled flag set


class Echo(TracedAsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"n": content.get("n")})


app = URLRouter([path("s/<str:room>/", Echo.as_asgi())])


@pytest.fixture
def never_sampling_provider():
    """An SDK that samples nothing on its own (root spans off, parents respected)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _telemetry.configure(provider, None)
    yield exporter
    _telemetry.reset()


async def run(headers=(), frames=()):
    comm = WebsocketCommunicator(app, "/s/r/", headers=list(headers))
    assert (await comm.connect())[0]
    for frame in frames:
        await comm.send_json_to(frame)
        await comm.receive_json_from()
    await comm.disconnect()


async def test_forged_sampled_traceparent_forces_sampling_only_when_trusted(
    never_sampling_provider,
):
    headers = [(b"traceparent", FORGED.encode())]
    frames = [{"n": 1, "traceparent": FORGED}]
    with override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": "parent"}):
        await run(headers, frames)
    trusted = never_sampling_provider.get_finished_spans()
    assert {s.name for s in trusted} >= {"connect /s/<room>/", "receive /s/<room>/"}
    never_sampling_provider.clear()

    for mode in ("link", "ignore"):
        with override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": mode}):
            await run(headers, frames)
        assert never_sampling_provider.get_finished_spans() == (), mode


async def test_link_mode_never_joins_the_client_trace(spans):
    with override_settings(OTEL_CHANNELS={"CLIENT_CONTEXT": "link"}):
        await run([(b"traceparent", FORGED.encode())], [{"n": 1, "traceparent": FORGED}])
    for span in spans.all():
        assert span.context.trace_id != 0x0AF7651916CD43DD8448EB211C80319C
    receive = spans.one("receive /s/<room>/")
    assert 0xB7AD6B7169203331 in [link.context.span_id for link in receive.links]


@pytest.mark.parametrize("name", ["token", "access_token", "key", "password", "secret",
                                  "signature", "sig", "jwt", "TOKEN", "api_key"])
async def test_sensitive_query_parameters_redacted(spans, name):
    comm = WebsocketCommunicator(app, f"/s/r/?room=1&{name}=hunter2&x=%20y")
    await comm.connect()
    await comm.disconnect()
    connect = spans.one("connect /s/<room>/")
    assert connect.attributes["url.query"] == f"room=1&{name}=REDACTED&x=%20y"
    for span in spans.all():
        assert "hunter2" not in repr(dict(span.attributes))


async def test_custom_sensitive_parameters(spans):
    with override_settings(OTEL_CHANNELS={"SENSITIVE_QUERY_PARAMS": ["room"]}):
        comm = WebsocketCommunicator(app, "/s/r/?room=private&token=visible")
        await comm.connect()
        await comm.disconnect()
    assert spans.one("connect /s/<room>/").attributes["url.query"] == "room=REDACTED&token=visible"


async def test_flood_of_tiny_frames_is_capped(spans, metric_reader):
    with override_settings(OTEL_CHANNELS={"MAX_SPANS_PER_CONNECTION": 50}):
        await run(frames=[{"n": i} for i in range(500)])
    assert len(spans.named("receive /s/<room>/")) == 50
    disconnect = spans.one("disconnect /s/<room>/")
    assert disconnect.attributes["channels.spans.dropped"] == 450
    assert disconnect.attributes["channels.frames.received"] == 500
    assert metric_reader.sum("channels.websocket.messages", network__io__direction="receive") == 500
    assert metric_reader.sum("channels.server.active_connections") == 0



async def test_frame_rate_limit_closes_1008(spans, metric_reader):
    with override_settings(OTEL_CHANNELS={"MAX_FRAME_RATE": 20}):
        comm = WebsocketCommunicator(app, "/s/r/")
        await comm.connect()
        for i in range(200):
            await comm.send_json_to({"n": i})
        outputs = []
        while True:
            output = await comm.receive_output(1)
            outputs.append(output)
            if output["type"] == "websocket.close":
                break
        await comm.disconnect(code=1008)
    assert outputs[-1] == {"type": "websocket.close", "code": 1008}
    assert 20 <= len(outputs) - 1 <= 30  # the burst, plus what refilled meanwhile
    assert metric_reader.sum("channels.messages.dropped", error__type="frame_rate_exceeded") == 1
    assert metric_reader.sum("channels.server.active_connections") == 0
    assert spans.one("disconnect /s/<room>/").attributes["websocket.close.code"] == 1008
