"""The chat WebSocket consumer and its JSON protocol.

Client to server (one JSON object per text frame)::

    {"action": "chat", "user": "ada", "text": "hello"}   persist, broadcast to the room
    {"action": "ping"}                                   -> {"type": "pong", ...}
    {"action": "history", "limit": 20}                   -> {"type": "history", ...}

Server to client::

    {"type": "welcome", "room": "lobby", "worker": {"name": "chat-8000", "pid": 1, "port": 8000}}
    {"type": "history", "messages": [message, ...]}      on join (last 50) and on request
    {"type": "chat", "message": message, "origin": {..., "via": "websocket"},
     "delivered_by": {"name": "chat-8001", ...}, "traceparent": "00-..."}
    {"type": "pong", "worker": {...}}
    {"type": "error", "code": "bad_json", "error": "frame is not valid JSON: ..."}

``message`` is ``{"id", "room", "user", "text", "timestamp", "worker", "via"}``.
A bad frame (not JSON, binary, not an object, unknown action, bad field) is
answered with an error frame and the connection stays open: ``receive()`` is
overridden so decoding errors become error frames with a reason. (Without
an override, ``OTEL_CHANNELS["BAD_FRAME_POLICY"] = "error_frame"`` gives
``{"type": "error", "error": "malformed_json"}`` for undecodable frames.)
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer

from .. import stats
from ..tracing import worker
from .services import (
    CHAT_EVENT,
    HISTORY_MAX,
    HISTORY_ON_JOIN,
    ValidationError,
    arecent_messages,
    asave_message,
    chat_data,
    room_group,
    valid_room,
    validate_chat,
)

__all__ = ["ROUTE", "ChatConsumer"]

ROUTE = "/ws/chat/<room>/"


class ChatConsumer(TracedAsyncJsonWebsocketConsumer):
    """One browser (or script) in one room."""

    room: str
    group: str
    accepted = False

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room"]
        if not valid_room(room):
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.room, self.group = room, room_group(room)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.accepted = True
        stats.opened("websocket", ROUTE)
        await self.send_json({"type": "welcome", "room": room, "worker": worker().as_dict()})
        await self.send_json({
            "type": "history", "messages": await arecent_messages(room, HISTORY_ON_JOIN),
        })

    async def disconnect(self, code: int) -> None:
        if self.accepted:
            self.accepted = False
            stats.closed("websocket", ROUTE)
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        # Decode here rather than in Channels' receive(): a bad frame gets an
        # error frame instead of an exception that closes the connection.
        if text_data is None:
            await self.error("binary_frame", "binary frames are not supported; send JSON text")
            return
        try:
            content = json.loads(text_data)
        except ValueError as exc:
            await self.error("bad_json", f"frame is not valid JSON: {exc}")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.error("bad_frame", "frame must be a JSON object with an 'action'")
            return
        action = content.get("action")
        span = trace.get_current_span()
        if isinstance(action, str) and span.is_recording():
            span.set_attribute("chat.action", action[:32])
        try:
            if action == "chat":
                await self.chat(content)
            elif action == "ping":
                await self.send_json({"type": "pong", "worker": worker().as_dict()})
            elif action == "history":
                await self.history(content)
            else:
                raise ValidationError(
                    "unknown_action",
                    f"unknown action {action!r}; expected 'chat', 'ping' or 'history'",
                )
        except ValidationError as exc:
            await self.error(exc.code, str(exc))

    async def chat(self, content: dict[str, Any]) -> None:
        user, text = validate_chat(content.get("user"), content.get("text"))
        message = await asave_message(self.room, user, text, "websocket")
        # A plain group_send: the instrumentor traces it (group_send PRODUCER span, carrier)
        # and every consumer and SSE feed of the room, on every worker, gets it.
        await self.channel_layer.group_send(
            self.group, {"type": CHAT_EVENT, **chat_data(message, worker().as_dict(), "websocket")}
        )

    async def history(self, content: dict[str, Any]) -> None:
        limit = content.get("limit", HISTORY_ON_JOIN)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= HISTORY_MAX:
            raise ValidationError(
                "bad_limit", f"'limit' must be an integer from 1 to {HISTORY_MAX}"
            )
        await self.send_json({
            "type": "history", "limit": limit, "messages": await arecent_messages(self.room, limit),
        })

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A message broadcast to the room, from any worker, view or command."""
        frame = {
            "type": "chat", "message": event["message"], "origin": event.get("origin"),
            "delivered_by": worker().as_dict(),
        }
        # The context of this delivery's process span, as "traceparent": the page's
        # browser module makes its receive span a child of it (one trace, sender to readers).
        propagate.inject(frame)
        await self.send_json(frame)

    async def error(self, code: str, text: str) -> None:
        span = trace.get_current_span()
        if span.is_recording():  # the frame's receive span shows the client's mistake
            span.set_attribute("error.type", code)
            span.set_status(Status(StatusCode.ERROR, code))
        await self.send_json({"type": "error", "code": code, "error": text})
