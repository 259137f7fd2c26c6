"""Pages, the JSON message API, the room feed, the live trace feed and ``/stats/``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views import View
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from otel_channels.broadcast import abroadcast
from otel_channels.sse import EventStreamView

from .. import stats
from ..tracing import TRACE_GROUP, worker
from .models import Room
from .services import (
    CHAT_EVENT,
    HISTORY_MAX,
    HISTORY_ON_JOIN,
    ValidationError,
    arecent_messages,
    asave_message,
    chat_data,
    room_group,
    valid_room,
    validate_chat,
)

__all__ = [
    "MessagesView", "RoomEventsView", "TraceEventsView", "follow", "index", "room", "stats_view",
    "traces",
]

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("example_project.chat")
MESSAGES_ROUTE = "/rooms/<room>/messages/"


def _room_or_404(room: str) -> str:
    if not valid_room(room):
        raise Http404("room names are letters, digits, '-' and '_' (at most 50)")
    return room


def _context(**extra: Any) -> dict[str, Any]:
    return {"worker": worker(), **extra}


def index(request: HttpRequest) -> HttpResponse:
    """Pick or create a room; ``?room=`` redirects to it."""
    room = request.GET.get("room", "").strip()
    if room:
        if valid_room(room):
            return redirect("room", room=room)
        error = "Room names are letters, digits, '-' and '_' (at most 50)."
    else:
        error = ""
    rooms = list(Room.objects.order_by("-created").values_list("name", flat=True)[:20])
    layer = type(get_channel_layer()).__name__
    return render(request, "chat/index.html", _context(
        rooms=rooms, error=error, layer_name=layer, shared_layer=layer != "InMemoryChannelLayer",
    ))


def room(request: HttpRequest, room: str) -> HttpResponse:
    """Chat over a WebSocket."""
    return render(request, "chat/room.html", _context(room=_room_or_404(room)))


def follow(request: HttpRequest, room: str) -> HttpResponse:
    """Follow a room read-only over EventSource (a wall display)."""
    return render(request, "chat/follow.html", _context(room=_room_or_404(room)))


def traces(request: HttpRequest) -> HttpResponse:
    """The live trace waterfall."""
    return render(request, "chat/traces.html", _context())


def stats_view(request: HttpRequest) -> JsonResponse:
    """Open WebSocket and SSE connections per route on this worker."""
    return JsonResponse({"worker": worker().as_dict(), **stats.snapshot()})


class MessagesView(View):
    """``GET``: recent messages (``?limit=``); ``POST {"user", "text"}``: persist and broadcast.

    The POST is exempt from CSRF because it only accepts ``application/json``,
    which a cross-site form cannot send and a cross-site ``fetch`` cannot send
    without a CORS preflight this server never grants.
    """

    http_method_names = ["get", "post"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        view.csrf_exempt = True  # type: ignore[attr-defined]  # see the class docstring
        return view

    async def get(self, request: HttpRequest, room: str) -> JsonResponse:
        _room_or_404(room)
        try:
            limit = int(request.GET.get("limit", HISTORY_ON_JOIN))
        except ValueError:
            limit = 0
        if not 1 <= limit <= HISTORY_MAX:
            return JsonResponse({"error": f"limit must be from 1 to {HISTORY_MAX}"}, status=400)
        return JsonResponse({"room": room, "messages": await arecent_messages(room, limit)})

    async def post(self, request: HttpRequest, room: str) -> JsonResponse:
        _room_or_404(room)
        # A SERVER span for the request, continuing a caller's traceparent if it sent one:
        # the broadcast below becomes its child, so curl -> fan-out is one trace.
        parent = propagate.extract(request.headers)
        with tracer.start_as_current_span(
            f"POST {MESSAGES_ROUTE}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": MESSAGES_ROUTE,
                        "chat.room": room},
        ) as span:
            response = await self._post(request, room)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _post(self, request: HttpRequest, room: str) -> JsonResponse:
        if request.content_type != "application/json":
            return JsonResponse({"error": "send a JSON body with Content-Type: application/json"},
                                status=415)
        try:
            body = json.loads(request.body or b"null")
        except ValueError as exc:
            return JsonResponse({"error": f"body is not valid JSON: {exc}"}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"error": "body must be a JSON object"}, status=400)
        try:
            user, text = validate_chat(body.get("user"), body.get("text"))
        except ValidationError as exc:
            return JsonResponse({"error": str(exc), "code": exc.code}, status=400)
        message = await asave_message(room, user, text, "http")
        # broadcast(): logged for Last-Event-ID replay, then group_send (traced, fanned out).
        data = chat_data(message, worker().as_dict(), "http")
        await abroadcast(room_group(room), CHAT_EVENT, data)
        return JsonResponse({"message": message, "worker": worker().as_dict()}, status=201)


async def _counted(chunks: AsyncIterator[bytes], route: str) -> AsyncIterator[bytes]:
    """The stream's bytes, counted open in ``/stats/`` while they flow.

    A client that leaves cancels the response task: the cancellation runs through
    this generator into the view's own, so both ``finally`` blocks run at once.
    """
    stats.opened("sse", route)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        stats.closed("sse", route)


class CountedEventStreamView(EventStreamView):
    """An ``EventStreamView`` whose open streams show in ``/stats/``."""

    route = ""

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        response = await super().get(request, *args, **kwargs)
        response.streaming_content = _counted(response.streaming_content, self.route)
        return response


class RoomEventsView(CountedEventStreamView):
    """A room's messages as Server-Sent Events (``event: chat.message``), for followers."""

    route = "/rooms/<room>/events/"

    def get_groups(self, request: HttpRequest, room: str) -> list[str]:  # type: ignore[override]
        _room_or_404(room)
        return [room_group(room)]


class TraceEventsView(CountedEventStreamView):
    """Finished spans of every worker (``event: spans``), published by ``tracing.py``.

    A client that connects without ``Last-Event-ID`` (a page just opened) first gets
    the recent span batches: up to ``tail_batches`` of the last ``tail_seconds``,
    replayed from the group's log, then the live ones. ``EventStreamView`` replays
    after a ``lastEventId`` only, so the view picks one: the entry before the tail.
    The log is the one every worker on the channel layer shares (Redis), and the
    replay runs up to the point this stream subscribed, so nothing is missed or
    repeated between the tail and the live events. ``?tail=0`` streams live only.
    A browser that reconnects sends ``Last-Event-ID`` and resumes as usual.
    """

    route = "/traces/events/"
    groups = (TRACE_GROUP,)
    tail_batches = 50
    tail_seconds = 900
    #: Shorter look-backs tried first, until one holds ``tail_batches``: a busy log
    #: is read over a few seconds, not over all it keeps.
    tail_windows = (10, 60)

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        resuming = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
        if not resuming and request.GET.get("tail") != "0":
            after = await self._tail_start()
            if after is not None:
                query = request.GET.copy()
                query["lastEventId"] = after
                request.GET = query  # type: ignore[assignment]
        return await super().get(request, *args, **kwargs)

    async def _tail_start(self) -> str | None:
        """The id to replay after so the stream starts with the log's tail; None: no tail."""
        # The log behind EventStreamView's Last-Event-ID replay (otel_channels.replay):
        # its entries are our span batches, each with the id before it.
        from otel_channels.replay import ZERO, get_log

        log = get_log(self.channel_layer_alias)
        if log is None:  # SSE_REPLAY_MAXLEN = 0: no log, live only
            return None
        try:
            head = await log.head(TRACE_GROUP)
            if head == ZERO:
                return None
            head_ms = int(head.split("-", 1)[0])
            entries: list[Any] = []
            for seconds in (*self.tail_windows, self.tail_seconds):
                since = f"{max(0, head_ms - seconds * 1000)}-0"
                entries = await log.between(TRACE_GROUP, since, head)
                if len(entries) >= self.tail_batches:
                    break
        except Exception:  # Redis trouble: the live stream reports it, the tail is a nicety
            logger.warning("reading the recent spans failed", exc_info=True)
            return None
        if not entries:
            return None
        return str(entries[-self.tail_batches:][0].prev)
