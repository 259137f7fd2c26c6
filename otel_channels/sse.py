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
(``Last-Event-ID`` resumes a stream on any worker, see ``_replay``); a stream on
several groups gets ids joined with ``.``, one position per group, in the order
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

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views import View
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from . import _process, _telemetry
from . import _semconv as sc
from ._hub import Envelope, LocalStream, get_hub
from ._names import pattern_template, redact_query
from ._replay import get_log, parse_id
from ._sse_wire import ServerSentEvent, encode_comment
from ._websocket import client_context, decode_headers
from .conf import get_config

__all__ = ["EventStreamView", "ServerSentEvent"]

logger = logging.getLogger("otel_channels.sse")

CONTENT_TYPE = "text/event-stream; charset=utf-8"
RESET_EVENT = "stream-reset"
_OPEN = encode_comment("open")
_HEARTBEAT = encode_comment("")
_EMPTY = otel_context.Context()


def route_of(request: HttpRequest, fallback: str) -> str:
    """The URL pattern template (``/events/<room>/``), else ``fallback``."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str) or not route:
        return fallback
    if route.startswith("^") or "(?P<" in route:
        text = pattern_template(SimpleNamespace(_regex=route))
    else:
        text = pattern_template(SimpleNamespace(_route=route))
    return "/" + text.lstrip("/")


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
        message_type = message.get("type")
        return ServerSentEvent(
            data={k: v for k, v in message.items() if k != "type"},
            event=message_type if isinstance(message_type, str) else None,
        )

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
        stream = _Stream(self, request)
        try:
            groups = await self._groups(request, *args, **kwargs)
        except PermissionDenied:
            stream.end_connect("rejected", 403)
            raise
        except BaseException as exc:
            stream.fail_connect(exc)
            raise
        stream.groups = groups
        response = StreamingHttpResponse(stream.run(), content_type=CONTENT_TYPE)
        self._headers(response)
        return response


class _Stream:
    """One open event stream: its spans, metrics, cursor and writer loop."""

    def __init__(self, view: EventStreamView, request: HttpRequest) -> None:
        self.view = view
        self.request = request
        self.config = config = get_config()
        self.telemetry = _telemetry.get()
        self.name = type(view).__qualname__
        self.route = route_of(request, self.name)
        self.groups: list[str] = []
        self.cursor: dict[str, str] = {}
        self.events = 0
        self.metric_attributes = {sc.NETWORK_PROTOCOL_NAME: "sse", sc.HTTP_ROUTE: self.route}
        self.default_format = type(view).format_event is EventStreamView.format_event
        self.traceparent_field = config["SSE_TRACEPARENT_FIELD"]
        self.connect_span: trace.Span | None = self._start_connect()
        self.connect_context = self.connect_span.get_span_context()

    # -- spans -----------------------------------------------------------------

    def _start_connect(self) -> trace.Span:
        scope = getattr(self.request, "scope", None) or {}
        headers = decode_headers(scope) if scope else {
            k.lower(): v for k, v in self.request.headers.items()
        }
        parent, links = otel_context.get_current(), []
        if not trace.get_current_span().get_span_context().is_valid:
            client = client_context(scope, headers, self.config) if scope else None
            parent = _EMPTY
            if client is not None:
                if self.config["CLIENT_CONTEXT"] == "parent":
                    parent = trace.set_span_in_context(trace.NonRecordingSpan(client), _EMPTY)
                else:  # "link": a client never forces sampling or joins our traces
                    links.append(Link(client))
        span = self.telemetry.tracer.start_span(
            f"connect {self.route}", context=parent, kind=SpanKind.SERVER, links=links
        )
        if span.is_recording():
            request = self.request
            attributes: dict[str, Any] = {
                sc.HTTP_ROUTE: self.route,
                sc.NETWORK_PROTOCOL_NAME: "sse",
                sc.HTTP_REQUEST_METHOD: request.method or "GET",
                sc.URL_SCHEME: request.scheme or "http",
                sc.URL_PATH: request.path,
                sc.CHANNELS_CONSUMER: self.name,
            }
            query = request.META.get("QUERY_STRING")
            if query:
                sensitive = self.config["SENSITIVE_QUERY_PARAMS"]
                attributes[sc.URL_QUERY] = redact_query(query, sensitive)
            client = scope.get("client") if scope else None
            if client:
                attributes[sc.CLIENT_ADDRESS] = str(client[0])
            agent = headers.get("user-agent")
            if agent:
                attributes[sc.USER_AGENT_ORIGINAL] = agent[:1024]
            span.set_attributes(attributes)
        return span

    def end_connect(self, status: str, code: int) -> None:
        span, self.connect_span = self.connect_span, None
        if span is None:
            return
        if span.is_recording():
            span.set_attribute(sc.CHANNELS_CONNECTION_STATUS, status)
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, code)
        span.end()

    def fail_connect(self, exc: BaseException) -> None:
        span, self.connect_span = self.connect_span, None
        if span is not None:
            _process.record_exception(span, exc)
            span.end()

    def _disconnect_span(self, status: str, duration: float, error: BaseException | None) -> None:
        links = [Link(self.connect_context)] if self.connect_context.is_valid else []
        span = self.telemetry.tracer.start_span(
            f"disconnect {self.route}", context=_EMPTY, kind=SpanKind.INTERNAL, links=links
        )
        if span.is_recording():
            span.set_attributes({
                sc.HTTP_ROUTE: self.route,
                sc.NETWORK_PROTOCOL_NAME: "sse",
                sc.CHANNELS_CONSUMER: self.name,
                sc.CHANNELS_CONNECTION_STATUS: status,
                sc.CHANNELS_CONNECTION_DURATION: duration,
                sc.CHANNELS_SSE_EVENTS_SENT: self.events,
            })
            if error is not None:
                _process.record_exception(span, error)
            elif status == "slow_client":
                span.set_attribute(sc.ERROR_TYPE, "slow_client")
                span.set_status(Status(StatusCode.ERROR, "queue full: stream closed"))
        span.end()

    # -- the response body -----------------------------------------------------

    async def run(self) -> AsyncIterator[bytes]:
        """The async generator Django streams; its ``finally`` releases everything."""
        config, view = self.config, self.view
        retry = view.retry if view.retry is not None else config["SSE_RETRY"]
        heartbeat = view.heartbeat if view.heartbeat is not None else config["SSE_HEARTBEAT"]
        capacity = view.queue_size or config["SSE_QUEUE_SIZE"] or sys.maxsize  # None: unbounded
        local = LocalStream(capacity, config["SSE_SLOW_CLIENT_POLICY"], self.metric_attributes)
        hub = get_hub(view.channel_layer_alias)
        joined: list[str] = []
        opened_at: float | None = None
        status = "closed"
        error: BaseException | None = None
        try:
            floors = {}
            for group in self.groups:
                joined.append(group)  # before the await: a cancelled join is still left
                floors[group] = await hub.join(group, local)  # no I/O once the worker is in
            # The first write: the browser's onopen, a proxy's first byte. Sent once
            # subscribed, so a client that acts on onopen cannot miss its own broadcast.
            yield _OPEN if retry is None else _OPEN[:-1] + f"retry: {int(retry)}\n\n".encode()
            first = await self._resume(floors, local)
            self.end_connect("accepted", 200)
            opened_at = time.monotonic()
            self.telemetry.active_connections.add(1, self.metric_attributes)
            if first:
                yield first
            loop = asyncio.get_running_loop()
            while True:
                if not local.pending and not local.overflowed:
                    local.wake.clear()
                    timer = loop.call_later(heartbeat, local.wake.set)
                    try:
                        await local.wake.wait()
                    finally:
                        timer.cancel()
                    if not local.pending and not local.overflowed:
                        yield _HEARTBEAT
                        continue
                if local.overflowed:
                    status = "slow_client"  # the browser reconnects and replays
                    return
                chunk = self._drain(local)
                if chunk:
                    yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the client went away: the normal end of a stream
        except Exception as exc:
            # Never raise out of the body: Django has sent the response start, so daphne
            # can send neither a 500 nor the end of the body and the client would hang on
            # a silent connection (a failed hub join or replay while Redis is down). End
            # the stream instead: EventSource reconnects with Last-Event-ID after its retry.
            status, error = "error", exc
            logger.warning("event stream on %s failed; ending it", self.route, exc_info=True)
            return
        except BaseException as exc:
            status, error = "error", exc
            raise
        finally:
            for group in joined:
                hub.leave(group, local)
            if self.connect_span is not None:
                if error is not None:
                    self.fail_connect(error)
                else:
                    self.end_connect("aborted", 200)
            if opened_at is not None:
                duration = time.monotonic() - opened_at
                self.telemetry.active_connections.add(-1, self.metric_attributes)
                self.telemetry.connection_duration.record(duration, self.metric_attributes)
                self._disconnect_span(status, duration, error)

    async def _resume(self, floors: dict[str, str], local: LocalStream) -> bytes:
        """Replay after ``Last-Event-ID`` (or say ``stream-reset``), then the stream's id."""
        self.cursor = dict(floors)
        log = get_log(self.view.channel_layer_alias)
        request = self.request
        last = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
        if log is None or not self.groups:
            return b""
        if not last:
            return self._id_block()
        after = self._parse_cursor(last)
        replay: list[Envelope] | None = None
        if after is not None:
            replay = []
            for group in self.groups:
                found = await log.since(group, after[group], floors[group])
                if found is None:
                    replay = None
                    break
                replay.extend(Envelope(group, e.id, e.message, e.traceparent) for e in found)
        outcome = "hit" if replay is not None else "miss"
        self.telemetry.sse_replay.add(1, {**self.metric_attributes,
                                          sc.CHANNELS_SSE_REPLAY_OUTCOME: outcome})
        span = self.connect_span
        if span is not None and span.is_recording():
            span.set_attribute(sc.CHANNELS_SSE_REPLAY_OUTCOME, outcome)
            span.set_attribute(sc.CHANNELS_SSE_REPLAYED, len(replay or ()))
        if replay is None or after is None:
            return self._reset({"reason": "last_event_id_unknown"})
        self.cursor = dict(after)
        replay.sort(key=lambda e: e.position or (0, 0))  # groups interleave by time
        chunk = b"".join(self._encode(envelope) for envelope in replay)
        for group in self.groups:
            mine, theirs = parse_id(floors[group]), parse_id(after[group])
            assert mine is not None and theirs is not None
            if theirs > mine:  # the client is ahead of this worker: skip what it has
                self.cursor[group] = after[group]
                local.accepted[group] = max(local.accepted.get(group, theirs), theirs)
            else:
                self.cursor[group] = floors[group]
        return chunk + self._id_block()

    def _parse_cursor(self, value: str) -> dict[str, str] | None:
        parts = value.split(".")
        if len(parts) != len(self.groups) or any(parse_id(p) is None for p in parts):
            return None
        return dict(zip(self.groups, parts, strict=True))

    def _composite(self) -> str:
        return ".".join(self.cursor[group] for group in self.groups)

    def _id_block(self) -> bytes:
        return f"id: {self._composite()}\n\n".encode()

    def _reset(self, data: dict[str, Any]) -> bytes:
        event = ServerSentEvent(data=data, event=RESET_EVENT,
                                id=self._composite() if self.cursor else None)
        self.events += 1
        self.telemetry.sse_events.add(1, self.metric_attributes)
        return event.encode()

    def _drain(self, local: LocalStream) -> bytes:
        parts = []
        if local.unreported:
            parts.append(self._reset({"reason": "slow_client", "dropped": local.unreported}))
            local.unreported = 0
        pending = local.pending
        while pending:
            parts.append(self._encode(pending.popleft()))
        return b"".join(parts)

    def _encode(self, envelope: Envelope) -> bytes:
        """One envelope's bytes with this stream's id; advances the cursor."""
        if envelope.id is not None:
            self.cursor[envelope.group] = envelope.id
        if envelope.reset is not None:  # the hub lost events (see Hub._catch_up)
            return self._reset({"reason": envelope.reset})
        event_id = self._composite() if envelope.id is not None else None
        extra: tuple[tuple[str, str], ...] = ()
        if self.traceparent_field and envelope.traceparent:
            extra = (("traceparent", envelope.traceparent),)
        if self.default_format:
            data = envelope.encode_default(event_id, extra)
        else:
            event = self.view.format_event(envelope.message)
            if event is None:
                return b""
            if event.id is None and event_id is not None:
                event = replace(event, id=event_id)
            data = event.encode(extra)
        self.events += 1
        self.telemetry.sse_events.add(1, self.metric_attributes)
        return data
