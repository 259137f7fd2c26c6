"""Protocol close codes under real daphne: autobahn refuses 1003/1007/1008/1009 from a
server, so the traced consumers send 4000 + code instead of crashing with 1011."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.support.servers import DaphneWorker

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def worker():
    settings = {"MAX_FRAME_SIZE": 64, "BAD_FRAME_POLICY": "close", "MAX_FRAME_RATE": 50}
    with DaphneWorker({"OTEL_CHANNELS_JSON": json.dumps(settings)}, name="close-codes") as w:
        yield w


async def close_code_after(url: str, *frames) -> int:
    async with websockets.connect(url) as ws:
        for frame in frames:
            await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(len(frames) + 1):  # echoes of frames handled before the close
                await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code


@pytest.mark.parametrize(("frames", "code"), [
    (['{"text": "' + "x" * 100 + '"}'], 4009),        # MAX_FRAME_SIZE
    (["{not json"], 4007),                             # malformed JSON
    ([b"\x00\x01"], 4003),                             # binary frame to a JSON consumer
    (['{"n": 1}'] * 200, 4008),                        # MAX_FRAME_RATE flood
])
async def test_close_codes_reach_the_client(worker, frames, code):
    url = f"{worker.ws_url}/ws/echo/r/"
    assert await close_code_after(url, *frames) == code
    await asyncio.sleep(0.2)
    log = worker.output()
    assert "invalid close code" not in log
    assert "Traceback" not in log
