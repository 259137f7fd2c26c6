"""Persisting and validating chat messages, shared by the consumer, the views and the command."""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection
from opentelemetry import trace

from .models import ROOM_NAME_MAX, TEXT_MAX, USER_NAME_MAX, Message, Room

__all__ = [
    "CHAT_EVENT", "HISTORY_MAX", "HISTORY_ON_JOIN", "ValidationError", "asave_message", "chat_data",
    "arecent_messages", "recent_messages", "room_group", "save_message", "valid_room",
    "validate_chat",
]

tracer = trace.get_tracer("example_project.chat")

#: Messages sent to a client when it joins a room.
HISTORY_ON_JOIN = 50
#: The most a ``history`` request may ask for.
HISTORY_MAX = 200
_ROOM = re.compile(r"^[A-Za-z0-9_-]+$")


class ValidationError(ValueError):
    """A client sent something the protocol does not allow; ``str()`` says what."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def valid_room(room: str) -> bool:
    """Room names double as group names: ASCII letters, digits, ``-``, ``_``."""
    return 0 < len(room) <= ROOM_NAME_MAX and bool(_ROOM.match(room))


def room_group(room: str) -> str:
    return f"chat_{room}"


def validate_chat(user: Any, text: Any) -> tuple[str, str]:
    """``(user, text)`` stripped, or :class:`ValidationError`."""
    if not isinstance(user, str) or not user.strip():
        raise ValidationError("bad_user", "'user' must be a non-empty string")
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("bad_text", "'text' must be a non-empty string")
    user, text = user.strip(), text.strip()
    if len(user) > USER_NAME_MAX:
        raise ValidationError("bad_user", f"'user' is longer than {USER_NAME_MAX} characters")
    if len(text) > TEXT_MAX:
        raise ValidationError("bad_text", f"'text' is longer than {TEXT_MAX} characters")
    return user, text


def save_message(room: str, user: str, text: str, via: str = "") -> dict[str, Any]:
    """Store one message (creating the room on first use); returns its wire form."""
    from ..tracing import worker

    room_obj, _ = Room.objects.get_or_create(name=room)
    message = Message.objects.create(
        room=room_obj, user=user, content=text, worker=worker().name, via=via
    )
    return message.as_dict()


def recent_messages(room: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` messages of a room, oldest first."""
    latest = list(
        Message.objects.filter(room__name=room).select_related("room").order_by("-id")[:limit]
    )
    return [message.as_dict() for message in reversed(latest)]


async def asave_message(room: str, user: str, text: str, via: str) -> dict[str, Any]:
    """:func:`save_message` in a ``save message`` span, off the event loop."""
    with tracer.start_as_current_span("save message") as span:
        if span.is_recording():
            span.set_attributes({"chat.room": room, "db.system.name": connection.vendor})
        message = await database_sync_to_async(save_message)(room, user, text, via)
        if span.is_recording():
            span.set_attribute("chat.message.id", message["id"])
        return message


async def arecent_messages(room: str, limit: int) -> list[dict[str, Any]]:
    return await database_sync_to_async(recent_messages)(room, limit)


#: The channel-layer message type of a chat message: ``chat_message()`` on consumers,
#: ``event: chat.message`` on the SSE feed.
CHAT_EVENT = "chat.message"


def chat_data(message: dict[str, Any], worker: dict[str, Any], via: str) -> dict[str, Any]:
    """The fields of a ``chat.message`` group message (everything but ``type``)."""
    return {"message": message, "origin": {**worker, "via": via}}
