"""otel_channels.eventstream: tables of exact inputs and the events they must give.

Cases follow the WHATWG "Interpreting an event stream" rules and the
web-platform-tests ``eventsource/format-*`` and ``event-data`` cases. Every
case is fed whole, as ``str``, byte by byte, character by character, and (for
short inputs) split in two at every position: chunking must never change the
result.
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_channels import eventstream
from otel_channels.eventstream import LINE_BREAK, EventStreamParser, EventTooLarge, MessageEvent


def E(data: str, type: str = "message", id: str = "", retry: int | None = None,  # noqa: A002
      fields: dict[str, str] | None = None) -> MessageEvent:
    return MessageEvent(type=type, data=data, id=id, retry=retry, fields=fields or {})


LONG = "x" * 2048
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# (case id, input, expected events, last event id after the input, retry after the input)
CASES: list[tuple[str, bytes | str, list[MessageEvent], str, int | None]] = [
    ("simple", "data: hello\n\n", [E("hello")], "", None),
    ("no-final-blank-line", "data: hello\n", [], "", None),
    ("no-line-end-at-eof", "data: hello", [], "", None),
    ("two-events", "data: a\n\ndata: b\n\n", [E("a"), E("b")], "", None),
    # wpt format-bom: only the first BOM of the stream is stripped
    ("bom", "\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3\n\n", [E("1"), E("3")], "", None),
    # wpt format-bom-2: a second BOM makes the first line an unknown field
    ("double-bom", "\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3\n\n", [E("2"), E("3")], "", None),
    ("bom-not-at-start", "data:1\n\n\ufeff\n\ndata:2\n\n", [E("1"), E("2")], "", None),
    # wpt format-comments ("comment fest"), message.php appends one LF
    ("comment-fest",
     "data:1\r:\0\n:\r\ndata:2\n:" + LONG + "\rdata:3\n:data:fail\r:" + LONG + "\ndata:4\n\n",
     [E("1\n2\n3\n4")], "", None),
    ("comment-only", ": ping\n\n:\n\n", [], "", None),
    # wpt format-field-data
    ("data-field-parsing", "data:\n\ndata\ndata\n\ndata:test\n\n",
     [E(""), E("\n"), E("test")], "", None),
    # wpt event-data (message2.py): multi-line data, an empty data, CRLF and CR
    ("lines-and-data", "data:msg\ndata:msg\n\ndata:\r\n\r\ndata:end\r\r",
     [E("msg\nmsg"), E(""), E("end")], "", None),
    ("crlf", "data:a\r\ndata:b\r\n\r\n", [E("a\nb")], "", None),
    ("cr-only", "data:a\rdata:b\r\r", [E("a\nb")], "", None),
    ("mixed-line-ends", "data:a\r\ndata:b\rdata:c\n\r\n", [E("a\nb\nc")], "", None),
    ("lf-cr-is-two-line-ends", "data:a\n\rdata:b\n\n", [E("a"), E("b")], "", None),
    # wpt format-field-event-empty / format-field-event
    ("empty-event-field", "event: \ndata:data\n\n", [E("data")], "", None),
    ("event-name", "event:test\ndata:x\n\ndata:x\n\n", [E("x", "test"), E("x")], "", None),
    ("event-type-resets", "event: a\ndata: 1\n\ndata: 2\n\n", [E("1", "a"), E("2")], "", None),
    ("event-type-resets-without-dispatch", "event: a\n\ndata: 2\n\n", [E("2")], "", None),
    ("event-last-wins", "event: a\nevent: b\ndata: 1\n\n", [E("1", "b")], "", None),
    # wpt format-null-character
    ("nul-in-data", "data:\0\n\n", [E("\0")], "", None),
    # wpt format-field-id-3 (last-event-id2.py): persists, changes, resets
    ("id-persists", "id: 1\ndata: 1\n\ndata:2\n\n", [E("1", id="1"), E("2", id="1")], "1", None),
    ("id-changes-and-persists", "id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
     [E("1", id="1"), E("2", id="2"), E("3", id="2")], "2", None),
    ("id-resets", "id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
     [E("1", id="1"), E("2"), E("3")], "", None),
    ("id-with-nul-ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
     [E("a", id="1"), E("b", id="1")], "1", None),
    ("id-only-nul-ignored", "id: \0\0\ndata: a\n\n", [E("a")], "", None),
    ("id-updated-without-dispatch", "id: 5\n\ndata: x\n\n", [E("x", id="5")], "5", None),
    ("id-not-committed-at-eof", "id: 1\ndata: a\n\nid: 2\ndata: b\n", [E("a", id="1")], "1", None),
    ("id-non-ascii", "id: \u2026\ndata: hello\n\n", [E("hello", id="\u2026")], "\u2026", None),
    ("id-keeps-spaces", "id:  7 \ndata: x\n\n", [E("x", id=" 7 ")], " 7 ", None),
    # wpt format-field-retry / -bogus
    ("retry", "retry:2000\nretry:1000x\ndata:x\n\n", [E("x", retry=2000)], "", 2000),
    ("retry-one-space-stripped", "retry: 12\ndata:x\n\n", [E("x", retry=12)], "", 12),
    ("retry-two-spaces-ignored", "retry:  12\ndata:x\n\n", [E("x")], "", None),
    ("retry-bogus-forms",
     "retry:1.5\nretry:-1\nretry:\nretry\nretry:1e3\nretry:\uff11\nretry:\u00b2\nretry:+5\n"
     "retry: 5 \ndata:x\n\n", [E("x")], "", None),
    ("retry-zero", "retry:0\n", [], "", 0),
    ("retry-without-data-still-applies", "retry: 250\n\n", [], "", 250),
    ("retry-only-on-its-event", "retry: 9\ndata: a\n\ndata: b\n\n",
     [E("a", retry=9), E("b")], "", 9),
    # wpt format-data-before-final-empty-line
    ("data-before-final-empty-line", "retry:1000\ndata:test1\n\nid:test\ndata:test2",
     [E("test1", retry=1000)], "", 1000),
    ("field-without-colon-is-name", "data\n\n", [E("")], "", None),
    ("event-without-colon", "event\ndata:x\n\n", [E("x")], "", None),
    ("one-leading-space-only", "data:  two\n\n", [E(" two")], "", None),
    ("tab-not-stripped", "data:\tx\n\n", [E("\tx")], "", None),
    ("trailing-space-kept", "data: x \n\n", [E("x ")], "", None),
    ("colons-in-value", "data: a:b: c\n\n", [E("a:b: c")], "", None),
    ("names-case-sensitive", "Data: x\n\nDATA: y\n\n", [], "", None),
    ("space-before-colon", "data : x\n\n", [], "", None),
    ("unknown-field-exposed", f"traceparent: {TP}\ndata: x\n\ndata: y\n\n",
     [E("x", fields={"traceparent": TP}), E("y")], "", None),
    ("unknown-field-no-colon", "foo\ndata:x\n\n", [E("x", fields={"foo": ""})], "", None),
    ("unknown-field-last-wins", "a: 1\na: 2\ndata:x\n\n", [E("x", fields={"a": "2"})], "", None),
    ("unknown-field-dropped-with-empty-event", "a: 1\n\ndata:x\n\n", [E("x")], "", None),
    # wpt format-utf-8: always UTF-8; invalid bytes become U+FFFD
    ("utf8", "data:ok\u2026\n\n".encode(), [E("ok\u2026")], "", None),
    ("utf8-4-byte", "data: \U0001f600\n\n".encode(), [E("\U0001f600")], "", None),
    ("invalid-utf8", b"data: \xff\xfe!\n\n", [E("\ufffd\ufffd!")], "", None),
    ("bom-bytes", b"\xef\xbb\xbfdata: a\n\n", [E("a")], "", None),
    ("double-bom-bytes", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [E("b")], "", None),
    # WHATWG Encoding's decoder: one U+FFFD per maximal invalid subpart
    ("utf8-encoded-surrogate", b"data: \xed\xa0\x80\n\n", [E("\ufffd" * 3)], "", None),
    ("utf8-overlong", b"data: \xc0\xaf\n\n", [E("\ufffd\ufffd")], "", None),
    ("utf8-truncated-before-lf", b"data: \xe2\x82\n\n", [E("\ufffd")], "", None),
    ("utf8-truncated-at-eof", b"data: ok\n\ndata: \xe2\x80", [E("ok")], "", None),
    # only CR and LF end lines: not U+2028, NEL, VT or FF (str.splitlines would split them)
    ("other-line-separators-are-data", "data: a\u2028b\x85c\x0bd\x0ce\n\n",
     [E("a\u2028b\x85c\x0bd\x0ce")], "", None),
    ("blank-lines-first", "\n\r\n\rdata: x\n\n", [E("x")], "", None),
    ("comment-between-data-lines", "data: a\n: keep-alive\ndata: b\n\n", [E("a\nb")], "", None),
    ("whitespace-line-is-a-field", " \ndata: x\n\n", [E("x", fields={" ": ""})], "", None),
    ("every-field-at-once", f"event: e\nid: 1\nretry: 5\ntraceparent: {TP}\ntracestate: v=1\n"
     "data: x\n\n", [E("x", "e", "1", 5, {"traceparent": TP, "tracestate": "v=1"})], "1", 5),
    ("empty", "", [], "", None),
]


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _run(chunks: list[bytes] | list[str],
         keep_comments: bool = False) -> tuple[list[MessageEvent], EventStreamParser]:
    parser = EventStreamParser(keep_comments=keep_comments)
    events: list[MessageEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    parser.close()
    return events, parser


def _modes(data: bytes) -> dict[str, list[Any]]:
    text = data.decode("utf-8", errors="replace")
    modes: dict[str, list[Any]] = {
        "whole-bytes": [data],
        "whole-str": [text],
        "byte-by-byte": [data[i:i + 1] for i in range(len(data))],
        "char-by-char": list(text),
    }
    return modes


@pytest.mark.parametrize(("data", "expected", "last_id", "retry"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_parser_table(data: bytes | str, expected: list[MessageEvent], last_id: str,
                      retry: int | None) -> None:
    raw = _as_bytes(data)
    for mode, chunks in _modes(raw).items():
        events, parser = _run(chunks)
        assert events == expected, mode
        assert parser.last_event_id == last_id, mode
        assert parser.retry == retry, mode
    if len(raw) <= 400:
        for cut in range(1, len(raw)):
            events, parser = _run([raw[:cut], raw[cut:]])
            assert events == expected, f"split at {cut}"
            assert parser.last_event_id == last_id, f"split at {cut}"


@pytest.mark.parametrize("chunks", [
    [b"data:a\r", b"\ndata:b\r", b"\n\r", b"\n"],
    [b"data:a\r", b"", b"\n", b"data:b\r\n", b"\r", b"", b"\n"],
    ["data:a\r", "\ndata:b\r\n\r", "\n"],
    [b"data:a\r", b"\n", b"data:b", b"\r", b"\n", b"\r", b"\n"],
])
def test_crlf_split_across_chunks_is_one_line_end(chunks: list[Any]) -> None:
    events, _ = _run(chunks)
    assert events == [E("a\nb")]


def test_cr_at_chunk_end_then_cr_is_a_blank_line() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data:a\r") == []
    assert parser.feed(b"\r") == [E("a")]  # CR then CR: the second one ends an empty line


def test_cr_at_chunk_end_dispatches_only_on_the_blank_line() -> None:
    parser = EventStreamParser()
    assert parser.feed("data:a\r\r") == [E("a")]  # does not wait for a possible LF
    assert parser.feed("\n") == []  # the LF completes the CRLF pair, no extra blank line
    assert parser.feed("data:b\n\n") == [E("b")]


def test_events_are_returned_as_soon_as_complete() -> None:
    parser = EventStreamParser()
    assert parser.feed("data: 1\n") == []
    assert parser.feed("\ndata: 2") == [E("1")]
    assert parser.feed("\n\n") == [E("2")]


def test_close_discards_the_pending_event_and_line() -> None:
    parser = EventStreamParser()
    assert parser.feed("id: 3\ndata: a\n\nid: 4\ndata: partial\n") == [E("a", id="3")]
    parser.close()
    assert parser.last_event_id == "3"
    assert parser.feed("data: next\n\n") == [E("next", id="4")]  # id buffer survives


def test_seeded_last_event_id_persists_across_streams() -> None:
    parser = EventStreamParser(last_event_id="41")
    assert parser.feed("data: a\n\n") == [E("a", id="41")]
    assert parser.feed("id:\ndata: b\n\n") == [E("b")]


def test_bom_is_stripped_per_parser() -> None:
    # A reconnection is a new stream: its own leading BOM is stripped again.
    for _ in range(2):
        parser = EventStreamParser()
        assert parser.feed(b"\xef\xbb") == []
        assert parser.feed(b"\xbfdata: a\n\n") == [E("a")]


def test_max_size_bounds_a_line_and_the_data() -> None:
    parser = EventStreamParser(max_size=10)
    assert parser.feed("data: 12345\n\n") == [E("12345")]
    with pytest.raises(EventTooLarge):
        parser.feed("data: " + "x" * 20)
    parser = EventStreamParser(max_size=10)
    parser.feed("data: 1234\n")  # 5 characters with its LF
    parser.feed("data: 1234\n")  # 10: at the limit
    with pytest.raises(EventTooLarge):
        parser.feed("data: 1\n")


def test_unknown_fields_are_bounded() -> None:
    parser = EventStreamParser()
    text = "".join(f"f{i}: v\n" for i in range(100)) + "data: x\n\n"
    (event,) = parser.feed(text)
    assert len(event.fields) == 32
    assert event.data == "x"


def test_event_json() -> None:
    (event,) = EventStreamParser().feed('data: {"a":\ndata: 1}\n\n')
    assert event.json() == {"a": 1}


def test_event_aliases() -> None:
    (event,) = EventStreamParser().feed("event: tick\nid: 3\ndata: x\n\n")
    assert (event.event, event.last_event_id) == ("tick", "3")


# (case id, input, comment texts collected with keep_comments=True)
COMMENT_CASES: list[tuple[str, str, list[str]]] = [
    ("one", ": ping\n", ["ping"]),
    ("no-space", ":ping\n", ["ping"]),
    ("one-space-stripped", ":  two\n", [" two"]),
    ("empty", ":\n", [""]),
    ("line-ends", ": a\r\n:b\r: c\n", ["a", "b", "c"]),
    ("inside-an-event", "data: x\n: c\n\n", ["c"]),
    ("colon-in-comment", ":data: no\n", ["data: no"]),
    ("unterminated-at-eof", ": late", []),
]


@pytest.mark.parametrize(("data", "comments"), [case[1:] for case in COMMENT_CASES],
                         ids=[case[0] for case in COMMENT_CASES])
def test_comments_table(data: str, comments: list[str]) -> None:
    for mode, chunks in _modes(data.encode()).items():
        _, parser = _run(chunks, keep_comments=True)
        assert parser.comments == comments, mode
        _, parser = _run(chunks)
        assert parser.comments == [], mode  # off by default: heartbeats must not pile up


# (input, what LINE_BREAK splits it into)
LINE_BREAK_CASES: list[tuple[str, list[str]]] = [
    ("", [""]),
    ("a", ["a"]),
    ("a\nb", ["a", "b"]),
    ("a\r\nb", ["a", "b"]),
    ("a\rb", ["a", "b"]),
    ("a\n\rb", ["a", "", "b"]),
    ("a\r\rb", ["a", "", "b"]),
    ("a\r\n\r\nb", ["a", "", "b"]),
    ("a\r\n", ["a", ""]),
    ("a\u2028b\x85c\x0bd\x0ce", ["a\u2028b\x85c\x0bd\x0ce"]),
]


@pytest.mark.parametrize(("text", "lines"), LINE_BREAK_CASES)
def test_line_break_is_crlf_cr_or_lf(text: str, lines: list[str]) -> None:
    assert LINE_BREAK.split(text) == lines


@pytest.mark.parametrize("text", [text for text, _ in LINE_BREAK_CASES])
def test_data_split_on_line_break_reads_back_lf_joined(text: str) -> None:
    # What an encoder does with LINE_BREAK: one data line per line, any line ending.
    block = "".join(f"data: {line}\n" for line in LINE_BREAK.split(text)) + "\n"
    assert EventStreamParser().feed(block.encode()) == [E(LINE_BREAK.sub("\n", text))]


def test_public_names() -> None:
    assert sorted(eventstream.__all__) == [
        "EventStreamParser", "EventTooLarge", "LINE_BREAK", "MessageEvent"]
    assert all(hasattr(eventstream, name) for name in eventstream.__all__)
    doc = eventstream.__doc__ or ""
    assert "https://html.spec.whatwg.org/multipage/server-sent-events.html" in doc
