"""The example chat in a real browser: headless Chromium on two daphne workers sharing Redis.

Playwright's python package drives Debian's ``/usr/bin/chromium``. Skipped only
when Chromium is absent and ``REQUIRE_BROWSER`` is unset (CI sets it).

``UPDATE_SCREENSHOT=1`` also writes the trace view's picture to
``docs/trace-view.png`` (the README's screenshot).
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import browser  # noqa: F401
from tests.support.example import example_worker, migrate, running
from tests.support.servers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.multiprocess, pytest.mark.redis,
              pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "trace-view.png"
TIMEOUT_MS = 20_000


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as daphne binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def two_ports() -> tuple[int, int]:
    """Two free ports whose workers get different colours (the palette is chosen by port).

    The README's picture uses 8000 and 8001, as the tour does, when they are free.
    """
    if os.environ.get("UPDATE_SCREENSHOT") == "1" and _free(8000) and _free(8001):
        return 8000, 8001
    first = free_port()
    for _ in range(50):
        second = free_port()
        if second % 8 != first % 8:
            return first, second
    return first, free_port()


class PageErrors:
    """JavaScript exceptions and console errors of the pages under test."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any, name: str) -> Any:
        page.on("pageerror", lambda exc: self.errors.append(f"{name}: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(
            f"{name}: console: {msg.text}"))
        return page

    def unexpected(self) -> list[str]:
        # Worker B going away (the reconnect step) makes Chromium log the broken
        # stream and the refused attempts on B's pages: those are the point, not bugs.
        outage = ("ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED_ENCODING",
                  "WebSocket connection to")
        return [e for e in self.errors
                if not (e.split(":", 1)[0].endswith("@B") and any(o in e for o in outage))]


def message_rows(page: Any) -> list[str]:
    return page.eval_on_selector_all("li.message .text", "els => els.map(e => e.textContent)")


def wait_for_message(page: Any, text: str) -> None:
    page.locator("li.message .text", has_text=text).first.wait_for(timeout=TIMEOUT_MS)


def send(page: Any, text: str, via: str = "websocket") -> None:
    page.select_option("#via", via)
    page.fill("#text", text)
    page.click("#send")


def test_chat_across_two_workers_follower_and_trace_view(
    browser: Any, redis_url: str, tmp_path: Path,  # noqa: F811
) -> None:
    database = migrate(tmp_path / "chat.sqlite3")
    a_port, b_port = two_ports()
    env = {"REDIS_URL": redis_url, "CHANNEL_PREFIX": f"exbrowser{uuid.uuid4().hex[:10]}"}
    room = "lobby"  # the tour's room; this run has its own database and channel prefix
    group = f"chat_{room}"
    worker_a = example_worker(database, f"chat-{a_port}", a_port, **env)
    worker_b = example_worker(database, f"chat-{b_port}", b_port, **env)
    errors = PageErrors()
    with running(worker_a, worker_b) as (a, b):
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            traces = errors.watch(context.new_page(), "traces")
            traces.goto(f"{a.url}/traces/")
            traces.wait_for_selector("#status.open")

            page_a = errors.watch(context.new_page(), "room@A")
            page_a.goto(f"{a.url}/rooms/{room}/?name=ada")
            page_b = errors.watch(context.new_page(), "room@B")
            page_b.goto(f"{b.url}/rooms/{room}/?name=grace")
            follower = errors.watch(context.new_page(), "follower@B")
            follower.goto(f"{b.url}/rooms/{room}/follow/")
            for page in (page_a, page_b):
                page.wait_for_selector("#chat[data-state=open]")
            follower.wait_for_selector("#follow[data-state=open]")
            assert page_a.get_attribute("#chat", "data-worker") == a.name
            assert page_b.get_attribute("#chat", "data-worker") == b.name

            # Typed on worker A: shown on A, on B, and on the EventSource follower.
            send(page_a, "hello from worker A")
            for page in (page_a, page_b, follower):
                wait_for_message(page, "hello from worker A")
            row_b = page_b.locator("li.message", has_text="hello from worker A")
            chips = row_b.locator(".worker-chip").all_text_contents()
            assert chips == [a.name, b.name]  # sent via A, delivered by B
            assert row_b.locator(".via").text_content() == "websocket"

            # Sent from B as an HTTP POST: broadcast() reaches A and the follower too.
            send(page_b, "posted on worker B", via="http")
            for page in (page_a, page_b, follower):
                wait_for_message(page, "posted on worker B")
            assert page_a.locator("li.message", has_text="posted on worker B").locator(
                ".via").text_content() == "http"

            # The trace view: one trace holding the frame on A and deliveries on both workers.
            process = f'.span-row[data-span-name="process {group}"]'
            selector = (f'section.trace:has(.span-row[data-span-name="group_send {group}"])'
                        f':has({process}[data-worker="{a.name}"])'
                        f':has({process}[data-worker="{b.name}"])')
            card = traces.locator(selector).first
            card.wait_for()
            assert sorted(card.get_attribute("data-workers").split(",")) == sorted([a.name, b.name])
            # The pages' spans (browser module + web SDK, through /otlp/v1/traces) in the same
            # trace: A's send at the root, B's and the follower's receives under the deliveries.
            route = "/ws/chat/<room>/"
            for span_name, page_name in ((f"send {route}", f"room@{a.name}"),
                                         (f"receive {route}", f"room@{b.name}"),
                                         ("receive /rooms/<room>/events/", f"follower@{b.name}")):
                card.locator(f'.span-row.client[data-span-name="{span_name}"]'
                             f'[data-worker="{page_name}"]').first.wait_for()
            rows = card.locator(".span-row")
            names = rows.evaluate_all("rows => rows.map(r => r.dataset.spanName)")
            assert names[0] == f"send {route}"  # typed on page A: the trace starts there
            assert rows.first.get_attribute("data-worker") == f"room@{a.name}"
            assert names[1] == f"receive {route}"  # the frame on worker A, child of the send
            assert f"group_send {group}" in names
            # deliveries are drawn as children of the broadcast: indented one level deeper
            depth = rows.evaluate_all(
                "rows => rows.map(r => [r.dataset.spanName, "
                "getComputedStyle(r.querySelector('.span-name')).getPropertyValue('--depth')])")
            depths = {name: int(d) for name, d in depth if name != f"process {group}"}
            process_depths = {int(d) for name, d in depth if name == f"process {group}"}
            assert process_depths == {depths[f"group_send {group}"] + 1}
            # a WebSocket consumer's delivery links its connect span, in another trace: a
            # chip (one per socket, on both workers; the SSE follower's receipt has none)
            process_rows = card.locator(f'.span-row[data-span-name="process {group}"]')
            assert process_rows.locator(".ext-link").count() >= 2
            colours = card.locator(".span-row:not(.client) .bar").evaluate_all(
                "bars => [...new Set(bars.map(b => getComputedStyle(b).backgroundColor))]")
            assert len(colours) == 2  # one colour per worker
            client_colours = card.locator(".span-row.client .bar").evaluate_all(
                "bars => [...new Set(bars.map(b => getComputedStyle(b).backgroundColor))]")
            assert len(client_colours) == 1 and client_colours[0] not in colours  # the pages

            # Cross-origin: a page from another origin cannot open a socket on A.
            evil = context.new_page()
            evil.route("http://evil.example/**", lambda route: route.fulfill(
                status=200, content_type="text/html", body="<!doctype html><title>evil</title>"))
            evil.goto("http://evil.example/")
            outcome = evil.evaluate(
                """url => new Promise(resolve => {
                    const ws = new WebSocket(url);
                    ws.onopen = () => resolve("open");
                    ws.onclose = (e) => resolve("closed " + e.code);
                })""", f"{a.ws_url}/ws/chat/{room}/")
            assert outcome == "closed 1006"  # the handshake got 403: never opened
            evil.close()

            # Worker B goes away: its room page and follower show it and come back on
            # their own; a message posted meanwhile reaches the follower by replay.
            b.stop()
            page_b.wait_for_selector("#chat[data-state=closed]")
            send(page_a, "while B was down", via="http")
            wait_for_message(page_a, "while B was down")
            b.start(timeout=60)
            page_b.wait_for_selector("#chat[data-state=open]", timeout=40_000)
            wait_for_message(page_b, "while B was down")  # history on rejoin
            wait_for_message(follower, "while B was down")  # Last-Event-ID replay
            assert message_rows(follower).count("while B was down") == 1
            send(page_b, "B is back")
            for page in (page_a, follower):
                wait_for_message(page, "B is back")

            # The picture for the README: the trace view of this two-worker run.
            traces.locator("#hide-conn").check()
            traces.evaluate("window.scrollTo(0, 0)")
            traces.wait_for_timeout(1000)  # let the arrival highlight fade
            shot = tmp_path / "trace-view.png"
            traces.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 20_000
            if os.environ.get("UPDATE_SCREENSHOT") == "1":
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)
        finally:
            context.close()
    assert errors.unexpected() == []


def test_trace_view_on_a_phone_shows_the_kind_legend_and_earlier_spans(
    browser: Any, redis_url: str, tmp_path: Path,  # noqa: F811
) -> None:
    """375 px wide, opened after a message was posted on the other worker: the span-kind
    legend is on screen and the waterfall starts with that message's trace (replayed)."""
    database = migrate(tmp_path / "chat.sqlite3")
    env = {"REDIS_URL": redis_url, "CHANNEL_PREFIX": f"exphone{uuid.uuid4().hex[:10]}"}
    a_port, b_port = two_ports()
    errors = PageErrors()
    with running(example_worker(database, f"chat-{a_port}", a_port, **env),
                 example_worker(database, f"chat-{b_port}", b_port, **env)) as (a, b):
        response = httpx.post(f"{b.url}/rooms/phone/messages/", timeout=10,
                              json={"user": "ann", "text": "sent before the page opened"})
        assert response.status_code == 201, response.text
        context = browser.new_context(viewport={"width": 375, "height": 740},
                                      is_mobile=True, has_touch=True)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = errors.watch(context.new_page(), "traces")
            page.goto(f"{a.url}/traces/")
            page.wait_for_selector("#status.open")
            card = page.locator('section.trace:has(.span-row[data-span-name="save message"])'
                                f':has(.span-row[data-worker="{b.name}"])').first
            card.wait_for()
            legend = page.locator("#kind-key")
            assert legend.is_visible()
            box = legend.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
            assert legend.inner_text().split() == ["SRV", "server", "PRD", "producer", "CON",
                                                   "consumer", "INT", "internal", "⇢", "link"]
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            card_box = card.bounding_box()
            assert card_box is not None and card_box["x"] + card_box["width"] <= 375, card_box
        finally:
            context.close()
    assert errors.unexpected() == []
