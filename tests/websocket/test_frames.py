"""Frame decisions as units, with no consumer around them: guards, bad frames, span cap, parent."""

from __future__ import annotations

from dataclasses import replace

import pytest
from opentelemetry import baggage, trace
from opentelemetry.trace import SpanContext, TraceFlags

from otel_channels.conf import Config
from otel_channels.telemetry.wire import size_of
from otel_channels.websocket.frames import (
    MALFORMED_JSON,
    FrameGuard,
    FrameParent,
    SpanCap,
    bad_frame,
)

CONNECT = SpanContext(0xA1, 0xB1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
CLIENT_TP = "00-000000000000000000000000000000c2-00000000000000d2-01"


@pytest.mark.parametrize(("text", "data", "size"), [
    ("abc", None, 3), ("é", None, 2), ("€", None, 3), ("\ud800", None, 3),
    (None, b"\x00\xff", 2), (None, None, 0), ("", None, 0),
])
def test_size_of_counts_utf8_bytes(text: str | None, data: bytes | None, size: int) -> None:
    assert size_of(text, data) == size


def test_guard_rejects_frames_over_the_size_limit_with_1009() -> None:
    guard = FrameGuard(max_size=4, max_rate=None)
    assert guard.active
    assert guard.check("abcd", None) is None
    assert guard.check("abcde", None) == ("frame_too_large", 1009, 5,
                                          "frame larger than MAX_FRAME_SIZE")
    assert guard.check(None, b"12345")[:3] == ("frame_too_large", 1009, 5)  # type: ignore[index]
    assert not FrameGuard(None, None).active


def test_guard_token_bucket_allows_a_burst_then_refills() -> None:
    guard = FrameGuard(max_size=None, max_rate=2)
    assert [guard._over_rate(2, now=t) for t in (0.0, 0.0, 0.0)] == [False, False, True]
    assert guard._over_rate(2, now=0.5) is False  # half a second: one token back
    assert guard._over_rate(2, now=0.5) is True
    assert guard._over_rate(2, now=10.0) is False  # refills up to the burst, not beyond
    assert guard._over_rate(2, now=10.0) is False
    assert guard._over_rate(2, now=10.0) is True


def test_guard_reports_a_flood_with_1008() -> None:
    guard = FrameGuard(max_size=None, max_rate=1)
    assert guard.check("a", None) is None
    assert guard.check("b", None) == ("frame_rate_exceeded", 1008, 0,
                                      "frames faster than MAX_FRAME_RATE")


@pytest.mark.parametrize(("text", "data", "expected"), [
    ('{"a": 1}', None, None), ("not json", None, None),  # text: decode it to know
    ("", None, ("empty_frame", 1007)), (None, None, ("empty_frame", 1007)),
    (None, b"\x01", ("binary_frame", 1003)),
])
def test_bad_frame_kinds_and_close_codes(text: str | None, data: bytes | None,
                                         expected: tuple[str, int] | None) -> None:
    assert bad_frame(text, data) == expected
    assert MALFORMED_JSON == ("malformed_json", 1007)


def test_span_cap_counts_what_it_drops() -> None:
    cap = SpanCap(2)
    assert [cap.take() for _ in range(5)] == [True, True, False, False, False]
    assert (cap.used, cap.dropped) == (2, 3)
    unlimited = SpanCap(None)
    assert all(unlimited.take() for _ in range(100)) and unlimited.dropped == 0


def config(**settings: object) -> Config:
    return replace(Config(), **settings)


def parent_span(context: object) -> SpanContext:
    return trace.get_current_span(context).get_span_context()  # type: ignore[arg-type]


def test_default_frame_is_a_new_trace_linking_connect() -> None:
    parent, links = FrameParent(config(), CONNECT).decide('{"x": 1}')  # type: ignore[misc]
    assert not parent_span(parent).is_valid
    assert [link.context for link in links] == [CONNECT]


def test_child_mode_parents_the_frame_on_connect() -> None:
    parent, links = FrameParent(config(FRAME_TRACE_MODE="child"), CONNECT).decide(None)  # type: ignore[misc]
    assert parent_span(parent) == CONNECT and links == []


def test_json_traceparent_is_the_parent_when_trusted_and_a_link_otherwise() -> None:
    frame = f'{{"traceparent": "{CLIENT_TP}", "x": 1}}'
    parent, links = FrameParent(config(), CONNECT).decide(frame)  # type: ignore[misc]
    assert parent_span(parent).trace_id == 0xC2 and parent_span(parent).span_id == 0xD2
    assert [link.context for link in links] == [CONNECT]
    parent, links = FrameParent(config(CLIENT_CONTEXT="link"), CONNECT).decide(frame)  # type: ignore[misc]
    assert not parent_span(parent).is_valid
    assert [link.context.trace_id for link in links] == [0xA1, 0xC2]
    parent, links = FrameParent(config(CLIENT_CONTEXT="ignore"), CONNECT).decide(frame)  # type: ignore[misc]
    assert [link.context for link in links] == [CONNECT]  # the frame's context is not read


def test_sampling_rate_zero_drops_every_frame_before_allocating() -> None:
    decide = FrameParent(config(MESSAGE_SAMPLE_RATE=0.0), CONNECT).decide
    assert decide(None) is None
    assert decide(f'{{"traceparent": "{CLIENT_TP}"}}') is None


def test_handshake_baggage_stays_on_every_frame() -> None:
    base = baggage.set_baggage("tenant", "acme")
    parent, _ = FrameParent(config(), CONNECT, base).decide(None)  # type: ignore[misc]
    assert baggage.get_baggage("tenant", parent) == "acme"
