"""The ``gc.freeze()`` recipe of docs/performance.md, run by a real daphne worker.

``tests/project/asgi_frozen.py`` is the test project's ``asgi.py`` with the
documented lines at its end: the worker must report frozen objects (its
``/debug/state/`` view reads ``gc.get_freeze_count()``), hold few objects in
the collector's generations, and still trace (a ``receive`` span exported).
The documented block and the module's lines must be the same text.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.otlp import OTLPReceiver, wait_spans
from tests.support.servers import DaphneWorker

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
RECIPE_MODULE = ROOT / "tests" / "project" / "asgi_frozen.py"
PERFORMANCE = ROOT / "docs" / "performance.md"


def _module_recipe() -> str:
    text = RECIPE_MODULE.read_text()
    found = re.search(r"# -- recipe: end of asgi.py --\n(.*?)# -- end of recipe --", text, re.S)
    assert found, "asgi_frozen.py lost its recipe markers"
    return found.group(1).strip()


def _documented_recipe() -> str:
    section = PERFORMANCE.read_text().split("## Freezing the start-up heap", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "docs/performance.md has no recipe block"
    return blocks[0].strip()


def test_the_documented_recipe_is_the_one_tested() -> None:
    assert _module_recipe() == _documented_recipe()
    assert "gc.freeze()" in _module_recipe()


def _state(worker: DaphneWorker) -> dict[str, object]:
    response = httpx.get(f"{worker.url}/debug/state/", params={"gc": "1"}, timeout=20)
    response.raise_for_status()
    state: dict[str, object] = response.json()
    return state


def test_a_daphne_worker_freezes_its_start_up_heap_and_still_traces() -> None:
    with OTLPReceiver() as receiver:
        env = {**receiver.env(), "OTEL_CHANNELS_JSON": json.dumps({})}
        frozen = DaphneWorker(env, app="tests.project.asgi_frozen:application", name="frozen")
        plain = DaphneWorker(env, name="unfrozen")
        with frozen, plain:
            frozen_state, plain_state = _state(frozen), _state(plain)

            async def echo() -> str:
                async with connect(f"{frozen.ws_url}/ws/echo/room-freeze/") as ws:
                    await ws.send(json.dumps({"hello": "frozen"}))
                    return str(await asyncio.wait_for(ws.recv(), 10))

            assert json.loads(asyncio.run(echo())) == {"hello": "frozen"}
            spans = asyncio.run(wait_spans(receiver, lambda found: any(
                s.name.startswith("receive ") and s.service == "frozen" for s in found)))

    # The start-up heap (Django, Channels, daphne, OpenTelemetry, otel_channels) is frozen:
    # tens of thousands of objects no collection walks any more.
    assert isinstance(frozen_state["gc_frozen"], int) and frozen_state["gc_frozen"] > 50_000
    assert plain_state["gc_frozen"] == 0
    tracked, unfrozen = frozen_state["gc_tracked"], plain_state["gc_tracked"]
    assert isinstance(tracked, int) and isinstance(unfrozen, int)
    assert tracked < unfrozen // 4  # what a full collection walks: ~4,000 against ~100,000
    assert any(s.name == "receive /ws/echo/<room>/" for s in spans if s.service == "frozen")
