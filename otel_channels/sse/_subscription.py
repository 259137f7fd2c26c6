"""One group's subscription on a worker: its local streams and the order of its events.

The hub (:mod:`._hub`) holds one :class:`GroupSubscription` per group it
receives; this module decides which events a receipt delivers, and with what id.

Numbering (see :mod:`otel_channels.replay` for the ids):

* ``broadcast()`` appends to the log *before* sending, and the id rides in the
  message's carrier (``sse_id`` / ``sse_prev`` / ``sse_group``); every worker
  writes that id.
* A plain ``group_send`` (a consumer, a view, another library) has no SSE id:
  each hub that receives it appends it to the log keyed by the carrier's
  unique message id (:meth:`GroupSubscription.message_key`), so the first hub
  numbers it and the others get the same id back. Such a message is logged
  only if some worker holds a stream for the group when it arrives;
  ``broadcast()`` is logged even when no stream is open, so it can always be
  replayed. Plain messages
  keep their order among themselves (every hub receives and numbers them in
  send order); a ``broadcast()`` from another process racing one within
  milliseconds may be numbered before it. Either way there is one order, and
  every worker and every replay follows it.
* Whatever the order messages arrive in, a hub delivers each group's events
  in id order exactly once: an entry whose ``prev`` is not what the hub last
  delivered makes it read the gap from the log first; an id it already
  delivered is skipped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..replay import FINGERPRINT_TTL, ZERO, Entry, fingerprint, get_log, parse_id
from ..telemetry.carrier import SSE_GROUP, SSE_ID, SSE_PREV
from ._queue import Envelope, LocalStream


class GroupSubscription:
    """The hub's membership in one group, and the order of the group's events on this worker."""

    __slots__ = ("group", "channel", "streams", "ready", "task", "last", "last_id",
                 "start_id", "repeats", "unnumbered", "sent_bare")

    def __init__(self, group: str, ready: asyncio.Future[None]) -> None:
        self.group = group
        self.channel: str | None = None
        self.streams: set[LocalStream] = set()
        self.ready = ready
        self.task: asyncio.Task[None] | None = None
        self.last: tuple[int, int] = (0, 0)
        self.last_id = ZERO
        self.start_id = ZERO
        #: Carrier-less messages seen: fingerprint -> (times, first seen), see message_key.
        self.repeats: dict[str, tuple[int, float]] = {}
        #: Messages sent without an id (the log failed): (key, message, producer, when).
        self.unnumbered: list[tuple[str, dict[str, Any], str | None, float]] = []
        #: Their ids once the log is back: a gap read must not send them again.
        self.sent_bare: dict[str, float] = {}

    def message_key(self, carrier: dict[str, Any], raw: dict[str, Any]) -> str | None:
        """What every hub calls this message when it numbers it in the shared log.

        The carrier's unique id and a digest of the message, and how many times
        this hub saw that pair within FINGERPRINT_TTL: two different messages never
        share a key (even with a reused or forged id, or none: a producer without
        otel_channels), and a message sent twice is two events on every worker.

        None when this hub already received this very message (the same carrier id
        and digest): a redelivery. channels-redis delivers at least once: a message
        popped just before Redis died stays in its ``$inflight`` backup queue (an AOF
        keeps it) and comes again after the restart; its first receipt went out,
        numbered or, the log being down, without an id. Numbering it again would log
        it a second time and every stream would show it twice. Equal messages without
        a carrier id (an uninstrumented producer) cannot be told apart: still counted.
        """
        message_id = carrier.get("id")
        digest = fingerprint(raw)
        if isinstance(message_id, str):
            digest = f"{message_id}:{digest}"
        now = time.monotonic()
        if len(self.repeats) > 4096:  # bounded: forget what expired
            self.repeats = {k: v for k, v in self.repeats.items()
                            if now - v[1] < FINGERPRINT_TTL}
        times, first = self.repeats.get(digest, (0, now))
        if now - first >= FINGERPRINT_TTL:
            times, first = 0, now
        if times and isinstance(message_id, str):
            return None
        self.repeats[digest] = (times + 1, first)
        return f"{digest}:{times + 1}"

    async def catch_up(self, alias: str) -> None:
        """After a rejoin: fan out what the log holds since the last delivery, or reset."""
        log = get_log(alias)
        if log is None:
            return  # no log, no ids: what was sent during the outage is simply missed
        await self._settle_unnumbered(log)
        head = await log.head(self.group)
        found = await log.since(self.group, self.last_id, head)
        if found is None:  # the log lost our position (restarted empty, trimmed, expired)
            # A log that starts afresh (its oldest entry follows 0-0) holds only events
            # newer than the loss: reset to its start and deliver them; else reset to its head.
            found = await log.since(self.group, ZERO, head)
            start = ZERO if found is not None else head
            for stream in list(self.streams):
                stream.lost(self.group, start, "resubscribed")
            self.last_id, self.last = start, parse_id(start) or (0, 0)
            found = found or []
        found = [entry for entry in found if entry.id not in self.sent_bare]
        for entry in found:
            envelope = Envelope(self.group, entry.id, entry.message, entry.traceparent)
            for stream in list(self.streams):
                stream.offer(envelope)
        if found:
            self.last_id, self.last = found[-1].id, parse_id(found[-1].id) or self.last

    async def number(self, alias: str, message: dict[str, Any],
                     carrier: dict[str, Any] | None, raw: dict[str, Any],
                     traceparent: str | None) -> list[Envelope]:
        """The envelopes this receipt delivers, in log order (none if already delivered)."""
        group = self.group
        log = get_log(alias)
        if log is None:
            return [Envelope(group, None, message, traceparent)]
        carrier = carrier or {}
        carried = _carried_id(carrier, group)
        if carried is not None:  # numbered by broadcast(), if the log agrees
            envelopes = await self._deliver_carried(log, message, traceparent, *carried)
            if envelopes is not None:
                return envelopes
        # A plain group_send (or a carried id the log does not back): the first hub to
        # see it numbers it for all.
        key = self.message_key(carrier, raw)
        if key is None:
            return []  # the layer's redelivery of a message this hub fanned out already
        producer = carrier.get("traceparent")
        producer = producer if isinstance(producer, str) else None
        try:
            event_id, prev = await log.append(group, message, producer, fingerprint=key)
            return await self._deliver(log, message, traceparent, event_id, prev)
        except Exception:  # the hub sends it without an id (see _settle_unnumbered)
            if len(self.unnumbered) >= 1024:  # bounded: a long outage forgets the oldest
                del self.unnumbered[0]
            self.unnumbered.append((key, message, producer, time.monotonic()))
            raise

    async def _settle_unnumbered(self, log: Any) -> None:
        """Before a gap read: the ids of the messages this hub sent without one.

        When the log failed (Redis going down), this hub sent the message without an
        id, but another worker may have numbered it just before, or a redelivery after:
        the gap read that follows would send it again, with its id, to every stream
        here. Appending it again under the same key returns that id (or numbers it
        now, for streams that resume with ``Last-Event-ID``); the gap skips it.
        """
        now = time.monotonic()
        self.sent_bare = {k: t for k, t in self.sent_bare.items() if now - t < FINGERPRINT_TTL}
        while self.unnumbered:
            key, message, producer, when = self.unnumbered[0]
            if now - when < FINGERPRINT_TTL:  # later, the log's key has expired
                event_id, _ = await log.append(self.group, message, producer, fingerprint=key)
                self.sent_bare[event_id] = now
            del self.unnumbered[0]

    async def _deliver_carried(self, log: Any, message: dict[str, Any], traceparent: str | None,
                               event_id: str, prev: str) -> list[Envelope] | None:
        """Deliver a message ``broadcast()`` numbered; None if its id is not its own.

        The common case (it follows what this hub delivered last) is trusted as is.
        Out of order, the log decides: an id that names another message, or none at
        all (a copied or forged carrier), must not skip this message or later ones.
        """
        position, previous = parse_id(event_id), parse_id(prev)
        if previous == self.last:
            return await self._deliver(log, message, traceparent, event_id, prev)
        found = await log.between(self.group, prev, event_id)
        if not found or found[-1].id != event_id or found[-1].message != message:
            return None
        if position is not None and position <= self.last:
            return []  # a gap read delivered it already
        return await self._deliver(log, message, traceparent, event_id, prev)

    async def _deliver(self, log: Any, message: dict[str, Any], traceparent: str | None,
                       event_id: str, prev: str) -> list[Envelope]:
        group = self.group
        position, previous = parse_id(event_id), parse_id(prev)
        assert position is not None and previous is not None
        if position <= self.last:
            return []  # a gap read delivered it already
        if previous == self.last:
            entries = [Entry(event_id, prev, message, traceparent)]
        else:
            await self._settle_unnumbered(log)
            entries = await log.between(group, self.last_id, event_id)
            entries = [entry for entry in entries if entry.id not in self.sent_bare]
            if not entries or entries[-1].id != event_id:
                entries.append(Entry(event_id, prev, message, traceparent))
            else:  # this receipt's own entry: keep its live trace context
                entries[-1] = Entry(event_id, prev, message, traceparent)
        self.last, self.last_id = position, event_id
        return [Envelope(group, e.id, e.message, e.traceparent) for e in entries]


def _carried_id(carrier: dict[str, Any], group: str) -> tuple[str, str] | None:
    """``(id, prev)`` that ``broadcast()`` put in the carrier for ``group``, if plausible.

    An id more than a minute ahead of this clock is refused: it would make every
    real event after it look already delivered.
    """
    event_id, prev = carrier.get(SSE_ID), carrier.get(SSE_PREV)
    if carrier.get(SSE_GROUP) != group or not isinstance(event_id, str) or (
            not isinstance(prev, str)):
        return None
    position, previous = parse_id(event_id), parse_id(prev)
    if position is None or previous is None or previous >= position:
        return None
    if position[0] > time.time() * 1000 + 60_000:
        return None
    return event_id, prev
