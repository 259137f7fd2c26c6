"""Decisions about one inbound WebSocket frame, as small units with no consumer around them.

* :class:`FrameGuard`: the protective limits (``MAX_FRAME_SIZE``, ``MAX_FRAME_RATE``);
  a frame over them is rejected with the RFC 6455 close code that says why;
* :func:`bad_frame`: what a JSON consumer cannot decode, and the code it closes with;
* :class:`FrameParent`: the parent and links of a frame's ``receive`` span, or
  None when the frame is not sampled (decided before anything is allocated), and
  the baggage its handler runs under.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext

from ..conf import Config
from ..telemetry import sampling as _sampling
from ..telemetry.client_context import FrameContext, read_frame, trusted
from ..telemetry.wire import size_of

EMPTY = otel_context.Context()


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
    (``"child"``), or a child of the context a client put in a JSON frame (a
    ``traceparent`` string or a carrier object, see :mod:`..telemetry.client_context`).
    The connection's rate (``MESSAGE_SAMPLE_RATE``, or its route's own) is applied
    here, from the client's trace id when it sent one (so retries of one client
    trace agree). The frame's baggage, merged over the handshake's, is the
    handler's whatever the decision.
    """

    __slots__ = ("base", "child", "connect", "dropped", "key", "needle", "parsed", "plain",
                 "rate", "raw_policy", "scope", "trust")

    def __init__(self, config: Config, connect: SpanContext | None,
                 base: otel_context.Context = EMPTY,
                 scope: Mapping[str, Any] | None = None, rate: float | None = None) -> None:
        # The connection's rate (its route's or its consumer's, see telemetry.rates), resolved once.
        self.rate = config.MESSAGE_SAMPLE_RATE if rate is None else rate
        self.trust = config.CLIENT_CONTEXT
        self.scope = scope  # "authenticated" asks its user, per frame that carries context
        self.child = config.FRAME_TRACE_MODE == "child"
        key = config.JSON_TRACEPARENT_KEY
        self.key = key if key and self.trust != "ignore" else None
        # The substring test keeps the common frame free of a second JSON parse.
        self.needle = f'"{key}"' if self.key else None
        self.connect = connect if connect is not None and connect.is_valid else None
        self.base = base  # the handshake's baggage, if any
        #: ``(text, decoded)`` of the last frame parsed here, for the consumer to reuse.
        self.parsed: tuple[str, Any] | None = None
        #: The JSON consumer's ``receive`` is Channels' own: ``BAD_FRAME_POLICY`` "raise"
        #: and no parse to reuse (one attribute test on the common frame).
        self.raw_policy = self.plain = config.BAD_FRAME_POLICY == "raise"
        #: An unsampled frame without context of its own: under the handshake's baggage.
        self.dropped: Decision | None = (base, None) if base else None

    def client(self, json_text: str | None) -> FrameContext | None:
        """The context a JSON frame carries (None for the common frame without the key)."""
        if json_text is None or self.needle is None or self.needle not in json_text:
            return None
        try:
            content = json.loads(json_text)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return None
        self.parsed = (json_text, content)
        self.plain = False
        if content.__class__ is not dict:
            return None
        return read_frame(content, self.key, self.base)  # type: ignore[arg-type]

    def take(self, text: Any) -> Any:
        """The decoded frame ``text`` if :meth:`client` parsed it, once; else :data:`UNPARSED`."""
        parsed = self.parsed
        if parsed is None or parsed[0] is not text:
            return UNPARSED
        self.parsed = None
        self.plain = self.raw_policy
        return parsed[1]

    def decide(self, json_text: str | None) -> Decision | None:
        """``(parent context, links)`` of the frame's ``receive`` span; ``(context, None)``:
        not sampled, its handler runs under that context's baggage; None: not sampled and
        no baggage (the connection's idle context will do)."""
        client = self.client(json_text)
        if client is not None:
            return self._carried(client)
        rate, connect = self.rate, self.connect
        if self.child and connect is not None:
            if not (connect.trace_flags.sampled and _sampling.draw(rate)):
                return self.dropped
            return trace.set_span_in_context(trace.NonRecordingSpan(connect), self.base), []
        if not _sampling.draw(rate):
            return self.dropped
        return self.base, [Link(connect)] if connect is not None else []

    def _carried(self, client: FrameContext) -> Decision | None:
        """:meth:`decide` for a frame that carried context (its span, its baggage, or both)."""
        rate, connect = self.rate, self.connect
        remote, base = client
        dropped = (base, None) if base else None
        if remote is not None and trusted(self.trust, self.scope):
            if not _sampling.keep_trace(remote.trace_id, rate):
                return dropped
            links = [Link(connect)] if connect is not None else []
            return trace.set_span_in_context(trace.NonRecordingSpan(remote), base), links
        if self.child and connect is not None:
            if not (connect.trace_flags.sampled and _sampling.draw(rate)):
                return dropped
            return trace.set_span_in_context(trace.NonRecordingSpan(connect), base), []
        if not _sampling.draw(rate):
            return dropped
        links = [Link(connect)] if connect is not None else []
        if remote is not None:
            links.append(Link(remote))  # "link": the client cannot force sampling
        return base, links


#: What :meth:`FrameParent.decide` returns: the parent context, and the links of a
#: sampled frame's span (None: not sampled).
Decision = tuple[otel_context.Context, list[Link] | None]

#: :meth:`FrameParent.take` found nothing to reuse.
UNPARSED: Any = object()
