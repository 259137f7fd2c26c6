"""The async Django view streaming channel-layer groups as Server-Sent Events."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from typing import Any

from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views import View

from ._stream import EventStream, Formatter
from .wire import ServerSentEvent, message_event

__all__ = ["EventStreamView"]

CONTENT_TYPE = "text/event-stream; charset=utf-8"


class EventStreamView(View):
    """An async view streaming the messages of channel-layer groups as Server-Sent Events.

    Args (class attributes):
        groups: the groups to stream, unless :meth:`get_groups` is overridden.
        channel_layer_alias: which ``CHANNEL_LAYERS`` entry to subscribe on.
        heartbeat: seconds of silence before a heartbeat comment
            (``None``: ``OTEL_CHANNELS["SSE_HEARTBEAT"]``, default 15).
        retry: the ``retry:`` (ms) sent first (``None``: ``SSE_RETRY``; unset: none).
        queue_size: events buffered per slow stream (``None``: ``SSE_QUEUE_SIZE``).
    """

    groups: Sequence[str] = ()
    channel_layer_alias: str = "default"
    heartbeat: float | None = None
    retry: int | None = None
    queue_size: int | None = None

    def get_groups(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> Sequence[str] | Awaitable[Sequence[str]]:
        """The groups to stream (may be ``async``); raise ``PermissionDenied`` for a 403."""
        return list(self.groups)

    def format_event(self, message: dict[str, Any]) -> ServerSentEvent | None:
        """The event for one group message (carrier removed); ``None`` skips it.

        ``message`` is shared by every stream of the worker: do not mutate it.
        An event returned without an ``id`` gets the stream's id.
        """
        return message_event(message)

    def _formatter(self) -> Formatter | None:
        """``format_event`` when overridden; None for the default, which the hub encodes
        once per message for every stream of the worker."""
        if type(self).format_event is EventStreamView.format_event:
            return None
        return self.format_event

    async def _groups(self, request: HttpRequest, *args: Any, **kwargs: Any) -> list[str]:
        found = self.get_groups(request, *args, **kwargs)
        if inspect.isawaitable(found):
            found = await found
        groups = [found] if isinstance(found, str) else list(found)
        layer = get_channel_layer(self.channel_layer_alias)
        if layer is None:  # a 500 now rather than a stream that dies after its headers
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs CHANNEL_LAYERS[{self.channel_layer_alias!r}]"
            )
        check = getattr(layer, "require_valid_group_name", None)
        for group in groups:
            if check is not None:
                check(group)
        return list(dict.fromkeys(groups))  # unique, order kept: ids follow this order

    @staticmethod
    def _headers(response: HttpResponse | StreamingHttpResponse) -> None:
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        response["Content-Encoding"] = ""  # GZipMiddleware skips encoded responses

    async def head(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The headers a GET would get (403 included), no body, no subscription."""
        await self._groups(request, *args, **kwargs)
        response = HttpResponse(content_type=CONTENT_TYPE)
        self._headers(response)
        return response

    async def get(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> StreamingHttpResponse:
        """The stream, built with this view's options; a 403 before anything is streamed."""
        stream = await EventStream.open(
            request, lambda: self._groups(request, *args, **kwargs),
            name=type(self).__qualname__, channel_layer_alias=self.channel_layer_alias,
            heartbeat=self.heartbeat, retry=self.retry, queue_size=self.queue_size,
            formatter=self._formatter(),
        )
        response = StreamingHttpResponse(stream.run(), content_type=CONTENT_TYPE)
        self._headers(response)
        return response
