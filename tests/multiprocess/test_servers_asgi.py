"""Works under every ASGI server: daphne, uvicorn (three WebSocket implementations), hypercorn.

One worker per server (in-memory layer, ``MAX_FRAME_SIZE`` 64), its real OTLP
exporters sending to a receiver in the test:

* a traced ``EchoConsumer`` connection gets its ``connect`` / ``receive`` /
  ``disconnect`` spans, and a normal client close (1000) is a ``disconnect`` with
  ``websocket.close.code`` 1000 and no error;
* a consumer that closes with 1009: the client sees 1009 (4009 under daphne,
  which refuses 1009 from a server, so the library maps it) and the
  ``disconnect`` span records the code that actually went on the wire;
* a frame over ``MAX_FRAME_SIZE`` is refused with that code (4009 / 1009) and the
  ``receive`` span records the code actually sent;
* an SSE stream is served, gets a broadcast, and its disconnect is counted
  (``channels.server.active_connections`` back to 0).

Servers disagree on what they hand the consumer as ``websocket.disconnect``'s
code (measured: hypercorn says 1006 after a clean client close and 1000 after
any server close; uvicorn's legacy ``websockets`` implementation says 1005 after
a server close): the spans must still say what happened on the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.support.anyserver import names, new_room, settle
from tests.support.compat import needs_sse_disconnects
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import SERVERS, DaphneWorker, running
from tests.support.sse import HttpEventStream
from tests.support.websocket import open_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(60)]

ECHO_ROUTE = "/ws/echo/<room>/"
CLOSE_ROUTE = "/ws/close/<room>/"
SSE_ROUTE = "/events/<room>/"
STATUS_ERROR = 2  # OTLP Status.code


@pytest.fixture(scope="module", params=list(SERVERS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, DaphneWorker, OTLPReceiver]]:
    """``(server name, worker, receiver)``: one worker per server for this module."""
    name = request.param
    with OTLPReceiver() as receiver:
        env = {**receiver.env(), "OTEL_CHANNELS_JSON": json.dumps({"MAX_FRAME_SIZE": 64})}
        worker = SERVERS[name](env, name=f"srv-{name}")
        with running(worker, join_timeout=40, log_tail=3000):
            yield name, worker, receiver


def wire_code(server: str, code: int) -> int:
    """The close code a server puts on the wire when the application closes with ``code``."""
    if server == "daphne" and code != 1000 and not 3000 <= code <= 4999:
        return 4000 + code % 1000  # autobahn refuses protocol codes from a server
    return code


def connection_spans(spans: list[Span], route: str, path: str) -> dict[str, list[Span]]:
    """The spans of the connection to ``path``: its connect span and those linking it."""
    connects = [s for s in spans if s.name == f"connect {route}"
                and s.attributes.get("url.path") == path]
    found: dict[str, list[Span]] = {"connect": connects, "receive": [], "disconnect": []}
    if len(connects) != 1:
        return found
    link = (connects[0].trace_id, connects[0].span_id)
    for kind in ("receive", "disconnect"):
        found[kind] = [s for s in spans if s.name == f"{kind} {route}" and link in s.links]
    return found


async def wait_connection(receiver: OTLPReceiver, route: str, path: str,
                          receives: int) -> dict[str, list[Span]]:
    def done(spans: list[Span]) -> bool:
        found = connection_spans(spans, route, path)
        return (len(found["connect"]) == 1 and len(found["receive"]) >= receives
                and len(found["disconnect"]) == 1)

    spans = await settle(receiver, done, timeout=10)
    found = connection_spans(spans, route, path)
    assert len(found["connect"]) == 1, names(spans)
    assert len(found["receive"]) == receives, names(spans)
    assert len(found["disconnect"]) == 1, names(spans)
    return found


async def closed_code(url: str, frame: str) -> int:
    """Send ``frame``; the close code the client received."""
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, closed.value
    return closed.value.rcvd.code


async def test_echo_spans_and_normal_client_close(
    served: tuple[str, DaphneWorker, OTLPReceiver],
) -> None:
    server, worker, receiver = served
    path = f"/ws/echo/{new_room()}/"
    async with open_clients({"echo": worker.ws_url + path}, settle_time=0) as ws:
        await ws["echo"].send_json({"n": 1})
        assert await ws["echo"].receive_json() == {"n": 1}
    # leaving the block closed the socket normally (1000)
    found = await wait_connection(receiver, ECHO_ROUTE, path, receives=1)
    connect, receive, disconnect = (found[k][0] for k in ("connect", "receive", "disconnect"))
    assert connect.kind == "SERVER" and connect.status_code != STATUS_ERROR
    assert connect.attributes["channels.connection.status"] == "accepted"
    assert receive.kind == "CONSUMER" and receive.status_code != STATUS_ERROR
    assert disconnect.kind == "INTERNAL"
    code = disconnect.attributes.get("websocket.close.code")
    assert code == 1000, f"{server}: client closed with 1000, disconnect span says {code}"
    assert "error.type" not in disconnect.attributes, (server, disconnect.attributes)
    assert disconnect.status_code != STATUS_ERROR, server
    assert disconnect.attributes["channels.connection.status"] == "closed"


async def test_consumer_close_code_is_recorded_as_sent(
    served: tuple[str, DaphneWorker, OTLPReceiver],
) -> None:
    server, worker, receiver = served
    path = f"/ws/close/{new_room()}/"
    expected = wire_code(server, 1009)
    got = await closed_code(worker.ws_url + path, json.dumps({"close": 1009}))
    assert got == expected, f"{server}: the consumer closed with 1009, the client saw {got}"
    found = await wait_connection(receiver, CLOSE_ROUTE, path, receives=1)
    disconnect = found["disconnect"][0]
    code = disconnect.attributes.get("websocket.close.code")
    assert code == expected, (
        f"{server}: {expected} went on the wire, the disconnect span says {code}")
    assert disconnect.attributes.get("error.type") == str(expected)


async def test_oversized_frame_is_refused_with_the_recorded_code(
    served: tuple[str, DaphneWorker, OTLPReceiver],
) -> None:
    server, worker, receiver = served
    path = f"/ws/echo/{new_room()}/"
    expected = wire_code(server, 1009)
    got = await closed_code(worker.ws_url + path, json.dumps({"text": "x" * 100}))
    assert got == expected, f"{server}: oversized frame, the client saw {got}"
    found = await wait_connection(receiver, ECHO_ROUTE, path, receives=1)
    receive = found["receive"][0]
    assert receive.attributes.get("error.type") == "frame_too_large"
    code = receive.attributes.get("websocket.close.code")
    assert code == expected, (
        f"{server}: {expected} went on the wire, the receive span says {code}")


@needs_sse_disconnects
async def test_sse_stream_served_and_disconnect_counted(
    served: tuple[str, DaphneWorker, OTLPReceiver],
) -> None:
    server, worker, receiver = served
    room = new_room()

    def active() -> list[Any]:
        with receiver.lock:
            return [p.value for p in receiver.metrics
                    if p.name == "channels.server.active_connections"
                    and p.service == worker.name and p.attributes.get("http.route") == SSE_ROUTE]

    async def until(predicate: Any, why: str) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{server}: {why}; active connections: {active()}")
            await asyncio.sleep(0.1)

    async with HttpEventStream(f"{worker.url}/events/{room}/") as stream:
        await stream.wait_position()
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(f"{worker.url}/broadcast/{room}/", json={"text": server})
            assert reply.status_code == 202, reply.text
        event = await stream.next_event()
        assert json.loads(event.data) == {"text": server, "via": "http"}
        await until(lambda: active()[-1:] == [1], "the open stream was never counted")
    await until(lambda: active()[-1:] == [0], "the stream left, the count never went back to 0")
    spans = await settle(receiver, lambda s: any(
        x.name == f"disconnect {SSE_ROUTE}" for x in s), timeout=5)
    assert any(s.name == f"disconnect {SSE_ROUTE}" for s in spans), names(spans)
