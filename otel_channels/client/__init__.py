"""Traced Python clients for Channels apps: WebSocket and Server-Sent Events.

For bots, services, load generators and tests that talk to a Channels app.
Both clients start (or continue) a trace on the client side and carry it
into the server, so one trace can run from the client through the server's
``receive``, ``group_send`` and ``process`` spans and back. They need the
``client`` extra: ``pip install "otel_channels[client]"`` (websockets, httpx).

WebSocket, on ``websockets``::

    from otel_channels.client import TracedWebSocketClient

    async with TracedWebSocketClient("ws://localhost:8000/ws/chat/42/",
                                     route="/ws/chat/<room>/", send_spans=True,
                                     reconnect=True) as ws:
        await ws.send({"text": "hello"})      # JSON; a ``traceparent`` key rides along
        async for message in ws:              # str or bytes; one CONSUMER span each
            ...                               # runs inside that span

Server-Sent Events, on ``httpx`` (the WHATWG ``EventSource`` model: reconnects
after ``retry`` with ``Last-Event-ID``; a non-200 status or a wrong content type
raises :class:`EventSourceError`)::

    from otel_channels.client import EventSourceError, TracedEventSource

    async with TracedEventSource("http://localhost:8000/events/42/",
                                 route="/events/<room>/") as source:
        async for event in source:            # MessageEvent(type, data, id, retry, fields)
            print(event.type, event.json(), event.id)

The stream is read by :mod:`otel_channels.eventstream`, a sans-I/O parser you
can use on its own.

Spans (tracer ``otel_channels.client``; payloads are never recorded, sizes only):

* ``connect {route}`` CLIENT: the handshake (WebSocket upgrade / SSE request).
  ``traceparent`` / ``tracestate`` go into the request headers through the
  global propagator, so the server's ``connect`` span becomes its child.
  Reconnections carry ``http.request.resend_count``.
* ``send {route}`` PRODUCER per WebSocket message when ``send_spans=True``,
  otherwise a ``websocket.send`` event on the current span. A ``dict`` sent as
  JSON gets the W3C ``traceparent`` (and ``tracestate``) of that span under
  ``json_traceparent_key`` (default ``"traceparent"``, the server's
  ``JSON_TRACEPARENT_KEY``), so the server's ``receive`` span is its child.
* ``receive {route}`` CONSUMER (``messaging.operation.type`` ``process``, as on
  the server) per WebSocket message / SSE event: the child of a
  ``traceparent`` the message carries (a key of a JSON object message, or an
  SSE ``traceparent:`` field line), otherwise a new trace; either way linked to
  the ``connect`` span. The span stays *current* while the caller handles the
  message (the body of ``async for``, or the code after ``recv()``) and ends
  at the next receive, at ``close()`` or when the ``async with`` block exits
  (an exception leaving the block is recorded on it), so spans the handler
  starts, and messages it sends, belong to the same trace. (Await ``recv()``
  directly or under ``asyncio.timeout()``: before Python 3.12,
  ``asyncio.wait_for`` runs it in another task, where the span stays.)
* ``disconnect {route}`` INTERNAL (WebSocket) when the connection ends: close
  code and reason, ``channels.connection.status``; 1000, 1001 and 1005 are
  normal, any other code sets ``error.type`` to the code, as on the server.

``{route}`` should be low-cardinality: pass ``route="/ws/chat/<room>/"``. It
defaults to the URL path, which is only right when the path holds no ids.
Query values such as ``token`` are redacted in ``url.query`` / ``url.full``.

Metrics (meter ``otel_channels.client``), attributes ``network.protocol.name``
(``websocket`` / ``sse``) and ``url.template`` (the route):

* ``channels.client.connection.duration`` (s), with ``error.type`` when the
  connection ended abnormally;
* ``channels.client.websocket.messages`` ({message}) by ``network.io.direction``
  and ``channels.client.websocket.message.size`` (By);
* ``channels.client.sse.events`` ({event});
* ``channels.client.reconnects`` ({reconnect}).
"""

from __future__ import annotations

from ..eventstream import MessageEvent
from .eventsource import EventSourceError, TracedEventSource
from .websocket import TracedWebSocketClient

__all__ = [
    "EventSourceError",
    "MessageEvent",
    "TracedEventSource",
    "TracedWebSocketClient",
]
