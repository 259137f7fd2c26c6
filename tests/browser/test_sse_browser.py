"""A real browser: headless Chromium's EventSource against a daphne worker on Redis.

The worker is restarted mid-stream (the server drops the stream, as in a
deploy); events broadcast while it is down are in the Redis log, and the
browser's own reconnection, carrying ``Last-Event-ID``, gets them back.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
import uuid
from typing import Any

import pytest

from otel_channels import replay
from otel_channels.broadcast import abroadcast
from tests.support.redis_layer import delete_keys, redis_layer_config
from tests.support.servers import DaphneWorker

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.multiprocess,
              pytest.mark.timeout(120)]

PAGE_SCRIPT = """
(room) => {
  window.got = []; window.opens = 0; window.errors = 0;
  const source = new EventSource(`/events/${room}/`);
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.addEventListener("chat.message", (e) => window.got.push([e.lastEventId, e.data]));
  source.addEventListener("stream-reset", (e) => window.got.push(["reset", e.data]));
  window.source = source;
}
"""


@pytest.fixture
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} does not exist")
        pytest.skip(f"{CHROMIUM} is not installed")
    return CHROMIUM


async def wait_js(page: Any, expression: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        await asyncio.sleep(0.05)


async def test_chromium_eventsource_resumes_after_the_server_drops_it(redis_url, chromium_path):
    from django.test import override_settings
    from playwright.async_api import async_playwright

    room = "b" + "".join(random.choice(string.ascii_lowercase) for _ in range(10))
    group = f"room_{room}"
    prefix = f"ssebrowser{uuid.uuid4().hex[:8]}"
    env = {"CHANNEL_BACKEND": "redis", "CHANNEL_PREFIX": prefix, "REDIS_URL": redis_url,
           "OTEL_CHANNELS_JSON": json.dumps({"SSE_RETRY": 300})}
    layers = {"default": redis_layer_config(redis_url, prefix=prefix)}
    worker = DaphneWorker(env, name="sse-browser").start()
    restarted: DaphneWorker | None = None
    replay.reset()
    try:
        with override_settings(CHANNEL_LAYERS=layers):
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=chromium_path, args=[
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking"])
                try:
                    page = await browser.new_page()
                    requests: list[Any] = []
                    page.on("request", lambda r: requests.append(r)
                            if "/events/" in r.url else None)
                    await page.goto(f"{worker.url}/health/")  # same origin as the stream
                    await page.evaluate(PAGE_SCRIPT, room)
                    await wait_js(page, "window.opens === 1")
                    ids = [await abroadcast(group, "chat.message", {"text": t})
                           for t in ("e1", "e2")]
                    await wait_js(page, "window.got.length === 2")

                    worker.stop()  # the server drops the stream
                    await wait_js(page, "window.errors >= 1")
                    ids += [await abroadcast(group, "chat.message", {"text": t})
                            for t in ("e3", "e4")]  # while nobody listens
                    restarted = DaphneWorker(env, name="sse-browser-2", port=worker.port).start()
                    await wait_js(page, "window.opens === 2", timeout=30)
                    await wait_js(page, "window.got.length === 4")
                    ids.append(await abroadcast(group, "chat.message", {"text": "e5"}))
                    await wait_js(page, "window.got.length === 5")
                    got = await page.evaluate("window.got")
                    sent = [await r.all_headers() for r in requests]  # as sent on the wire
                    resumed = [h for h in sent if "last-event-id" in h]
                finally:
                    await browser.close()
    finally:
        worker.stop()
        if restarted is not None:
            restarted.stop()
            print(restarted.output()[-3000:])
        print(worker.output()[-3000:])
        replay.reset()
        delete_keys(redis_url, prefix)

    assert got == [[event_id, json.dumps({"text": f"e{n}"}, separators=(",", ":"))]
                   for n, event_id in enumerate(ids, 1)]  # in order, none missed, none twice
    assert "last-event-id" not in sent[0]
    assert resumed and resumed[0]["last-event-id"] == ids[1]  # the browser's own header
