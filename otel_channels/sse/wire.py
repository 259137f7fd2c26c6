"""The Server-Sent Events wire format: a pure encoder (events and comments to exact bytes).

Follows the WHATWG HTML "Server-sent events" section
(https://html.spec.whatwg.org/multipage/server-sent-events.html):

* ``data`` is split on CR, LF and CRLF, one ``data:`` line per line, so a
  payload with any line ending arrives byte-exact as ``\\n``-joined text;
* ``id`` and ``event`` lose CR, LF and NUL (a CR/LF would end the field and
  inject another one; a browser ignores an ``id`` that contains NUL);
* ``retry`` is a non-negative int (browsers ignore anything but ASCII digits);
* comments are lines starting with ``:``, one per line of the comment text.

Reading a stream back is :mod:`otel_channels.eventstream`'s job (the one
parser, shared by the traced ``EventSource`` client and the test helpers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..eventstream import LINE_BREAK

__all__ = ["ServerSentEvent", "encode_comment", "json_data", "message_event"]

_UNSAFE_NAME = re.compile(r"[\r\n\x00]")


def _lines(text: str) -> list[str]:
    return LINE_BREAK.split(text)


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


def message_event(message: dict[str, Any]) -> ServerSentEvent:
    """The default event of a group message: ``event:`` its ``type``, ``data:`` the rest.

    The one default formatter: ``EventStreamView.format_event`` returns it, and the
    hub builds it once per message for every stream that keeps the default.
    """
    message_type = message.get("type")
    return ServerSentEvent(
        data={k: v for k, v in message.items() if k != "type"},
        event=message_type if isinstance(message_type, str) else None,
    )


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


def _jsonable(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NaN and infinities as ``null`` (a browser's
    ``JSON.parse`` refuses the bare ``NaN`` Python writes), keys as strings (msgpack
    carries bytes keys; JSON has only string keys)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _key(key: Any) -> Any:
    if isinstance(key, (str, int, bool)) or key is None:
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "replace")
    if isinstance(key, float):
        return key if math.isfinite(key) else str(key)
    return str(key)


def json_data(value: Any) -> str:
    """Compact JSON on one line (JSON escapes CR/LF), non-ASCII kept as UTF-8.

    Strict JSON, as browsers parse it: NaN and infinities become ``null``, bytes
    (values and keys) are decoded as UTF-8 (invalid bytes replaced), sets and
    tuples become lists, anything else without a JSON form its ``str()``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          default=_json_default, allow_nan=False)
    except (ValueError, TypeError):  # a non-finite float or a bytes key: the rare path
        value = _jsonable(value)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          default=_json_default, allow_nan=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: \\u-escapes keep them valid JSON
            text = json.dumps(value, separators=(",", ":"), default=_json_default)
    return text
