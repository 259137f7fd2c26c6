"""Headless Chromium for the browser-module tests: pages of our own on a worker's origin.

Playwright (python) drives Debian's ``/usr/bin/chromium``. The test project's
workers serve the page, the module (from the app's static files) and the
OpenTelemetry JS web SDK bundle under ``/_browser/`` (tests/project/browser.py),
so the page, its WebSocket and its event stream share the worker's origin; the
spans go cross-origin to the in-test OTLP receiver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000


def open_page(context: Any, origin: str, otlp: str | None, service: str,
              tracing: bool = True) -> Any:
    """A page of ours on ``origin`` (a worker), exporting spans to ``otlp`` as ``service``.

    ``otlp`` None: no SDK on the page; ``tracing`` False: the SDK is registered but the
    module is not configured with it.
    """
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.errors = errors
    query = f"service={service}&tracing={int(tracing)}" + (f"&otlp={otlp}" if otlp else "")
    tab.goto(f"{origin}/_browser/page.html?{query}")
    tab.wait_for_function("window.ready === true", timeout=TIMEOUT_MS)
    return tab


def flush(page: Any) -> None:
    """Export the page's finished spans now."""
    page.evaluate("window.provider && window.provider.forceFlush()")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} does not exist")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()
