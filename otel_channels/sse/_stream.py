"""One open event stream: its spans, metrics, cursor and writer loop (see :mod:`.view`).

One way (issue 22): the view builds an :class:`EventStream` with every option
it needs (groups, layer alias, heartbeat, retry, queue size, the formatter or
``None`` for the default one), as sse-starlette's ``EventSourceResponse``
takes its options in its constructor, and hands :meth:`EventStream.run` to
Django; the stream never reads the view. The ``connect`` span is started by
:meth:`EventStream.open` and ended by :func:`_end_connect` only.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

from ..conf import get_config
from ..replay import get_log, parse_id
from ..telemetry import instruments as _telemetry
from ..telemetry import semconv as sc
from ..telemetry import spans as _spans
from ..telemetry.names import request_route
from ._hub import Envelope, LocalStream, get_hub
from ._threads import release_request_thread
from .wire import ServerSentEvent, encode_comment

__all__ = ["EventStream", "Formatter"]

#: A view's ``format_event``: the event for one group message, or None to skip it.
Formatter = Callable[[dict[str, Any]], ServerSentEvent | None]

logger = logging.getLogger("otel_channels.sse")

RESET_EVENT = "stream-reset"
_OPEN = encode_comment("open")
_HEARTBEAT = encode_comment("")


#: Metric attributes per route, shared by its streams (issue 20: thousands per worker).
_ATTRIBUTES: dict[str, dict[str, str]] = {}


def _metric_attributes(route: str) -> dict[str, str]:
    found = _ATTRIBUTES.get(route)
    if found is None:
        if len(_ATTRIBUTES) >= 4096:  # route templates are few; a bound all the same
            _ATTRIBUTES.clear()
        found = {sc.NETWORK_PROTOCOL_NAME: sc.PROTOCOL_SSE, sc.HTTP_ROUTE: route}
        _ATTRIBUTES[route] = found
    return found


def _start_connect(request: HttpRequest, route: str, name: str) -> trace.Span:
    """The ``connect {route}`` SERVER span, started before the view resolves its groups."""
    config = get_config()
    scope = getattr(request, "scope", None) or {}
    headers = _spans.decode_headers(scope) if scope else {
        k.lower(): v for k, v in request.headers.items()
    }
    links: list[Link] = []
    if trace.get_current_span().get_span_context().is_valid:
        # Inside a server span already (Django's own OpenTelemetry middleware).
        parent = otel_context.get_current()
    else:
        parent, links = _spans.handshake_context(scope, headers, config)
    http = {"scheme": request.scheme or "http", "path": request.path,
            "query_string": request.META.get("QUERY_STRING", ""),
            "client": scope.get("client")}
    return _spans.start_connect(
        _telemetry.get(), route, sc.PROTOCOL_SSE, name, http, headers, config,
        parent=parent, links=links, extra={sc.HTTP_REQUEST_METHOD: request.method or "GET"},
    )


def _end_connect(span: trace.Span, status: str, code: int,
                 error: BaseException | None = None) -> None:
    """The one place a ``connect`` span ends: accepted, rejected, aborted, or an error."""
    if error is not None:
        _spans.record_exception(span, error)
        span.end()
    else:
        _spans.end_connect(span, status, code)


class EventStream:
    """One open event stream: its spans, metrics, cursor and writer loop.

    Build it with :meth:`open` (which starts the ``connect`` span and resolves the
    groups) and stream :meth:`run`. Options left ``None`` take their ``SSE_*``
    setting; ``formatter=None`` writes the default event, encoded once per message
    for all the worker's streams.
    """

    __slots__ = ("alias", "connect_context", "connect_span", "cursor", "events", "formatter",
                 "groups", "heartbeat", "last_event_id", "local", "metric_attributes", "name",
                 "retry", "route", "telemetry", "traceparent_field")

    def __init__(self, request: HttpRequest, groups: Sequence[str], connect_span: trace.Span,
                 *, name: str, route: str, channel_layer_alias: str = "default",
                 heartbeat: float | None = None, retry: int | None = None,
                 queue_size: int | None = None, formatter: Formatter | None = None) -> None:
        config = get_config()
        self.telemetry = _telemetry.get()
        self.name = name
        self.route = route
        self.groups = list(groups)
        self.alias = channel_layer_alias
        self.heartbeat = heartbeat if heartbeat is not None else config.SSE_HEARTBEAT
        self.retry = retry if retry is not None else config.SSE_RETRY
        self.formatter = formatter
        self.traceparent_field = config.SSE_TRACEPARENT_FIELD
        self.last_event_id = (request.headers.get("Last-Event-ID")
                              or request.GET.get("lastEventId"))
        self.cursor: dict[str, str] = {}
        self.events = 0
        self.metric_attributes = _metric_attributes(route)
        capacity = queue_size or config.SSE_QUEUE_SIZE or sys.maxsize  # None: unbounded
        self.local = LocalStream(capacity, config.SSE_SLOW_CLIENT_POLICY, self.metric_attributes)
        self.connect_span: trace.Span | None = connect_span
        self.connect_context = connect_span.get_span_context()

    @classmethod
    async def open(cls, request: HttpRequest, groups: Callable[[], Awaitable[Sequence[str]]],
                   *, name: str, channel_layer_alias: str = "default",
                   heartbeat: float | None = None, retry: int | None = None,
                   queue_size: int | None = None,
                   formatter: Formatter | None = None) -> EventStream:
        """Start the ``connect`` span, await ``groups()``, build the stream.

        ``PermissionDenied`` (a 403) ends the span as ``rejected``; any other error
        is recorded on it; both are raised again for Django to answer.
        """
        route = request_route(request, name)
        span = _start_connect(request, route, name)
        try:
            found = await groups()
        except PermissionDenied:
            _end_connect(span, "rejected", 403)
            raise
        except BaseException as exc:
            _end_connect(span, "error", 500, exc)
            raise
        return cls(request, found, span, name=name, route=route,
                   channel_layer_alias=channel_layer_alias, heartbeat=heartbeat, retry=retry,
                   queue_size=queue_size, formatter=formatter)

    # -- spans -----------------------------------------------------------------

    def _end_connect(self, status: str, code: int, error: BaseException | None = None) -> None:
        span, self.connect_span = self.connect_span, None
        if span is not None:
            _end_connect(span, status, code, error)

    def _disconnect_span(self, status: str, duration: float, error: BaseException | None) -> None:
        connect = self.connect_context
        span = _spans.start_disconnect(
            self.telemetry, self.route, sc.PROTOCOL_SSE, self.name,
            Link(connect) if connect.is_valid else None, duration, {
                sc.CHANNELS_CONNECTION_STATUS: status,
                sc.CHANNELS_SSE_EVENTS_SENT: self.events,
            })
        if error is not None:
            _spans.record_exception(span, error)
        elif status == "slow_client" and span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, "slow_client")
            span.set_status(Status(StatusCode.ERROR, "queue full: stream closed"))
        span.end()

    # -- the response body -----------------------------------------------------

    async def run(self) -> AsyncIterator[bytes]:
        """The async generator Django streams; its ``finally`` releases everything."""
        # Django is done with the request's sync code: its thread goes (see _threads).
        release_request_thread()
        local, retry, heartbeat = self.local, self.retry, self.heartbeat
        hub = get_hub(self.alias)
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
            self._end_connect("accepted", 200)
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
            self._end_connect("aborted", 200, error)  # unless accepted above
            if opened_at is not None:
                duration = time.monotonic() - opened_at
                self.telemetry.active_connections.add(-1, self.metric_attributes)
                self.telemetry.connection_duration.record(duration, self.metric_attributes)
                self._disconnect_span(status, duration, error)

    async def _resume(self, floors: dict[str, str], local: LocalStream) -> bytes:
        """Replay after ``Last-Event-ID`` (or say ``stream-reset``), then the stream's id."""
        self.cursor = dict(floors)
        log = get_log(self.alias)
        last = self.last_event_id
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
        parts.extend(self._encode(envelope) for envelope in pending)  # no await in between
        pending.clear()
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
        if self.formatter is None:
            data = envelope.encode_default(event_id, extra)
        else:
            event = self.formatter(envelope.message)
            if event is None:
                return b""
            if event.id is None and event_id is not None:
                event = replace(event, id=event_id)
            data = event.encode(extra)
        self.events += 1
        self.telemetry.sse_events.add(1, self.metric_attributes)
        return data
