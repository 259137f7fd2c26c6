"""The traced ``EventSource``: a thin transport on ``httpx`` around the sans-I/O parser."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanContext

from ..eventstream import EventStreamParser, EventTooLarge, MessageEvent
from ..telemetry import carrier as _carrier
from ..telemetry import semconv as sc
from ..telemetry.names import DEFAULT_SENSITIVE_QUERY_PARAMS
from ._common import ClientTelemetry, ConnectionRecorder, client_telemetry, url_attributes

try:  # optional dependency: the "client" extra
    import httpx
except ImportError:  # pragma: no cover - exercised only without the extra
    httpx = None  # type: ignore[assignment]

__all__ = ["EventSourceError", "TracedEventSource"]

_MAX_RETRY = 86400.0  # a day: a huge ``retry:`` must not overflow the event loop's timer


class EventSourceError(Exception):
    """The event source failed and will not reconnect (the WHATWG "fail the connection").

    Args:
        message: what happened.
        status: the HTTP status of the response, if there was one.
        content_type: its ``Content-Type``, if there was one.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 content_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.content_type = content_type


class _EventSourceRecorder(ConnectionRecorder):
    """The SSE-only telemetry: one ``receive`` span and count per event."""

    def __init__(self, telemetry: ClientTelemetry, route: str,
                 url_attributes: dict[str, Any]) -> None:
        super().__init__(telemetry, route, sc.PROTOCOL_SSE, url_attributes)

    def event(self, event: MessageEvent) -> None:
        """Count one event and start its ``receive`` span (child of its ``traceparent:``)."""
        self.telemetry.sse_events.add(1, self.metric_attributes)
        fields = event.fields
        remote = None
        if fields:
            traceparent = fields.get("traceparent")
            if traceparent:
                remote = _carrier.parse_traceparent(traceparent, fields.get("tracestate"))
        self.receive(remote, event.data, None, sc.SSE_EVENT_TYPE, event.type, event.id)


class _Reconnection:
    """When to give up and how long to wait: the reconnection time, backed off on failures.

    Browsers wait the reconnection time between attempts; repeated network
    failures here also back off exponentially from it, so a down server is not
    hammered every ``retry`` seconds.
    """

    __slots__ = ("failures", "network_failure", "last_error")

    def __init__(self) -> None:
        self.failures = 0  # consecutive connections that brought no event
        self.network_failure = False  # the last connection ended with a network error
        self.last_error: BaseException | None = None

    def delay(self, retry: float, cap: float) -> float:
        if not self.network_failure or self.failures <= 1:
            return retry
        growing = retry * 2.0 ** min(self.failures - 1, 30)
        return min(growing, max(retry, cap))

    def connect_failed(self, exc: BaseException) -> None:
        """A network error before any response."""
        self.failures += 1
        self.network_failure = True
        self.last_error = exc

    def stream_ended(self, events: int, error: BaseException | None) -> None:
        """A stream ended (``error``: the network error that ended it) after ``events``."""
        self.network_failure = error is not None
        if error is not None:
            self.last_error = error
        self.failures = 0 if events else self.failures + 1


def _request_headers(extra: Mapping[str, str], last_event_id: str) -> dict[str, Any]:
    """A browser's ``EventSource`` request headers, plus ``extra``."""
    headers: dict[str, Any] = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    headers.update(extra)
    if last_event_id:
        # bytes: httpx encodes a str header value as ASCII, and an id may be any text.
        headers["Last-Event-ID"] = last_event_id.encode("utf-8")
    return headers


def _response_problem(status: int, content_type: str | None,
                      url: str) -> tuple[str, str] | None:
    """``(message, error.type)`` when a response must fail the source, else None."""
    if status != 200:
        return f"HTTP {status} from {url}", str(status)
    if (content_type or "").split(";", 1)[0].strip().lower() != "text/event-stream":
        return f"Content-Type {content_type!r} is not text/event-stream", "invalid_content_type"
    return None


class TracedEventSource:
    """A traced ``EventSource`` on ``httpx``: ``async with`` it, then ``async for`` its events.

    Behaves as the WHATWG ``EventSource`` processing model says: follows
    redirects; reconnects when the stream ends or the network fails, after the
    reconnection time (``retry:`` from the stream, else ``retry``), sending
    ``Last-Event-ID``; fails (raises :class:`EventSourceError`, no reconnection)
    on a status other than 200 (204 included) or a ``Content-Type`` other than
    ``text/event-stream``. Events are :class:`MessageEvent` objects.

    Args:
        url: ``http://`` or ``https://`` URL of the stream.
        route: low-cardinality name for span names and metrics (default: the URL path).
        headers: extra request headers.
        client: an ``httpx.AsyncClient`` to use (not closed by this class); default: own one.
        retry: initial reconnection time in seconds (a ``retry:`` field replaces it).
        last_event_id: resume from this id (sent as ``Last-Event-ID`` on the first request).
        max_retries: consecutive reconnections without a single event before giving up
            (None: never give up, as browsers).
        backoff_cap: seconds; repeated network failures back off exponentially from
            ``retry`` up to this.
        open_timeout: seconds for connecting and receiving the response headers.
        read_timeout: seconds without a byte (heartbeats count) before reconnecting
            (None: wait forever, as browsers).
        max_event_size: characters one event may grow to (None: unbounded).
        sensitive_query_params: query parameters redacted in ``url.query`` / ``url.full``.
        tracer_provider: defaults to the global one.
        meter_provider: defaults to the global one.
    """

    def __init__(
        self,
        url: str,
        *,
        route: str | None = None,
        headers: Mapping[str, str] | None = None,
        client: Any = None,
        retry: float = 3.0,
        last_event_id: str = "",
        max_retries: int | None = None,
        backoff_cap: float = 30.0,
        open_timeout: float = 10.0,
        read_timeout: float | None = None,
        max_event_size: int | None = 16 * 2**20,
        sensitive_query_params: Iterable[str] = DEFAULT_SENSITIVE_QUERY_PARAMS,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        if httpx is None:  # pragma: no cover
            raise ImportError("TracedEventSource needs 'httpx': "
                              "pip install 'otel_channels[client]'")
        self.url = url
        path, attributes = url_attributes(url, sensitive_query_params)
        self.route = route or path
        self.headers = dict(headers or {})
        #: Seconds to wait before reconnecting (updated by ``retry:`` fields).
        self.retry = retry
        #: The last event id string; sent as ``Last-Event-ID`` when reconnecting.
        self.last_event_id = last_event_id
        self.max_retries = max_retries
        self.backoff_cap = backoff_cap
        self.max_event_size = max_event_size
        self.open_timeout = open_timeout
        self.timeout = httpx.Timeout(open_timeout, read=read_timeout)
        #: ``"connecting"``, ``"open"`` or ``"closed"``.
        self.ready_state = "connecting"
        #: Reconnections made so far (not counting the first connection).
        self.reconnects = 0
        self._client = client
        self._owns_client = client is None
        self._recorder = _EventSourceRecorder(
            client_telemetry(tracer_provider, meter_provider), self.route, attributes)
        self._reconnection = _Reconnection()
        self._response: Any = None
        self._chunks: Any = None
        self._parser: EventStreamParser | None = None
        self._pending: collections.deque[MessageEvent] = collections.deque()
        self._connections = 0
        self._stream_events = 0
        self._closed = False
        self._closed_event = asyncio.Event()

    @property
    def connect_span_context(self) -> SpanContext | None:
        """Span context of the last successful ``connect`` span."""
        return self._recorder.connect_context

    async def __aenter__(self) -> TracedEventSource:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._recorder.end_receive(exc)
        await self.aclose()

    def __aiter__(self) -> TracedEventSource:
        return self

    async def __anext__(self) -> MessageEvent:
        self._recorder.end_receive()
        event = await self._next_event()
        if event is None:
            raise StopAsyncIteration
        self._recorder.event(event)
        return event

    async def aclose(self) -> None:
        """Stop: close the stream, never reconnect; iteration ends. Idempotent.

        Called by itself when the source fails, so a failed source holds nothing open.
        """
        self._closed = True
        self._closed_event.set()
        self.ready_state = "closed"
        self._pending.clear()
        self._recorder.end_receive()
        await self._end_stream(None)
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    close = aclose

    async def _next_event(self) -> MessageEvent | None:
        while True:
            if self._closed:
                return None
            if self._pending:
                return self._pending.popleft()
            if self._response is None:
                await self._connect()
                continue
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                await self._end_stream(None)  # the server ended the stream: reconnect
                continue
            except Exception as exc:
                if self._closed:
                    return None
                if not isinstance(exc, httpx.TransportError):
                    raise
                await self._end_stream(exc)
                continue
            await self._feed(chunk)

    async def _feed(self, chunk: bytes) -> None:
        parser = self._parser
        assert parser is not None
        try:
            events = parser.feed(chunk)
        except EventTooLarge as exc:
            self._closed = True
            await self._end_stream(exc)
            await self.aclose()
            raise EventSourceError(str(exc)) from exc
        if parser.retry is not None:
            self.retry = min(parser.retry / 1000.0, _MAX_RETRY)
        self.last_event_id = parser.last_event_id
        if events:
            self._stream_events += len(events)
            self._pending.extend(events)

    async def _connect(self) -> None:
        """Wait out the reconnection time if this is a reconnection, then open the stream."""
        if self._connections:
            reconnection = self._reconnection
            if self.max_retries is not None and reconnection.failures > self.max_retries:
                await self.aclose()
                raise EventSourceError(
                    f"gave up after {self.max_retries} reconnections without an event"
                ) from reconnection.last_error
            await self._wait(reconnection.delay(self.retry, self.backoff_cap))
            if self._closed:
                return
            self.reconnects += 1
            self._recorder.reconnecting()
        attempt = self._connections
        self._connections += 1
        await self._open(attempt)

    async def _open(self, attempt: int) -> None:
        """One request inside a ``connect`` CLIENT span; a network error leaves it closed."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        headers = _request_headers(self.headers, self.last_event_id)
        recorder = self._recorder
        span = recorder.start_connect(attempt, "GET")
        with trace.use_span(span, end_on_exit=False, record_exception=False,
                            set_status_on_exception=False):
            propagate.inject(headers)  # the view's connect span becomes its child
            try:
                request = self._client.build_request("GET", self.url, headers=headers,
                                                     timeout=self.timeout)
                # open_timeout bounds the whole wait for the response headers, whatever
                # read_timeout is (that one is for the idle stream).
                response = await asyncio.wait_for(
                    self._client.send(request, stream=True, follow_redirects=True),
                    self.open_timeout,
                )
            except (httpx.TransportError, asyncio.TimeoutError) as caught:
                exc: BaseException = caught
                if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, TimeoutError):
                    exc = TimeoutError("no response headers within open_timeout")  # 3.10
                recorder.connect_failed(span, exc)
                if isinstance(exc, httpx.UnsupportedProtocol):
                    await self.aclose()
                    raise EventSourceError(str(exc)) from exc
                self._reconnection.connect_failed(exc)
                return  # a network error: reconnect
            except BaseException as exc:
                recorder.connect_failed(span, exc)
                raise
        status = response.status_code
        content_type = response.headers.get("content-type")
        problem = _response_problem(status, content_type, self.url)
        if problem is not None:
            message, error_type = problem
            error = EventSourceError(message, status=status, content_type=content_type)
            recorder.connect_failed(span, error, status, error_type)
            await response.aclose()
            await self.aclose()
            raise error
        recorder.opened(span, status)
        self._response = response
        self._chunks = response.aiter_bytes()
        self._parser = EventStreamParser(self.last_event_id, self.max_event_size)
        self._stream_events = 0
        self.ready_state = "open"

    async def _wait(self, delay: float) -> None:
        if delay <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):  # aclose() meanwhile wakes it at once
            await asyncio.wait_for(self._closed_event.wait(), delay)

    async def _end_stream(self, error: BaseException | None) -> None:
        """The open stream ended (EOF, network error or ``aclose``): record it, forget it."""
        response, self._response = self._response, None
        if response is None:
            return
        self._chunks = None
        if self._parser is not None:
            self._parser.close()  # an incomplete event at EOF is discarded
            self._parser = None
        self._recorder.ended(type(error).__qualname__ if error is not None else None)
        if not self._closed:
            self.ready_state = "connecting"
        self._reconnection.stream_ended(self._stream_events, error)
        with contextlib.suppress(Exception):  # a broken transport has nothing left to release
            await response.aclose()
