"""Send one Server-Sent Event to a group: :func:`broadcast` / :func:`abroadcast`.

Usage::

    from otel_channels.broadcast import abroadcast, broadcast

    await abroadcast("room_42", "chat.message", {"text": "hi"})   # async code
    broadcast("room_42", "chat.message", {"text": "hi"})          # views, signals, tasks

The message is ``{"type": event_type, **data}`` sent with
``channel_layer.group_send``, so WebSocket consumers in the group get it like
any group message (``chat_message(self, event)``), the instrumentor traces it
(``group_send {group}`` PRODUCER span, carrier), and every
:class:`~otel_channels.sse.EventStreamView` on the group writes it as
``event: chat.message`` / ``data: {"text":"hi"}``.

Before sending, the event is appended to the group's replay log, which
assigns its id (ordered per group across workers) and keeps it for
``Last-Event-ID`` resumption even if no stream is open at that moment; the id
rides in the carrier, so every worker writes the same one. Both functions
return that id (``None`` with ``SSE_REPLAY_MAXLEN = 0``). ``id=`` sets it
explicitly: ``"<ms>-<seq>"`` digits or an int, greater than the group's last.

From sync code, :func:`broadcast` never starts an event loop per call:
asgiref's ``async_to_sync`` would (outside a request it runs every call in
a new loop through ``asyncio.run``, and channels-redis keeps one connection
pool per event loop, so every call would also open and close Redis
connections). Inside a sync view served by an ASGI server it does run on the
server's loop, and is used there; anywhere else (management commands,
Celery-style workers, threads) one long-lived background loop per process
carries every call, and with it one pool.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from channels.layers import get_channel_layer
from opentelemetry import trace

from . import _carrier
from ._carrier import SSE_GROUP, SSE_ID, SSE_PREV
from .conf import get_config
from .sse._replay import get_log, normalise_id

__all__ = ["abroadcast", "broadcast"]

T = TypeVar("T")


async def abroadcast(
    group: str,
    event_type: str,
    data: Mapping[str, Any] | None = None,
    id: str | int | None = None,  # noqa: A002 - the SSE field's name
    *,
    channel_layer_alias: str = "default",
) -> str | None:
    """Log and ``group_send`` one event; returns its id."""
    layer = get_channel_layer(channel_layer_alias)
    if layer is None:
        raise RuntimeError(f"no channel layer: CHANNEL_LAYERS[{channel_layer_alias!r}] is not set")
    if not isinstance(event_type, str) or not event_type:
        raise TypeError("event_type must be a non-empty str")
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping of message fields, not {type(data).__name__}")
    key = get_config().CARRIER_KEY
    fields = dict(data or {})
    if "type" in fields or key in fields:
        raise ValueError(f"data must not contain 'type' or the carrier key {key!r}")
    check = getattr(layer, "require_valid_group_name", None)
    if check is not None:
        check(group)
    message: dict[str, Any] = {"type": event_type, **fields}
    log = get_log(channel_layer_alias)
    if log is None:
        if id is not None:
            raise ValueError("event ids need the replay log (SSE_REPLAY_MAXLEN > 0)")
        await layer.group_send(group, message)
        return None
    current = trace.get_current_span().get_span_context()
    # Replayed to SSE clients as their "traceparent:" field: only the sampled flag bit.
    traceparent = _carrier.client_traceparent(current) if current.is_valid else None
    explicit = normalise_id(id) if id is not None else None
    event_id, prev = await log.append(group, message, traceparent, explicit_id=explicit)
    # The instrumentor merges its carrier into this dict (see _carrier.attach).
    await layer.group_send(group, {**message, key: {SSE_ID: event_id, SSE_PREV: prev,
                                                     SSE_GROUP: group}})
    return event_id


def broadcast(
    group: str,
    event_type: str,
    data: Mapping[str, Any] | None = None,
    id: str | int | None = None,  # noqa: A002
    *,
    channel_layer_alias: str = "default",
) -> str | None:
    """:func:`abroadcast` from sync code (see the module docstring for which loop runs it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("broadcast() called from a running event loop: "
                           "use `await abroadcast(...)`")
    coroutine = abroadcast(group, event_type, data, id, channel_layer_alias=channel_layer_alias)
    if _server_loop() is not None:
        from asgiref.sync import async_to_sync

        async def run() -> str | None:
            return await coroutine

        return async_to_sync(run)()
    return _BackgroundLoop.get().run(coroutine)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's loop when this thread runs a sync view for it (asgiref's record)."""
    from asgiref.sync import SyncToAsync

    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


class _BackgroundLoop:
    """One event loop on a daemon thread per process, for sync callers outside ASGI."""

    _instance: _BackgroundLoop | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       name="otel-channels-broadcast", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _BackgroundLoop:
        instance = cls._instance
        if instance is None or instance.pid != os.getpid():  # forked: threads do not survive
            with cls._lock:
                instance = cls._instance
                if instance is None or instance.pid != os.getpid():
                    instance = cls._instance = cls()
        return instance

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
