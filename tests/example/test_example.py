"""The example chat, driven through real daphne processes: protocol, views, feeds, traces.

Every test talks to ``daphne example_project.asgi:application`` started by the
test (``manage.py migrate`` first, on a temporary SQLite file) over real
sockets: the ``websockets`` client for the chat protocol, ``httpx`` for the
views and the Server-Sent-Events feeds. Nothing here imports
``example_project``: it runs in its own processes with its own settings.

The module's shared worker uses the in-memory channel layer (the README's
"no Redis" default); the Redis tests start two workers sharing Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import string
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from otel_channels.eventstream import EventStreamParser
from tests.support.compat import needs_sse_disconnects
from tests.support.example import (
    ROOT,
    SETTINGS,
    example_env,
    example_worker,
    manage,
    migrate,
    running,
)
from tests.support.otlp import OTLPReceiver
from tests.support.servers import DaphneWorker, free_port, wait_for_port
from tests.support.websocket import WebSocketClient

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

CHAT_ROUTE = "/ws/chat/<room>/"
FEED_ROUTE = "/rooms/<room>/events/"
CARRIER_KEY = "_otel"


def room_name() -> str:
    """Letters only: the group template leaves it whole (digit runs would become ``{id}``)."""
    return "r" + "".join(random.choices(string.ascii_lowercase, k=11))


class Chat(WebSocketClient):
    """A chat socket that has read its welcome and history frames."""

    welcome: dict[str, Any]
    history: dict[str, Any]

    async def action(self, **content: Any) -> None:
        await self.send_json(content)

    async def frame(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await self.receive_text(timeout)
        assert CARRIER_KEY not in raw  # the trace carrier never reaches a client
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value


@asynccontextmanager
async def chat(worker: DaphneWorker, room: str) -> AsyncIterator[Chat]:
    async with connect(f"{worker.ws_url}/ws/chat/{room}/", origin=worker.url,
                       open_timeout=10) as ws:
        client = Chat(room, ws)
        client.welcome = await client.frame()
        assert client.welcome["type"] == "welcome", client.welcome
        client.history = await client.frame()
        assert client.history["type"] == "history", client.history
        yield client


class EventStream:
    """Reads Server-Sent Events from an ``httpx`` streaming response, one event at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.raw: list[str] = []
        self.parser = EventStreamParser()  # the package's own, spec-faithful
        self._own_id: str | None = None

    async def next(self, timeout: float) -> dict[str, str] | None:
        """The next event (``event``, ``data``, ``id``), or None when ``timeout`` passes first."""
        try:
            return await asyncio.wait_for(self._next(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _next(self) -> dict[str, str]:
        async for line in self.lines:
            self.raw.append(line)
            before = self.parser.id_buffer
            dispatched = self.parser.feed(line + "\n")
            if self.parser.id_buffer != before:
                self._own_id = self.parser.id_buffer  # this event names its own id
            if not line:
                own_id, self._own_id = self._own_id, None
                if dispatched:
                    event = {"event": dispatched[0].type, "data": dispatched[0].data}
                    if own_id is not None:
                        event["id"] = own_id
                    return event
        raise EOFError("stream ended")

    async def until(self, predicate: Any, timeout: float) -> list[dict[str, str]]:
        """Events read until ``predicate(events)`` holds; fails after ``timeout`` seconds."""
        events: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while not predicate(events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; events: {[e.get('event') for e in events]}")
            found = await self.next(left)
            if found is not None:
                events.append(found)
        return events


@asynccontextmanager
async def event_stream(url: str) -> AsyncIterator[EventStream]:
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client, client.stream("GET", url) as response:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        # The view writes at once (a comment or retry): once a line is here the
        # stream is subscribed and no broadcast sent after this can be missed.
        first = await asyncio.wait_for(stream.lines.__anext__(), 10)
        stream.raw.append(first)
        yield stream


def spans_of(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Flatten ``spans`` events into span records, each with its batch's worker."""
    found = []
    for event in events:
        if event.get("event") != "spans":
            continue
        batch = json.loads(event["data"])
        for span in batch["spans"]:
            found.append({**span, "worker": batch["worker"]})
    return found


def fan_out_trace(spans: list[dict[str, Any]], group: str, deliveries: int) -> list[dict[str, Any]]:
    """The spans of the trace holding ``group_send {group}`` once ``deliveries`` process spans
    of it arrived, else []."""
    producers = [s for s in spans if s["name"] == f"group_send {group}"]
    for producer in producers:
        same = [s for s in spans if s["trace_id"] == producer["trace_id"]]
        if sum(s["name"] == f"process {group}" for s in same) >= deliveries:
            return same
    return []


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


# -- the shared in-memory worker -------------------------------------------------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return migrate(tmp_path_factory.mktemp("example") / "chat.sqlite3")


@pytest.fixture(scope="module")
def server(database: str) -> Iterator[DaphneWorker]:
    with running(example_worker(database, "chat-solo")) as (worker,):
        yield worker


async def get_json(url: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url, **kwargs)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()


async def post_message(worker: DaphneWorker, room: str, body: Any, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        if "content" not in kwargs:
            kwargs["json"] = body
        return await client.post(f"{worker.url}/rooms/{room}/messages/", **kwargs)


# -- the chat protocol -------------------------------------------------------------------------


async def test_chat_frame_is_persisted_and_broadcast_to_the_room(server: DaphneWorker) -> None:
    room = room_name()
    async with chat(server, room) as alice, chat(server, room) as bob:
        worker = alice.welcome["worker"]
        assert alice.welcome == {"type": "welcome", "room": room, "worker": worker}
        assert (worker["name"], worker["port"]) == ("chat-solo", server.port)
        assert alice.history == {"type": "history", "messages": []}
        await alice.action(action="chat", user=" alice ", text="hello bob")
        to_alice, to_bob = await alice.frame(), await bob.frame()

    # Each delivery carries the context of its own process span (one trace, two spans), so
    # the pages' receive spans continue the trace; the rest of the frame is the same.
    tp_alice, tp_bob = to_alice.pop("traceparent").split("-"), to_bob.pop("traceparent").split("-")
    assert tp_alice[1] == tp_bob[1] and tp_alice[2] != tp_bob[2]
    assert to_alice == to_bob
    message = to_bob["message"]
    assert to_bob["type"] == "chat"
    assert (message["room"], message["user"], message["text"]) == (room, "alice", "hello bob")
    assert (message["worker"], message["via"]) == ("chat-solo", "websocket")
    assert to_bob["origin"]["via"] == "websocket"
    assert to_bob["origin"]["name"] == to_bob["delivered_by"]["name"] == "chat-solo"
    stored = await get_json(f"{server.url}/rooms/{room}/messages/")
    assert stored == {"room": room, "messages": [message]}


async def test_ping_gets_pong_from_the_serving_worker(server: DaphneWorker) -> None:
    async with chat(server, room_name()) as ws:
        await ws.send('{"action":"ping"}')
        pong = await ws.frame()
    assert pong["type"] == "pong"
    assert (pong["worker"]["name"], pong["worker"]["port"]) == ("chat-solo", server.port)


async def test_join_sends_the_last_50_and_history_honours_its_limit(
    server: DaphneWorker,
) -> None:
    room = room_name()
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(55):
            response = await client.post(f"{server.url}/rooms/{room}/messages/",
                                         json={"user": "bot", "text": f"m{n}"})
            assert response.status_code == 201, response.text
    async with chat(server, room) as ws:
        joined = ws.history["messages"]
        assert [m["text"] for m in joined] == [f"m{n}" for n in range(5, 55)]
        assert [m["id"] for m in joined] == sorted(m["id"] for m in joined)

        await ws.action(action="history", limit=3)
        reply = await ws.frame()
        assert reply["type"] == "history" and reply["limit"] == 3
        assert [m["text"] for m in reply["messages"]] == ["m52", "m53", "m54"]

        await ws.action(action="history", limit=200)
        assert len((await ws.frame())["messages"]) == 55

        for bad in (0, 201, "5", True, 2.5, None):
            await ws.action(action="history", limit=bad)
            error = await ws.frame()
            assert (error["type"], error["code"]) == ("error", "bad_limit"), (bad, error)


BAD_FRAMES = [
    ("not json", "bad_json"),
    ('{"action": "chat", ', "bad_json"),
    (b"\x00\x01binary", "binary_frame"),
    ("[1, 2]", "bad_frame"),
    ('"chat"', "bad_frame"),
    ("{}", "unknown_action"),
    ('{"action": "shout"}', "unknown_action"),
    ('{"action": 7}', "unknown_action"),
    ('{"action": "chat", "text": "no user"}', "bad_user"),
    ('{"action": "chat", "user": "  ", "text": "blank user"}', "bad_user"),
    ('{"action": "chat", "user": "ann"}', "bad_text"),
    ('{"action": "chat", "user": "ann", "text": ["x"]}', "bad_text"),
    (json.dumps({"action": "chat", "user": "ann", "text": "x" * 2001}), "bad_text"),
    (json.dumps({"action": "chat", "user": "u" * 51, "text": "long name"}), "bad_user"),
]


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    server: DaphneWorker,
) -> None:
    room = room_name()
    async with chat(server, room) as ws:
        for sent, code in BAD_FRAMES:
            await ws.send(sent)
            error = await ws.frame()
            assert error["type"] == "error" and error["code"] == code, (sent, error)
            assert isinstance(error["error"], str) and error["error"]
        await ws.send('{"action":"ping"}')
        assert (await ws.frame())["type"] == "pong"  # still open after every bad frame
    stored = await get_json(f"{server.url}/rooms/{room}/messages/")
    assert stored["messages"] == []  # nothing invalid was persisted


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1.evil.example", None])
async def test_cross_origin_websocket_is_refused_at_the_handshake(
    server: DaphneWorker, origin: str | None
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{server.ws_url}/ws/chat/lobby/", origin=origin, open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


async def test_a_room_name_that_is_too_long_is_refused(server: DaphneWorker) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{server.ws_url}/ws/chat/{'a' * 51}/", origin=server.url,
                           open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


# -- the HTTP API and the management command ---------------------------------------------------


async def test_post_persists_and_broadcasts_to_websockets(server: DaphneWorker) -> None:
    room = room_name()
    async with chat(server, room) as ws:
        response = await post_message(server, room, {"user": "curl", "text": "over http"})
        assert response.status_code == 201, response.text
        created = response.json()["message"]
        pushed = await ws.frame()
    assert pushed["type"] == "chat"
    assert pushed["message"] == created
    assert (created["user"], created["text"], created["via"]) == ("curl", "over http", "http")
    assert pushed["origin"]["via"] == "http"


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"content": b"user=a&text=b",
      "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
    ({"content": b"{nope", "headers": {"Content-Type": "application/json"}}, 400),
    ({"content": b"[1]", "headers": {"Content-Type": "application/json"}}, 400),
    ({"content": b'{"user": "a"}', "headers": {"Content-Type": "application/json"}}, 400),
    ({"content": b'{"text": "b"}', "headers": {"Content-Type": "application/json"}}, 400),
])
async def test_post_rejects_bad_bodies(server: DaphneWorker, kwargs: dict[str, Any],
                                       status: int) -> None:
    room = room_name()
    response = await post_message(server, room, None, **kwargs)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert (await get_json(f"{server.url}/rooms/{room}/messages/"))["messages"] == []


async def test_post_message_command_stores_the_message(server: DaphneWorker,
                                                       database: str) -> None:
    room = room_name()
    result = await asyncio.to_thread(manage, database, "post_message", room, "ops", "from cli")
    assert result.returncode == 0, result.stderr
    stored = (await get_json(f"{server.url}/rooms/{room}/messages/"))["messages"]
    assert [(m["user"], m["text"], m["worker"], m["via"]) for m in stored] == [
        ("ops", "from cli", "chat-cli", "cli")
    ]
    assert result.stdout.startswith(f"message {stored[0]['id']} posted to #{room} (trace ")
    # No REDIS_URL (example_env's default): the command says its broadcast reached no worker.
    assert "warning: REDIS_URL is not set" in result.stderr, result.stderr
    assert "reaches no running worker" in result.stderr
    assert f"REDIS_URL=redis://127.0.0.1:6379/0 python manage.py post_message {room} ops " \
           "'from cli'" in result.stderr
    assert "warning" not in result.stdout


def test_post_message_help_documents_the_exit_status_without_redis(database: str) -> None:
    result = manage(database, "help", "post_message")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "without it the message is only stored (a warning on stderr, exit status 0)" in text


async def test_pages_render(server: DaphneWorker) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for path, marker in [("/", "Join a room"), ("/rooms/lobby/", 'data-room="lobby"'),
                             ("/rooms/lobby/follow/", "/rooms/lobby/events/"),
                             ("/traces/", "/traces/events/"),
                             ("/static/chat/traces.js", "EventSource")]:
            response = await client.get(server.url + path)
            assert response.status_code == 200, path
            assert marker in response.text, path
        assert (await client.get(server.url + "/?room=bad%20name")).status_code == 200
        redirect = await client.get(server.url + "/?room=lobby")
        assert (redirect.status_code, redirect.headers["location"]) == (302, "/rooms/lobby/")


# -- the SSE room feed, /stats/ and the live trace feed ------------------------------------------


async def test_sse_follower_receives_websocket_and_http_messages(server: DaphneWorker) -> None:
    room = room_name()
    async with event_stream(f"{server.url}/rooms/{room}/events/") as feed, \
            chat(server, room) as ws:
        await ws.action(action="chat", user="ws", text="one")
        await post_message(server, room, {"user": "http", "text": "two"})
        events = await feed.until(lambda e: len(e) >= 2, 10)
    assert [e["event"] for e in events] == ["chat.message", "chat.message"]
    bodies = [json.loads(e["data"]) for e in events]
    assert [(b["message"]["user"], b["message"]["text"]) for b in bodies] == [
        ("ws", "one"), ("http", "two")]
    assert [b["origin"]["via"] for b in bodies] == ["websocket", "http"]
    assert all("type" not in b and CARRIER_KEY not in b for b in bodies)
    assert all(e.get("id") for e in events)  # every event has an id (Last-Event-ID replay)


@needs_sse_disconnects
async def test_stats_counts_open_websockets_and_streams_per_route(server: DaphneWorker) -> None:
    url = f"{server.url}/stats/"
    before = await get_json(url)
    assert before["worker"]["name"] == "chat-solo"
    base_ws = before["websocket"].get(CHAT_ROUTE, 0)
    base_sse = before["sse"].get(FEED_ROUTE, 0)
    room = room_name()
    async with chat(server, room), chat(server, room), \
            event_stream(f"{server.url}/rooms/{room}/events/"):
        during = await get_json(url)
        assert during["websocket"][CHAT_ROUTE] == base_ws + 2
        assert during["sse"][FEED_ROUTE] == base_sse + 1
        assert during["open"]["websocket"] >= 2 and during["open"]["sse"] >= 1
    deadline = time.monotonic() + 10
    while True:  # closes are seen by the server a moment after the client leaves
        after = await get_json(url)
        if (after["websocket"][CHAT_ROUTE], after["sse"].get(FEED_ROUTE, 0)) == (base_ws,
                                                                                   base_sse):
            break
        assert time.monotonic() < deadline, after
        await asyncio.sleep(0.1)
    assert after["opened_total"]["websocket"][CHAT_ROUTE] >= base_ws + 2


async def test_trace_feed_streams_the_fan_out_and_never_feeds_itself(
    server: DaphneWorker,
) -> None:
    room, group = room_name(), None
    secret = f"payload-{uuid.uuid4().hex}"
    async with event_stream(f"{server.url}/traces/events/") as traces:
        group = f"chat_{room}"
        async with chat(server, room) as alice, chat(server, room) as bob:
            await alice.send('{"action":"ping"}')  # in IGNORED_FRAMES: answered, not traced
            assert (await alice.frame())["type"] == "pong"
            await alice.action(action="chat", user="alice", text=secret)
            await alice.frame(), await bob.frame()
            events = await traces.until(lambda e: fan_out_trace(spans_of(e), group, 2), 15)
        # Both sockets closed: their disconnect spans arrive, then the feed must go quiet,
        # publishing spans must not create spans that are published in turn.
        events += await traces.until(
            lambda e: sum(s["name"] == f"disconnect {CHAT_ROUTE}" for s in spans_of(e)) >= 2, 10)
        quiet = await traces.next(2.0)
        assert quiet is None, quiet

    spans = spans_of(events)
    trace = fan_out_trace(spans, group, 2)
    # this room's connects only: the feed may also carry late spans of earlier tests
    connects = [s for s in spans if s["name"] == f"connect {CHAT_ROUTE}"
                and s["attributes"].get("url.path") == f"/ws/chat/{room}/"]
    connect_ids = {s["span_id"] for s in connects}
    receive = one(trace, f"receive {CHAT_ROUTE}")
    ours = [s for s in spans if s["name"] == receive["name"]
            and {link["span_id"] for link in s["links"]} & connect_ids]
    assert ours == [receive]  # one frame traced on this room's sockets: not the ping
    save = one(trace, "save message")
    producer = one(trace, f"group_send {group}")
    processes = [s for s in trace if s["name"] == f"process {group}"]
    assert {s["name"] for s in trace} == {receive["name"], save["name"], producer["name"],
                                         f"process {group}"}
    assert (receive["kind"], save["kind"], producer["kind"]) == ("CONSUMER", "INTERNAL", "PRODUCER")
    assert receive["parent_id"] is None  # each frame is its own trace (FRAME_TRACE_MODE=link)
    assert save["parent_id"] == producer["parent_id"] == receive["span_id"]
    assert save["attributes"]["chat.room"] == room
    assert save["attributes"]["db.system.name"] == "sqlite"
    assert receive["attributes"]["chat.action"] == "chat"
    assert producer["attributes"]["messaging.destination.name"] == group
    assert len(processes) == 2
    for process in processes:
        assert process["kind"] == "CONSUMER"
        assert process["parent_id"] == producer["span_id"]
        assert {"trace_id": producer["trace_id"], "span_id": producer["span_id"]} not in (
            process["links"])  # its parent already
        assert process["start_us"] >= producer["start_us"]
    # receive links the sender's connect span; each process links its consumer's connect span
    assert {link["span_id"] for link in receive["links"]} <= connect_ids
    assert {p["links"][0]["span_id"] for p in processes} == connect_ids
    for span in spans:
        assert span["worker"] == {"name": "chat-solo", "pid": span["worker"]["pid"],
                                  "port": server.port}
        assert span["end_us"] >= span["start_us"] > 1_600_000_000_000_000
        assert span["attributes"].get("messaging.destination.name") != "otel_traces"
        assert span["attributes"].get("http.route") != "/traces/events/"
    assert secret not in "\n".join(traces.raw)  # names and ids only, never payloads


async def test_trace_view_opened_after_the_messages_gets_their_spans(
    server: DaphneWorker,
) -> None:
    room = room_name()
    group = f"chat_{room}"
    async with chat(server, room) as alice:  # no trace feed is open on any worker
        await alice.action(action="chat", user="alice", text="before the page")
        await alice.frame()
    await asyncio.sleep(1.0)  # several publish ticks: the spans left before anyone watched
    async with event_stream(f"{server.url}/traces/events/") as traces:
        events = await traces.until(lambda e: fan_out_trace(spans_of(e), group, 1), 10)
    trace = fan_out_trace(spans_of(events), group, 1)
    assert one(trace, "save message")["attributes"]["chat.room"] == room
    assert all(e.get("id") for e in events if e["event"] == "spans")  # resumable after it
    # ?tail=0 streams live only: nothing of that room comes back.
    async with event_stream(f"{server.url}/traces/events/?tail=0") as live:
        quiet = await live.next(1.0)
    assert quiet is None or not fan_out_trace(spans_of([quiet]), group, 1)
    # A reconnecting browser sends Last-Event-ID: it resumes there, no tail again.
    last = [e["id"] for e in events if e.get("id")][-1]
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client, \
            client.stream("GET", f"{server.url}/traces/events/",
                          headers={"Last-Event-ID": last}) as response:
        stream = EventStream(response)
        again = await stream.next(1.0)
    assert again is None or not fan_out_trace(spans_of([again]), group, 1)


async def test_otlp_export_names_the_worker_and_publishing_spans_is_never_traced(
    tmp_path: Path,
) -> None:
    database = migrate(tmp_path / "chat.sqlite3")
    room = room_name()
    group = f"chat_{room}"
    with OTLPReceiver() as receiver, \
            running(example_worker(database, "chat-otlp", **receiver.env())) as (worker,):
        async with event_stream(f"{worker.url}/traces/events/") as traces:
            async with chat(worker, room) as ws:
                await ws.action(action="chat", user="ann", text="exported")
                await ws.frame()
                await traces.until(lambda e: fan_out_trace(spans_of(e), group, 1), 15)
            await asyncio.sleep(1.0)  # several publish ticks while the feed is open

        def done(spans: list[Any]) -> bool:
            names = {span.name for span in spans}
            return {f"process {group}", f"disconnect {CHAT_ROUTE}",
                    "disconnect /traces/events/"} <= names

        spans = await asyncio.to_thread(receiver.wait_for, done, 15)
        await asyncio.to_thread(time.sleep, 1.0)  # a metric export after the last publish
        metrics = list(receiver.metrics)

    assert {span.service for span in spans} == {"chat-otlp"}
    names = {span.name for span in spans}
    assert {f"connect {CHAT_ROUTE}", f"receive {CHAT_ROUTE}", "save message",
            f"group_send {group}", f"process {group}", "connect /traces/events/"} <= names
    # The live view hides its own feed, OTLP gets everything: yet publishing the spans
    # (a group_send to otel_traces, and its receipt by the feed's hub) left no span...
    assert [s.name for s in spans
            if "otel_traces" in s.name
            or s.attributes.get("messaging.destination.name") == "otel_traces"] == []
    # ...and no messaging metric.
    sent = {(m.name, m.attributes.get("messaging.destination.template")) for m in metrics
            if m.name == "messaging.client.sent.messages"}
    assert ("messaging.client.sent.messages", group) in sent
    assert ("messaging.client.sent.messages", "otel_traces") not in sent


def test_worker_name_comes_from_the_daphne_port() -> None:
    from example_project.tracing import port_from_argv

    assert port_from_argv(["daphne", "-b", "127.0.0.1", "-p", "8001", "x:app"]) == 8001
    assert port_from_argv(["daphne", "--port=8002", "x:app"]) == 8002
    assert port_from_argv(["daphne", "-e", "tcp:port=8003:interface=127.0.0.1", "x:app"]) == 8003
    assert port_from_argv(["manage.py", "runserver", "127.0.0.1:8004"]) == 8004
    assert port_from_argv(["manage.py", "runserver"]) == 8000
    assert port_from_argv(["daphne", "-u", "/tmp/sock", "x:app"]) is None


def test_migrations_are_complete(database: str) -> None:
    result = manage(database, "makemigrations", "chat", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_default_database_path_is_used_without_database_url() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings;"
         " print(settings.DATABASES['default']['NAME']);"
         " print(settings.CHANNEL_LAYERS['default']['BACKEND'])"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
             "DJANGO_SETTINGS_MODULE": SETTINGS, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / "db.sqlite3"),
                                     "channels.layers.InMemoryChannelLayer"]


# -- two workers sharing Redis -----------------------------------------------------------------


@pytest.mark.redis
async def test_two_workers_on_redis_fan_out_chat_http_and_command(
    redis_url: str, tmp_path: Path
) -> None:
    database = migrate(tmp_path / "chat.sqlite3")
    prefix = f"exchat{uuid.uuid4().hex[:10]}"
    env = {"REDIS_URL": redis_url, "CHANNEL_PREFIX": prefix}
    a_port, b_port = free_port(), free_port()
    room = room_name()
    group = f"chat_{room}"
    with running(example_worker(database, f"chat-{a_port}", a_port, **env),
                 example_worker(database, f"chat-{b_port}", b_port, **env)) as (a, b):
        async with event_stream(f"{a.url}/traces/events/") as traces, \
                chat(a, room) as on_a, chat(b, room) as on_b:
            # A chat frame on worker A reaches the socket on worker B.
            await on_a.action(action="chat", user="ann", text="a to b")
            at_b = await on_b.frame()
            assert (await on_a.frame())["message"] == at_b["message"]
            assert at_b["origin"]["name"] == a.name and at_b["delivered_by"]["name"] == b.name
            events = await traces.until(lambda e: fan_out_trace(spans_of(e), group, 2), 15)
            trace = fan_out_trace(spans_of(events), group, 2)
            producer = one(trace, f"group_send {group}")
            assert producer["worker"]["name"] == a.name
            processes = [s for s in trace if s["name"] == f"process {group}"]
            assert sorted(p["worker"]["name"] for p in processes) == sorted([a.name, b.name])
            assert {p["parent_id"] for p in processes} == {producer["span_id"]}
            assert len({p["worker"]["pid"] for p in processes}) == 2

            # The management command, a third process, broadcasts to both workers.
            result = await asyncio.to_thread(
                manage, database, "post_message", room, "ops", "from cli", **env)
            assert result.returncode == 0, result.stderr
            pushed = [await on_a.frame(), await on_b.frame()]
            assert [p["origin"]["name"] for p in pushed] == ["chat-cli", "chat-cli"]
            assert [p["origin"]["via"] for p in pushed] == ["cli", "cli"]
            trace_id = result.stdout.strip().rsplit(" ", 1)[1].rstrip(")")
            events = await traces.until(lambda e: {
                s["worker"]["name"] for s in spans_of(e) if s["trace_id"] == trace_id
            } >= {"chat-cli", a.name, b.name}, 15)
            cli_trace = [s for s in spans_of(events) if s["trace_id"] == trace_id]
            root = one(cli_trace, "post_message")
            cli_producer = one(cli_trace, f"group_send {group}")
            assert cli_producer["worker"]["name"] == "chat-cli"
            assert cli_producer["parent_id"] == root["span_id"]
            assert {s["parent_id"] for s in cli_trace if s["name"] == f"process {group}"} == {
                cli_producer["span_id"]}
            assert "warning" not in result.stderr, result.stderr

        # /traces/ opened on B after all that gets the earlier spans of every process,
        # from the replay log the workers share in Redis.
        async with event_stream(f"{b.url}/traces/events/") as late:
            events = await late.until(lambda e: {
                s["worker"]["name"] for s in spans_of(e) if s["trace_id"] == trace_id
            } >= {"chat-cli", a.name, b.name}, 10)
        replayed = [s for s in spans_of(events) if s["trace_id"] == trace_id]
        assert {s["span_id"] for s in replayed} >= {s["span_id"] for s in cli_trace}



# -- example_project/run_two_workers.sh (the tour's two workers) ------------------------------


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.redis
def test_run_two_workers_keeps_the_others_up_and_says_how_to_restart(
    redis_url: str, tmp_path: Path
) -> None:
    database = migrate(tmp_path / "chat.sqlite3")
    ports = [free_port(), free_port()]
    bindir = Path(sys.executable).parent
    env = {**os.environ, **example_env(
        database, REDIS_URL=redis_url, CHANNEL_PREFIX=f"extour{uuid.uuid4().hex[:10]}",
        PORTS=" ".join(map(str, ports)), PYTHON=sys.executable, DAPHNE=str(bindir / "daphne"),
        PYTHONUNBUFFERED="1")}
    env.pop("PYTHONDEVMODE", None)
    log = tmp_path / "run_two_workers.log"
    processes: list[subprocess.Popen[bytes]] = []
    pids: dict[int, int] = {}

    def output() -> str:
        return log.read_text(errors="replace")

    try:
        with log.open("wb") as out:
            script = subprocess.Popen(
                ["bash", str(ROOT / "example_project" / "run_two_workers.sh")], cwd=tmp_path,
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(script)
        for port in ports:
            wait_for_port(port, 60, script, log)
        started = re.findall(r"^worker chat-(\d+) \(pid (\d+)\)", output(), re.MULTILINE)
        pids.update((int(port), int(pid)) for port, pid in started)
        assert set(pids) == set(ports), output()
        stopped, kept = ports

        # Stop one worker: the other keeps serving, the script names the restart command.
        os.kill(pids[stopped], signal.SIGTERM)
        wait_until(lambda: "start it again" in output(), 20, "the restart hint")
        lines = output().splitlines()
        hint = lines.index(next(line for line in lines if "start it again" in line))
        command = lines[hint + 1].strip()
        assert f"worker chat-{stopped} (pid {pids[stopped]}) stopped" in lines[hint - 1]
        assert f"WORKER_NAME=chat-{stopped} " in command and f"-p {stopped} " in command
        assert script.poll() is None, output()
        assert gone(pids[stopped]) and not listening(stopped)
        stats = httpx.get(f"http://127.0.0.1:{kept}/stats/", timeout=10)
        assert stats.status_code == 200
        assert stats.json()["worker"]["name"] == f"chat-{kept}"

        # The printed command, run as printed (from another directory), brings it back.
        with (tmp_path / "restarted.log").open("wb") as out:
            restarted = subprocess.Popen(["bash", "-c", command], cwd=tmp_path, env=env,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        processes.append(restarted)
        wait_for_port(stopped, 60, restarted, tmp_path / "restarted.log")
        back = httpx.get(f"http://127.0.0.1:{stopped}/stats/", timeout=10).json()
        assert back["worker"]["name"] == f"chat-{stopped}"
        os.killpg(restarted.pid, signal.SIGTERM)
        restarted.wait(20)

        # Ctrl-C of the script stops every worker it started.
        assert listening(kept)
        script.send_signal(signal.SIGINT)
        assert script.wait(30) == 130, output()
        assert "all workers stopped" in output()
        wait_until(lambda: gone(pids[kept]) and not listening(kept), 10, "the kept worker to go")
    finally:
        for process in processes:  # whatever a failure left running
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        for pid in pids.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        print(output() if log.exists() else "")
