"""Rooms and their messages."""

from __future__ import annotations

from typing import Any

from django.db import models

#: Room names are channel-layer group names too: ASCII letters, digits, ``-`` and ``_``.
ROOM_NAME_MAX = 50
USER_NAME_MAX = 50
TEXT_MAX = 2000


class Room(models.Model):
    """A chat room, created the first time someone joins or posts to it."""

    name = models.SlugField(max_length=ROOM_NAME_MAX, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    """One chat message."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.CharField(max_length=USER_NAME_MAX)
    content = models.TextField(max_length=TEXT_MAX)
    timestamp = models.DateTimeField(auto_now_add=True, db_index=True)
    #: The worker that stored it (``service.name``) and how it came in.
    worker = models.CharField(max_length=100, blank=True, default="")
    via = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [models.Index(fields=["room", "-id"], name="chat_message_room_recent")]

    def __str__(self) -> str:
        return f"{self.user}: {self.content[:40]}"

    def as_dict(self) -> dict[str, Any]:
        """The wire form: only str and int, so channels-redis (msgpack) carries it."""
        return {
            "id": self.id,
            "room": self.room.name,
            "user": self.user,
            "text": self.content,
            "timestamp": self.timestamp.isoformat(),
            "worker": self.worker,
            "via": self.via,
        }
