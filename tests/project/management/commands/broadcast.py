"""``manage.py broadcast <group> <text>``: a group_send from a management command."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Send a chat.message to a channel-layer group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("group")
        parser.add_argument("text")

    def handle(self, *args: Any, group: str, text: str, **options: Any) -> None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS is not configured"
        async_to_sync(layer.group_send)(
            group, {"type": "chat.message", "text": text, "via": "command"}
        )
