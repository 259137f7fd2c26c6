"""Helpers for testing your own SSE views: :class:`EventStreamCommunicator`.

``channels.testing.HttpCommunicator`` waits for the end of the body, which an
event stream never reaches. This one reads it event by event::

    from otel_channels.testing import EventStreamCommunicator

    async def test_room_events():
        comm = EventStreamCommunicator(application, "/events/lobby/")
        status, headers = await comm.connect()
        assert status == 200
        await abroadcast("room_lobby", "chat.message", {"text": "hi"})
        event = await comm.receive_event()
        assert (event.event, event.data) == ("chat.message", '{"text":"hi"}')
        await comm.disconnect()

``application`` is any ASGI app (``get_asgi_application()``, a
``ProtocolTypeRouter``); the body is read with the same WHATWG parser as the
traced ``EventSource`` client, so events are
:class:`~otel_channels.client.MessageEvent` objects and ``event.id`` is the
last event id as a browser would report it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from channels.testing import ApplicationCommunicator

from .eventstream import EventStreamParser, MessageEvent

__all__ = ["EventStreamCommunicator"]


class EventStreamCommunicator(ApplicationCommunicator):  # type: ignore[misc]
    """Drives an ASGI event stream: ``connect()``, ``receive_event()``, ``disconnect()``.

    Args:
        application: the ASGI application.
        path: the request path, optionally with a query string.
        headers: extra request headers as ``(bytes, bytes)`` pairs.
        last_event_id: sent as the ``Last-Event-ID`` header.
        method: ``"GET"`` (or ``"HEAD"``).
    """

    def __init__(
        self,
        application: Any,
        path: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        last_event_id: str | None = None,
        method: str = "GET",
    ) -> None:
        parts = urlsplit(path)
        header_list = [(b"accept", b"text/event-stream"), *headers]
        if last_event_id is not None:
            header_list.append((b"last-event-id", last_event_id.encode("latin-1")))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode("latin-1"),
            "query_string": parts.query.encode("latin-1"),
            "root_path": "",
            "headers": header_list,
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        super().__init__(application, scope)
        self.parser = EventStreamParser(keep_comments=True)  # receive_until_comment reads them
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""  # every body byte received so far
        self.ended = False
        self._events: deque[MessageEvent] = deque()

    @property
    def last_event_id(self) -> str:
        """The last event id so far (also set by blocks without ``data``), as a browser keeps it."""
        return self.parser.last_event_id

    @property
    def comments(self) -> list[str]:
        """Every comment line's text so far (one leading space stripped), in order."""
        return self.parser.comments

    async def connect(self, timeout: float = 1) -> tuple[int, dict[str, str]]:
        """Send the request; return the status and the (lower-cased) response headers."""
        await self.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.receive_output(timeout)
        assert start["type"] == "http.response.start", start
        self.status = int(start["status"])
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in start.get("headers", ())
        }
        return self.status, self.headers

    async def receive_chunk(self, timeout: float = 1) -> bytes:
        """The next body chunk as sent (parsed too); ``b""`` once the body has ended."""
        if self.ended:
            return b""
        message = await self.receive_output(timeout)
        assert message["type"] == "http.response.body", message
        chunk = bytes(message.get("body", b""))
        self.body += chunk
        self._events.extend(self.parser.feed(chunk))
        if not message.get("more_body", False):
            self.ended = True
        return chunk

    async def receive_event(self, timeout: float = 1) -> MessageEvent:
        """The next dispatched event: ``.event`` (alias ``.type``), ``.data``, ``.id``.

        ``.id`` is the last event id at dispatch (it persists from earlier events);
        comments and blocks without ``data`` are not events. Raises ``AssertionError``
        if the body ends first, ``TimeoutError`` after ``timeout`` (the view is then cancelled).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._events:
            if self.ended:
                raise AssertionError("the event stream ended")
            await self.receive_chunk(max(0.0, deadline - loop.time()))
        return self._events.popleft()

    async def receive_until_comment(self, timeout: float = 1) -> str:
        """Read until a new comment (e.g. a heartbeat) arrives; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = len(self.parser.comments)
        while len(self.parser.comments) == seen:
            if self.ended:
                raise AssertionError("the event stream ended")
            await self.receive_chunk(max(0.0, deadline - loop.time()))
        return self.parser.comments[seen]

    async def disconnect(self, timeout: float = 1) -> None:
        """The client goes away (``http.disconnect``); waits for the view to finish."""
        await self.send_input({"type": "http.disconnect"})
        await self.wait(timeout)
