"""A stream's side of the hub: numbered events on their way, and a bounded queue per stream.

Slow clients (``SSE_SLOW_CLIENT_POLICY``), counted in ``channels.sse.dropped``:

* ``"reset"`` (default): a full queue drops its oldest event; the stream then
  writes a ``stream-reset`` event (``{"reason": "slow_client", "dropped": n}``)
  before the next one, so the page knows to reload its state;
* ``"close"``: the stream ends; the browser reconnects with ``Last-Event-ID``
  and the log replays what it missed.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from ..replay import parse_id
from ..telemetry import instruments as _telemetry
from .wire import ServerSentEvent, message_event

__all__ = ["Envelope", "LocalStream", "Wake"]


class Envelope:
    """One numbered group message on its way to the local streams."""

    __slots__ = ("group", "id", "position", "message", "traceparent", "reset", "_default",
                 "_encoded")

    def __init__(self, group: str, event_id: str | None, message: dict[str, Any],
                 traceparent: str | None) -> None:
        self.group = group
        self.id = event_id
        self.position = parse_id(event_id) if event_id is not None else None
        self.message = message
        self.traceparent = traceparent
        #: Not an event: a ``stream-reset`` marker (with this reason) moving the stream to ``id``.
        self.reset: str | None = None
        self._default: ServerSentEvent | None = None
        self._encoded: tuple[str | None, tuple[tuple[str, str], ...], bytes] | None = None

    def default_event(self) -> ServerSentEvent:
        """``event:`` = type, ``data:`` = JSON of the rest; built once for all streams."""
        if self._default is None:
            self._default = message_event(self.message)
        return self._default

    def encode_default(self, event_id: str | None, extra: tuple[tuple[str, str], ...]) -> bytes:
        """The default event's bytes; streams writing the same id share one encoding."""
        cached = self._encoded
        if cached is not None and cached[0] == event_id and cached[1] == extra:
            return cached[2]
        data = replace(self.default_event(), id=event_id).encode(extra)
        self._encoded = (event_id, extra, data)
        return data


class Wake:
    """``asyncio.Event`` for a stream's one writer, without the Event's deque of waiters.

    An idle stream holds one of these; ``asyncio.Event`` carries a ``deque`` (624
    bytes) for any number of waiters, where a stream has one (issue 20: thousands
    of idle streams per worker). The future exists only while the writer waits.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


class LocalStream:
    """A stream's bounded queue, fed by the hub (sync, on the hub's loop)."""

    __slots__ = ("pending", "capacity", "policy", "wake", "accepted", "unreported",
                 "overflowed", "metric_attributes", "__weakref__")

    def __init__(self, capacity: int, policy: str, metric_attributes: dict[str, Any]) -> None:
        # A list, not a deque: empty (the idle stream's state) it is 56 bytes, a deque 624;
        # dropping the oldest of a full queue moves at most SSE_QUEUE_SIZE pointers.
        self.pending: list[Envelope] = []
        self.capacity = capacity
        self.policy = policy
        self.wake = Wake()
        self.accepted: dict[str, tuple[int, int]] = {}
        self.unreported = 0  # dropped since the last stream-reset was written
        self.overflowed = False
        self.metric_attributes = metric_attributes

    def lost(self, group: str, event_id: str, reason: str) -> None:
        """Events of ``group`` up to ``event_id`` are gone: queue a ``stream-reset`` marker."""
        marker = Envelope(group, event_id, {}, None)
        marker.reset = reason
        if marker.position is not None:
            self.accepted[group] = marker.position
        self.pending.append(marker)  # one per outage, after what was already queued
        self.wake.set()

    def offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` unless this stream already has it; apply the slow-client policy."""
        position = envelope.position
        if position is not None:
            seen = self.accepted.get(envelope.group)
            if seen is not None and position <= seen:
                return False
            self.accepted[envelope.group] = position
        if self.overflowed:  # closing: counted, not queued
            _telemetry.get().sse_dropped.add(1, self.metric_attributes)
            return False
        if len(self.pending) >= self.capacity:
            telemetry = _telemetry.get()
            if self.policy == "close":
                lost = len(self.pending) + 1
                self.pending.clear()
                self.overflowed = True
                telemetry.sse_dropped.add(lost, self.metric_attributes)
                self.wake.set()
                return False
            del self.pending[0]
            self.unreported += 1
            telemetry.sse_dropped.add(1, self.metric_attributes)
        self.pending.append(envelope)
        self.wake.set()
        return True
