"""A failed broadcast says it may have been delivered; a retry with its key makes no new event.

Issue 20: during a failover ``abroadcast()`` raised after the replay-log append
had succeeded (``group_send`` failed), so every SSE stream still got the
event, and a producer retrying on the error made a second event with a new id.
Now the error is :class:`BroadcastMaybeDelivered` (with the id when the log has
it) and ``idempotency_key=`` makes the retry reuse the logged entry; an SSE
stream shows the event once. Both logs: memory and Redis Streams.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from django.urls import path

from otel_channels import replay
from otel_channels.broadcast import BroadcastMaybeDelivered, abroadcast
from otel_channels.sse import EventStreamView
from otel_channels.testing import EventStreamCommunicator
from tests.support.redis_layer import redis_layer_config


class Room(EventStreamView):
    def get_groups(self, request: Any, room: str) -> list[str]:
        return [f"room_{room}"]


urlpatterns = [path("events/<str:room>/", Room.as_view())]
pytestmark = pytest.mark.urls(__name__)


@pytest.fixture(params=["memory", "redis"])
def layer_config(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        config: dict[str, Any] = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    else:
        config = redis_layer_config(request.getfixturevalue("redis_url"),
                                    prefix=f"otelretry{uuid.uuid4().hex[:10]}")
    replay.reset()
    with override_settings(CHANNEL_LAYERS={"default": config}):
        yield config
    replay.reset()


async def _entries(group: str) -> list[replay.Entry]:
    log = replay.get_log("default")
    assert log is not None
    found = await log.since(group, replay.ZERO, await log.head(group))
    assert found is not None
    return found


async def test_retry_with_the_same_key_reuses_the_logged_event(layer_config: Any) -> None:
    first = await abroadcast("room_k", "chat.message", {"text": "a"}, idempotency_key="row-1")
    again = await abroadcast("room_k", "chat.message", {"text": "a"}, idempotency_key="row-1")
    other = await abroadcast("room_k", "chat.message", {"text": "b"}, idempotency_key="row-2")
    assert again == first and other != first
    assert [e.id for e in await _entries("room_k")] == [first, other]
    # Keys are per group: the same key on another group is another event.
    elsewhere = await abroadcast("room_j", "chat.message", {"text": "a"}, idempotency_key="row-1")
    assert [e.id for e in await _entries("room_j")] == [elsewhere]


async def test_group_send_failure_after_the_append_says_maybe_delivered(
        layer_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = EventStreamCommunicator(ASGIHandler(), "/events/f/")
    await stream.connect()
    await stream.receive_chunk()
    await stream.receive_chunk()
    layer = get_channel_layer()
    real_group_send = layer.group_send

    async def cut(group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("Connection reset by peer")  # what redis-py raises mid-failover

    monkeypatch.setattr(layer, "group_send", cut)
    with pytest.raises(BroadcastMaybeDelivered) as failed:
        await abroadcast("room_f", "chat.message", {"text": "once"}, idempotency_key="k1")
    assert isinstance(failed.value.__cause__, ConnectionError)
    assert failed.value.idempotency_key == "k1"
    logged = await _entries("room_f")
    assert [e.id for e in logged] == [failed.value.event_id]  # in the log: SSE will get it

    monkeypatch.setattr(layer, "group_send", real_group_send)
    retried = await abroadcast("room_f", "chat.message", {"text": "once"}, idempotency_key="k1")
    assert retried == failed.value.event_id
    after = await abroadcast("room_f", "chat.message", {"text": "next"})
    events = [await stream.receive_event(timeout=10) for _ in range(2)]
    assert [(e.id, json.loads(e.data)["text"]) for e in events] == [
        (retried, "once"), (after, "next")]  # once, then the next: no duplicate
    assert [e.id for e in await _entries("room_f")] == [retried, after]
    await stream.disconnect()


async def test_append_failure_says_maybe_delivered_without_an_id(
        layer_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    log = replay.get_log("default")

    async def lost_reply(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(log, "append", lost_reply)
    with pytest.raises(BroadcastMaybeDelivered) as failed:
        await abroadcast("room_a", "chat.message", {"text": "x"})
    assert failed.value.event_id is None and failed.value.idempotency_key is None
    assert "pass idempotency_key=" in str(failed.value)


async def test_errors_before_sending_pass_as_they_are(layer_config: Any) -> None:
    with pytest.raises(TypeError):
        await abroadcast("room_t", "chat.message", {"text": "x"}, idempotency_key="")
    with override_settings(OTEL_CHANNELS={"SSE_REPLAY_MAXLEN": 0}), pytest.raises(ValueError):
        await abroadcast("room_t", "chat.message", {"text": "x"}, idempotency_key="k")
