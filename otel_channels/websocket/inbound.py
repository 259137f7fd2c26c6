"""Inbound frames of a traced WebSocket connection: the protective limits, the sampling
decision, the ``receive`` span, frames a JSON consumer cannot decode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from ..delivery.process import Dispatch, nothing
from ..telemetry import sampling as _sampling
from ..telemetry import semconv as sc
from ..telemetry import spans as _spans
from ..telemetry.wire import size_of
from .asgi import sendable_close
from .frames import Rejection
from .outbound import Outbound

_DROPPED_SPAN = _sampling.DROPPED_SPAN


class Inbound(Outbound):
    """What the connection receives: one frame handled, traced or not, or refused."""

    __slots__ = ("frames_in", "rejected")

    def __init__(self, consumer: Any, scope: dict[str, Any]) -> None:
        super().__init__(consumer, scope)
        self.frames_in = 0
        self.rejected = False  # a frame over the limits: closing, later frames not handled

    def on_frame(self, message: dict[str, Any], dispatch: Dispatch,
                 json_frames: bool) -> Awaitable[Any]:
        """The awaitable handling one inbound frame (Channels' own when it is not traced)."""
        self.frames_in += 1
        self.count_in[0] += 1
        if self.rejected:
            return nothing()  # closing: frames already in flight are not handled
        text = message.get("text")
        if self.guard.active:
            rejection = self.guard.check(text, message.get("bytes"))
            if rejection is not None:
                return self._reject(rejection)
        if self.ignored and text is not None and text in self.ignored:
            return dispatch(message)
        decided = self.frame_parent.decide(text if json_frames else None)
        if decided is None:
            # Not sampled: no span, no histogram; what the handler starts is dropped too.
            if self.active:  # runs under the shared unsampled context between spans
                return dispatch(message)
            return self._untraced(message, dispatch, self.base)
        parent, links = decided
        if links is None or not self.cap.take():  # the same, under the frame's baggage
            return self._untraced(message, dispatch, parent)
        size = size_of(text, message.get("bytes") if text is None else None)
        self.telemetry.websocket_message_size.record(size, self.attrs_in)
        span = _spans.start_receive(self.telemetry, self.route, self.name, parent, links,
                                    text is not None, size)
        hook = self.config.SPAN_HOOK
        if hook is not None and span.is_recording():
            with contextlib.suppress(Exception):  # a user hook must never break the connection
                hook(span, self.scope, message)
        return self._run(span, message, dispatch, parent)  # parent: the frame's baggage

    async def _untraced(self, message: dict[str, Any], dispatch: Dispatch, base: Context) -> Any:
        token = _spans.activate(_DROPPED_SPAN, base)
        self.active_span = _DROPPED_SPAN
        try:
            return await dispatch(message)
        finally:
            self.active_span = self.idle_span
            _spans.deactivate(token)

    async def _reject(self, rejection: Rejection) -> None:
        """Close with the rejection's code instead of handling a frame."""
        self.telemetry.dropped_messages.add(1, {**self.metric_attributes,
                                                sc.ERROR_TYPE: rejection.kind})
        self.rejected = True
        close: dict[str, Any] = {"type": "websocket.close", "code": rejection.code}
        if self.restricted:
            close = sendable_close(close)
        # The span says the code actually sent (4009 under daphne, 1009 elsewhere).
        if not self.off:
            _spans.rejected_receive(self.telemetry, self.route, self.connect_link, rejection.kind,
                                    close["code"], rejection.size, rejection.why)
        assert self.send is not None  # set by wrap_send before any frame arrives
        await self.send({"type": "websocket.close", "code": rejection.code})  # mapped in send

    def bad_frame(self, kind: str, code: int) -> str:
        """Record a frame a JSON consumer cannot decode; returns ``BAD_FRAME_POLICY``."""
        self.telemetry.dropped_messages.add(1, {**self.metric_attributes, sc.ERROR_TYPE: kind})
        span = self.active_span
        if span is not None and span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        return self.config.BAD_FRAME_POLICY
