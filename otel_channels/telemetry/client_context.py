"""Trace context in JSON frames, both ways, and whom to trust it from (issue 18).

* :func:`read_frame`: what a client put under ``JSON_TRACEPARENT_KEY`` in a JSON
  frame: a W3C ``traceparent`` string (with top-level ``tracestate`` and
  ``baggage`` next to it), or a carrier object as every OpenTelemetry
  propagator API fills it (``propagation.inject(ctx, carrier)`` in JS,
  ``otel.GetTextMapPropagator().Inject`` in Go), read through the global
  propagator (W3C trace context and baggage, B3, whatever ``OTEL_PROPAGATORS``
  says). A carrier object larger than 16 entries or 8 KiB, with anything but
  strings in it, or malformed, is ignored: the frame is handled as one without it.
* :func:`trusted`: ``CLIENT_CONTEXT``, including ``"authenticated"`` (a parent
  only when ``scope["user"].is_authenticated``, from Channels' ``AuthMiddlewareStack``).
* :func:`stamp`: ``JSON_CONTEXT_TO_CLIENT``, the current sampled span's context added
  to a dict frame sent to a client, in the shape the server reads.

Every ``traceparent`` written for a client carries only the sampled flag bit
(:func:`._carrier.client_traceparent`); baggage is never sent back to a client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from . import carrier as _carrier

__all__ = ["FrameContext", "read_frame", "stamp", "trusted"]

EMPTY = otel_context.Context()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class FrameContext(NamedTuple):
    """What one frame carried: the client's span context, and the baggage to run under."""

    span: SpanContext | None
    #: The connection's (handshake) baggage with the frame's entries over it.
    base: otel_context.Context


def read_frame(content: dict[str, Any], key: str,
               base: otel_context.Context) -> FrameContext | None:
    """The context a decoded JSON object frame carries under ``key``, or None."""
    value = content.get(key)
    extracted: otel_context.Context | None
    if value.__class__ is str:
        span = _carrier.parse_traceparent(value, content.get("tracestate"))
        entries = content.get("baggage")
        extracted = None
        if entries.__class__ is str and len(entries) <= _carrier.MAX_OBJECT_CHARS:
            extracted = _carrier.extract({"baggage": entries})[1]
    elif value.__class__ is dict:
        carrier = _carrier.bounded(value)
        if carrier is None:
            return None
        span, extracted = _carrier.extract(carrier)
    else:
        return None
    if extracted is not None:
        # The frame's baggage over the handshake's: the frame wins.
        for name, item in baggage.get_all(extracted).items():
            base = baggage.set_baggage(name, item, base)
    elif span is None:
        return None
    return FrameContext(span, base)


def trusted(trust: str, scope: Mapping[str, Any] | None) -> bool:
    """Whether client context is a parent under ``CLIENT_CONTEXT`` (else a link at most).

    ``"authenticated"`` asks the user Channels' ``AuthMiddleware`` resolved before the
    consumer ran (``scope["user"]``, a login during the connection included); a scope
    without one, or a user object that fails, is not authenticated.
    """
    if trust == "parent":
        return True
    if trust != "authenticated" or scope is None:
        return False
    user = scope.get("user")
    if user is None:
        return False
    try:
        return user.is_authenticated is True
    except Exception:  # a lazy user that needs the database here: not known, not trusted
        return False


def stamp(content: dict[str, Any], key: str) -> dict[str, Any]:
    """``content``, or a copy with the current sampled span's context under ``key``.

    ``key == "traceparent"``: top-level ``traceparent`` (and ``tracestate`` when the
    span has one); any other key: a carrier object filled through the global
    propagator, the shape :func:`read_frame` reads. Nothing is added when the current
    span is not sampled and recording, or ``key`` is already in ``content`` (the
    application's own value wins); the caller's dict is never modified.
    """
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.trace_flags.sampled or key in content or not span.is_recording():
        return content
    stamped = dict(content)
    if key == "traceparent":
        stamped[key] = _carrier.client_traceparent(ctx)
        if ctx.trace_state and "tracestate" not in content:
            stamped["tracestate"] = ctx.trace_state.to_header()
        return stamped
    carrier = _carrier_object(ctx)
    if carrier:
        stamped[key] = carrier
        return stamped
    return content


def _carrier_object(ctx: SpanContext) -> dict[str, str]:
    """What the global propagator injects for ``ctx``, sampled bit only, no baggage."""
    if _carrier.w3c_only():  # the default propagators: no propagator call
        carrier = {"traceparent": _carrier.client_traceparent(ctx)}
        if ctx.trace_state:
            carrier["tracestate"] = ctx.trace_state.to_header()
        return carrier
    level1 = SpanContext(ctx.trace_id, ctx.span_id, is_remote=False, trace_flags=_SAMPLED,
                         trace_state=ctx.trace_state)
    carrier = {}
    try:
        # On an empty context: the server's baggage never reaches a client.
        propagate.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(level1),
                                                                    EMPTY))
    except Exception:  # a broken propagator never breaks a send
        return {}
    return carrier
