"""The SSE view on ``fuzz_<room>`` and a broadcast endpoint (both tests only)."""

from __future__ import annotations

import json
from typing import Any

from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from otel_channels.sse import EventStreamView


class FuzzEvents(EventStreamView):
    """``/fuzz/events/<room>/``: the default format (event = type, data = JSON of the rest)."""

    def get_groups(self, request: HttpRequest, *args: Any, **kwargs: Any) -> list[str]:
        return [f"fuzz_{kwargs['room']}"]


async def broadcast(request: HttpRequest, room: str) -> HttpResponse:
    """POST ``{"text": ..., "pad": n}``: one ``fuzz.message`` group_send to ``fuzz_<room>``
    (``pad``: that many more characters, so frames fill a slow client's buffers).

    No ``require_POST`` decorator: before Django 5.0 it turns an async view into a
    sync one that returns an unawaited coroutine. (The test projects have no CSRF
    middleware.)
    """
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    body = json.loads(request.body or b"{}")
    message = {"type": "fuzz.message", "text": body.get("text")}
    pad = body.get("pad")
    if isinstance(pad, int) and 0 < pad <= 1 << 20:
        message["pad"] = "x" * pad
    await get_channel_layer().group_send(f"fuzz_{room}", message)
    return JsonResponse({"ok": True}, status=202)
