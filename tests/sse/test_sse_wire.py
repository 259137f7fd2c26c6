"""The SSE wire format: events to exact bytes, and the spec parser back."""

from __future__ import annotations

import pytest

from otel_channels.eventstream import EventStreamParser, MessageEvent
from otel_channels.sse.wire import ServerSentEvent, encode_comment, json_data

ENCODE_CASES = [
    ("plain data", ServerSentEvent(data="hello"), b"data: hello\n\n"),
    ("empty data is still an event", ServerSentEvent(data=""), b"data: \n\n"),
    ("no data: only the blank line", ServerSentEvent(), b"\n"),
    ("LF splits", ServerSentEvent(data="a\nb"), b"data: a\ndata: b\n\n"),
    ("CR splits", ServerSentEvent(data="a\rb"), b"data: a\ndata: b\n\n"),
    ("CRLF splits once", ServerSentEvent(data="a\r\nb"), b"data: a\ndata: b\n\n"),
    ("LF CR is two breaks", ServerSentEvent(data="a\n\rb"), b"data: a\ndata: \ndata: b\n\n"),
    ("trailing newline keeps an empty line", ServerSentEvent(data="a\n"),
     b"data: a\ndata: \n\n"),
    ("leading space survives the one stripped space", ServerSentEvent(data=" x"),
     b"data:  x\n\n"),
    ("colons in data are data", ServerSentEvent(data="a: b"), b"data: a: b\n\n"),
    ("NUL in data is kept", ServerSentEvent(data="a\x00b"), b"data: a\x00b\n\n"),
    ("unicode is UTF-8", ServerSentEvent(data="h\u00e9 \u2603 \U0001f600"),
     "data: h\u00e9 \u2603 \U0001f600\n\n".encode()),
    ("lone surrogate cannot be UTF-8", ServerSentEvent(data="a\ud800b"), b"data: a?b\n\n"),
    ("event and id", ServerSentEvent(data="x", event="chat.message", id="5-0"),
     b"event: chat.message\nid: 5-0\ndata: x\n\n"),
    ("CR LF NUL removed from id", ServerSentEvent(data="x", id="1\r\n2\x003"),
     b"id: 123\ndata: x\n\n"),
    ("CR LF NUL removed from event", ServerSentEvent(data="x", event="a\nevent: b\r\x00"),
     b"event: aevent: b\ndata: x\n\n"),
    ("empty id resets the last id", ServerSentEvent(data="x", id=""), b"id: \ndata: x\n\n"),
    ("retry", ServerSentEvent(retry=3000), b"retry: 3000\n\n"),
    ("retry zero", ServerSentEvent(retry=0), b"retry: 0\n\n"),
    ("comment", ServerSentEvent(comment="hi"), b": hi\n\n"),
    ("multi-line comment", ServerSentEvent(comment="a\r\nb\rc"), b": a\n: b\n: c\n\n"),
    ("empty comment", ServerSentEvent(comment=""), b":\n\n"),
    ("all fields in order", ServerSentEvent(data="d", event="e", id="1-0", retry=5, comment="c"),
     b": c\nevent: e\nid: 1-0\nretry: 5\ndata: d\n\n"),
    ("JSON data is one line", ServerSentEvent(data={"t": "a\nb", "n": 1}),
     b'data: {"t":"a\\nb","n":1}\n\n'),
    ("JSON keeps UTF-8", ServerSentEvent(data=["\u00e9"]), 'data: ["\u00e9"]\n\n'.encode()),
    ("JSON escapes lone surrogates", ServerSentEvent(data=["\ud800"]),
     b'data: ["\\ud800"]\n\n'),
]


@pytest.mark.parametrize(("case", "event", "wire"), ENCODE_CASES, ids=[c[0] for c in ENCODE_CASES])
def test_encode_exact_bytes(case, event, wire):
    assert event.encode() == wire


def test_extra_fields_go_before_data_and_are_sanitised():
    event = ServerSentEvent(data="x", id="1-0")
    assert event.encode((("traceparent", "00-ab\n-01"),)) == (
        b"id: 1-0\ntraceparent: 00-ab-01\ndata: x\n\n"
    )


@pytest.mark.parametrize("retry", [-1, 1.5, "10", True, None])
def test_retry_must_be_a_non_negative_int(retry):
    if retry is None:
        assert ServerSentEvent(retry=retry).encode() == b"\n"
        return
    with pytest.raises(ValueError, match="retry"):
        ServerSentEvent(retry=retry).encode()


@pytest.mark.parametrize(("text", "wire"), [
    ("", b":\n\n"), ("ok", b": ok\n\n"), ("a\nb", b": a\n: b\n\n"),
])
def test_encode_comment(text, wire):
    assert encode_comment(text) == wire


def test_json_data_handles_django_types_and_bytes():
    import datetime
    import decimal
    import uuid

    value = {
        "when": datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "amount": decimal.Decimal("1.50"), "id": uuid.UUID(int=1), "raw": b"\xffab",
        "tags": ("a",),
    }
    assert json_data(value) == (
        '{"when":"2025-01-02T03:04:05Z","amount":"1.50",'
        '"id":"00000000-0000-0000-0000-000000000001","raw":"\ufffdab","tags":["a"]}'
    )


# -- the parser (round trips and the spec's own examples) --------------------------------

ROUND_TRIP = ["", "a", "a\nb", "a\r\nb\rc\n", "\n\n", " lead", "x: y", "\u00e9\u2603", "a\x00"]


@pytest.mark.parametrize("data", ROUND_TRIP)
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1000])
def test_round_trip_through_parser_in_any_chunking(data, chunk_size):
    wire = ServerSentEvent(data=data, event="ev", id="7-1").encode()
    parser = EventStreamParser()
    events = []
    for index in range(0, len(wire), chunk_size):
        events.extend(parser.feed(wire[index:index + chunk_size]))
    normalised = data.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [MessageEvent(type="ev", data=normalised, id="7-1")]
    assert parser.last_event_id == "7-1"


def test_parser_follows_the_whatwg_examples():
    parser = EventStreamParser(keep_comments=True)
    wire = (
        b"\xef\xbb\xbf: comment\n"
        b"data: first\r\n"
        b"data:second\r\r"  # no space after the colon; CR line ends
        b"id: 1\n"
        b"event: add\n"
        b"data\n\n"  # a field without a colon: empty value
        b"id: 2\x003\n\n"  # ignored: NUL in id
        b"retry: 10x\nretry: 250\n"
        b"unknown: field\n"
        b"id: 9\n\n"  # no data: sets the last id, dispatches nothing
        b"data: tail\n"  # never dispatched: no blank line
    )
    events = parser.feed(wire)
    assert events == [
        MessageEvent(type="message", data="first\nsecond", id=""),
        MessageEvent(type="add", data="", id="1"),
    ]
    assert parser.comments == ["comment"]
    assert parser.retry == 250
    assert parser.last_event_id == "9"


def test_parser_waits_for_the_lf_of_a_split_crlf():
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r\n") == [MessageEvent(type="message", data="a", id="")]


def test_parser_keeps_comments_in_order_only_when_asked():
    wire = b":\n:  two spaces\r\n:no space\rdata: x\n: a: b\n\n: tail"
    kept = EventStreamParser(keep_comments=True)
    events = [event for index in range(len(wire)) for event in kept.feed(wire[index:index + 1])]
    assert events == [MessageEvent(type="message", data="x", id="")]
    # one leading space stripped, only one; the last comment has no line end yet
    assert kept.comments == ["", " two spaces", "no space", "a: b"]
    assert kept.feed(b"\n") == [] and kept.comments[-1] == "tail"
    default = EventStreamParser()  # the EventSource client's: heartbeats must not pile up
    assert default.feed(wire) == events
    assert default.comments == []


def test_encoded_comments_parse_back():
    parser = EventStreamParser(keep_comments=True)
    wire = encode_comment("open") + ServerSentEvent(data="d", comment="x\r\ny").encode()
    assert parser.feed(wire + encode_comment()) == [MessageEvent(data="d")]
    assert parser.comments == ["open", "x", "y", ""]
