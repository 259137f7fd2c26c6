"""The browser module in headless Chromium: a drop-in for WebSocket / EventSource, close codes,
no SDK, reconnection after a worker restart, and a 1,000-message burst in bounded memory.

Pages of our own on real daphne workers (tests/project, ``/_browser/page.html``)
load the module from the app's static files and the OpenTelemetry JS web SDK
bundle; their spans go to the in-test OTLP receiver.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support.browser import browser, context, flush, open_page  # noqa: F401
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import DaphneWorker, running, two_workers

pytestmark = [pytest.mark.browser, pytest.mark.multiprocess, pytest.mark.timeout(240)]

SETTINGS = json.dumps({"QUERY_TRACEPARENT": True, "SSE_TRACEPARENT_FIELD": True})

# A page written for the native WebSocket, run with either class: its transcript.
WEBSOCKET_PAGE = """([kind, url]) => new Promise((resolve) => {
  const WS = kind === "native" ? WebSocket : window.traced.TracedWebSocket;
  const log = [];
  const same = (u) => u === new URL(url, location.href).href.replace(/^http/, "ws");
  log.push(["statics", WS.CONNECTING, WS.OPEN, WS.CLOSING, WS.CLOSED]);
  for (const bad of ["ftp://example.com/", "ws://[::1"]) {
    try { new WS(bad); log.push(["accepted", bad]); } catch (e) { log.push(["bad url", e.name]); }
  }
  const ws = new WS(url);
  log.push(["new", ws.readyState, same(ws.url), ws.protocol, ws.binaryType, ws.bufferedAmount,
            ws.CONNECTING, ws.OPEN, ws.onmessage]);
  try { ws.send("too early"); } catch (e) { log.push(["send while connecting", e.name]); }
  try { ws.close(1001); } catch (e) { log.push(["close(1001)", e.name]); }
  ws.binaryType = "nonsense";
  log.push(["binaryType", ws.binaryType]);
  ws.onopen = (e) => {
    log.push(["onopen", e.type, e.target === ws, ws.readyState, e instanceof Event]);
    ws.send(JSON.stringify({ n: 1, text: "héllo" }));
    ws.send(JSON.stringify({ n: 2 }));
  };
  ws.addEventListener("open", (e) => log.push(["open listener", e.type]));
  const strip = (data) => {
    const body = JSON.parse(data);
    delete body.traceparent; delete body.tracestate;
    return body;
  };
  ws.onmessage = (e) => {
    log.push(["onmessage", e instanceof MessageEvent, e.target === ws, e.origin,
              typeof e.data, strip(e.data)]);
    if (strip(e.data).n === 2) ws.close(1000, "bye");
  };
  ws.addEventListener("message", (e) => log.push(["message listener", strip(e.data).n]));
  const once = () => log.push(["once"]);
  ws.addEventListener("message", once, { once: true });
  ws.onerror = () => log.push(["onerror"]);
  ws.onclose = (e) => {
    log.push(["onclose", e instanceof CloseEvent, e.code, e.reason, e.wasClean, ws.readyState]);
    resolve({ log, raw: kind });
  };
})"""

EVENTSOURCE_PAGE = """([kind, url]) => {
  const ES = kind === "native" ? EventSource : window.traced.TracedEventSource;
  const log = window.log = [];
  log.push(["statics", ES.CONNECTING, ES.OPEN, ES.CLOSED]);
  const source = window.source = new ES(url);
  log.push(["new", source.readyState, source.url === new URL(url, location.href).href,
            source.withCredentials, source.onmessage]);
  source.onopen = (e) => log.push(["onopen", e.type, e.target === source, source.readyState]);
  source.onmessage = (e) => log.push(["onmessage (unnamed)", e.data]);
  source.addEventListener("chat.message", (e) => log.push([
    "chat.message", e instanceof MessageEvent, e.target === source, e.origin === location.origin,
    e.lastEventId.length > 0, JSON.parse(e.data).text]));
}"""


# JSON work the module does for n frames out and n back (each carrying a traceparent).
JSON_WORK = """([url, n]) => new Promise((resolve) => {
  const { parse, stringify } = JSON;
  let parses = 0, stringifies = 0;
  const frame = stringify({
    n: 1, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
  JSON.parse = (...args) => { parses += 1; return parse(...args); };
  JSON.stringify = (...args) => { stringifies += 1; return stringify(...args); };
  const ws = new window.traced.TracedWebSocket(url);
  let got = 0;
  ws.onopen = () => { for (let i = 0; i < n; i++) ws.send(frame); };
  ws.onmessage = () => {
    if (++got < n) return;
    Object.assign(JSON, { parse, stringify });
    ws.close();
    resolve([parses, stringifies]);
  };
})"""


def _worker(receiver: OTLPReceiver | None = None, **env: str) -> DaphneWorker:
    return DaphneWorker({**(receiver.env() if receiver else {}), "OTEL_CHANNELS_JSON": SETTINGS,
                         **env}, name="worker")


def named(spans: list[Span], name: str, service: str) -> list[Span]:
    return [s for s in spans if s.name == name and s.service == service]


def test_drop_in_for_the_native_classes_with_and_without_the_sdk(context: Any) -> None:  # noqa: F811
    """A page written for WebSocket / EventSource gives the same transcript with either class."""
    room = f"d{uuid.uuid4().hex[:8]}"
    with OTLPReceiver() as receiver, running(_worker(receiver)) as (worker,):
        traced = open_page(context, worker.url, receiver.endpoint, "traced")
        idle = open_page(context, worker.url, receiver.endpoint, "sdk-not-configured",
                         tracing=False)
        bare = open_page(context, worker.url, None, "no-sdk")
        url = f"/ws/echo/{room}/"
        native = bare.evaluate(WEBSOCKET_PAGE, ["native", url])["log"]
        assert native[-1] == ["onclose", True, 1000, "", True, 3]  # daphne echoes no reason
        assert ["send while connecting", "InvalidStateError"] in native
        assert ["close(1001)", "InvalidAccessError"] in native
        assert native[1:3] == [["bad url", "SyntaxError"]] * 2
        for page in (traced, idle, bare):
            assert page.evaluate(WEBSOCKET_PAGE, ["traced", url])["log"] == native

        # The frames as the server got them: the traced page's carry its send span's context,
        # the others are untouched (no SDK configured: nothing added, nothing parsed).
        flush(traced)
        flush(idle)
        # The worker's spans and the page's come in separate exports: wait for both.
        spans = receiver.wait_for(lambda spans: len(named(
            spans, "receive /ws/echo/<room>/", "worker")) >= 8 and len(named(
            spans, f"send /ws/echo/{room}/", "traced")) >= 2, 30)
        sends = named(spans, f"send /ws/echo/{room}/", "traced")  # no route: the URL's path
        assert len(sends) == 2
        server_receives = named(spans, "receive /ws/echo/<room>/", "worker")
        assert sorted(s.parent_span_id for s in server_receives if s.parent_span_id in
                      {x.span_id for x in sends}) == sorted(s.span_id for s in sends)
        assert [s for s in spans if s.service in ("sdk-not-configured", "no-sdk")] == []

        # EventSource: named events, lastEventId, origin, readyState, close().
        sse_url = f"/events/{room}/"
        transcripts = {}
        for kind, page in (("native", bare), ("traced", traced), ("traced-idle", idle),
                           ("traced-bare", bare)):
            page.evaluate(EVENTSOURCE_PAGE, ["native" if kind == "native" else "traced",
                                             sse_url])
            page.wait_for_function("window.source.readyState === 1")
            time.sleep(0.3)  # the stream's subscription is made as its first byte goes out
            for text in ("one", "two"):
                response = httpx.post(f"{worker.url}/broadcast/{room}/", timeout=10,
                                      json={"text": text})
                assert response.status_code == 202
            page.wait_for_function("window.log.filter((e) => e[0] === 'chat.message').length"
                                   " === 2")
            page.evaluate("window.source.close()")
            assert page.evaluate("window.source.readyState") == 2
            transcripts[kind] = page.evaluate("window.log")
        assert transcripts["native"][-1] == ["chat.message", True, True, True, True, "two"]
        for kind in ("traced", "traced-idle", "traced-bare"):
            assert transcripts[kind] == transcripts["native"], kind
        flush(traced)
        spans = receiver.wait_for(lambda spans: len(named(
            spans, f"receive /events/{room}/", "traced")) == 2, 30)
        # No api given to the module: no JSON parsed or written for tracing, whatever the
        # frames carry; with one, it reads and writes frames (the check can fail).
        for page in (idle, bare):
            assert page.evaluate(JSON_WORK, [url, 50]) == [0, 0]
        parses, _ = traced.evaluate(JSON_WORK, [url, 50])
        assert parses >= 100  # each frame out (a key already there wins) and each frame in
        for page in (traced, idle, bare):
            assert page.errors == []


CLOSE_PAGE = """([url, frame, code]) => new Promise((resolve) => {
  const ws = new window.traced.TracedWebSocket(url, undefined, { route: "/ws/close/<room>/" });
  ws.onopen = () => {
    ws.send(JSON.stringify({ echo: 1 }));
    if (typeof frame === "string") ws.send(frame);  // not JSON: the consumer crashes
    else if (frame) ws.send(JSON.stringify(frame));
    else ws.close(code, "done");
  };
  ws.onclose = (e) => resolve([e.code, ws.readyState]);
})"""


def test_close_codes_normal_and_errors(context: Any) -> None:  # noqa: F811
    """1000 (the page's or the server's) is normal; 4xxx and 1011 (a crash) are errors."""
    room = f"c{uuid.uuid4().hex[:8]}"
    with OTLPReceiver() as receiver, running(_worker(receiver), tracebacks=True) as (worker,):
        page = open_page(context, worker.url, receiver.endpoint, "closer")
        url = f"/ws/close/{room}/"
        assert page.evaluate(CLOSE_PAGE, [url, None, 1000]) == [1000, 3]
        assert page.evaluate(CLOSE_PAGE, [url, {"close": 1000}, None]) == [1000, 3]
        assert page.evaluate(CLOSE_PAGE, [url, {"close": 4003}, None]) == [4003, 3]
        assert page.evaluate(CLOSE_PAGE, [url, "{not json", None]) == [1011, 3]
        flush(page)
        spans = receiver.wait_for(lambda spans: len(named(
            spans, "disconnect /ws/close/<room>/", "closer")) == 4, 30)
        ends = sorted(named(spans, "disconnect /ws/close/<room>/", "closer"),
                      key=lambda s: (s.attributes["websocket.close.code"],
                                     s.attributes["channels.frames.sent"]))
        assert [(s.attributes["websocket.close.code"], s.attributes.get("error.type"),
                 s.status_code, s.attributes["channels.connection.status"],
                 s.attributes["channels.frames.sent"], s.attributes["channels.frames.received"])
                for s in ends] == [
            (1000, None, 0, "closed", 1, 0),   # close(1000, "done") right after a send
            (1000, None, 0, "closed", 2, 1),   # the server's 1000
            (1011, "1011", 2, "error", 2, 1),  # the consumer raised: daphne sends 1011
            (4003, "4003", 2, "error", 2, 1),
        ]
        assert ends[0].attributes["websocket.close.reason"] == "done"
        connects = named(spans, "connect /ws/close/<room>/", "closer")
        assert len(connects) == 4
        for end in ends:
            assert end.kind == "INTERNAL"
            assert end.parent_span_id == ""
            assert end.attributes["channels.connection.duration"] > 0
            assert len(end.links) == 1 and end.links[0] in {(c.trace_id, c.span_id)
                                                            for c in connects}
        assert page.errors == []


RECONNECT_PAGE = """(room) => new Promise((resolve) => {
  const { TracedWebSocket, TracedEventSource } = window.traced;
  window.opens = 0; window.closes = []; window.got = [];
  const ws = window.ws = new TracedWebSocket(`/ws/chat-traced/${room}/`, undefined, {
    route: "/ws/chat-traced/<room>/", reconnect: true, maxRetries: 40, backoffBase: 200,
    backoffCap: 1000 });
  ws.addEventListener("open", () => { window.opens += 1; resolve(); });
  ws.addEventListener("close", (e) => window.closes.push([e.code, ws.readyState]));
  const source = window.source = new TracedEventSource(`/events/${room}/`, {},
    { route: "/events/<room>/", retry: 300, backoffCap: 1000 });
  source.addEventListener("chat.message", (e) => window.got.push(JSON.parse(e.data).text));
})"""


@pytest.mark.redis
def test_reconnect_after_a_worker_restart(context: Any, redis_url: str) -> None:  # noqa: F811
    """The socket reconnects with backoff; the stream resumes with Last-Event-ID (replay)."""
    room = f"r{uuid.uuid4().hex[:8]}"
    with two_workers(redis_url, prefix="brreconnect",
                     extra_env={"OTEL_CHANNELS_JSON": SETTINGS}) as (receiver, a, b):
        page = open_page(context, b.url, receiver.endpoint, "page")
        # A stream of the room on A too: its hub logs the plain group_send made while B is
        # down (docs/sse.md, "Ids and replay"), so B can replay it.
        keeper = open_page(context, a.url, None, "keeper")
        keeper.evaluate(f"window.keep = new EventSource('/events/{room}/')")
        keeper.wait_for_function("window.keep.readyState === 1")
        page.evaluate(RECONNECT_PAGE, room)
        page.wait_for_function("window.source.readyState === 1")
        time.sleep(0.3)
        httpx.post(f"{a.url}/broadcast/{room}/", json={"text": "before"}, timeout=10)
        page.wait_for_function("window.got.includes('before')")

        b.stop()
        page.wait_for_function("window.closes.length >= 1")
        httpx.post(f"{a.url}/broadcast/{room}/", json={"text": "while down"}, timeout=10)
        b.start(timeout=60)
        page.wait_for_function("window.opens >= 2", timeout=60_000)
        page.wait_for_function("window.got.includes('while down')", timeout=60_000)
        assert page.evaluate("window.got") == ["before", "while down"]  # replayed once
        assert page.evaluate("window.ws.readyState") == 1
        assert page.evaluate("window.ws.reconnects") >= 1
        assert page.evaluate("window.source.reconnects") >= 1
        code = page.evaluate("window.closes[0][0]")
        assert code in (1001, 1006)
        page.evaluate("window.ws.send(JSON.stringify({ text: 'back' }))")
        page.wait_for_function("window.got.includes('back')")
        flush(page)

        route = "/ws/chat-traced/<room>/"
        def sent_and_received(spans: list[Span]) -> bool:
            sends = {s.span_id for s in named(spans, f"send {route}", "page")}
            return any(s.parent_span_id in sends and s.service == "worker-b" for s in spans)

        spans = receiver.wait_for(sent_and_received, 30)
        (down,) = named(spans, f"disconnect {route}", "page")
        assert down.attributes["websocket.close.code"] == code
        assert down.attributes.get("error.type") == (None if code == 1001 else "1006")
        retried = [s for s in named(spans, f"connect {route}", "page")
                   if s.attributes.get("http.request.resend_count")]
        assert retried and retried[-1].status_code != 2  # the last attempt succeeded
        sse_retried = [s for s in named(spans, "connect /events/<room>/", "page")
                       if s.attributes.get("http.request.resend_count")]
        assert sse_retried and sse_retried[-1].attributes["http.response.status_code"] == 200
        (send,) = named(spans, f"send {route}", "page")  # the reconnected socket's, traced
        assert send.links == [(retried[-1].trace_id, retried[-1].span_id)]


BURST_PAGE = """([room, count]) => new Promise((resolve) => {
  const ws = window.ws || (window.ws = new window.traced.TracedWebSocket(
    `/ws/echo/${room}/`, undefined, { route: "/ws/echo/<room>/" }));
  let got = 0;
  const go = () => {
    ws.onmessage = () => { got += 1; if (got === count) resolve(got); };
    for (let i = 0; i < count; i++) ws.send(JSON.stringify({ i, pad: "x".repeat(200) }));
  };
  if (ws.readyState === 1) go(); else ws.onopen = go;
})"""


def test_a_burst_of_1000_messages_in_bounded_memory(context: Any) -> None:  # noqa: F811
    """1,000 messages out and 1,000 in, twice: the page's heap does not grow with them."""
    room = f"b{uuid.uuid4().hex[:8]}"
    with OTLPReceiver() as receiver, running(_worker(receiver)) as (worker,):
        page = open_page(context, worker.url, receiver.endpoint, "burst")
        cdp = page.context.new_cdp_session(page)

        def heap() -> int:
            flush(page)
            cdp.send("HeapProfiler.collectGarbage")
            return int(cdp.send("Runtime.getHeapUsage")["usedSize"])

        assert page.evaluate(BURST_PAGE, [room, 200]) == 200  # warm-up: code paths compiled
        before = heap()
        started = time.monotonic()
        assert page.evaluate(BURST_PAGE, [room, 1000]) == 1000
        burst = time.monotonic() - started
        after_one = heap()
        assert page.evaluate(BURST_PAGE, [room, 1000]) == 1000
        after_two = heap()
        print(f"heap: {before} -> {after_one} -> {after_two} bytes; 1,000 echoes in {burst:.2f} s")
        assert after_one - before < 512_000  # measured: about 100 kB (compiled code, caches)
        assert after_two - after_one < 256_000  # measured: about 10 kB
        spans = receiver.wait_for(lambda spans: len(named(
            spans, "receive /ws/echo/<room>/", "burst")) >= 2200, 60)
        assert len(named(spans, "send /ws/echo/<room>/", "burst")) == 2200
        assert page.errors == []
