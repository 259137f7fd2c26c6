"""What differs between the ASGI servers that run Channels (daphne, uvicorn, hypercorn).

Close codes: RFC 6455 lets a server close with 1000 and 1001-1015 protocol
codes as well as 3000-4999, but daphne's WebSocket library (autobahn) refuses
any code other than 1000 and 3000-4999 from the server ("invalid close code
1009") and the connection then dies with 1011. For daphne only, a protocol
code is sent as ``4000 + code % 1000`` (1009 "too big" becomes 4009), so the
client still learns why; uvicorn and hypercorn send what the consumer said.

Disconnect codes: a server reports a close code in ``websocket.disconnect`` that
is not always the one on the wire. uvicorn's legacy ``websockets`` protocol
reports 1005 after the consumer closed with any code; hypercorn reports 1000
after a server close and 1006 after every client close, a clean one included
(``hypercorn/protocol/ws_stream.py``: the client's code is dropped). So the
``disconnect`` span takes the code the consumer sent when it closed first, and
under hypercorn the code of the client's close frame, read by
:func:`hypercorn_handle_events` (wrapped by the instrumentor when hypercorn is
installed).
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


class _DaphneSend:
    """daphne's ``send`` mapping the close codes it refuses: one slotted object per
    connection rather than a closure and the function's ``__dict__`` (issue 20)."""

    __slots__ = ("send",)

    def __init__(self, send: ASGISend) -> None:
        self.send = send

    # Marked as a coroutine function: sync consumers hand it to async_to_sync.
    @markcoroutinefunction
    def __call__(self, message: dict[str, Any]) -> Awaitable[None]:
        if message.get("type") == "websocket.close":
            message = sendable_close(message)
        return self.send(message)


markcoroutinefunction(_DaphneSend)  # its instances too, as the function it replaces was


def close_codes_for(send: ASGISend) -> ASGISend:
    """``send`` itself, or for daphne a ``send`` that maps the close codes it refuses.

    Returns the server's awaitable (no coroutine frame per frame).
    """
    if not application_codes_only(send):
        return send
    return _DaphneSend(send)


#: The attribute hypercorn's WebSocket stream gets: the code of the client's close frame.
_CLIENT_CLOSE = "_otel_client_close"


def client_close_code(send: Any) -> int | None:
    """The close code the client sent, where the server does not report it (hypercorn)."""
    stream = getattr(send, "__self__", None)
    code = getattr(stream, _CLIENT_CLOSE, None)
    return code if isinstance(code, int) else None


def wire_close_code(sent: int | None, send: Any, reported: Any) -> int:
    """The close code on the wire: ``sent`` by the consumer when it closed first, else
    the client's (when the server behind ``send`` does not report it), else ``reported``."""
    if sent is not None:
        return sent
    code = client_close_code(send)
    if code is not None:
        return code
    return int(reported) if isinstance(reported, int) else 1005  # 1005: no status received


async def hypercorn_handle_events(
    wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
) -> Any:
    """Wraps ``hypercorn.protocol.ws_stream.WSStream._handle_events``: keep the client's code."""
    connection: Any = getattr(instance, "connection", None)
    events = getattr(connection, "events", None)
    if events is None:
        return await wrapped(*args, **kwargs)

    def recording() -> Any:
        for event in events():
            if type(event).__name__ == "CloseConnection":
                setattr(instance, _CLIENT_CLOSE, int(event.code))
            yield event

    connection.events = recording  # an instance attribute, for this one call
    try:
        return await wrapped(*args, **kwargs)
    finally:
        vars(connection).pop("events", None)
