"""TracedEventSource against a raw asyncio server that writes exact bytes.

Each accepted connection gets the next scripted response (then 204, which
ends the source), so the tests control chunking, ``retry``, status codes,
content types, drops and redirects, and check what the client sent back
(``Last-Event-ID``, ``traceparent``, ``Accept``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from otel_channels.client import (
    EventSourceError,
    MessageEvent,
    TracedEventSource,
    TracedWebSocketClient,
)
from otel_channels.telemetry.carrier import format_traceparent
from tests.support.compat import timeout as time_limit
from tests.support.otlp import one_span, wait_spans
from tests.support.servers import e2e_cluster

pytestmark = pytest.mark.timeout(60)

TRACER = trace.get_tracer("tests.client")
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

#: A step of a scripted response: bytes to write, seconds to pause, or an action.
HOLD = "hold"  # keep the connection open until the client goes away
ABORT = "abort"  # drop the TCP connection (no clean end of the body)


def head(status: int = 200, content_type: str | None = "text/event-stream",
         extra: str = "") -> bytes:
    reason = {200: "OK", 204: "No Content", 307: "Temporary Redirect"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append("Cache-Control: no-cache")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def stream(*steps: bytes | str | float, status: int = 200,
           content_type: str | None = "text/event-stream") -> list[Any]:
    """A 200 event-stream response whose body is ``steps`` (str is UTF-8 encoded)."""
    return [head(status, content_type),
            *(s.encode("utf-8") if isinstance(s, str) and s not in (HOLD, ABORT) else s
              for s in steps)]


def chunked(*steps: bytes | str | float) -> list[Any]:
    """A 200 event-stream response in chunked transfer coding: an abort is then a
    broken body (a network error), not a clean end of a read-until-close body."""
    out: list[Any] = [head(200, "text/event-stream", "Transfer-Encoding: chunked")]
    for step in steps:
        if isinstance(step, str) and step not in (HOLD, ABORT):
            step = step.encode("utf-8")
        if isinstance(step, bytes):
            step = b"%x\r\n%s\r\n" % (len(step), step)
        out.append(step)
    return out


NO_CONTENT = [head(204, None)]


@dataclass
class Request:
    line: str
    headers: dict[str, bytes]
    at: float


@dataclass
class RawServer:
    responses: list[list[Any]]
    requests: list[Request] = field(default_factory=list)
    closed_at: list[float] = field(default_factory=list)
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        line, *header_lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for item in header_lines:
            if item:
                name, _, value = item.partition(":")
                headers[name.strip().lower()] = value.strip().encode("latin-1")
        self.requests.append(Request(line, headers, loop.time()))
        index = len(self.requests) - 1
        script = self.responses[index] if index < len(self.responses) else NO_CONTENT
        try:
            for step in script:
                if isinstance(step, (int, float)):
                    await asyncio.sleep(step)
                elif step == HOLD:
                    await reader.read()  # returns at EOF: the client closed
                elif step == ABORT:
                    writer.transport.abort()
                    self.closed_at.append(loop.time())
                    return
                else:
                    writer.write(step)
                    await writer.drain()
            writer.close()
            self.closed_at.append(loop.time())
        except ConnectionError:
            pass

    def url(self, path: str = "/events/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def make_server() -> AsyncIterator[Any]:
    servers: list[asyncio.Server] = []
    started: list[RawServer] = []

    async def start(*responses: list[Any]) -> RawServer:
        raw = RawServer(list(responses))
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        started.append(raw)
        raw.port = server.sockets[0].getsockname()[1]
        return raw

    yield start
    for server in servers:
        server.close()
    for raw in started:  # end handlers still sleeping or holding, close their sockets
        for task in raw.tasks:
            task.cancel()
        await asyncio.gather(*raw.tasks, return_exceptions=True)
        for writer in raw.writers:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
    for server in servers:
        await server.wait_closed()


async def collect(source: TracedEventSource, limit: int = 100,
                  timeout: float = 15) -> tuple[list[MessageEvent], BaseException | None]:
    """Events until the source fails or ends (bounded in count and time)."""
    events: list[MessageEvent] = []
    error: BaseException | None = None
    try:
        async with time_limit(timeout), source:
            async for event in source:
                events.append(event)
                if len(events) >= limit:
                    break
    except EventSourceError as exc:
        error = exc
    return events, error


def triples(events: list[MessageEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.data, e.id) for e in events]


def _chunked(data: bytes, size: int | None) -> list[Any]:
    if size is None:
        return [data]
    steps: list[Any] = []
    for i in range(0, len(data), size):
        steps += [data[i:i + size], 0.001]
    return steps


LONG = "x" * 2048
# web-platform-tests eventsource/format-* inputs (as message.py sends them: message + "\n\n\n"
# or, with newline=none, message + "\n"), the content type, and the events a browser gets.
WPT = [
    ("format-bom", "\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3\n\n\n", "text/event-stream",
     [("message", "1", ""), ("message", "3", "")]),
    ("format-bom-2", "\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3\n\n\n", "text/event-stream",
     [("message", "2", ""), ("message", "3", "")]),
    ("format-comments",
     "data:1\r:\0\n:\r\ndata:2\n:" + LONG + "\rdata:3\n:data:fail\r:" + LONG + "\ndata:4\n\n",
     "text/event-stream", [("message", "1\n2\n3\n4", "")]),
    ("format-field-data", "data:\n\ndata\ndata\n\ndata:test\n\n\n", "text/event-stream",
     [("message", "", ""), ("message", "\n", ""), ("message", "test", "")]),
    ("format-field-event-empty", "event: \ndata:data\n\n\n", "text/event-stream",
     [("message", "data", "")]),
    ("format-field-event", "event:test\ndata:x\n\ndata:x\n\n\n", "text/event-stream",
     [("test", "x", ""), ("message", "x", "")]),
    ("format-null-character", "data:\0\n\n\n\n\n", "text/event-stream", [("message", "\0", "")]),
    ("format-field-id-3-persists", "id: 1\ndata: 1\n\ndata:2\n\n", "text/event-stream",
     [("message", "1", "1"), ("message", "2", "1")]),
    ("format-field-id-3-changes", "id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
     "text/event-stream", [("message", "1", "1"), ("message", "2", "2"), ("message", "3", "2")]),
    ("format-field-id-3-resets", "id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
     "text/event-stream", [("message", "1", "1"), ("message", "2", ""), ("message", "3", "")]),
    ("format-utf-8", "data:ok\u2026\n\n\n", "text/event-stream;charset=windows-1252",
     [("message", "ok\u2026", "")]),
    ("format-data-before-final-empty-line", "retry:50\ndata:test1\n\nid:test\ndata:test2\n",
     "text/event-stream", [("message", "test1", "")]),
    ("event-data", "data:msg\ndata:msg\n\ndata:\r\n\r\ndata:end\r\r", "text/event-stream",
     [("message", "msg\nmsg", ""), ("message", "", ""), ("message", "end", "")]),
    ("mime-case-and-params", "data: a\n\n", "Text/Event-Stream ; charset=utf-8",
     [("message", "a", "")]),
]


@pytest.mark.parametrize("chunk", [None, 3], ids=["whole", "3-byte-chunks"])
@pytest.mark.parametrize(("body", "content_type", "expected"), [w[1:] for w in WPT],
                         ids=[w[0] for w in WPT])
async def test_wpt_inputs_through_a_server(make_server: Any, body: str, content_type: str,
                                           expected: list[tuple[str, str, str]],
                                           chunk: int | None) -> None:
    data = body.encode("utf-8")
    if chunk is not None and len(data) > 600:
        chunk = 64  # the 4 KiB comment fest in 3-byte writes would take seconds
    server = await make_server([head(200, content_type), *_chunked(data, chunk)])
    events, error = await collect(TracedEventSource(server.url(), retry=0.01))
    assert triples(events) == expected
    assert isinstance(error, EventSourceError) and error.status == 204
    assert len(server.requests) == 2


async def test_reconnect_honours_retry_and_sends_last_event_id(make_server: Any) -> None:
    server = await make_server(
        stream("retry: 300\nid: 7\ndata: a\n\n", "id: 8\ndata: never dispatched\n"),
        stream("data: b\n\n"),
    )
    source = TracedEventSource(server.url(), retry=0.01)
    events, error = await collect(source)
    assert triples(events) == [("message", "a", "7"), ("message", "b", "7")]
    assert events[0].retry == 300
    assert "last-event-id" not in server.requests[0].headers
    assert server.requests[1].headers["last-event-id"] == b"7"  # "8" never dispatched
    assert server.requests[2].headers["last-event-id"] == b"7"
    waited = server.requests[1].at - server.closed_at[0]
    assert 0.28 <= waited < 1.5, waited
    assert source.retry == 0.3
    assert source.reconnects == 2
    assert error is not None and error.status == 204


async def test_last_event_id_is_sent_as_utf8_and_survives_reconnects(make_server: Any) -> None:
    server = await make_server(
        stream("retry: 10\nid: \u2026\ndata: hello\n\n"),
        stream("data: again\n\n"),
    )
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01))
    assert triples(events) == [("message", "hello", "\u2026"), ("message", "again", "\u2026")]
    assert server.requests[1].headers["last-event-id"] == "\u2026".encode()
    assert server.requests[2].headers["last-event-id"] == "\u2026".encode()


@pytest.mark.parametrize("body", [
    "id: 1\ndata: a\n\nid:\ndata: b\n\n",  # an empty id resets it: no header
    "id: \0\ndata: a\n\n",  # an id with NUL is ignored
])
async def test_no_last_event_id_header_when_the_id_is_empty(make_server: Any, body: str) -> None:
    server = await make_server(stream(body), stream())
    await collect(TracedEventSource(server.url(), retry=0.01))
    assert "last-event-id" not in server.requests[1].headers


async def test_initial_last_event_id_and_request_headers(make_server: Any) -> None:
    server = await make_server(stream("data: x\n\n"))
    await collect(TracedEventSource(server.url("/e/?lastEventId=no"), retry=0.01,
                                    last_event_id="41", headers={"Authorization": "Bearer t"}))
    first = server.requests[0]
    assert first.line == "GET /e/?lastEventId=no HTTP/1.1"
    assert first.headers["last-event-id"] == b"41"
    assert first.headers["accept"] == b"text/event-stream"
    assert first.headers["cache-control"] == b"no-cache"
    assert first.headers["authorization"] == b"Bearer t"


@pytest.mark.parametrize(("response", "status", "content_type", "error_type"), [
    (NO_CONTENT, 204, None, "204"),
    ([head(404, "text/html"), b"<h1>nope</h1>"], 404, "text/html", "404"),
    ([head(500, "text/event-stream"), b"data: x\n\n"], 500, "text/event-stream", "500"),
    ([head(205, "text/event-stream")], 205, "text/event-stream", "205"),
    ([head(200, "text/plain"), b"data: x\n\n"], 200, "text/plain", "invalid_content_type"),
    ([head(200, "text/event-streams"), b"data: x\n\n"], 200, "text/event-streams",
     "invalid_content_type"),
    ([head(200, None), b"data: x\n\n"], 200, None, "invalid_content_type"),
])
async def test_fails_without_reconnecting(make_server: Any, spans: Any, response: list[Any],
                                          status: int, content_type: str | None,
                                          error_type: str) -> None:
    server = await make_server(response, stream("data: must not be fetched\n\n"))
    source = TracedEventSource(server.url(), retry=0.01, route="/events/")
    events, error = await collect(source)
    assert events == []
    assert isinstance(error, EventSourceError)
    assert (error.status, error.content_type) == (status, content_type)
    assert str(status) in str(error) or "Content-Type" in str(error)
    await asyncio.sleep(0.1)
    assert len(server.requests) == 1  # no reconnection
    assert source.ready_state == "closed"
    assert source._client is None  # a failed source closed the httpx client it owned
    connect = spans.one("connect /events/")
    assert connect.attributes["http.response.status_code"] == status
    assert connect.attributes["error.type"] == error_type
    assert connect.status.status_code is StatusCode.ERROR


async def test_redirects_are_followed(make_server: Any) -> None:
    server = await make_server(
        [head(307, None, "Location: /moved/\r\nContent-Length: 0")],
        stream("data: here\n\n"),
    )
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01), limit=1)
    assert triples(events) == [("message", "here", "")]
    assert server.requests[1].line == "GET /moved/ HTTP/1.1"


async def test_crlf_split_across_tcp_writes_is_one_line_end(make_server: Any) -> None:
    server = await make_server(stream(
        b"data: a\r", 0.05, b"\ndata: b\r", 0.05, b"\n\r", 0.05, b"\n", 0.05,
        b"\xef\xbb\xbfdata: c\r", 0.05, b"\r",
    ))
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01))
    # No extra blank line from the split CRLF pairs; and "\ufeffdata: c" is a field named
    # "\ufeffdata" (only the stream's first BOM is stripped), so CR CR dispatches nothing.
    assert triples(events) == [("message", "a\nb", "")]


async def test_multibyte_character_split_across_writes(make_server: Any) -> None:
    encoded = "data: \u00e9t\u00e9 \U0001f600\n\n".encode()
    server = await make_server(stream(*[s for b in encoded for s in (bytes([b]), 0.002)]))
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01))
    assert triples(events) == [("message", "\u00e9t\u00e9 \U0001f600", "")]


async def test_gzip_encoded_stream(make_server: Any) -> None:
    body = gzip.compress(b"data: zipped\n\n")
    server = await make_server([head(200, "text/event-stream", "Content-Encoding: gzip"), body])
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01))
    assert triples(events) == [("message", "zipped", "")]


async def test_dropped_connection_reconnects_with_last_event_id(make_server: Any,
                                                                metric_reader: Any) -> None:
    server = await make_server(
        chunked("id: 1\ndata: a\n\nid: 2\ndata: cut", 0.05, ABORT),
        stream("id: 2\ndata: b\n\n"),
    )
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01, route="r"))
    assert triples(events) == [("message", "a", "1"), ("message", "b", "2")]
    assert server.requests[1].headers["last-event-id"] == b"1"
    durations = metric_reader.attributes("channels.client.connection.duration")
    assert {"network.protocol.name": "sse", "url.template": "r",
            "error.type": "RemoteProtocolError"} in durations
    assert metric_reader.count("channels.client.connection.duration", url__template="r") == 2
    assert metric_reader.sum("channels.client.reconnects", url__template="r") == 2
    assert metric_reader.sum("channels.client.sse.events", url__template="r") == 2


async def test_gives_up_after_max_retries_without_events(make_server: Any) -> None:
    server = await make_server(*[stream(": only a comment\n\n")] * 10)
    source = TracedEventSource(server.url(), retry=0.01, max_retries=3)
    events, error = await collect(source)
    assert events == []
    assert isinstance(error, EventSourceError) and "gave up after 3" in str(error)
    assert len(server.requests) == 4
    assert source.reconnects == 3


async def test_connection_refused_backs_off_then_gives_up(spans: Any, monkeypatch: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = TracedEventSource(f"http://127.0.0.1:{port}/", route="down", retry=0.1,
                               max_retries=4, backoff_cap=0.5)
    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(source, "_wait", record)
    events, error = await collect(source)
    assert events == []
    assert isinstance(error, EventSourceError)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert waits == [0.1, 0.2, 0.4, 0.5]  # exponential from retry, capped
    connects = spans.named("connect down")
    assert len(connects) == 5
    assert all(c.attributes["error.type"] == "ConnectError" for c in connects)
    assert [c.attributes.get("http.request.resend_count") for c in connects] == [None, 1, 2, 3, 4]


async def test_open_timeout_bounds_the_wait_for_response_headers(make_server: Any,
                                                                spans: Any) -> None:
    server = await make_server([HOLD], [HOLD])  # accept, read the request, never answer
    source = TracedEventSource(server.url(), route="slow", retry=0.01, open_timeout=0.3,
                               max_retries=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    events, error = await collect(source)
    assert events == [] and isinstance(error, EventSourceError)
    assert isinstance(error.__cause__, TimeoutError)
    assert 0.55 < loop.time() - started < 5  # two attempts of 0.3 s
    assert [c.attributes["error.type"] for c in spans.named("connect slow")] == [
        "TimeoutError", "TimeoutError"]


async def test_a_huge_retry_is_capped(make_server: Any) -> None:
    server = await make_server(stream("retry: 99999999999999999999\ndata: x\n\n", HOLD))
    source = TracedEventSource(server.url(), retry=0.01)
    events, _ = await collect(source, limit=1)
    assert [e.retry for e in events] == [99999999999999999999]
    assert source.retry == 86400.0


async def test_read_timeout_reconnects_but_heartbeats_keep_it_alive(make_server: Any) -> None:
    beats: list[Any] = []
    for _ in range(5):
        beats += [": heartbeat\n", 0.1]
    server = await make_server(
        stream("id: 1\ndata: a\n\n", *beats, "data: b\n\n", 1.0, "data: late\n\n"),
        stream("data: c\n\n"),
    )
    events, _ = await collect(TracedEventSource(server.url(), retry=0.01, read_timeout=0.4))
    assert [e.data for e in events] == ["a", "b", "c"]  # "late" came after the read timeout
    assert server.requests[1].headers["last-event-id"] == b"1"


async def test_event_too_large_fails_the_source(make_server: Any) -> None:
    server = await make_server(stream("data: " + "x" * 5000 + "\n\n"))
    events, error = await collect(TracedEventSource(server.url(), retry=0.01,
                                                    max_event_size=1000))
    assert events == [] and isinstance(error, EventSourceError)
    assert len(server.requests) == 1


async def test_break_and_aclose_stop_the_source(make_server: Any) -> None:
    server = await make_server(stream("data: 1\n\ndata: 2\n\n", HOLD))
    source = TracedEventSource(server.url(), retry=0.01)
    async with source:
        async for event in source:
            assert event.data == "1"
            break
    await source.aclose()  # idempotent
    assert source.ready_state == "closed"
    await asyncio.sleep(0.1)
    assert len(server.requests) == 1
    assert [e async for e in source] == []


async def test_aclose_from_another_task_ends_iteration(make_server: Any) -> None:
    server = await make_server(stream("data: 1\n\n", HOLD))
    source = TracedEventSource(server.url(), retry=0.01)
    seen: list[str] = []

    async def consume() -> None:
        async for event in source:
            seen.append(event.data)

    task = asyncio.create_task(consume())
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.01)
    await source.aclose()
    async with time_limit(5):
        await task
    assert seen == ["1"]
    assert len(server.requests) == 1


async def test_own_client_is_used_and_left_open(make_server: Any) -> None:
    server = await make_server(stream("data: x\n\n"))
    async with httpx.AsyncClient(headers={"X-Client": "mine"}) as http:
        events, _ = await collect(TracedEventSource(server.url(), client=http, retry=0.01))
        assert not http.is_closed
    assert [e.data for e in events] == ["x"]
    assert server.requests[0].headers["x-client"] == b"mine"


async def test_spans_connect_and_receive(make_server: Any, spans: Any) -> None:
    server = await make_server(stream(
        f"event: chat.message\nid: 9\ntraceparent: {TP}\ntracestate: v=1\ndata: secret words\n\n",
        "data: plain\n\n",
    ))
    source = TracedEventSource(server.url("/events/room-1/?token=abc"), route="/events/<room>/",
                               retry=0.01)
    handled = []
    async with source:
        try:
            async for _event in source:
                with TRACER.start_as_current_span("handle") as handle:
                    handled.append(handle)
                assert trace.get_current_span().get_span_context().span_id == (
                    handle.parent.span_id)
        except EventSourceError:
            pass
    assert trace.get_current_span() is trace.INVALID_SPAN
    connects = spans.named("connect /events/<room>/")
    assert len(connects) == 2  # the first stream, then the 204
    connect = connects[0]
    assert connect.kind is SpanKind.CLIENT and connect.parent is None
    assert server.requests[0].headers["traceparent"] == format_traceparent(connect.context).encode()
    assert connect.attributes["http.request.method"] == "GET"
    assert connect.attributes["http.response.status_code"] == 200
    assert connect.attributes["url.template"] == "/events/<room>/"
    assert connect.attributes["url.path"] == "/events/room-1/"
    assert connect.attributes["url.query"] == "token=REDACTED"
    assert connect.attributes["network.protocol.name"] == "sse"
    assert connects[1].attributes["http.request.resend_count"] == 1
    first, second = spans.named("receive /events/<room>/")
    # The traceparent field continues the server's trace ...
    assert first.kind is SpanKind.CONSUMER
    assert first.context.trace_id == int(TP[3:35], 16)
    assert first.parent.span_id == int(TP[36:52], 16)
    assert first.context.trace_state.get("v") == "1"
    assert [link.context for link in first.links] == [connect.context]
    assert first.attributes["sse.event.type"] == "chat.message"
    assert first.attributes["sse.last_event_id"] == "9"
    assert first.attributes["messaging.message.body.size"] == len("secret words")
    assert first.attributes["messaging.operation.name"] == "receive"
    assert first.attributes["messaging.operation.type"] == "process"  # as on the server
    # ... and without one an event starts a new trace, linked to the connect span.
    assert second.parent is None
    assert [link.context for link in second.links] == [connect.context]
    assert second.attributes["sse.last_event_id"] == "9"  # the id persists across events
    # The handler's spans ran inside the receive spans.
    assert [h.parent.span_id for h in handled] == [first.context.span_id, second.context.span_id]
    values = " ".join(str(v) for s in spans.all() for v in s.attributes.values())
    assert "secret" not in values and "abc" not in values


async def test_exception_in_the_loop_body_is_recorded(make_server: Any, spans: Any) -> None:
    server = await make_server(stream("data: x\n\n", HOLD))
    with pytest.raises(ZeroDivisionError):
        async with TracedEventSource(server.url(), route="e", retry=0.01) as source:
            async for _event in source:
                1 / 0  # noqa: B018
    receive = spans.one("receive e")
    assert receive.status.status_code is StatusCode.ERROR
    assert receive.attributes["error.type"] == "ZeroDivisionError"
    assert trace.get_current_span() is trace.INVALID_SPAN


# -- end to end: the project's SSE view under real daphne, fed from a WebSocket on another worker


@pytest.mark.multiprocess
@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_one_trace_from_websocket_send_to_the_sse_client(redis_url: str, spans: Any) -> None:
    room = str(random.randint(10**6, 10**7))
    env = {"OTEL_CHANNELS_JSON": json.dumps({"SSE_TRACEPARENT_FIELD": True})}
    with e2e_cluster(redis_url, env) as (receiver, a, b):
        source = TracedEventSource(f"{b.url}/events/{room}/", route="/events/<room>/",
                                   retry=0.5, max_retries=3)
        events: list[MessageEvent] = []

        async def consume() -> None:
            async for event in source:
                events.append(event)
                return

        async with TracedWebSocketClient(f"{a.ws_url}/ws/chat/{room}/", route="/ws/chat/<room>/",
                                         send_spans=True) as alice, source:
            task = asyncio.create_task(consume())
            async with time_limit(20):
                # The view writes ": open" at once, joins the group, then an "id:" line with
                # the stream's position: once the client has that id, the stream is subscribed.
                while not source.last_event_id:  # noqa: ASYNC110 - a property, not an event
                    await asyncio.sleep(0.02)
                await alice.send({"text": "over sse"})
                await task
        (event,) = events
        assert event.type == "chat.message"
        assert json.loads(event.data)["text"] == "over sse"
        assert event.id  # every event of the view has an id
        assert event.fields.keys() == {"traceparent"}
        send = spans.one("send /ws/chat/<room>/")
        trace_id, send_id = f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}"
        server = await wait_spans(receiver, lambda found: all(any(
            s.name == name and s.trace_id == trace_id and service in (None, s.service)
            for s in found) for name, service in (
                ("process room_{id}", "worker-b"), ("receive /ws/chat/<room>/", None),
                ("group_send room_{id}", None),
            )) and any(s.name == "connect /events/<room>/" for s in found), timeout=20.0)

    receive = next(s for s in server if s.name == "receive /ws/chat/<room>/"
                   and s.trace_id == trace_id)
    assert receive.parent_span_id == send_id
    group_send = next(s for s in server if s.name == "group_send room_{id}"
                      and s.trace_id == trace_id)
    assert group_send.parent_span_id == receive.span_id
    hub_process = next(s for s in server if s.name == "process room_{id}"
                       and s.service == "worker-b" and s.trace_id == trace_id)
    assert hub_process.parent_span_id == group_send.span_id
    # The event's traceparent field names the hub's process span; the client continues it.
    assert event.fields["traceparent"] == f"00-{trace_id}-{hub_process.span_id}-01"
    client_receive = spans.one("receive /events/<room>/")
    assert client_receive.kind is SpanKind.CONSUMER
    assert f"{client_receive.context.trace_id:032x}" == trace_id
    assert f"{client_receive.parent.span_id:016x}" == hub_process.span_id
    # The SSE handshake: the view's connect span is the child of the client's.
    client_connect = spans.one("connect /events/<room>/")
    server_connect = one_span(server, "connect /events/<room>/", "worker-b")
    assert server_connect.kind == "SERVER"
    assert server_connect.parent_span_id == f"{client_connect.context.span_id:016x}"
    assert server_connect.trace_id == f"{client_connect.context.trace_id:032x}"
    assert [link.context for link in client_receive.links] == [client_connect.context]
