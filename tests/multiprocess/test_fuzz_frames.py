"""Property tests: arbitrary WebSocket frames into every consumer kind on real daphne.

Workers: the session's ``fuzz_workers`` (tests/fuzzproject, ``BAD_FRAME_POLICY="close"``).
Each example is a short list of frames (any text, any bytes, JSON with hostile
``traceparent`` / ``tracestate`` values, awkward literals) sent on a fresh
connection to each kind; the expected outcome is modelled with Python's own
``json.loads`` (what Channels' ``decode_json`` is):

* text / binary consumers (``TracedWebsocketConsumer``, ``TracedAsyncWebsocketConsumer``)
  echo every frame, byte for byte (daphne never sends an empty one);
* traced JSON consumers echo each decodable frame and close at the first one they
  cannot decode: **4003** for a binary frame, **4007** for empty text or malformed
  JSON (1003 / 1007 under daphne, docs/settings.md), nothing after it;
* Channels' own ``AsyncJsonWebsocketConsumer`` only gets decodable JSON (its bad-frame
  behaviour is Channels', a ``ValueError``).

**Assumption (documented here):** a text frame that ``json.loads`` refuses with
``RecursionError`` (nesting deeper than the parser's stack) is undecodable like
malformed JSON: close 4007, no traceback. Today ``RecursionError`` is not a
``ValueError``; the consumers only catch the latter.

And always: no traceback in either worker's log, no ERROR span except the
documented bad-frame records (``error.type`` ``malformed_json`` / ``binary_frame`` /
``empty_frame``).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzproject.consumers import KINDS
from tests.fuzzproject.harness import (
    FuzzWorkers,
    error_spans,
    event_loop,
    examples,
    hypothesis_profile,
    tracebacks,
)

pytestmark = [pytest.mark.redis, pytest.mark.multiprocess, pytest.mark.timeout(300)]

#: ERROR spans a bad frame may cause: the ``receive`` span's record (docs/reliability.md)
#: and the ``disconnect`` span of the close it caused (docs/spans.md: a 4xxx close code
#: is the ``error.type``).
BAD_FRAMES = ("malformed_json", "binary_frame", "empty_frame", "4003", "4007")
TRACED_JSON = {"async-json", "sync-json"}
CLOSE_BINARY, CLOSE_MALFORMED = 4003, 4007
DEEP = 100_000

# -- strategies ------------------------------------------------------------------------------

json_keys = st.text(max_size=8) | st.sampled_from(["traceparent", "tracestate", "type", "text"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children,
                                                                      max_size=4),
    max_leaves=12,
)
tp_values = st.one_of(
    st.builds("00-{:032x}-{:016x}-{:02x}".format, st.integers(1, 2**128 - 1),
              st.integers(1, 2**64 - 1), st.integers(0, 255)),
    st.text(alphabet="0123456789abcdefABCDEF-", min_size=50, max_size=60),
    st.just("0" * 65536),
    json_values,
)
traceparent_frames = st.fixed_dictionaries(
    {"traceparent": tp_values},
    optional={"tracestate": st.text(max_size=600) | json_values, "text": st.text(max_size=20)},
).map(json.dumps)
AWKWARD = [
    "", " ", "null", "NaN", "-Infinity", "1e999", "0" * 5000, "1" * 5000, "\ufeff{}",
    '{"a":1}{"b":2}', '{"a":1,"a":2}', "[1,]", '"\\ud800"', "\x00", "{" * 30 + "}" * 30,
    '{"traceparent": "00-' + "1" * 32 + "-" + "1" * 16 + '-01", "tracestate": "' + "k=v," * 200
    + '"}',
]
frames_strategy = st.lists(
    st.one_of(st.text(max_size=300), st.binary(max_size=300), json_values.map(json.dumps),
              traceparent_frames, st.sampled_from(AWKWARD)),
    min_size=1, max_size=4,
)

# -- the model -------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def decodes(frame: str | bytes) -> tuple[bool, Any]:
    if isinstance(frame, bytes) or not frame:
        return False, None
    try:
        return True, json.loads(frame)
    except (ValueError, RecursionError):
        return False, None


def model(kind: str, frames: list[str | bytes]) -> tuple[list[str | bytes], list[Any],
                                                          int | None]:
    """(frames to send, expected replies, expected close code or None)."""
    if kind == "plain-json":
        frames = [f for f in frames if decodes(f)[0]]
    if not KINDS[kind][1]:  # text / binary consumers echo everything...
        # ...but daphne sends no empty frame (``if message.get("text")`` in its
        # ws_protocol): an empty echo never reaches the client. The server's choice.
        return frames, [f for f in frames if f], None
    sent: list[str | bytes] = []
    replies: list[Any] = []
    for frame in frames:
        sent.append(frame)
        ok, value = decodes(frame)
        if not ok:
            return sent, replies, CLOSE_BINARY if isinstance(frame, bytes) else CLOSE_MALFORMED
        replies.append(canonical(value))
    return sent, replies, None


async def exchange(url: str, kind: str, frames: list[str | bytes]) -> None:
    """Send ``frames`` on a fresh connection; check the replies and the close."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    sent, replies, close = model(kind, frames)
    if not sent:
        return
    ws = await connect(url, open_timeout=10, ping_interval=None, close_timeout=2,
                       max_size=None)
    try:
        for frame in sent:
            await ws.send(frame)
        got: list[Any] = []
        for _ in replies:
            raw = await asyncio.wait_for(ws.recv(), 10)
            got.append(canonical(json.loads(raw)) if KINDS[kind][1] else raw)
        assert got == replies, (kind, sent, got, replies)
        if close is None:
            with pytest.raises(asyncio.TimeoutError):  # nothing more
                await asyncio.wait_for(ws.recv(), 0.05)
            await ws.close()
            assert ws.close_code == 1000, (kind, sent, ws.close_code)
            return
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        code = closed.value.rcvd.code if closed.value.rcvd else None
        assert code == close, (kind, sent, code, close)
    finally:
        await ws.close()


def assert_clean(workers: FuzzWorkers, mark: dict[str, int],
                 loop: asyncio.AbstractEventLoop) -> None:
    found = tracebacks(workers.logs_since(mark))
    assert all(not lines for lines in found.values()), found
    loop.run_until_complete(asyncio.sleep(0.5))  # the last span batches (100 ms delay)
    errors = error_spans(workers.spans_since(mark), BAD_FRAMES)
    assert errors == [], errors[:20]
    assert workers.alive()


# -- the properties --------------------------------------------------------------------------


def test_arbitrary_frames_into_every_consumer_kind(fuzz_workers: FuzzWorkers) -> None:
    room = str(random.randrange(10**9))
    mark = fuzz_workers.mark()
    turn = [0]
    with event_loop() as loop:
        @settings(max_examples=examples(40), **hypothesis_profile())
        @given(frames=frames_strategy)
        def check(frames: list[str | bytes]) -> None:
            worker = fuzz_workers.workers[turn[0] % 2]
            turn[0] += 1

            async def every_kind() -> None:
                for kind in KINDS:
                    await exchange(f"{worker.ws_url}/ws/fuzz/{kind}/{room}/", kind, frames)

            loop.run_until_complete(asyncio.wait_for(every_kind(), 60))
            found = tracebacks(fuzz_workers.logs_since(mark))
            assert all(not lines for lines in found.values()), (frames, found)

        check()
        assert_clean(fuzz_workers, mark, loop)


DEEP_ARRAY = "[" * DEEP + "]" * DEEP
TP = "00-" + "1" * 32 + "-" + "1" * 16 + "-01"


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("frame", [
    pytest.param(DEEP_ARRAY, id="deep-array"),
    pytest.param('{"traceparent": "' + TP + '", "x": ' + DEEP_ARRAY + "}", id="deep-traceparent"),
    pytest.param("x" * 200_000, id="200k-text"),
    pytest.param(b"\x00" * 200_000, id="200k-binary"),
    pytest.param('{"traceparent": "' + "0" * 1_000_000 + '"}', id="1mb-traceparent"),
])
def test_hostile_frames(fuzz_workers: FuzzWorkers, kind: str, frame: str | bytes) -> None:
    """Fixed hostile frames on both workers: the same model, no traceback, no ERROR span
    beyond the bad-frame records. (Deep nesting: see the module's assumption.)"""
    mark = fuzz_workers.mark()
    room = str(random.randrange(10**9))
    with event_loop() as loop:
        for worker in fuzz_workers.workers:
            loop.run_until_complete(asyncio.wait_for(
                exchange(f"{worker.ws_url}/ws/fuzz/{kind}/{room}/", kind, [frame, '{"n":1}']),
                60))
        assert_clean(fuzz_workers, mark, loop)
