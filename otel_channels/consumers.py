"""Traced drop-in subclasses of Channels' four generic WebSocket consumers.

Swap the import and nothing else changes::

    from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer

    class ChatConsumer(TracedAsyncJsonWebsocketConsumer):
        async def receive_json(self, content): ...

They behave exactly like their Channels parents and work without
``"otel_channels"`` in ``INSTALLED_APPS`` (tracer and meter come from the
global OpenTelemetry providers). Spans and metrics: see the README.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

from .websocket.frames import MALFORMED_JSON, UNPARSED, bad_frame
from .websocket.mixin import TracedConsumerMixin

__all__ = [
    "TracedAsyncJsonWebsocketConsumer",
    "TracedAsyncWebsocketConsumer",
    "TracedJsonWebsocketConsumer",
    "TracedWebsocketConsumer",
]


class TracedWebsocketConsumer(TracedConsumerMixin, WebsocketConsumer):
    """:class:`channels.generic.websocket.WebsocketConsumer`, traced."""


class TracedAsyncWebsocketConsumer(TracedConsumerMixin, AsyncWebsocketConsumer):
    """:class:`channels.generic.websocket.AsyncWebsocketConsumer`, traced."""


class TracedJsonWebsocketConsumer(TracedConsumerMixin, JsonWebsocketConsumer):
    """:class:`channels.generic.websocket.JsonWebsocketConsumer`, traced.

    With ``BAD_FRAME_POLICY`` ``"close"`` or ``"error_frame"``, an undecodable
    frame closes the socket (1003 binary, 1007 empty / malformed JSON) or gets
    ``{"type": "error", "error": kind}`` instead of Channels' ``ValueError``.
    With ``JSON_CONTEXT_TO_CLIENT``, ``send_json`` of a dict adds the current
    sampled span's context (docs/clients.md, "Non-Python clients").
    """

    _otel_json_frames = True
    #: ``decode_json`` is Channels' ``json.loads``: a frame parsed for its trace context
    #: is not parsed again (a subclass with its own ``decode_json`` parses every frame).
    _otel_reuse_parse = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._otel_reuse_parse = _decoder(cls) is _decoder(JsonWebsocketConsumer)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                **kwargs: Any) -> None:
        frame_parent = self._otel.frame_parent
        if frame_parent.plain:  # BAD_FRAME_POLICY "raise", no parsed frame waiting
            return super().receive(text_data, bytes_data, **kwargs)  # Channels' behaviour
        if self._otel_reuse_parse:
            content = frame_parent.take(text_data)
            if content is not UNPARSED:
                return self.receive_json(content, **kwargs)
        if self._otel.config.BAD_FRAME_POLICY == "raise":
            return super().receive(text_data, bytes_data, **kwargs)
        bad = bad_frame(text_data, bytes_data)
        if bad is None:
            try:
                content = self.decode_json(text_data)
            except (ValueError, RecursionError):  # RecursionError: nesting too deep
                bad = MALFORMED_JSON
            else:
                return self.receive_json(content, **kwargs)
        kind, code = bad
        if self._otel.bad_frame(kind, code) == "close":
            self.close(code)
        else:
            self.send_json({"type": "error", "error": kind})


class TracedAsyncJsonWebsocketConsumer(TracedConsumerMixin, AsyncJsonWebsocketConsumer):
    """:class:`channels.generic.websocket.AsyncJsonWebsocketConsumer`, traced.

    ``BAD_FRAME_POLICY`` and ``JSON_CONTEXT_TO_CLIENT`` apply as in
    :class:`TracedJsonWebsocketConsumer`.
    """

    _otel_json_frames = True
    _otel_reuse_parse = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._otel_reuse_parse = _decoder(cls) is _decoder(AsyncJsonWebsocketConsumer)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        frame_parent = self._otel.frame_parent
        if frame_parent.plain:  # BAD_FRAME_POLICY "raise", no parsed frame waiting
            return await super().receive(text_data, bytes_data, **kwargs)
        if self._otel_reuse_parse:
            content = frame_parent.take(text_data)
            if content is not UNPARSED:
                return await self.receive_json(content, **kwargs)
        if self._otel.config.BAD_FRAME_POLICY == "raise":
            return await super().receive(text_data, bytes_data, **kwargs)
        bad = bad_frame(text_data, bytes_data)
        if bad is None:
            try:
                content = await self.decode_json(text_data)
            except (ValueError, RecursionError):  # RecursionError: nesting too deep
                bad = MALFORMED_JSON
            else:
                return await self.receive_json(content, **kwargs)
        kind, code = bad
        if self._otel.bad_frame(kind, code) == "close":
            await self.close(code)
        else:
            await self.send_json({"type": "error", "error": kind})

def _decoder(cls: type) -> Any:
    """The function behind a consumer class's ``decode_json`` classmethod."""
    method = getattr(cls, "decode_json", None)
    return getattr(method, "__func__", method)
