"""Property tests: arbitrary group messages and hostile carriers, through real Redis, to
every consumer kind and to SSE streams on two real daphne workers.

Producers are this test process: a channels-redis layer on the workers' prefix,
sending either *raw* (the instrumentor's wrapper bypassed, as an untraced or
hostile producer in another service would: whatever is under ``_otel`` arrives
as is) or *traced* (the instrumented ``group_send``: a hostile dict under
``_otel`` is merged with ours). Receivers, per worker: one WebSocket of each of
the four ``otel_channels.consumers`` classes and of Channels' own
``AsyncJsonWebsocketConsumer`` (tests/fuzzproject/consumers.py forwards events
losslessly), and one ``EventStreamView`` stream (default format).

For every example, every client gets the message exactly once, without the
carrier key; no worker logs a traceback; no exported span is ERROR unless its
``error.type`` is ``bad_carrier`` (the library may record a carrier it ignored
that way; it may also record nothing).

**SSE and bytes (assumption).** docs/sse.md: "``data:`` the compact JSON of the
other keys (the trace carrier removed)". JSON has no bytes; the docs do not say
how they are shown. Assumed here: the event is still delivered, in order and
once, and each ``bytes`` value is rendered as *some* JSON string (today's
``_sse_wire._json_default`` decodes UTF-8 with replacement; base64 would do as
well). Everything else must round-trip exactly. ``data`` must be strict JSON
(RFC 8259: no ``NaN`` / ``Infinity``), or a browser's ``JSON.parse`` fails.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzzproject.consumers import BYTES_TAG, KINDS
from tests.fuzzproject.harness import (
    CARRIER_KEY,
    MESSAGE_TYPE,
    FuzzWorkers,
    SSEClient,
    WSClient,
    error_spans,
    event_loop,
    examples,
    hypothesis_profile,
    raw_group_send,
    redis_layer,
    sse_expected,
    strict_json,
    tracebacks,
)

pytestmark = [pytest.mark.redis, pytest.mark.multiprocess, pytest.mark.timeout(300)]

#: How long one example may take to reach every client.
DELIVERY_TIMEOUT = 5.0
ABSENT = object()  # no carrier key at all

# -- strategies ----------------------------------------------------------------------------

MSGPACK_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
RESERVED = {"type", CARRIER_KEY, "__asgi_channel__", "fuzz_id"}
body_keys = st.text(min_size=1, max_size=12).filter(
    lambda k: k not in RESERVED and not k.startswith("__fuzz"))
body_leaves = (st.none() | st.booleans() | MSGPACK_INT
               | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=80) | st.binary(max_size=80))
big_values = (st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(1000, 4000))
              | st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4),
                          st.integers(500, 1500)))
body_values = st.recursive(
    body_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(body_keys, children,
                                                                      max_size=4),
    max_leaves=16,
)
#: A message body: any msgpack value channels-redis carries (str keys: what STRICT_PAYLOADS
#: and channels-redis's receiving side accept in the body), up to a few KB.
messages = st.dictionaries(body_keys, body_values | big_values, max_size=6)

#: Carrier leaves and keys: anything msgpack carries, NaN and infinities included, bytes keys.
hostile_keys = st.text(max_size=16) | st.binary(max_size=16)
hostile_leaves = (st.none() | st.booleans() | MSGPACK_INT | st.floats()
                  | st.text(max_size=64) | st.binary(max_size=64))
hostile_trees = st.recursive(
    hostile_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_keys, children,
                                                                      max_size=4),
    max_leaves=12,
)
HEX_TP = "00-{:032x}-{:016x}-{:02x}"
traceparents = st.one_of(
    st.builds(HEX_TP.format, st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1),
              st.integers(0, 255)),  # valid form, random ids and flags
    st.text(alphabet="0123456789abcdefABCDEF-", min_size=50, max_size=60),
    st.sampled_from([
        "ff-" + "1" * 32 + "-" + "1" * 16 + "-01",   # version ff
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",   # zero ids
        "00-" + "A" * 32 + "-" + "B" * 16 + "-01",   # uppercase hex
        "00-" + "1" * 32 + "-" + "1" * 16 + "-01-extra",
        "",
    ]),
    st.builds(lambda n: "0" * n, st.sampled_from([1024, 65536, 262144])),  # huge
    hostile_leaves,
    hostile_trees,
)
fake_carriers = st.fixed_dictionaries({}, optional={
    "traceparent": traceparents,
    "tracestate": st.one_of(st.text(max_size=600), st.just("k=v," * 300), hostile_leaves),
    "id": st.one_of(st.text(max_size=40), st.just("same-id-every-time"), hostile_leaves),
    "sent_at": st.one_of(st.floats(), MSGPACK_INT, hostile_leaves),
    "destination": st.one_of(st.text(max_size=40), st.just("x" * 5000), hostile_leaves),
    "sse_id": st.one_of(st.just("1-0"), st.just("99999999999999-0"), hostile_leaves),
    "sse_prev": st.one_of(st.just("0-0"), hostile_leaves),
    "sse_group": st.text(max_size=10),  # never this test's group: see the forged-id test
}).flatmap(lambda carrier: st.dictionaries(hostile_keys, hostile_trees, max_size=3).map(
    lambda extra: {**extra, **carrier}))
#: What may be found under the carrier key (``ABSENT``: no key).
carriers = st.one_of(
    st.just(ABSENT),
    fake_carriers,
    hostile_trees,
    st.builds(lambda n: "x" * n, st.sampled_from([10_000, 262_144])),
    st.just({"traceparent": b"\x00\xff", b"k": b"v"}),  # the issue's carrier
)

# -- one room: clients of every kind on both workers --------------------------------------


class Room:
    """Every consumer kind on both workers plus an SSE stream per worker, in one room."""

    def __init__(self, workers: FuzzWorkers, sse_per_worker: int = 1) -> None:
        self.workers = workers
        self.room = str(random.randrange(10**11, 10**12))  # digits: template fuzz_{id}
        self.group = f"fuzz_{self.room}"
        self.ws = [WSClient(w, kind, self.room) for w in workers.workers for kind in KINDS]
        self.sse = [SSEClient(w, f"/fuzz/events/{self.room}/") for w in workers.workers
                    for _ in range(sse_per_worker)]
        self.sent: list[str] = []
        self.layer: Any = None
        self.mark = workers.mark()  # this test's part of the logs and spans

    async def open(self) -> None:
        self.layer = redis_layer(self.workers.redis_url, self.workers.prefix)
        await asyncio.gather(*(c.open() for c in self.ws), *(c.open() for c in self.sse))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.ws), *(c.close() for c in self.sse))
        if self.layer is not None:
            await self.layer.close_pools()

    async def send(self, message: dict[str, Any], traced: bool) -> None:
        if traced:
            await self.layer.group_send(self.group, message)  # the instrumented wrapper
        else:
            await raw_group_send(self.layer, self.group, message)

    def healthy(self) -> list[str]:
        problems = [f"{c.name} closed {c.closed}" for c in self.ws if c.closed]
        problems += [f"{c.name} ended ({c.error})" for c in self.sse if c.ended]
        problems += [f"{c.name} stream-reset {e.data}" for c in self.sse for e in c.events
                     if e.event == "stream-reset"]
        problems += [f"{c.name} unexpected frame {f!r:.200}" for c in self.ws for f in c.other]
        return problems

    def missing(self, fuzz_id: str) -> list[str]:
        return ([c.name for c in self.ws if c.count(fuzz_id) == 0]
                + [c.name for c in self.sse if not c.fuzz_events(fuzz_id)])

    async def roundtrip(self, body: dict[str, Any], carrier: Any, traced: bool) -> None:
        """Send one message; every client must get it once, exactly as sent."""
        fuzz_id = uuid.uuid4().hex
        message = {**body, "type": MESSAGE_TYPE, "fuzz_id": fuzz_id}
        if carrier is not ABSENT:
            message[CARRIER_KEY] = carrier
        expected = {k: v for k, v in message.items() if k != CARRIER_KEY}
        mark = self.workers.mark()
        await self.send(message, traced)
        crashed: dict[str, list[str]] = {}
        for n in range(int(DELIVERY_TIMEOUT / 0.02)):  # bounded: DELIVERY_TIMEOUT
            if not self.missing(fuzz_id) or self.healthy():
                break
            if n % 5 == 4:  # a traceback: fail now, not after the timeout (fast shrinking)
                crashed = {k: v for k, v in tracebacks(self.workers.logs_since(mark)).items()
                           if v}
                if crashed:
                    await asyncio.sleep(0.2)  # what else arrives, for the message below
                    break
            await asyncio.sleep(0.02)
        assert not self.healthy(), self.healthy()
        crashed = {k: sorted(set(v)) for k, v in tracebacks(self.workers.logs_since(mark)).items()
                   if v}
        assert not self.missing(fuzz_id), (
            f"not delivered to {self.missing(fuzz_id)}; worker tracebacks: {crashed}")
        for client in self.ws:
            got = [e for e in client.events if e.get("fuzz_id") == fuzz_id]
            assert got == [expected], (client.name, got, expected)
        data = sse_expected({k: v for k, v in expected.items() if k != "type"})
        for stream in self.sse:
            got = stream.fuzz_events(fuzz_id)
            assert len(got) == 1, (stream.name, got)
            assert strict_json(got[0].data) == data, (stream.name, got[0].data, data)
        self.sent.append(fuzz_id)  # delivered everywhere: checked for duplicates from now on

    def check_exactly_once(self) -> None:
        """Every message sent so far reached every client once, SSE ids increasing."""
        for client in self.ws:
            counts = {i: client.count(i) for i in self.sent}
            assert all(n == 1 for n in counts.values()), (client.name, counts)
        for stream in self.sse:
            events = [e for e in stream.events if e.event == MESSAGE_TYPE]
            ids = [json.loads(e.data).get("fuzz_id") for e in events]
            ids = [i for i in ids if i in self.sent]  # not those of a failed example
            assert ids == self.sent, (stream.name, ids, self.sent)
            positions = [tuple(int(p) for p in e.id.split("-")) for e in events]
            assert positions == sorted(set(positions)), (stream.name, [e.id for e in events])


def final_checks(room: Room, loop: asyncio.AbstractEventLoop, allowed: tuple[str, ...]) -> None:
    loop.run_until_complete(asyncio.sleep(1.0))  # duplicates arriving late
    assert not room.healthy(), room.healthy()
    room.check_exactly_once()
    found = tracebacks(room.workers.logs_since(room.mark))
    assert all(not lines for lines in found.values()), found
    loop.run_until_complete(asyncio.sleep(1.0))  # the last span batches (100 ms delay)
    errors = error_spans(room.workers.spans_since(room.mark), allowed)
    assert errors == [], errors[:20]
    assert room.workers.alive()


# -- the properties --------------------------------------------------------------------------


def test_group_messages_reach_every_consumer_and_stream_exactly_once(
        fuzz_workers: FuzzWorkers) -> None:
    """Any msgpack message, any carrier, raw or traced: delivered once, carrier-free, to
    the 5 consumer kinds and the SSE stream on each of the two workers.

    A room whose clients an example broke (a consumer closed, a stream ended or reset)
    is replaced before the next example, so one failure does not fail every later
    example and hypothesis can shrink it; the issue's own carriers are the fixed
    examples of ``test_issue_carriers_reach_sse_streams``.
    """
    mark = fuzz_workers.mark()
    with event_loop() as loop:
        rooms = [Room(fuzz_workers)]
        loop.run_until_complete(rooms[-1].open())
        try:
            @settings(max_examples=examples(40), **hypothesis_profile())
            @given(body=messages, carrier=carriers, traced=st.booleans())
            def check(body: dict[str, Any], carrier: Any, traced: bool) -> None:
                if rooms[-1].healthy():
                    rooms.append(Room(fuzz_workers))
                    loop.run_until_complete(rooms[-1].open())
                room = rooms[-1]
                room.check_exactly_once()
                loop.run_until_complete(
                    asyncio.wait_for(room.roundtrip(body, carrier, traced), 60))

            check()
            rooms[-1].mark = mark
            final_checks(rooms[-1], loop, ("bad_carrier",))
        finally:
            for room in rooms:
                loop.run_until_complete(room.close())


@pytest.mark.parametrize("carrier", [
    pytest.param({"traceparent": b"\x00\xff", b"k": b"v"}, id="bytes-key-and-value"),
    pytest.param({b"traceparent": b"00-" + b"1" * 32 + b"-" + b"1" * 16 + b"-01",
                  "id": "x"}, id="bytes-traceparent-key"),
    pytest.param({"a": {b"b": [b"\xff", {"c": b"d"}]}, "b": "x"}, id="mixed-key-types"),
])
def test_issue_carriers_reach_sse_streams(fuzz_workers: FuzzWorkers, carrier: Any) -> None:
    """The issue's reproduction, fixed examples: bytes keys / values in the carrier reached
    WebSocket clients but not SSE streams (``TypeError`` in the hub, event lost)."""
    with event_loop() as loop:
        room = Room(fuzz_workers)
        loop.run_until_complete(room.open())
        try:
            for traced in (False, True):
                loop.run_until_complete(room.roundtrip({"text": "hi"}, carrier, traced))
            final_checks(room, loop, ("bad_carrier",))
        finally:
            loop.run_until_complete(room.close())


def test_sse_data_is_strict_json_for_non_finite_floats(fuzz_workers: FuzzWorkers) -> None:
    """``NaN`` / ``Infinity`` travel through msgpack; ``json.dumps`` writes them as the
    bare words ``NaN`` / ``Infinity``, which are not JSON (a browser's ``JSON.parse``
    throws on the event). The stream must still deliver the event, as strict JSON
    (e.g. ``null``, or the value as a string: the library's choice, to be documented)."""
    with event_loop() as loop:
        room = Room(fuzz_workers)
        loop.run_until_complete(room.open())
        try:
            fuzz_id = uuid.uuid4().hex
            message = {"type": MESSAGE_TYPE, "fuzz_id": fuzz_id, "inf": float("inf"),
                       "ninf": float("-inf"), "nan": float("nan"), "ok": 1.5}
            loop.run_until_complete(raw_group_send(room.layer, room.group, message))

            async def arrived() -> None:
                for _ in range(int(DELIVERY_TIMEOUT / 0.02)):
                    if all(s.fuzz_events(fuzz_id) for s in room.sse) or room.healthy():
                        return
                    await asyncio.sleep(0.02)

            loop.run_until_complete(arrived())
            for stream in room.sse:
                (event,) = stream.fuzz_events(fuzz_id)
                data = strict_json(event.data)  # raises on NaN / Infinity
                assert data["ok"] == 1.5 and data["fuzz_id"] == fuzz_id, data
                assert set(data) == {"fuzz_id", "inf", "ninf", "nan", "ok"}, data
        finally:
            loop.run_until_complete(room.close())


@pytest.mark.parametrize("forged", [
    pytest.param({"sse_id": "1-0", "sse_prev": "0-0"}, id="old-id"),
    pytest.param({"sse_id": "99999999999999-0", "sse_prev": "0-0"}, id="future-id"),
    pytest.param({"sse_id": "99999999999999-0", "sse_prev": "99999999999998-0"},
                 id="future-id-gap"),
])
def test_forged_sse_ids_in_a_carrier_lose_nothing(fuzz_workers: FuzzWorkers,
                                                  forged: dict[str, str]) -> None:
    """A producer that is not ``broadcast()`` (another service, a bug, an attacker) puts
    ``sse_group`` / ``sse_id`` / ``sse_prev`` in the carrier of a plain ``group_send``.

    Today the hub trusts them as ``broadcast()``'s numbering (``Hub._number``): an id at
    or below what it delivered drops the message from every stream of the group, on
    every worker, silently; an id far in the future moves the group's position past
    every real id, so every later event is dropped until the subscription ends.
    Expected: the message and every message after it reach every stream once, in
    order (the hub must check a carried id against the log entry it names, or ignore
    carried ids it did not get from the log).
    """
    with event_loop() as loop:
        room = Room(fuzz_workers)
        loop.run_until_complete(room.open())
        try:
            loop.run_until_complete(room.roundtrip({"n": 0}, ABSENT, False))
            carrier = {"sse_group": room.group, **forged}
            loop.run_until_complete(room.roundtrip({"n": 1}, carrier, False))
            for n in range(2, 5):  # and life goes on
                loop.run_until_complete(room.roundtrip({"n": n}, ABSENT, n % 2 == 0))
            final_checks(room, loop, ("bad_carrier",))
        finally:
            loop.run_until_complete(room.close())


@pytest.mark.parametrize("carrier", [
    pytest.param({"id": "reused-id"}, id="same-id"),
    pytest.param({"id": "reused-id", "traceparent": "00-" + "1" * 32 + "-" + "1" * 16 + "-01"},
                 id="same-id-and-traceparent"),
])
def test_a_reused_carrier_id_loses_nothing(fuzz_workers: FuzzWorkers,
                                           carrier: dict[str, str]) -> None:
    """Different messages whose carriers hold the same ``id`` (a relay that copies raw
    messages, a producer with a constant id, a forged one) are different events.

    Today ``GroupSubscription.message_key`` numbers a message by its carrier's ``id``
    alone when it is a ``str`` (``"id:" + id``), so the log gives the second message
    the first one's event id and the hub drops it from every stream as already
    delivered, silently. Expected: each message reaches every stream once (e.g. key
    the log entry by the id *and* a digest of the message, or trust the id only for
    carriers the instrumentor wrote, as it does the ``sse_*`` fields).
    """
    with event_loop() as loop:
        room = Room(fuzz_workers)
        loop.run_until_complete(room.open())
        try:
            for n in range(3):
                loop.run_until_complete(room.roundtrip({"n": n}, dict(carrier), False))
            final_checks(room, loop, ("bad_carrier",))
        finally:
            loop.run_until_complete(room.close())


def test_bytes_tag_is_not_a_message_key() -> None:
    """The forwarding format's tag cannot collide with generated keys (harness sanity)."""
    assert BYTES_TAG.startswith("__fuzz")
