"""broadcast() / abroadcast(): one event to WebSocket consumers and SSE streams alike."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path
from opentelemetry.trace import SpanKind

from otel_channels import broadcast as broadcast_module
from otel_channels import replay
from otel_channels.broadcast import abroadcast, broadcast
from otel_channels.sse import EventStreamView
from otel_channels.testing import EventStreamCommunicator
from tests.project.consumers import ChatConsumer

seen_loops: list[object] = []


class Room(EventStreamView):
    def get_groups(self, request, room):
        return [f"room_{room}"]


def sync_view(request, room):
    """A sync view under ASGI: broadcast() must run on the server's loop."""
    seen_loops.append(broadcast_module._server_loop())
    event_id = broadcast(f"room_{room}", "chat.message", {"text": "from a sync view"})
    return HttpResponse(event_id or "")


urlpatterns = [
    path("events/<str:room>/", Room.as_view()),
    path("sync/<str:room>/", sync_view),
]
pytestmark = pytest.mark.urls(__name__)


@pytest.fixture(autouse=True)
def fresh_logs():
    replay.reset()
    yield
    replay.reset()


async def open_stream(room: str) -> EventStreamCommunicator:
    comm = EventStreamCommunicator(ASGIHandler(), f"/events/{room}/")
    await comm.connect()
    await comm.receive_chunk()
    await comm.receive_chunk()
    return comm


async def test_one_broadcast_reaches_websocket_and_sse_without_the_carrier(spans):
    ws = WebsocketCommunicator(URLRouter([path("ws/chat/<str:room>/", ChatConsumer.as_asgi())]),
                               "/ws/chat/mix/")
    assert (await ws.connect())[0]
    sse = await open_stream("mix")
    data = {"text": "hi", "n": [1, 2]}
    event_id = await abroadcast("room_mix", "chat.message", data)
    assert data == {"text": "hi", "n": [1, 2]}  # the caller's dict is untouched

    assert await ws.receive_json_from() == {"type": "chat.message", "text": "hi", "n": [1, 2]}
    event = await sse.receive_event()
    assert (event.event, event.id, json.loads(event.data)) == (
        "chat.message", event_id, {"text": "hi", "n": [1, 2]})
    await ws.disconnect()
    await sse.disconnect()

    producer = spans.one("group_send room_mix")
    assert producer.kind is SpanKind.PRODUCER
    processes = spans.named("process room_mix")  # the consumer's and the hub's
    assert len(processes) == 2
    assert all(p.parent.span_id == producer.context.span_id for p in processes)


@pytest.mark.parametrize(("data", "error"), [
    (["not", "a", "mapping"], TypeError),
    ({"type": "clash"}, ValueError),
    ({"_otel": {}}, ValueError),
])
async def test_bad_data_is_refused_before_anything_is_sent(data, error):
    with pytest.raises(error):
        await abroadcast("room_bad", "t", data)
    assert await replay.get_log("default").head("room_bad") == "0-0"


async def test_bad_group_name_is_refused():
    with pytest.raises(TypeError):
        await abroadcast("not a valid group!", "t", {})


async def test_ids_are_ordered_and_explicit_ids_must_grow():
    first = await abroadcast("room_ids", "t", {})
    second = await abroadcast("room_ids", "t", {})
    assert replay.parse_id(second) > replay.parse_id(first)
    explicit = await abroadcast("room_ids", "t", {}, id="99999999999999-3")
    assert explicit == "99999999999999-3"
    with pytest.raises(ValueError, match="not greater"):
        await abroadcast("room_ids", "t", {}, id=5)


@override_settings(OTEL_CHANNELS={"SSE_REPLAY_MAXLEN": 0})
async def test_without_the_log_there_are_no_ids():
    sse = EventStreamCommunicator(ASGIHandler(), "/events/noids/")
    await sse.connect()
    assert await sse.receive_chunk() == b": open\n\n"  # written once subscribed
    assert await abroadcast("room_noids", "t", {"a": 1}) is None
    event = await sse.receive_event()
    assert event.data == '{"a":1}'
    assert b"id:" not in sse.body
    with pytest.raises(ValueError, match="replay log"):
        await abroadcast("room_noids", "t", {}, id=1)
    await sse.disconnect()


async def test_sync_broadcast_in_a_sync_view_runs_on_the_server_loop():
    sse = await open_stream("syncv")
    seen_loops.clear()
    view = EventStreamCommunicator(ASGIHandler(), "/sync/syncv/")
    await view.connect()
    event_id = (await view.receive_chunk()).decode()
    await view.wait()
    assert seen_loops == [asyncio.get_running_loop()]  # not a new loop, not the background one
    event = await sse.receive_event()
    assert (event.id, event.data) == (event_id, '{"text":"from a sync view"}')
    await sse.disconnect()
