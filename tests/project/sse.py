"""The test project's SSE view: the same ``room_<room>`` group as ChatConsumer."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from otel_channels.sse import EventStreamView


class RoomEvents(EventStreamView):
    """``/events/<room>/``: the room's broadcasts; ``private*`` rooms need ``?token=letmein``."""

    def get_groups(self, request: HttpRequest, *args: Any, **kwargs: Any) -> list[str]:
        room = kwargs["room"]
        if room.startswith("private") and request.GET.get("token") != "letmein":
            raise PermissionDenied("private room")
        return [f"room_{room}"]
