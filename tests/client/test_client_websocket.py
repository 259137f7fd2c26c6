"""TracedWebSocketClient against a plain ``websockets`` server started in the test.

The server records the handshake headers and every message it gets, so the
tests check what really went over the wire: the ``traceparent`` header of the
handshake, the ``traceparent`` key injected into JSON messages, close codes.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from otel_channels.client import TracedWebSocketClient, _common
from otel_channels.client import websocket as websocket_module
from otel_channels.telemetry.carrier import client_traceparent, format_traceparent
from tests.support.compat import timeout as time_limit
from tests.support.otlp import Span, one_span, wait_spans
from tests.support.servers import e2e_cluster

pytestmark = pytest.mark.timeout(60)

TRACER = trace.get_tracer("tests.client")


class EchoServer:
    """A plain websockets server; behaviour chosen by the request path."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.received: list[str | bytes] = []
        self.connections = 0
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        path = ws.request.path if ws.request is not None else "/"
        if path.startswith("/close/"):  # /close/<code>/: say hello, then close with <code>
            await ws.send("hello")
            await ws.close(int(path.split("/")[2]), "bye now")
            return
        if path.startswith("/abort/"):  # drop the TCP connection without a close frame
            await ws.send("hello")
            await asyncio.sleep(0.05)
            ws.transport.abort()
            return
        if path.startswith("/flaky/"):  # connections 0 and 1 are dropped, then it echoes
            await ws.send(f"hello-{index}")
            if index < 2:
                await asyncio.sleep(0.05)
                ws.transport.abort()
                return
        if path.startswith("/restart/"):  # the first connection closes with 1012
            await ws.send(f"hello-{index}")
            if index == 0:
                await ws.close(1012, "restarting")
                return
        if path.startswith("/bytes/"):
            await ws.send(b"\x00\x01\x02")
        async for message in ws:
            self.received.append(message)
            await ws.send(message)

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        self.handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})
        self.paths.append(request.path)
        if request.path.startswith("/forbidden/"):
            return connection.respond(403, "no entry\n")
        if request.path.startswith("/unavailable/"):
            return connection.respond(503, "try later\n")
        return None

    @staticmethod
    def select_subprotocol(connection: ServerConnection, offered: Any) -> str | None:
        return "chat.v1" if "chat.v1" in offered else None

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[EchoServer]:
    echo = EchoServer()
    async with serve(echo.handler, "127.0.0.1", 0, process_request=echo.process_request,
                     select_subprotocol=echo.select_subprotocol) as ws_server:
        echo.port = next(iter(ws_server.sockets)).getsockname()[1]
        yield echo


def _ctx(span: Any) -> SpanContext:
    return span.get_span_context()


def _all_attribute_values(spans: Any) -> str:
    parts = []
    for span in spans.all():
        parts.extend(str(v) for v in span.attributes.values())
        for event in span.events:
            parts.extend(str(v) for v in event.attributes.values())
    return " ".join(parts)


async def test_connect_span_and_traceparent_in_handshake_headers(server: EchoServer, spans: Any,
                                                                 metric_reader: Any) -> None:
    url = server.url("/echo/room-7/?token=s3cret&page=2")
    async with TracedWebSocketClient(url, route="/echo/<room>/", subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
    connect = spans.one("connect /echo/<room>/")
    assert connect.kind is SpanKind.CLIENT
    assert connect.parent is None
    headers = server.handshakes[0]
    assert headers["traceparent"] == format_traceparent(connect.context)
    assert "tracestate" not in headers
    assert connect.attributes["http.response.status_code"] == 101
    assert connect.attributes["websocket.subprotocol"] == "chat.v1"
    assert connect.attributes["url.template"] == "/echo/<room>/"
    assert connect.attributes["url.path"] == "/echo/room-7/"
    assert connect.attributes["url.query"] == "token=REDACTED&page=2"
    assert connect.attributes["url.full"] == (
        f"ws://127.0.0.1:{server.port}/echo/room-7/?token=REDACTED&page=2")
    assert connect.attributes["server.address"] == "127.0.0.1"
    assert connect.attributes["server.port"] == server.port
    assert connect.attributes["network.protocol.name"] == "websocket"
    assert "s3cret" not in _all_attribute_values(spans)
    assert connect.status.status_code is StatusCode.UNSET


async def test_route_defaults_to_the_url_path(server: EchoServer, spans: Any) -> None:
    async with TracedWebSocketClient(server.url("/echo/x/?a=1")):
        pass
    assert spans.one("connect /echo/x/").attributes["url.template"] == "/echo/x/"


async def test_handshake_continues_the_callers_trace_with_tracestate(server: EchoServer,
                                                                     spans: Any) -> None:
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "abc")]))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with TRACER.start_as_current_span("job", context=parent) as job:
        async with TracedWebSocketClient(server.url("/echo/1/"), route="/echo/<n>/",
                                         headers={"X-Extra": "1"}):
            pass
    connect = spans.one("connect /echo/<n>/")
    assert connect.parent.span_id == job.get_span_context().span_id
    assert connect.context.trace_id == 0x1234
    headers = server.handshakes[0]
    assert headers["traceparent"] == format_traceparent(connect.context)
    assert headers["tracestate"] == "vendor=abc"
    assert headers["x-extra"] == "1"


async def test_send_spans_inject_traceparent_and_echo_continues_the_trace(
        server: EchoServer, spans: Any) -> None:
    message = {"text": "secret payload words"}
    async with TracedWebSocketClient(server.url("/echo/r/"), route="/echo/<r>/",
                                     send_spans=True) as ws:
        await ws.send(message)
        echoed = await ws.recv()
        with TRACER.start_as_current_span("handle") as handle:
            pass
    assert message == {"text": "secret payload words"}  # the caller's dict is untouched
    send = spans.one("send /echo/<r>/")
    connect = spans.one("connect /echo/<r>/")
    receive = spans.one("receive /echo/<r>/")
    wire = json.loads(server.received[0])
    assert wire == {"text": "secret payload words", "traceparent": client_traceparent(send.context)}
    assert wire["traceparent"].endswith("-01")  # the sampled bit only (issue 18)
    assert json.loads(echoed) == wire
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is None  # nothing current: the client starts the trace
    assert [link.context for link in send.links] == [connect.context]
    assert send.attributes["websocket.message.type"] == "text"
    assert send.attributes["messaging.message.body.size"] == len(server.received[0])
    assert send.attributes["messaging.operation.type"] == "send"
    # The echo carries the send span's traceparent: its receive span is that span's child.
    assert receive.kind is SpanKind.CONSUMER
    assert receive.context.trace_id == send.context.trace_id
    assert receive.parent.span_id == send.context.span_id
    assert [link.context for link in receive.links] == [connect.context]
    assert receive.attributes["messaging.message.body.size"] == len(echoed)
    assert receive.attributes["messaging.operation.name"] == "receive"
    assert receive.attributes["messaging.operation.type"] == "process"  # as on the server
    # The handler's own span ran inside the receive span.
    assert handle.parent.span_id == receive.context.span_id
    assert "secret payload" not in _all_attribute_values(spans)


async def test_send_without_spans_adds_an_event_and_injects_the_current_span(
        server: EchoServer, spans: Any) -> None:
    async with TracedWebSocketClient(server.url("/echo/r/"), route="/echo/<r>/") as ws:
        with TRACER.start_as_current_span("work") as work:
            await ws.send({"n": 1})
        await ws.send({"n": 2})  # nothing current: nothing to inject
        await ws.recv()
        await ws.recv()
    assert spans.named("send /echo/<r>/") == []
    assert json.loads(server.received[0]) == {
        "n": 1, "traceparent": client_traceparent(work.get_span_context())}
    assert json.loads(server.received[1]) == {"n": 2}
    (work_span,) = spans.named("work")
    (event,) = work_span.events
    assert event.name == "websocket.send"
    assert dict(event.attributes) == {
        "websocket.message.type": "text",
        "messaging.message.body.size": len(server.received[0]),
    }


async def test_plain_message_starts_a_new_trace_linked_to_connect(server: EchoServer,
                                                                  spans: Any) -> None:
    async with TracedWebSocketClient(server.url("/echo/r/"), route="/echo/<r>/") as ws:
        await ws.send("plain text")
        assert await ws.recv() == "plain text"
        current = trace.get_current_span()
        assert current.is_recording()
        inside = current.get_span_context()
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"\x01\x02"
        # the first receive span ended when the next receive began
        assert [s.context.span_id for s in spans.named("receive /echo/<r>/")] == [inside.span_id]
    connect = spans.one("connect /echo/<r>/")
    first, second = spans.named("receive /echo/<r>/")
    assert first.parent is None and second.parent is None
    assert first.context.trace_id != connect.context.trace_id
    assert [link.context for link in first.links] == [connect.context]
    assert first.attributes["websocket.message.type"] == "text"
    assert second.attributes["websocket.message.type"] == "binary"
    assert second.attributes["messaging.message.body.size"] == 2
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached when the block ended


async def test_json_traceparent_key_is_configurable(server: EchoServer, spans: Any) -> None:
    async with TracedWebSocketClient(server.url("/echo/r/"), route="r", send_spans=True,
                                     json_traceparent_key="tp") as ws:
        await ws.send({"a": 1, "tp_other": 2})
        await ws.recv()
    send = spans.one("send r")
    assert json.loads(server.received[0])["tp"] == client_traceparent(send.context)
    assert spans.one("receive r").parent.span_id == send.context.span_id

    spans.clear()
    async with TracedWebSocketClient(server.url("/echo/r/"), route="r", send_spans=True,
                                     json_traceparent_key=None) as ws:
        await ws.send({"a": 1})
        await ws.recv()
    assert json.loads(server.received[1]) == {"a": 1}
    assert spans.one("receive r").parent is None


async def test_explicit_traceparent_in_the_message_wins(server: EchoServer, spans: Any) -> None:
    mine = "00-11111111111111111111111111111111-2222222222222222-01"
    async with TracedWebSocketClient(server.url("/echo/r/"), route="r", send_spans=True) as ws:
        await ws.send({"traceparent": mine})
        await ws.recv()
    assert json.loads(server.received[0]) == {"traceparent": mine}
    receive = spans.one("receive r")
    assert receive.context.trace_id == 0x11111111111111111111111111111111
    assert receive.parent.span_id == 0x2222222222222222


@pytest.mark.parametrize("text", ['["traceparent"]', '{"traceparent": 5}', '{"traceparent"',
                                  '{"traceparent": "00-bad"}'])
async def test_malformed_traceparent_messages_start_new_traces(server: EchoServer, spans: Any,
                                                               text: str) -> None:
    async with TracedWebSocketClient(server.url("/echo/r/"), route="r") as ws:
        await ws.send(text)
        assert await ws.recv() == text
    assert spans.one("receive r").parent is None


async def test_exception_in_the_loop_body_is_recorded_on_the_receive_span(
        server: EchoServer, spans: Any) -> None:
    with pytest.raises(KeyError):
        async with TracedWebSocketClient(server.url("/echo/r/"), route="r") as ws:
            await ws.send("go")
            async for _message in ws:
                raise KeyError("boom")
    receive = spans.one("receive r")
    assert receive.status.status_code is StatusCode.ERROR
    assert receive.attributes["error.type"] == "KeyError"
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(("code", "reason", "error_type"), [
    (1000, "", None), (4000, "done", "4000"),
])
async def test_client_close_code_is_classified(server: EchoServer, spans: Any,
                                               metric_reader: Any, code: int, reason: str,
                                               error_type: str | None) -> None:
    ws = await TracedWebSocketClient(server.url("/echo/r/"), route="r").connect()
    await ws.send("x")
    await ws.recv()
    await ws.close(code, reason)
    await ws.close()  # idempotent
    disconnect = spans.one("disconnect r")
    assert disconnect.kind is SpanKind.INTERNAL
    assert disconnect.attributes["websocket.close.code"] == code
    assert disconnect.attributes.get("error.type") == error_type
    assert disconnect.attributes["channels.connection.status"] == (
        "closed" if error_type is None else "error")
    assert disconnect.attributes["channels.frames.received"] == 1
    assert disconnect.attributes["channels.frames.sent"] == 1
    assert [link.context for link in disconnect.links] == [spans.one("connect r").context]
    assert disconnect.status.status_code is (
        StatusCode.UNSET if error_type is None else StatusCode.ERROR)
    expected = {"network.protocol.name": "websocket", "url.template": "r"}
    if error_type is not None:
        expected["error.type"] = error_type
    assert metric_reader.attributes("channels.client.connection.duration") == [expected]
    assert metric_reader.count("channels.client.connection.duration") == 1


@pytest.mark.parametrize(("path", "code", "error_type", "ends_iteration"), [
    ("/close/1000/", 1000, None, True),
    ("/close/1001/", 1001, None, True),
    ("/close/4003/", 4003, "4003", False),
    ("/close/1011/", 1011, "1011", False),
    ("/abort/", 1006, "1006", False),
])
async def test_server_close_code_is_classified(server: EchoServer, spans: Any, path: str,
                                               code: int, error_type: str | None,
                                               ends_iteration: bool) -> None:
    received = []
    async with TracedWebSocketClient(server.url(path), route="r") as ws:
        if ends_iteration:
            async for message in ws:
                received.append(message)
        else:
            with pytest.raises(ConnectionClosedError):
                async for message in ws:
                    received.append(message)
    assert received == ["hello"]
    disconnect = spans.one("disconnect r")
    assert disconnect.attributes["websocket.close.code"] == code
    assert disconnect.attributes.get("error.type") == error_type
    if code != 1006:
        assert disconnect.attributes["websocket.close.reason"] == "bye now"


async def test_recv_after_a_normal_close_raises_connection_closed_ok(server: EchoServer) -> None:
    async with TracedWebSocketClient(server.url("/close/1000/"), route="r") as ws:
        assert await ws.recv() == "hello"
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_rejected_handshake_records_the_status_and_is_not_retried(
        server: EchoServer, spans: Any) -> None:
    client = TracedWebSocketClient(server.url("/forbidden/"), route="f", reconnect=True)
    with pytest.raises(InvalidStatus):
        await client.connect()
    connect = spans.one("connect f")
    assert connect.attributes["http.response.status_code"] == 403
    assert connect.attributes["error.type"] == "403"
    assert connect.status.status_code is StatusCode.ERROR
    assert server.handshakes[0]["traceparent"] == format_traceparent(connect.context)
    assert client.reconnects == 0


async def test_handshake_timeout(spans: Any) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the TCP connection, never answer the upgrade

    tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await TracedWebSocketClient(f"ws://127.0.0.1:{port}/", route="t",
                                    open_timeout=0.3).connect()
    assert 0.25 < loop.time() - started < 3
    connect = spans.one("connect t")
    assert connect.attributes["error.type"] == "TimeoutError"
    assert connect.status.status_code is StatusCode.ERROR
    for writer in accepted:
        writer.close()
    tcp.close()
    await tcp.wait_closed()


async def test_keepalive_settings_reach_the_connection(server: EchoServer) -> None:
    async with TracedWebSocketClient(server.url("/echo/r/"), ping_interval=7,
                                     ping_timeout=3, close_timeout=2) as ws:
        assert ws.connection is not None
        assert (ws.connection.ping_interval, ws.connection.ping_timeout,
                ws.connection.close_timeout) == (7, 3, 2)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays the client asked for (waited as 0 s to keep the test fast)."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(websocket_module, "_sleep", record)
    return delays


async def test_reconnects_with_backoff_after_abrupt_closes(server: EchoServer, spans: Any,
                                                           metric_reader: Any,
                                                           sleeps: list[float]) -> None:
    async with TracedWebSocketClient(server.url("/flaky/"), route="flaky", reconnect=True,
                                     backoff_base=0.2, backoff_cap=1.0) as ws:
        assert [await ws.recv() for _ in range(3)] == ["hello-0", "hello-1", "hello-2"]
        await ws.send("still here")
        assert await ws.recv() == "still here"
        assert ws.reconnects == 2
    assert server.connections == 3
    assert len(sleeps) == 2 and all(0 <= d <= 0.2 for d in sleeps)  # attempt 0: [0, base]
    connects = spans.named("connect flaky")
    assert len(connects) == 3
    assert [c.attributes.get("http.request.resend_count") for c in connects] == [None, 1, 1]
    # Every handshake carried its own connect span's traceparent.
    assert [h["traceparent"] for h in server.handshakes] == [
        format_traceparent(c.context) for c in connects]
    disconnects = spans.named("disconnect flaky")
    assert [d.attributes["websocket.close.code"] for d in disconnects] == [1006, 1006, 1000]
    assert [d.attributes.get("error.type") for d in disconnects] == ["1006", "1006", None]
    assert metric_reader.sum("channels.client.reconnects", url__template="flaky") == 2
    assert metric_reader.count("channels.client.connection.duration", error__type="1006") == 2


async def test_reconnects_after_service_restart_but_not_after_normal_close(
        server: EchoServer, sleeps: list[float]) -> None:
    async with TracedWebSocketClient(server.url("/restart/"), route="x", reconnect=True,
                                     backoff_base=0.01) as ws:
        assert await ws.recv() == "hello-0"
        assert await ws.recv() == "hello-1"  # 1012 "service restart": reconnected
    assert server.connections == 2
    async with TracedWebSocketClient(server.url("/close/1000/"), route="x",
                                     reconnect=True) as ws:
        assert [m async for m in ws] == ["hello"]  # 1000: iteration ends, no reconnect
    assert server.connections == 3


async def test_gives_up_after_max_retries(spans: Any, sleeps: list[float]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = TracedWebSocketClient(f"ws://127.0.0.1:{port}/", route="down", reconnect=True,
                                   max_retries=3, backoff_base=0.1, backoff_cap=0.3)
    with pytest.raises(OSError):
        await client.connect()
    connects = spans.named("connect down")
    assert len(connects) == 4
    assert [c.attributes.get("http.request.resend_count") for c in connects] == [None, 1, 2, 3]
    assert all(c.status.status_code is StatusCode.ERROR for c in connects)
    assert all(c.attributes["error.type"] == "ConnectionRefusedError" for c in connects)
    caps = [0.1, 0.2, 0.3]  # min(cap, base * 2**n)
    assert len(sleeps) == 3 and all(0 <= d <= cap for d, cap in zip(sleeps, caps, strict=True))


async def test_retries_a_503_handshake(server: EchoServer, spans: Any, sleeps: list[float]) -> None:
    with pytest.raises(InvalidStatus):
        await TracedWebSocketClient(server.url("/unavailable/"), route="u", reconnect=True,
                                    max_retries=2, backoff_base=0.01).connect()
    assert [c.attributes["error.type"] for c in spans.named("connect u")] == ["503"] * 3


def test_the_client_package_imports_no_server_module() -> None:
    code = ("import sys, otel_channels.client; print(' '.join(sorted(m for m in sys.modules if "
            "m.split('.')[0] == 'channels' or m in ('otel_channels.websocket.connection', "
            "'otel_channels.delivery.process', 'otel_channels.telemetry.spans', "
            "'otel_channels.sse'))))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60)
    assert found.stdout.strip() == ""


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    delay = _common.backoff_delay
    assert [delay(n, 0.5, 4.0, lambda: 1.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert delay(3, 0.5, 4.0, lambda: 0.0) == 0.0
    assert delay(2, 0.5, 4.0, lambda: 0.25) == 0.5
    assert delay(10_000, 0.5, 4.0, lambda: 1.0) == 4.0  # no overflow


async def test_metrics_count_messages_and_sizes(server: EchoServer, metric_reader: Any) -> None:
    async with TracedWebSocketClient(server.url("/echo/r/"), route="m") as ws:
        await ws.send("abc")
        await ws.send(b"\x00" * 10)
        await ws.recv()
        await ws.recv()
    assert metric_reader.sum("channels.client.websocket.messages",
                             network__io__direction="transmit", url__template="m") == 2
    assert metric_reader.sum("channels.client.websocket.messages",
                             network__io__direction="receive", url__template="m") == 2
    assert metric_reader.count("channels.client.websocket.message.size", url__template="m") == 4
    sizes = [p.sum for p in metric_reader.points["channels.client.websocket.message.size"]
             if p.attributes["url.template"] == "m"]
    assert sum(sizes) == 26
    assert {tuple(sorted(a)) for a in metric_reader.attributes(
        "channels.client.websocket.messages")} == {
        ("network.io.direction", "network.protocol.name", "url.template")}


async def test_unsampled_parent_records_nothing(server: EchoServer, spans: Any) -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    async with TracedWebSocketClient(server.url("/echo/r/"), route="u", send_spans=True) as ws:
        token = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        from opentelemetry import context

        attached = context.attach(token)
        try:
            await ws.send({"a": 1})
        finally:
            context.detach(attached)
        await ws.recv()
    assert spans.named("send u") == []
    assert spans.named("receive u") == []  # follows the unsampled traceparent it carried
    wire = json.loads(server.received[0])
    assert wire["traceparent"].endswith("-00")


# -- end to end: the project's own consumers under real daphne, Redis between two workers ----


def hex_ids(span: Any) -> tuple[str, str]:
    """``(trace id, span id)`` of an in-process SDK span, as the OTLP receiver spells them."""
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


CHAT_TRACED = "/ws/chat-traced/<room>/"


@pytest.mark.multiprocess
@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_one_trace_from_client_send_through_two_workers_and_back(redis_url: str,
                                                                       spans: Any) -> None:
    room = str(random.randint(10**6, 10**7))  # group room_<digits>: template room_{id}
    with e2e_cluster(redis_url) as (receiver, a, b):
        async with (
            TracedWebSocketClient(f"{a.ws_url}/ws/chat-traced/{room}/", route=CHAT_TRACED,
                                  send_spans=True) as alice,
            TracedWebSocketClient(f"{b.ws_url}/ws/chat-traced/{room}/",
                                  route=CHAT_TRACED) as bob,
            TracedWebSocketClient(f"{b.ws_url}/ws/chat/{room}/",
                                  route="/ws/chat/<room>/") as carol,
        ):
            await alice.send({"text": "hello"})
            async with time_limit(15):
                to_alice = json.loads(await alice.recv())
                to_bob = json.loads(await bob.recv())
                to_carol = json.loads(await carol.recv())
        assert to_alice["text"] == to_bob["text"] == to_carol["text"] == "hello"
        assert "traceparent" not in to_carol  # the plain ChatConsumer sends none back

        send = spans.one(f"send {CHAT_TRACED}")
        trace_id, send_id = hex_ids(send)
        route = "/ws/chat-traced/<room>/"
        server = await wait_spans(receiver, lambda found: (
            sum(s.name == "process room_{id}" and s.trace_id == trace_id for s in found) == 3
            and any(s.name == f"receive {route}" for s in found)
            and sum(s.name.startswith("connect ") for s in found) == 3), timeout=20.0)

    # Handshakes: each server connect span is the child of the client's connect span.
    client_connects = {hex_ids(s)[1]: s for s in spans.all() if s.name.startswith("connect ")}
    server_connects = [s for s in server if s.name.startswith("connect ")]
    assert len(client_connects) == len(server_connects) == 3
    for span in server_connects:
        assert span.kind == "SERVER"
        assert span.parent_span_id in client_connects
        assert span.trace_id == hex_ids(client_connects[span.parent_span_id])[0]

    # alice's send -> receive (worker-a) -> group_send (worker-a) -> process on both workers
    receive = one_span(server, f"receive {route}", "worker-a")
    assert (receive.kind, receive.trace_id, receive.parent_span_id) == (
        "CONSUMER", trace_id, send_id)
    group_send = one_span(server, "group_send room_{id}", "worker-a")
    assert (group_send.kind, group_send.trace_id, group_send.parent_span_id) == (
        "PRODUCER", trace_id, receive.span_id)
    assert group_send.attributes["messaging.destination.name"] == f"room_{room}"
    # One process span per consumer in the room; each links its consumer's connect span,
    # which is the child of that client's connect span: that tells whose delivery it is.
    server_connect_of = {s.parent_span_id: s.span_id for s in server_connects}
    process_spans = [s for s in server if s.name == "process room_{id}" and s.trace_id == trace_id]
    assert all((p.kind, p.parent_span_id) == ("CONSUMER", group_send.span_id)
               for p in process_spans)

    def process_of(client: TracedWebSocketClient) -> Span:
        assert client.connect_span_context is not None
        connect_id = server_connect_of[f"{client.connect_span_context.span_id:016x}"]
        (found,) = [p for p in process_spans if connect_id in {sid for _, sid in p.links}]
        return found

    assert [process_of(c).service for c in (alice, bob, carol)] == [
        "worker-a", "worker-b", "worker-b"]

    # ... and back: each client's receive span is the child of its consumer's process span.
    alice_receive, bob_receive = spans.named(f"receive {CHAT_TRACED}")
    if f"{alice_receive.parent.span_id:016x}" != process_of(alice).span_id:
        alice_receive, bob_receive = bob_receive, alice_receive
    for client_span, client, frame in ((alice_receive, alice, to_alice),
                                       (bob_receive, bob, to_bob)):
        process = process_of(client)
        assert hex_ids(client_span)[0] == trace_id
        assert f"{client_span.parent.span_id:016x}" == process.span_id
        assert frame["traceparent"] == f"00-{trace_id}-{process.span_id}-01"
        assert client_span.kind is SpanKind.CONSUMER
    # A frame without a traceparent starts a new trace linked to carol's connect span.
    carol_receive = spans.one("receive /ws/chat/<room>/")
    assert carol_receive.parent is None
    assert hex_ids(carol_receive)[0] != trace_id
    assert [link.context for link in carol_receive.links] == [
        spans.one("connect /ws/chat/<room>/").context]
