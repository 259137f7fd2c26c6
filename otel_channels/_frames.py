"""Decisions about one inbound WebSocket frame, as small units with no consumer around them.

* :class:`FrameGuard`: the protective limits (``MAX_FRAME_SIZE``, ``MAX_FRAME_RATE``);
  a frame over them is rejected with the RFC 6455 close code that says why;
* :func:`bad_frame`: what a JSON consumer cannot decode, and the code it closes with;
* :class:`FrameParent`: the parent and links of a frame's ``receive`` span, or
  None when the frame is not sampled (decided before anything is allocated).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext

from . import _carrier, _sampling
from .conf import Config

EMPTY = otel_context.Context()


def size_of(text: str | None, data: bytes | None) -> int:
    """A frame's size in bytes (UTF-8 for text)."""
    if text is not None:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return len(data) if data is not None else 0


class Rejection(NamedTuple):
    """A frame refused before any handler sees it."""

    kind: str  # the error.type
    code: int  # the close code (RFC 6455 7.4.1)
    size: int
    why: str


class FrameGuard:
    """``MAX_FRAME_SIZE`` and ``MAX_FRAME_RATE`` for one connection."""

    __slots__ = ("_at", "_tokens", "active", "max_rate", "max_size")

    def __init__(self, max_size: int | None, max_rate: float | None) -> None:
        self.max_size = max_size
        self.max_rate = max_rate
        self.active = max_size is not None or max_rate is not None
        self._tokens = float(max_rate or 0)
        self._at: float | None = None

    def check(self, text: str | None, data: bytes | None) -> Rejection | None:
        limit = self.max_size
        if limit is not None:
            size = size_of(text, data if text is None else None)
            if size > limit:  # 1009 "message too big"
                return Rejection("frame_too_large", 1009, size, "frame larger than MAX_FRAME_SIZE")
        if self.max_rate is not None and self._over_rate(self.max_rate):
            # 1008 "policy violation": a flood of frames, however small
            return Rejection("frame_rate_exceeded", 1008, 0, "frames faster than MAX_FRAME_RATE")
        return None

    def _over_rate(self, rate: float, now: float | None = None) -> bool:
        """Token bucket of ``rate`` frames per second with a burst of ``rate`` frames."""
        if now is None:
            now = time.monotonic()
        if self._at is None:
            self._at = now
        self._tokens = min(float(rate), self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens < 1.0:
            return True
        self._tokens -= 1.0
        return False


class SpanCap:
    """``MAX_SPANS_PER_CONNECTION``: frames past the cap are untraced and counted."""

    __slots__ = ("cap", "dropped", "used")

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.used = 0
        self.dropped = 0

    def take(self) -> bool:
        if self.cap is not None and self.used >= self.cap:
            self.dropped += 1
            return False
        self.used += 1
        return True


class _NoCap(SpanCap):
    """No ``MAX_SPANS_PER_CONNECTION``: one stateless instance for every connection."""

    __slots__ = ()

    def take(self) -> bool:
        return True


NO_CAP = _NoCap(None)


def span_cap(cap: int | None) -> SpanCap:
    """The connection's cap: its own counter, or the shared :data:`NO_CAP` (issue 20)."""
    return NO_CAP if cap is None else SpanCap(cap)


def bad_frame(text_data: str | None, bytes_data: bytes | None) -> tuple[str, int] | None:
    """``(error.type, close code)`` of a frame a JSON consumer cannot take as JSON text.

    ``binary_frame`` closes with 1003 (unsupported data), ``empty_frame`` with 1007
    (invalid payload data); None when it is text to decode (``malformed_json``,
    1007, is found by decoding it: :data:`MALFORMED_JSON`).
    """
    if text_data:
        return None
    return ("binary_frame", 1003) if bytes_data is not None else ("empty_frame", 1007)


MALFORMED_JSON = ("malformed_json", 1007)


class FrameParent:
    """Where a connection's ``receive`` spans go (``FRAME_TRACE_MODE``, ``CLIENT_CONTEXT``).

    A new trace linking ``connect`` (``"link"``, default), or a child of it
    (``"child"``), or a child of a ``traceparent`` carried in a JSON frame.
    ``MESSAGE_SAMPLE_RATE`` is applied here, from the client's trace id when it
    sent one (so retries of one client trace agree).
    """

    __slots__ = ("base", "child", "connect", "key", "needle", "rate", "trust")

    def __init__(self, config: Config, connect: SpanContext | None,
                 base: otel_context.Context = EMPTY) -> None:
        self.rate = config.MESSAGE_SAMPLE_RATE
        self.trust = config.CLIENT_CONTEXT
        self.child = config.FRAME_TRACE_MODE == "child"
        key = config.JSON_TRACEPARENT_KEY
        self.key = key if key and self.trust != "ignore" else None
        # The substring test keeps the common frame free of a second JSON parse.
        self.needle = f'"{key}"' if self.key else None
        self.connect = connect if connect is not None and connect.is_valid else None
        self.base = base  # the handshake's baggage, if any

    def client(self, json_text: str | None) -> SpanContext | None:
        if json_text is None or self.needle is None or self.needle not in json_text:
            return None
        return _carrier.json_traceparent(json_text, self.key)  # type: ignore[arg-type]

    def decide(self, json_text: str | None) -> tuple[otel_context.Context, list[Link]] | None:
        """``(parent context, links)``, or None when the frame is not sampled."""
        rate, connect = self.rate, self.connect
        client = self.client(json_text)
        if client is not None and self.trust == "parent":
            if not _sampling.keep_trace(client.trace_id, rate):
                return None
            links = [Link(connect)] if connect is not None else []
            return trace.set_span_in_context(trace.NonRecordingSpan(client), self.base), links
        if self.child and connect is not None:
            if not (connect.trace_flags.sampled and _sampling.draw(rate)):
                return None
            return trace.set_span_in_context(trace.NonRecordingSpan(connect), self.base), []
        if not _sampling.draw(rate):
            return None
        links = [Link(connect)] if connect is not None else []
        if client is not None:
            links.append(Link(client))  # "link": the client cannot force sampling
        return self.base, links
