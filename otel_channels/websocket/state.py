"""The state of one traced WebSocket connection every part reads: a settings snapshot,
the route's shared parts, the ``connect`` span and its link, the span being handled.

One class per job, one after another (each adds its own slots, nothing per
connection is allocated twice): :class:`ConnectionState` here,
:class:`.outbound.Outbound` (the ASGI ``send``: accept, close codes, outbound
frames), :class:`.inbound.Inbound` (inbound frames: guards, sampling, the
``receive`` span) and :class:`.connection.Connection` (handshake, disconnect, end).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link

from ..conf import get_config
from ..delivery.process import Dispatch
from ..telemetry import instruments as _telemetry
from ..telemetry import sampling as _sampling
from ..telemetry import spans as _spans
from .frames import FrameGuard, span_cap
from .route import route_for

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

_DROPPED_SPAN = _sampling.DROPPED_SPAN


class ConnectionState:
    """Per-connection tracing state (``consumer._otel``); slotted, the rest in :class:`.Route`."""

    __slots__ = ("accepted_at", "active", "active_span", "attrs_in", "attrs_out", "base", "cap",
                 "carrier_key", "config", "connect_link", "connect_links", "connect_span",
                 "count_in", "count_out", "frame_parent", "guard", "idle_span", "ignored",
                 "metric_attributes", "name", "off", "passthrough", "route", "scope",
                 "telemetry", "to_client", "trace_sends")

    def __init__(self, consumer: Any, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.telemetry = telemetry = _telemetry.get()
        self.config = config = get_config()
        shared = route_for(type(consumer), scope, telemetry, config)
        self.carrier_key = config.CARRIER_KEY
        self.active = telemetry.active()
        self.guard = shared.guard or FrameGuard(config.MAX_FRAME_SIZE, config.MAX_FRAME_RATE)
        self.ignored = config.IGNORED_FRAMES
        self.trace_sends = config.SEND_EVENTS or config.SEND_SPANS
        #: ``JSON_CONTEXT_TO_CLIENT``: the key dict frames ``send_json`` sends get, or None.
        self.to_client = config.JSON_TRACEPARENT_KEY if config.JSON_CONTEXT_TO_CLIENT else None
        #: No SDK and no message policy: a channel-layer message only loses its carrier.
        self.passthrough = not self.active and config.UNKNOWN_MESSAGE_POLICY == "raise"
        self.name, self.route, self.off = shared.name, shared.route, shared.off
        self.base = _spans.EMPTY  # the handshake's baggage, if any
        self.frame_parent = shared.frame_parent
        self.connect_span: trace.Span | None = None
        self.connect_link: Link | None = None  # built once: every later span links it
        self.connect_links: tuple[Link, ...] | None = None
        self.idle_span: trace.Span | None = _DROPPED_SPAN if self.active else None
        self.active_span: trace.Span | None = self.idle_span
        self.accepted_at: float | None = None
        self.cap = span_cap(config.MAX_SPANS_PER_CONNECTION)
        self.metric_attributes, self.attrs_in, self.attrs_out = (
            shared.metric_attributes, shared.attrs_in, shared.attrs_out)
        self.count_in, self.count_out = shared.count_in, shared.count_out

    async def _run(self, span: trace.Span, message: dict[str, Any], dispatch: Dispatch,
                   base: Context) -> Any:
        """Handle ``message`` with ``span`` current in ``base``; exception recorded, then ended."""
        self.active_span = span
        token = _spans.activate(span, base)
        try:
            return await dispatch(message)
        except BaseException as exc:
            _spans.record_exception(span, exc)
            raise
        finally:
            _spans.deactivate(token)
            self.active_span = self.idle_span
            span.end()

    def _end_connect(self, status: str, code: int | None = None) -> None:
        span, self.connect_span = self.connect_span, None
        if span is not None:
            status_code = {"accepted": 101, "rejected": 403}.get(status)
            _spans.end_connect(span, status, status_code, code if status == "rejected" else None)
