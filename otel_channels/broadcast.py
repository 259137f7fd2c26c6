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

Failures and retries
--------------------
A broadcast is two steps, the log append then ``group_send``, each a round
trip to Redis that can fail after the server acted (a connection cut before
the reply, a Sentinel failover). Errors are therefore of two kinds:

* raised before anything was sent (a bad argument, a group name the layer
  refuses): ``TypeError`` / ``ValueError``, as raised; nothing was delivered;
* anything else: :class:`BroadcastMaybeDelivered` (its ``__cause__`` is the
  layer's error, its ``event_id`` the id if the append had returned one).
  The event may be in the log (so every SSE stream on the group will get it)
  and may have reached some consumers.

Retry with the same ``idempotency_key=`` (a str the producer chooses, one
per logical event, e.g. a database row's key): the log then hands back the
entry the first attempt made instead of appending a second one, and
``group_send`` goes out again with that id, so SSE streams that already got
it skip it (a hub never delivers an id twice). WebSocket consumers get the
retried message again if the first ``group_send`` reached them: channel-layer
delivery is at most once per ``group_send``, a retry makes it at least once.
The key is kept as long as the group's log (``SSE_REPLAY_TTL``).

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

from .conf import get_config
from .replay import get_log, normalise_id
from .telemetry import carrier as _carrier
from .telemetry.carrier import SSE_GROUP, SSE_ID, SSE_PREV

__all__ = ["BroadcastMaybeDelivered", "abroadcast", "broadcast"]

T = TypeVar("T")


class BroadcastMaybeDelivered(Exception):  # noqa: N818 - named for what the caller must know
    """A broadcast failed after it may have reached streams or consumers: retry with its key.

    Args:
        group: the group of the broadcast.
        event_id: its SSE event id, when the log append had returned one (the event is
            then in the log and every SSE stream on the group will get it).
        idempotency_key: the key the call was given (None: a retry makes a new event).
    """

    def __init__(self, group: str, event_id: str | None, idempotency_key: str | None) -> None:
        self.group = group
        self.event_id = event_id
        self.idempotency_key = idempotency_key
        retry = ("retry with the same idempotency_key" if idempotency_key is not None
                 else "pass idempotency_key= so that a retry makes no second SSE event")
        where = f"event {event_id} is in the replay log" if event_id else "it may be logged"
        super().__init__(f"broadcast to {group!r} failed and may have been delivered "
                         f"({where}); {retry}")


#: Errors raised before anything is sent: nothing was delivered, they pass as they are.
_NOT_SENT = (TypeError, ValueError)


async def abroadcast(
    group: str,
    event_type: str,
    data: Mapping[str, Any] | None = None,
    id: str | int | None = None,  # noqa: A002 - the SSE field's name
    *,
    channel_layer_alias: str = "default",
    idempotency_key: str | None = None,
) -> str | None:
    """Log and ``group_send`` one event; returns its id.

    Raises :class:`BroadcastMaybeDelivered` when it failed after something may have
    been sent; with the same ``idempotency_key`` a retry reuses the logged entry.
    """
    layer = get_channel_layer(channel_layer_alias)
    if layer is None:
        raise RuntimeError(f"no channel layer: CHANNEL_LAYERS[{channel_layer_alias!r}] is not set")
    if not isinstance(event_type, str) or not event_type:
        raise TypeError("event_type must be a non-empty str")
    if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key):
        raise TypeError("idempotency_key must be a non-empty str")
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
        if id is not None or idempotency_key is not None:
            raise ValueError("event ids and idempotency keys need the replay log "
                             "(SSE_REPLAY_MAXLEN > 0)")
        await _send(layer, group, message, None, idempotency_key)
        return None
    current = trace.get_current_span().get_span_context()
    # Replayed to SSE clients as their "traceparent:" field: only the sampled flag bit.
    traceparent = _carrier.client_traceparent(current) if current.is_valid else None
    explicit = normalise_id(id) if id is not None else None
    try:
        event_id, prev = await log.append(group, message, traceparent, explicit_id=explicit,
                                          idempotency_key=idempotency_key)
    except _NOT_SENT:
        raise
    except Exception as exc:  # the append may have run, its reply lost
        raise BroadcastMaybeDelivered(group, None, idempotency_key) from exc
    # The instrumentor merges its carrier into this dict (see _carrier.attach).
    await _send(layer, group, {**message, key: {SSE_ID: event_id, SSE_PREV: prev,
                                                 SSE_GROUP: group}}, event_id, idempotency_key)
    return event_id


async def _send(layer: Any, group: str, message: dict[str, Any], event_id: str | None,
                idempotency_key: str | None) -> None:
    """``group_send``; a failure after the log append, or on the wire, may have delivered."""
    try:
        await layer.group_send(group, message)
    except Exception as exc:
        if event_id is None and isinstance(exc, _NOT_SENT):
            raise  # refused before sending (serialisation, validation): nothing went out
        raise BroadcastMaybeDelivered(group, event_id, idempotency_key) from exc


def broadcast(
    group: str,
    event_type: str,
    data: Mapping[str, Any] | None = None,
    id: str | int | None = None,  # noqa: A002
    *,
    channel_layer_alias: str = "default",
    idempotency_key: str | None = None,
) -> str | None:
    """:func:`abroadcast` from sync code (see the module docstring for which loop runs it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("broadcast() called from a running event loop: "
                           "use `await abroadcast(...)`")
    coroutine = abroadcast(group, event_type, data, id, channel_layer_alias=channel_layer_alias,
                           idempotency_key=idempotency_key)
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
