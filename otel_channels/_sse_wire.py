"""The Server-Sent Events wire format: a pure encoder and a spec-following parser.

Follows the WHATWG HTML "Server-sent events" section
(https://html.spec.whatwg.org/multipage/server-sent-events.html):

* ``data`` is split on CR, LF and CRLF, one ``data:`` line per line, so a
  payload with any line ending arrives byte-exact as ``\\n``-joined text;
* ``id`` and ``event`` lose CR, LF and NUL (a CR/LF would end the field and
  inject another one; a browser ignores an ``id`` that contains NUL);
* ``retry`` is a non-negative int (browsers ignore anything but ASCII digits);
* comments are lines starting with ``:``, one per line of the comment text.

The parser is the one the spec describes (BOM, any line ending, one leading
space stripped, unknown fields ignored, ``id`` with NUL ignored, a block
without ``data`` dispatches nothing but still sets the last event id); the
test helpers and tests read streams with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["EventStreamParser", "ServerSentEvent", "encode_comment", "json_data"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_UNSAFE_NAME = re.compile(r"[\r\n\x00]")


def _lines(text: str) -> list[str]:
    return _LINE_BREAK.split(text)


def _clean(value: str) -> str:
    return _UNSAFE_NAME.sub("", value)


@dataclass(frozen=True)
class ServerSentEvent:
    """One Server-Sent Event.

    Args:
        data: the payload; a ``str`` is sent as is (split into ``data:`` lines),
            ``None`` sends no data (the block then only sets id / retry), any
            other value is sent as compact JSON.
        event: the ``event:`` type (``message`` when absent).
        id: the ``id:``; ``EventStreamView`` fills it in when left ``None``.
        retry: reconnection delay in milliseconds.
        comment: a comment, written before the fields.
    """

    data: Any = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self, extra: Iterable[tuple[str, str]] = ()) -> bytes:
        """The exact bytes of this event, ending with the blank line that dispatches it.

        ``extra`` are additional ``(field, value)`` lines (e.g. ``traceparent``),
        written before ``data``; receivers ignore fields they do not know.
        """
        parts: list[str] = []
        if self.comment is not None:
            parts.extend(f": {line}\n" if line else ":\n" for line in _lines(self.comment))
        if self.event is not None:
            parts.append(f"event: {_clean(self.event)}\n")
        if self.id is not None:
            parts.append(f"id: {_clean(self.id)}\n")
        if self.retry is not None:
            if isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 0:
                raise ValueError(f"retry must be a non-negative int (ms), not {self.retry!r}")
            parts.append(f"retry: {self.retry}\n")
        for name, value in extra:
            parts.append(f"{_clean(name).replace(':', '')}: {_clean(value)}\n")
        data = self.data
        if data is not None:
            text = data if isinstance(data, str) else json_data(data)
            parts.extend(f"data: {line}\n" for line in _lines(text))
        parts.append("\n")
        # "replace": a lone surrogate cannot be UTF-8; a browser would show U+FFFD anyway.
        return "".join(parts).encode("utf-8", "replace")


def encode_comment(text: str = "") -> bytes:
    """A comment block (heartbeats, the first write): ``: text`` lines and a blank line."""
    return b"".join(
        f": {line}\n".encode("utf-8", "replace") if line else b":\n" for line in _lines(text)
    ) + b"\n"


def _json_default(value: Any) -> Any:
    from django.core.serializers.json import DjangoJSONEncoder

    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    try:
        return DjangoJSONEncoder().default(value)  # datetime, Decimal, UUID, Promise
    except TypeError:
        return str(value)


def json_data(value: Any) -> str:
    """Compact JSON on one line (JSON escapes CR/LF), non-ASCII kept as UTF-8."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: \\u-escapes keep them valid JSON
            text = json.dumps(value, separators=(",", ":"), default=_json_default)
    return text


class EventStreamParser:
    """Incremental ``text/event-stream`` parser (the WHATWG algorithm).

    ``feed(bytes)`` returns the events dispatched by that chunk;
    ``last_event_id``, ``retry`` and ``comments`` hold the rest of the state.
    """

    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry: int | None = None
        self.comments: list[str] = []
        self._pending = b""
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = ""
        self._has_data = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        buffer = self._pending + chunk
        if self._first and buffer:
            if b"\xef\xbb\xbf".startswith(buffer[:3]) and len(buffer) < 3:
                self._pending = buffer
                return []
            if buffer.startswith(b"\xef\xbb\xbf"):
                buffer = buffer[3:]
            self._first = False
        events: list[ServerSentEvent] = []
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if buffer[end:end + 1] == b"\r":
                if end + 1 >= length:
                    break  # a CR at the end may be the first half of CRLF
                after = end + 2 if buffer[end + 1:end + 2] == b"\n" else end + 1
            else:
                after = end + 1
            event = self._line(buffer[start:end].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = after
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isdigit() and value.isascii():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer  # set even when nothing is dispatched
        has_data, data, event = self._has_data, "\n".join(self._data), self._event
        self._data, self._event, self._has_data = [], "", False
        if not has_data:
            return None
        return ServerSentEvent(data=data, event=event or "message", id=self.last_event_id)
