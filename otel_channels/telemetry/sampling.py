"""The per-message sampling rate (``MESSAGE_SAMPLE_RATE``).

The rate is applied where a trace starts inside otel_channels: an inbound
frame that starts a new trace, or a ``group_send`` / ``send`` made outside any
trace. Everything downstream follows that decision through the W3C sampled
flag, which the carrier takes into every delivery, so all deliveries of one
broadcast, on every worker, are kept or dropped together. A client-supplied
parent (handshake or JSON frame) is decided from its trace id, like the SDK's
``TraceIdRatioBased`` sampler, so retries of one client trace agree.

A dropped message creates no span object: its handler runs under
:data:`DROPPED_CONTEXT`, one shared non-recording, unsampled span context, so
spans started inside it (by us or by the SDK's ParentBased sampler) are
dropped too and carriers it sends say "not sampled".
"""

from __future__ import annotations

import random

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

_TRACE_ID_LIMIT = 1 << 64

#: Valid ids (a parent must be valid to be honoured) with the sampled flag off.
DROPPED_SPAN_CONTEXT = SpanContext(
    trace_id=0x0D0D0D0D0D0D0D0D0D0D0D0D0D0D0D0D,
    span_id=0x0D0D0D0D0D0D0D0D,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.DEFAULT),
)
DROPPED_SPAN = NonRecordingSpan(DROPPED_SPAN_CONTEXT)
DROPPED_CONTEXT = trace.set_span_in_context(DROPPED_SPAN, otel_context.Context())

_random = random.random


def draw(rate: float) -> bool:
    """Keep a new trace with probability ``rate``."""
    return rate >= 1.0 or (rate > 0.0 and _random() < rate)


def keep_trace(trace_id: int, rate: float) -> bool:
    """Deterministic decision from a trace id (lower 64 bits, as TraceIdRatioBased)."""
    return rate >= 1.0 or (trace_id & (_TRACE_ID_LIMIT - 1)) < rate * _TRACE_ID_LIMIT
