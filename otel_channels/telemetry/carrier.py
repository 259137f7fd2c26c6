"""The trace carrier that rides inside channel-layer messages.

A plain ``dict[str, str | float]`` under one reserved key (``CARRIER_KEY``,
default ``"_otel"``), safe for msgpack (channels-redis) and JSON::

    {"traceparent": "00-<trace>-<span>-01", "tracestate": "...",   # W3C
     "destination": "chat_42", "sent_at": 1764121200.123,          # group, time.time()
     "id": "5f1c0e9a2b7d4c11-2a"}                                   # unique per message

``destination`` is absent for ``channel_layer.send`` to a single channel. The
``id`` is unique per sent message (a random per-process prefix and a
counter), present even when no SDK is installed: identical messages are never
taken for one, and every worker tells the deliveries of one message apart from
another's by it.
The caller's message is never mutated: :func:`attach` returns a new dict,
:func:`detach` and :func:`strip` return the message without the key. Anything malformed in a
received carrier (untraced or hostile producers) is ignored, never raised.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

__all__ = ["attach", "client_traceparent", "detach", "format_traceparent", "parse_traceparent",
           "remote_context"]

#: Fields ``broadcast()`` adds next to the instrumentor's: the SSE event id the replay
#: log gave the message, the id before it, and the group it was numbered in.
SSE_ID, SSE_PREV, SSE_GROUP = "sse_id", "sse_prev", "sse_group"

_HEX = frozenset("0123456789abcdef")
_MAX_TRACESTATE = 512  # W3C: 32 members of at most 256 chars is the hard cap; keep it short


def format_traceparent(ctx: SpanContext) -> str:
    """W3C ``traceparent`` of a span context (cheaper than a propagator round trip)."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def client_traceparent(ctx: SpanContext) -> str:
    """W3C ``traceparent`` for a client to read: of the flags, only the sampled bit.

    The SDK sets W3C Level 2's random-trace-id bit (``-03``) on root spans; Level 1
    parsers (OpenTelemetry Go before 2026, older JS and Java agents) refuse a
    version-00 value with any flag but ``00`` / ``01``, and extract nothing. Layer
    carriers between our own workers keep :func:`format_traceparent` (issue 18).
    """
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{'01' if ctx.trace_flags.sampled else '00'}"


def parse_traceparent(value: Any, tracestate: Any = None) -> SpanContext | None:
    """A remote SpanContext from a W3C ``traceparent``, or None if it is not valid."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    version, trace_hex, span_hex, flags_hex = value[:2], value[3:35], value[36:52], value[53:]
    if (
        value[2] != "-" or value[35] != "-" or value[52] != "-"
        or version == "ff"
        or not _HEX.issuperset(value[:2] + trace_hex + span_hex + flags_hex)
    ):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    state = None
    if isinstance(tracestate, str) and tracestate and len(tracestate) <= _MAX_TRACESTATE:
        try:
            state = TraceState.from_header([tracestate])
        except Exception:  # malformed tracestate: keep the parent, drop the state
            state = None
    return SpanContext(
        trace_id=trace_id, span_id=span_id, is_remote=True,
        trace_flags=TraceFlags(int(flags_hex, 16) & TraceFlags.SAMPLED), trace_state=state,
    )


def json_traceparent(text: str, key: str) -> SpanContext | None:
    """The context under ``key`` of a JSON object text, if valid.

    A W3C ``traceparent`` string (with a top-level ``"tracestate"``), or a carrier
    object (``{"traceparent": ..., "tracestate": ...}``, what a propagator injects;
    at most :data:`MAX_OBJECT_ENTRIES` string entries of :data:`MAX_OBJECT_CHARS`).
    """
    try:
        content = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    if not isinstance(content, dict):
        return None
    value = content.get(key)
    if isinstance(value, dict):
        carrier = bounded(value)
        return extract(carrier)[0] if carrier is not None else None
    return parse_traceparent(value, content.get("tracestate"))


#: Bounds of a carrier object a client sends in a frame: what a propagator injects is a
#: few short entries (W3C: traceparent, tracestate <= 512, baggage <= 8192 by the spec).
MAX_OBJECT_ENTRIES = 16
MAX_OBJECT_CHARS = 8192


def bounded(value: dict[Any, Any]) -> dict[str, str] | None:
    """``value`` if it is a carrier object within the bounds (all str), else None."""
    if len(value) > MAX_OBJECT_ENTRIES:
        return None
    total = 0
    for name, item in value.items():
        if name.__class__ is not str or item.__class__ is not str:
            return None
        total += len(name) + len(item)
    return value if total <= MAX_OBJECT_CHARS else None


def _reseed() -> None:
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(8).hex() + "-"
    _id_counter = itertools.count(1)


_id_prefix = ""
_id_counter = itertools.count(1)
_reseed()
os.register_at_fork(after_in_child=_reseed)  # forked workers must not repeat their parent's ids


def new_id() -> str:
    """A message id unique across processes: random per process, then a counter."""
    return f"{_id_prefix}{next(_id_counter):x}"


def message_key(carrier: dict[str, Any] | None) -> Any:
    """What tells this message's deliveries apart from another message's, or None."""
    if carrier is None:
        return None
    key = carrier.get("id")
    if isinstance(key, str):
        return key
    # A producer without ids: a sampled traceparent is its own send's span, unique.
    traceparent = carrier.get("traceparent")
    if isinstance(traceparent, str) and len(traceparent) == 55 and traceparent[-1] in "13579bdf":
        return traceparent
    return None


#: What the W3C propagators write: the fast path needs no propagator call for them.
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
_fast: tuple[Any, bool] = (None, False)


def w3c_only() -> bool:
    """Whether the global propagator writes nothing but W3C trace context and baggage.

    The default (``OTEL_PROPAGATORS=tracecontext,baggage``). Then the carrier is
    built and parsed here, without a propagator call; with B3, Jaeger or any
    other propagator, the global propagator injects and extracts the carrier.
    """
    global _fast
    textmap = propagate.get_global_textmap()
    cached, answer = _fast
    if textmap is not cached:
        try:
            answer = set(textmap.fields) <= _W3C_FIELDS
        except Exception:  # a propagator without fields: let it do the work
            answer = False
        _fast = (textmap, answer)
    return answer


def build(ctx: SpanContext, destination: str | None, sent_at: float,
          context: otel_context.Context | None = None) -> dict[str, Any]:
    """The carrier for a message sent under span context ``ctx``.

    What the global propagator injects (``traceparent``, ``tracestate``, ``baggage``
    by default), plus the destination group, the send time and a unique id.
    ``context`` is where the baggage comes from (the current context when None).
    """
    if context is None:
        context = otel_context.get_current()
    if w3c_only() and not baggage.get_all(context):  # the common case: no propagator call
        carrier: dict[str, Any] = {"traceparent": format_traceparent(ctx)}
        if ctx.trace_state:
            carrier["tracestate"] = ctx.trace_state.to_header()
    else:
        carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(ctx),
                                                                     context))
    carrier["sent_at"] = sent_at
    carrier["id"] = new_id()
    if destination is not None:
        carrier["destination"] = destination
    return carrier


def extract(carrier: dict[str, Any]) -> tuple[SpanContext | None, otel_context.Context | None]:
    """``(producer span context, baggage context or None)`` from a received carrier.

    Carriers with only W3C trace context take the fast path (no propagator call);
    anything else (baggage, B3, ...) goes through the global propagator.
    """
    if "traceparent" in carrier and "baggage" not in carrier and w3c_only():
        return remote_context(carrier), None
    try:
        extracted = propagate.extract(
            {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)})
    except Exception:  # a hostile carrier never breaks a delivery
        return None, None
    found = trace.get_current_span(extracted).get_span_context()
    entries = baggage.get_all(extracted)
    base = None
    if entries:
        base = otel_context.Context()
        for name, value in entries.items():
            base = baggage.set_baggage(name, value, base)
    return (found if found.is_valid else None), base


def attach(message: dict[str, Any], key: str, carrier: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``message`` with the carrier under ``key`` (the caller's dict is untouched).

    Fields already under ``key`` (``broadcast()``'s SSE event id) are kept; ours win.
    """
    stamped = dict(message)
    existing = message.get(key)
    stamped[key] = {**existing, **carrier} if isinstance(existing, dict) else carrier
    return stamped


def detach(message: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(message without key, carrier or None)``; a non-dict value under key yields None."""
    if key not in message:
        return message, None
    clean = dict(message)
    carrier = clean.pop(key)
    return clean, carrier if isinstance(carrier, dict) else None


def carried(message: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The carrier under ``key`` of a received message (None: absent, or not a dict)."""
    carrier = message.get(key)
    return carrier if carrier.__class__ is dict else None


#: ``id(received message) -> (that message, its copy without the carrier)``: see strip().
_stripped: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
#: Received messages whose copies are kept; a worker has only a few broadcasts in flight.
_STRIPPED_KEPT = 8


def strip(message: dict[str, Any], key: str) -> dict[str, Any]:
    """``message`` without ``key``: one copy per received dict, however many consumers get it.

    channels-redis deserializes a group message once per worker and puts that same
    dict into every local member's receive buffer (channels_redis/core.py,
    ``receive``): plain Channels hands one dict to all of them. So do we: the first
    delivery copies it without the carrier, the others get that copy (no dict per
    delivery, nothing for the cyclic collector to count). The received dict itself is
    never changed: another reader of it (an SSE hub, a consumer created before
    ``instrument()``) still finds the carrier. Layers that give every receive its
    own dict (InMemoryChannelLayer, the pub/sub layer) get one copy per delivery,
    as before. Entries hold their message, so an ``id`` is never reused while kept.
    """
    found = _stripped.get(id(message))
    if found is not None and found[0] is message:
        return found[1]
    clean = dict(message)
    del clean[key]
    stripped = _stripped
    if len(stripped) >= _STRIPPED_KEPT:
        del stripped[next(iter(stripped))]
    stripped[id(message)] = (message, clean)
    return clean


def remote_context(carrier: dict[str, Any] | None) -> SpanContext | None:
    """The producer's span context recorded in a carrier, if it holds a valid one."""
    if carrier is None:
        return None
    traceparent, tracestate = carrier.get("traceparent"), carrier.get("tracestate")
    if (isinstance(traceparent, str) and len(traceparent) == 55
            and (tracestate is None or (isinstance(tracestate, str) and len(tracestate) <= 512))):
        return _parse_cached(traceparent, tracestate)
    return parse_traceparent(traceparent, tracestate)


# A broadcast reaches every consumer of a worker with the same carrier: parse it once
# (SpanContext and TraceState are immutable, so sharing the result is safe; bounded).
_parse_cached = functools.lru_cache(maxsize=1024)(parse_traceparent)


def destination(carrier: dict[str, Any] | None) -> str | None:
    if carrier is None:
        return None
    value = carrier.get("destination")
    return value if isinstance(value, str) and len(value) <= 1024 else None


def sent_at(carrier: dict[str, Any] | None) -> float | None:
    if carrier is None:
        return None
    value = carrier.get("sent_at")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None
