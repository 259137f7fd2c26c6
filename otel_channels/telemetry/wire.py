"""WebSocket wire facts: a frame's size, and close codes (RFC 6455 7.4): which ends are
normal, and the error type of the rest.

Shared by the server side and the traced client, so it imports nothing of either.
"""

from __future__ import annotations

from typing import Any

#: A normal end: 1000 normal closure, 1001 going away, 1005 no status received.
NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})


def classify_close(code: Any) -> str | None:
    """``None`` for a normal close, else the ``error.type``: the code as a string."""
    if code is None or code in NORMAL_CLOSE_CODES:
        return None
    return str(int(code)) if isinstance(code, int) else str(code)  # IntEnum str() differs < 3.11


def size_of(text: str | None, data: bytes | None) -> int:
    """A frame's size in bytes (UTF-8 for text)."""
    if text is not None:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return len(data) if data is not None else 0
