"""The tests' one Server-Sent-Events reader, on the package's own parser.

Every event a test reads is an :class:`Event` (``otel_channels.eventstream.MessageEvent``:
``event``/``type``, ``data``, ``id`` as the browser's ``lastEventId``, ``json()``), parsed by
``otel_channels.eventstream.EventStreamParser``, the spec-faithful parser the package ships.
Two transports feed it:

* :class:`HttpEventStream`: an ``httpx`` streaming response, event by event.
* :class:`RawEventStream`: a raw HTTP/1.1 connection (chunked body, ``Last-Event-ID``),
  light enough for a thousand at once and able to drop its TCP connection without a
  clean end (``abort()``), as a crashed browser or a dead network would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from otel_channels.eventstream import EventStreamParser, MessageEvent
from tests.support.compat import timeout as time_limit

__all__ = ["Event", "HttpEventStream", "RawEventStream"]

#: One dispatched event: the package's own ``MessageEvent``.
Event = MessageEvent


class HttpEventStream:
    """A real HTTP ``text/event-stream`` client (``httpx``), event by event."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.url = url
        self.headers = {"accept": "text/event-stream"}
        if last_event_id is not None:
            self.headers["last-event-id"] = last_event_id
        self.parser = EventStreamParser()
        self.events: list[Event] = []
        self._queue: list[Event] = []

    @property
    def last_id(self) -> str:
        """The last event id so far (what a browser sends back as ``Last-Event-ID``)."""
        return self.parser.last_event_id

    async def __aenter__(self) -> HttpEventStream:
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        self._context = self.client.stream("GET", self.url, headers=self.headers)
        self.response = await self._context.__aenter__()
        assert self.response.status_code == 200, self.response.status_code
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._chunks = self.response.aiter_raw()
        return self

    async def _feed(self) -> None:
        self._queue.extend(self.parser.feed(await self._chunks.__anext__()))

    async def next_event(self, timeout: float = 10.0) -> Event:
        async with time_limit(timeout):
            while not self._queue:
                await self._feed()
        event = self._queue.pop(0)
        self.events.append(event)
        return event

    async def wait_position(self, timeout: float = 10.0) -> str:
        """Read until the stream told its position (its first ``id:`` block)."""
        async with time_limit(timeout):
            while not self.parser.last_event_id:
                await self._feed()
        return self.parser.last_event_id

    async def __aexit__(self, *exc: Any) -> None:
        await self._context.__aexit__(None, None, None)  # closes the TCP connection
        await self.client.aclose()


class RawEventStream:
    """One ``GET`` event stream on a raw connection; ``next_event()`` parses as it arrives."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.status = 0
        self.headers: dict[str, str] = {}
        #: The last event id seen (None before any): what a browser keeps for Last-Event-ID.
        self.last_id: str | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser = EventStreamParser()
        self._queue: list[Event] = []
        self._chunked = False

    async def open(self, last_event_id: str | None = None, timeout: float = 30.0) -> int:
        """Send the request, read the status and headers; returns the status code."""
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), timeout)
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Accept: text/event-stream", "Cache-Control: no-cache"]
        if last_event_id:
            lines.append(f"Last-Event-ID: {last_event_id}")
            self.last_id = last_event_id
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.parser = EventStreamParser(last_event_id or "")
        self._queue = []
        return self.status

    async def _read(self) -> bytes:
        """The next piece of the body (b'' at its end)."""
        assert self.reader is not None
        if not self._chunked:
            return await self.reader.read(65536)
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.strip().split(b";")[0], 16)
        if size == 0:
            return b""
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def next_event(self, timeout: float = 30.0) -> Event | None:
        """The next event (comments skipped, ``id`` kept); None when the body ends."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event on {self.path} within {timeout} s")
            piece = await asyncio.wait_for(self._read(), left)
            if not piece:
                return None
            before = self.parser.last_event_id
            self._queue.extend(self.parser.feed(piece))
            if self.parser.last_event_id != before:
                self.last_id = self.parser.last_event_id
        return self._queue.pop(0)

    def abort(self) -> None:
        """Drop the TCP connection (RST), as a crashed browser or a dead network would."""
        if self.writer is not None:
            self.writer.transport.abort()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
