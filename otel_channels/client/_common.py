"""What both traced clients share: telemetry, URL attributes, backoff and span recording.

:class:`ConnectionRecorder` holds the spans and metrics one client records
about its connections (``connect``, ``receive``, the connection duration),
so the transports keep only the I/O and the reconnection logic.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from .. import __version__
from ..telemetry import semconv as sc
from ..telemetry.instruments import DURATION_BUCKETS, SIZE_BUCKETS
from ..telemetry.names import redact_query

#: A context without any span: the parent of spans that start a new trace.
EMPTY = otel_context.Context()
# The server's rule (RFC 6455 7.4.1): 1000 normal, 1001 going away, 1005 no status sent.


class ClientTelemetry:
    """Tracer and instruments of the clients, created once per provider pair."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        scope = sc.CLIENT_INSTRUMENTATION_NAME
        self.tracer = trace.get_tracer(scope, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(scope, __version__, meter_provider=meter_provider)
        self.connection_duration = meter.create_histogram(
            sc.M_CLIENT_CONNECTION_DURATION, unit="s",
            description="Duration of client connections.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.websocket_messages = meter.create_counter(
            sc.M_CLIENT_WEBSOCKET_MESSAGES, unit="{message}",
            description="WebSocket messages sent and received by clients.",
        )
        self.websocket_message_size = meter.create_histogram(
            sc.M_CLIENT_WEBSOCKET_MESSAGE_SIZE, unit="By",
            description="Size of client WebSocket messages.",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )
        self.sse_events = meter.create_counter(
            sc.M_CLIENT_SSE_EVENTS, unit="{event}",
            description="Server-Sent Events received by clients.",
        )
        self.reconnects = meter.create_counter(
            sc.M_CLIENT_RECONNECTS, unit="{reconnect}", description="Client reconnection attempts.",
        )


@functools.lru_cache(maxsize=16)
def client_telemetry(tracer_provider: Any = None, meter_provider: Any = None) -> ClientTelemetry:
    """The shared :class:`ClientTelemetry` of a provider pair (instruments are not free)."""
    return ClientTelemetry(tracer_provider, meter_provider)


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
    """
    return rand() * min(cap, base * 2.0 ** min(attempt, 62))  # 2**62: no float overflow


def message_size(data: str | bytes) -> int:
    """Bytes of a message on the wire (text is UTF-8)."""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    return len(data)


def url_attributes(url: str, sensitive: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """``(path, attributes)`` of a URL: scheme, server, path and the redacted query."""
    parts = urlsplit(url)
    path = parts.path or "/"
    query = redact_query(parts.query, frozenset(name.lower() for name in sensitive))
    # Rebuilt from hostname and port so that userinfo (user:password@) never gets recorded.
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    attributes: dict[str, Any] = {
        sc.URL_SCHEME: parts.scheme,
        sc.URL_FULL: urlunsplit((parts.scheme, netloc, path, query, "")),
        sc.URL_PATH: path,
        sc.SERVER_ADDRESS: parts.hostname or "",
    }
    if parts.port is not None:
        attributes[sc.SERVER_PORT] = parts.port
    if query:
        attributes[sc.URL_QUERY] = query
    return path, attributes


def record_error(span: trace.Span, exc: BaseException, error_type: str | None = None) -> None:
    """Record ``exc`` on ``span`` with ``error.type`` (default: the exception's class)."""
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_attribute(sc.ERROR_TYPE, error_type or type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))


class CurrentSpan:
    """A receive span kept current in the caller's task until the next receive.

    ``__anext__`` / ``recv`` are plain coroutines awaited by the caller, so a
    context attached in them stays attached in the caller's task (as the
    contrib Kafka instrumentations do for ``next(consumer)``). It is detached
    only from that same task and only while it is still the current span, so
    a consumer driven from another task never breaks the caller's context.
    """

    __slots__ = ("span", "token", "task")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.token = otel_context.attach(trace.set_span_in_context(span))
        self.task = _current_task()

    def end(self, exc: BaseException | None = None) -> None:
        if exc is not None and isinstance(exc, Exception):  # not CancelledError / exits
            record_error(self.span, exc)
        if _current_task() is self.task and trace.get_current_span() is self.span:
            otel_context.detach(self.token)
        self.span.end()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


class ConnectionRecorder:
    """Spans and metrics of one client's connections: ``connect``, ``receive``, duration.

    Args:
        telemetry: the tracer and instruments.
        route: the low-cardinality ``url.template``.
        protocol: ``network.protocol.name`` (``websocket`` / ``sse``).
        url_attributes: the connect span's ``url.*`` / ``server.*`` attributes.
    """

    def __init__(self, telemetry: ClientTelemetry, route: str, protocol: str,
                 url_attributes: dict[str, Any]) -> None:
        self.telemetry = telemetry
        self.route = route
        self.protocol = protocol
        self.url_attributes = url_attributes
        self.metric_attributes: dict[str, Any] = {
            sc.NETWORK_PROTOCOL_NAME: protocol, sc.URL_TEMPLATE: route,
        }
        #: Span context of the last successful ``connect`` span.
        self.connect_context: SpanContext | None = None
        self.links: list[Link] = []  # every later span of the connection links its connect
        self.current: CurrentSpan | None = None
        self.opened_at = 0.0

    # -- connect --------------------------------------------------------------------------

    def start_connect(self, attempt: int, method: str | None = None) -> trace.Span:
        """The CLIENT ``connect`` span of one handshake (``attempt`` > 0: a reconnection)."""
        attributes = dict(self.url_attributes)
        if method is not None:
            attributes[sc.HTTP_REQUEST_METHOD] = method
        attributes[sc.NETWORK_PROTOCOL_NAME] = self.protocol
        attributes[sc.URL_TEMPLATE] = self.route
        if attempt:
            attributes[sc.HTTP_REQUEST_RESEND_COUNT] = attempt
        return self.telemetry.tracer.start_span(
            f"{sc.SPAN_CONNECT} {self.route}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def connect_failed(self, span: trace.Span, exc: BaseException, status: int | None = None,
                       error_type: str | None = None) -> None:
        """End the ``connect`` span of a failed handshake (``status``: the HTTP response's)."""
        if status is not None and span.is_recording():
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
        record_error(span, exc, error_type)
        span.end()

    def opened(self, span: trace.Span, status: int, subprotocol: str | None = None) -> None:
        """End the ``connect`` span of a handshake that succeeded; the connection starts."""
        if span.is_recording():
            span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
            if subprotocol:
                span.set_attribute(sc.WEBSOCKET_SUBPROTOCOL, subprotocol)
        span.end()
        context = span.get_span_context()
        self.connect_context = context
        self.links = [Link(context)] if context.is_valid else []
        self.opened_at = time.monotonic()

    def reconnecting(self) -> None:
        self.telemetry.reconnects.add(1, self.metric_attributes)

    def ended(self, error_type: str | None) -> tuple[float, dict[str, Any]]:
        """Record the connection's duration; ``(duration, its metric attributes)``."""
        duration = time.monotonic() - self.opened_at
        attributes = dict(self.metric_attributes)
        if error_type is not None:
            attributes[sc.ERROR_TYPE] = error_type
        self.telemetry.connection_duration.record(duration, attributes)
        return duration, attributes

    # -- receive --------------------------------------------------------------------------

    def receive(self, remote: SpanContext | None, body: str | bytes, size: int | None,
                type_key: str, type_value: str, event_id: str = "") -> None:
        """Start the CONSUMER ``receive`` span of one inbound message and make it current.

        Its parent is ``remote`` (the ``traceparent`` the message carried), else
        it starts a new trace; either way it links the ``connect`` span.
        """
        parent = EMPTY if remote is None else trace.set_span_in_context(
            NonRecordingSpan(remote), EMPTY)
        span = self.telemetry.tracer.start_span(
            f"{sc.SPAN_RECEIVE} {self.route}", context=parent, kind=SpanKind.CONSUMER,
            links=self.links,
        )
        if span.is_recording():  # attributes only for sampled spans: nothing built otherwise
            attributes: dict[str, Any] = {
                sc.MESSAGING_OPERATION_NAME: "receive",
                # "process", as on the server: the span covers handling the message.
                sc.MESSAGING_OPERATION_TYPE: "process",
                sc.NETWORK_PROTOCOL_NAME: self.protocol,
                sc.URL_TEMPLATE: self.route,
                type_key: type_value,
                sc.MESSAGING_MESSAGE_BODY_SIZE: message_size(body) if size is None else size,
            }
            if event_id:
                attributes[sc.SSE_LAST_EVENT_ID] = event_id
            span.set_attributes(attributes)
        self.current = CurrentSpan(span)

    def end_receive(self, exc: BaseException | None = None) -> None:
        """End the current ``receive`` span, recording ``exc`` (the handler's) on it."""
        current, self.current = self.current, None
        if current is not None:
            current.end(exc)
