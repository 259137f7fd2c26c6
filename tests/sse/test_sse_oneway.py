"""One-way SSE (issue 22): the view builds the stream with its options; the stream reads no view.

Also: one default event formatter, the replay log public as ``otel_channels.replay``,
and ``broadcast()`` loading nothing of ``otel_channels.sse``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory, override_settings

import otel_channels.sse
from otel_channels import replay
from otel_channels.sse import EventStreamView, ServerSentEvent
from otel_channels.sse._queue import Envelope
from otel_channels.sse._stream import EventStream
from otel_channels.sse.wire import message_event

SSE = Path(otel_channels.sse.__file__).resolve().parent
MESSAGE = {"type": "chat.message", "text": "hi", "n": 1}


def _imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found.update(f"{'.' * node.level}{node.module or ''}:{a.name}" for a in node.names)
    return found


def test_the_stream_module_imports_nothing_of_the_view() -> None:
    assert not {name for name in _imported(SSE / "_stream.py") if name.startswith(".view")}
    assert {n for n in _imported(SSE / "view.py") if n.startswith("._stream")} == {
        "._stream:EventStream", "._stream:Formatter"}


def test_broadcast_loads_nothing_of_the_sse_package() -> None:
    code = ("import sys, otel_channels.broadcast; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('otel_channels'))))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60).stdout.split()
    assert "otel_channels.replay" in found
    assert not [m for m in found if m == "otel_channels.sse" or m.startswith("otel_channels.sse.")]


def test_the_sse_package_has_no_lazy_attributes() -> None:
    assert "__getattr__" not in vars(otel_channels.sse)
    assert otel_channels.sse.EventStreamView is EventStreamView


def test_the_replay_module_exports_what_it_lists() -> None:
    assert set(replay.__all__) >= {"ZERO", "Entry", "get_log", "parse_id", "reset"}
    for name in replay.__all__:
        assert getattr(replay, name) is not None
    assert replay.parse_id("1764121200123-4") == (1764121200123, 4)


def test_one_default_event_formatter() -> None:
    expected = ServerSentEvent(data={"text": "hi", "n": 1}, event="chat.message")
    assert message_event(MESSAGE) == expected
    assert EventStreamView().format_event(MESSAGE) == expected
    assert Envelope("g", "1-0", MESSAGE, None).default_event() == expected
    assert message_event({"type": 3, "x": 1}) == ServerSentEvent(data={"x": 1})


class _Shaped(EventStreamView):
    def format_event(self, message: dict[str, Any]) -> ServerSentEvent | None:
        return ServerSentEvent(data=message["text"])


class _Extended(EventStreamView):
    def format_event(self, message: dict[str, Any]) -> ServerSentEvent | None:
        return super().format_event(message)


def test_the_view_passes_its_formatter_or_none() -> None:
    assert EventStreamView()._formatter() is None
    shaped = _Shaped()
    formatter = shaped._formatter()
    assert formatter is not None and formatter(MESSAGE) == ServerSentEvent(data="hi")
    assert _Extended()._formatter() is not None  # overridden, even if it calls super()


def _request(**headers: str) -> Any:
    return RequestFactory().get("/events/r/", **headers)


async def _groups() -> list[str]:
    return ["room_a", "room_b"]


@override_settings(OTEL_CHANNELS={"SSE_HEARTBEAT": 7.5, "SSE_RETRY": 1500,
                                  "SSE_QUEUE_SIZE": 9})
async def test_the_stream_takes_its_options_when_built() -> None:
    stream = await EventStream.open(_request(HTTP_LAST_EVENT_ID="5-0"), _groups, name="V")
    assert (stream.groups, stream.alias, stream.heartbeat, stream.retry) == (
        ["room_a", "room_b"], "default", 7.5, 1500)
    assert stream.local.capacity == 9 and stream.formatter is None
    assert stream.last_event_id == "5-0"
    stream._end_connect("aborted", 200)

    def shaped(message: dict[str, Any]) -> ServerSentEvent | None:
        return None

    stream = await EventStream.open(_request(), _groups, name="V", channel_layer_alias="other",
                                    heartbeat=1.0, retry=0, queue_size=3, formatter=shaped)
    assert (stream.alias, stream.heartbeat, stream.retry, stream.local.capacity) == (
        "other", 1.0, 0, 3)
    assert stream.formatter is shaped and stream.last_event_id is None
    stream._end_connect("aborted", 200)


async def test_a_refusal_ends_the_connect_span_once(spans: Any) -> None:
    async def refused() -> list[str]:
        raise PermissionDenied

    with pytest.raises(PermissionDenied):
        await EventStream.open(_request(), refused, name="V")
    [connect] = spans.named("connect V")  # no resolver match: the view's name is the route
    assert connect.attributes["channels.connection.status"] == "rejected"
    assert connect.attributes["http.response.status_code"] == 403

    async def broken() -> list[str]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await EventStream.open(_request(), broken, name="V")
    failed = [s for s in spans.named("connect V") if s is not connect]
    assert len(failed) == 1 and failed[0].attributes["error.type"] == "RuntimeError"
