"""Server-Sent Events on channel-layer groups: :class:`EventStreamView`.

Usage::

    from otel_channels.sse import EventStreamView

    class RoomEvents(EventStreamView):
        async def get_groups(self, request, room):
            if not await request.auser().has_perm("chat.view_room"):
                raise PermissionDenied        # 403, before anything is streamed
            return [f"room_{room}"]

    urlpatterns = [path("events/<str:room>/", RoomEvents.as_view())]

Every message sent to those groups (``broadcast()`` or any ``group_send``)
becomes one event: ``event:`` is the message ``type``, ``data:`` the JSON of
the rest, the trace carrier removed; override :meth:`EventStreamView.format_event`
to shape it or skip it. Every event has an id ordered per group across workers
(``Last-Event-ID`` resumes a stream on any worker, see :mod:`otel_channels.replay`);
a stream on several groups gets ids joined with ``.``, one position per group, in the order
of its groups. A process-local hub holds one channel-layer subscription per
group per worker (see ``_hub``).

On the wire: ``Content-Type: text/event-stream; charset=utf-8``,
``Cache-Control: no-cache``, ``X-Accel-Buffering: no`` (nginx), no
``Connection`` header (the server's business; illegal in HTTP/2), and an empty
``Content-Encoding`` so ``GZipMiddleware`` (which buffers and compresses each
chunk on its own) leaves the stream alone, as django-browser-reload does
(an empty list is valid; ``identity`` must not be used in Content-Encoding,
RFC 9110 8.4.1). The first write is a comment (plus ``retry:`` when
configured) as soon as the stream is subscribed (before the replay read, and
with no I/O at all once the worker holds the group), then ``id:`` of the
stream's position, then events, and a comment every ``heartbeat`` seconds of
silence. HEAD gets the headers only.

Serve it with an ASGI server (daphne, uvicorn): Django cancels the response
when the client goes away, and everything the stream held (hub membership,
queue, spans, the active-connection count) is released right then.
"""

from __future__ import annotations

from .view import EventStreamView
from .wire import ServerSentEvent

__all__ = ["EventStreamView", "ServerSentEvent"]
