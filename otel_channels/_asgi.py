"""What differs between the ASGI servers that run Channels (daphne, uvicorn, hypercorn).

Close codes: RFC 6455 lets a server close with 1000 and 1001-1015 protocol
codes as well as 3000-4999, but daphne's WebSocket library (autobahn) refuses
any code other than 1000 and 3000-4999 from the server ("invalid close code
1009") and the connection then dies with 1011. For daphne only, a protocol
code is sent as ``4000 + code % 1000`` (1009 "too big" becomes 4009), so the
client still learns why; uvicorn and hypercorn send what the consumer said.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


def application_codes_only(send: Any) -> bool:
    """Whether the server behind ``send`` lets a server close only with 1000 or 3000-4999."""
    func = getattr(send, "func", send)  # daphne passes functools.partial(handle_reply, ...)
    return str(getattr(func, "__module__", "")).startswith("daphne.")


def sendable_close(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with a protocol close code such a server refuses mapped to 4000+.

    1009 (too big) becomes 4009, 1008 (policy) 4008, 1003 (unsupported data)
    4003, 1007 (invalid payload) 4007, 1011 4011.
    """
    code = message.get("code")
    if isinstance(code, int) and code != 1000 and not 3000 <= code <= 4999:
        return {**message, "code": 4000 + code % 1000}
    return message


def close_codes_for(send: ASGISend) -> ASGISend:
    """``send`` itself, or for daphne a ``send`` that maps the close codes it refuses.

    A plain function returning the server's awaitable (no coroutine frame per
    frame), marked as a coroutine function: sync consumers hand it to async_to_sync.
    """
    if not application_codes_only(send):
        return send

    def mapped_send(message: dict[str, Any]) -> Awaitable[None]:
        if message.get("type") == "websocket.close":
            message = sendable_close(message)
        return send(message)

    return markcoroutinefunction(mapped_send)
