"""A sans-I/O parser for ``text/event-stream``, the Server-Sent Events format.

It does no I/O: you feed it the bytes of a response body as they arrive, in
chunks of any size, and it gives back the events each chunk completed. The
same parser reads the stream in the traced ``EventSource`` client
(:mod:`otel_channels.client`), in the test helper
:class:`otel_channels.testing.EventStreamCommunicator`, and anywhere else you
read an event stream (an ASGI test, a raw socket, a recorded body)::

    from otel_channels.eventstream import EventStreamParser

    parser = EventStreamParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            print(event.type, event.data, event.id)
    parser.close()  # end of the stream: an unfinished event is dropped

Each event is a :class:`MessageEvent`: ``type`` (``"message"`` unless the
stream said ``event:``), ``data``, ``id`` (the last event id, as a browser's
``lastEventId``), ``retry`` (if this event set one) and ``fields`` (the
non-standard fields of the event, e.g. a ``traceparent:`` line).
``parser.last_event_id`` and ``parser.retry`` keep what a reconnecting client
needs: pass ``last_event_id`` to the next stream's parser, as browsers do.

What it does is the WHATWG HTML standard, "Server-sent events", sections
"Parsing an event stream" and "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream,
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
checked against the web-platform-tests ``eventsource/format-*`` cases:

* the stream is UTF-8 whatever a ``charset`` says; invalid bytes become U+FFFD;
  exactly one leading BOM (U+FEFF) is stripped, a second one is data;
* lines end with CRLF, LF or CR (:data:`LINE_BREAK`), also when the CR ends one
  chunk and the LF starts the next (that pair is one line end, not two);
* a line starting with ``:`` is a comment (with ``keep_comments=True`` its text,
  one leading space stripped, is collected in ``comments``, for tests); a line
  without a colon is a field name with an empty value; one space after the
  colon is stripped, nothing else;
* ``data`` lines are joined with LF; an empty line dispatches the event unless
  no ``data`` line was seen (then only the last event id is updated);
* an ``id`` value containing NUL is ignored; the last event id persists across
  events (and, seeded with ``last_event_id``, across reconnections);
* ``retry`` is applied only when it is all ASCII digits (milliseconds);
* the standard ignores other fields; this parser keeps up to 32 of them per
  event in ``fields``, the last value of each name winning;
* an event still incomplete at the end of the stream is discarded.

Beyond the standard, ``max_size`` bounds one event (its pending line plus its
data, in characters): a runaway stream raises :class:`EventTooLarge` instead of
growing memory without bound.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["LINE_BREAK", "EventStreamParser", "EventTooLarge", "MessageEvent"]

#: A line break of the event-stream format: CRLF, lone CR or lone LF. An encoder
#: splits data on it so that every line ending reaches the reader as one LF.
LINE_BREAK: Final[re.Pattern[str]] = re.compile(r"\r\n|\r|\n")

_BOM = "\ufeff"
#: Distinct non-standard field names kept per event (a hostile stream cannot grow it).
_MAX_EXTRA_FIELDS = 32


@dataclass(frozen=True)
class MessageEvent:
    """One dispatched event, as a browser's ``MessageEvent`` would show it.

    Args:
        type: the ``event:`` field, ``"message"`` when absent or empty.
        data: the ``data:`` lines joined with LF.
        id: the last event id at dispatch (it persists from earlier events).
        retry: the reconnection time (ms) set by a ``retry:`` line of this event, if any.
        fields: non-standard fields of this event (last value wins), e.g. ``traceparent``.
    """

    type: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """``data`` decoded as JSON."""
        return json.loads(self.data)

    @property
    def event(self) -> str:
        """Alias of ``type`` (the ``event:`` field's name, as in httpx-sse / sse-starlette)."""
        return self.type

    @property
    def last_event_id(self) -> str:
        """Alias of ``id`` (the browser's ``MessageEvent.lastEventId``)."""
        return self.id


class EventTooLarge(ValueError):
    """An event (or a single line) grew past the parser's ``max_size``."""


class EventStreamParser:
    """Turns chunks of one event stream into :class:`MessageEvent` objects.

    Args:
        last_event_id: the id a new stream starts from (the previous stream's last id).
        max_size: cap in characters on one pending line plus the event's data, or None.
        keep_comments: collect comment lines in ``comments`` (off by default: a
            long-lived stream's heartbeats would grow the list without bound).
    """

    def __init__(self, last_event_id: str = "", max_size: int | None = None,
                 keep_comments: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # BOM check done (only at the very start of the stream)
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._line: list[str] = []  # pieces of the line still missing its end
        self._line_size = 0
        self._data: list[str] = []
        self._data_size = 0
        self._event_type = ""
        self._event_retry: int | None = None
        self._fields: dict[str, str] = {}
        self._max_size = max_size
        self._keep_comments = keep_comments
        #: The last event ID buffer (updated by every ``id`` field without NUL).
        self.id_buffer = last_event_id
        #: The last event id string: ``id_buffer`` as of the last dispatch (empty line).
        self.last_event_id = last_event_id
        #: The reconnection time in milliseconds set by the stream, or None.
        self.retry: int | None = None
        #: Comment lines' text (one leading space stripped) in order, with ``keep_comments``.
        self.comments: list[str] = []

    def feed(self, chunk: bytes | str) -> list[MessageEvent]:
        """Parse one chunk; return the events it completed (possibly none)."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == _BOM:
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        events: list[MessageEvent] = []
        pos = 0
        for match in LINE_BREAK.finditer(text):
            piece = text[pos:match.start()]
            if self._line:
                self._line.append(piece)
                line = "".join(self._line)
                self._line.clear()
                self._line_size = 0
            else:
                line = piece
            self._process(line, events)
            pos = match.end()
        if pos < len(text):
            rest = text[pos:]
            self._line.append(rest)
            self._line_size += len(rest)
            self._check_size()
        elif text[-1] == "\r":
            self._skip_lf = True  # a CRLF may be split across chunks
        return events

    def close(self) -> None:
        """End of stream: an unterminated line and an undispatched event are discarded."""
        self._decoder.reset()
        self._line.clear()
        self._line_size = 0
        self._reset_event()

    def _check_size(self) -> None:
        limit = self._max_size
        if limit is not None and self._line_size + self._data_size > limit:
            raise EventTooLarge(f"event larger than {limit} characters")

    def _process(self, line: str, events: list[MessageEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            if self._keep_comments:
                text = line[1:]
                self.comments.append(text[1:] if text[:1] == " " else text)
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check_size()
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self.id_buffer = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = self._event_retry = int(value)
        elif name in self._fields or len(self._fields) < _MAX_EXTRA_FIELDS:
            self._fields[name] = value

    def _dispatch(self, events: list[MessageEvent]) -> None:
        self.last_event_id = self.id_buffer
        if self._data:
            events.append(MessageEvent(
                type=self._event_type or "message",
                data="\n".join(self._data),
                id=self.last_event_id,
                retry=self._event_retry,
                fields=self._fields,
            ))
            self._fields = {}
        self._reset_event()

    def _reset_event(self) -> None:
        self._data = []
        self._data_size = 0
        self._event_type = ""
        self._event_retry = None
        if self._fields:
            self._fields = {}
