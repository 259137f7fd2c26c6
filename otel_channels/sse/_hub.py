"""The process-local SSE hub: one channel-layer subscription per group, fanned out.

A naive SSE view calls ``group_add`` for every stream, so a reconnect storm of
thousands of browsers needs thousands of Redis round trips at once (redis-py's
pool raises past its size) and every broadcast is copied into Redis once per
stream. Here each worker process (each event loop) holds, per group:

* ONE channel from ``layer.new_channel()`` added to the group with ONE
  ``group_add``, re-added every ``group_expiry / 2`` seconds so the layer never
  expires it, and discarded when the last local stream leaves;
* a receive task that numbers each message (``otel_channels.replay``), traces its receipt
  as ONE ``process {group}`` CONSUMER span (``channels.sse.streams`` says how
  many local streams it was fanned out to), and offers it to every local
  stream's bounded queue (:class:`LocalStream`).

Numbering and ordering each group's events: :mod:`._subscription`.
Each stream's bounded queue and the slow-client policy are in :mod:`._queue`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from ..conf import get_config
from ..delivery import process as _process
from ..delivery.fanout import TABLE
from ..layer.patches import raw_receive
from ..layer.subscriptions import SUBSCRIPTION_LOST, follow, unfollow
from ..replay import ZERO, get_log, parse_id
from ..telemetry import carrier as _carrier
from ..telemetry import instruments as _telemetry
from ..telemetry import semconv as sc
from ..telemetry import spans as _spans
from ._queue import Envelope, LocalStream
from ._subscription import GroupSubscription

__all__ = ["Envelope", "Hub", "LocalStream", "get_hub"]  # the queue types, re-exported

logger = logging.getLogger("otel_channels.sse")

#: Seconds between resubscription attempts while the layer fails; capped at 2 s because
#: every second a hub waits after Redis is back is a second of broadcasts its streams miss.
_BACKOFF = (0.1, 0.5, 1.0, 2.0)
#: Cancels (1 s apart) of a torn-down subscription's receive task: over two 5 s reads.
_CANCEL_ATTEMPTS = 12


class Hub:
    """All SSE group subscriptions of one event loop on one channel layer."""

    def __init__(self, layer: Any, alias: str) -> None:
        self.layer = layer
        self.alias = alias
        self.subscriptions: dict[str, GroupSubscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None

    # -- streams joining and leaving -------------------------------------------

    async def join(self, group: str, stream: LocalStream) -> str:
        """Subscribe ``stream`` to ``group``; returns the id it starts after."""
        sub = self.subscriptions.get(group)
        if sub is None:
            sub = GroupSubscription(group, asyncio.get_running_loop().create_future())
            self.subscriptions[group] = sub
            self._spawn(self._setup(sub))
        sub.streams.add(stream)
        if _succeeded(sub.ready):
            stream.accepted.setdefault(group, sub.last)
            return sub.last_id
        await asyncio.shield(sub.ready)
        # Joined before the subscription existed: everything fanned out since is newer.
        start = parse_id(sub.start_id)
        assert start is not None
        stream.accepted.setdefault(group, start)
        return sub.start_id

    def leave(self, group: str, stream: LocalStream) -> None:
        """Unsubscribe ``stream`` at once (sync: runs in a cancelled generator's finally)."""
        sub = self.subscriptions.get(group)
        if sub is None:
            return
        sub.streams.discard(stream)
        if not sub.streams and sub.ready.done():
            self._teardown(sub)

    async def _setup(self, sub: GroupSubscription) -> None:
        try:
            log = get_log(self.alias)
            # Read the head before group_add: an entry appended in between is then
            # either received or found as a gap, never taken as already delivered.
            head = await log.head(sub.group) if log is not None else ZERO
            sub.start_id = sub.last_id = head
            sub.last = parse_id(head) or (0, 0)
            sub.channel = await self.layer.new_channel()
            follow(sub.channel)  # told when a pub/sub layer loses the group
            await self.layer.group_add(sub.group, sub.channel)
        except BaseException as exc:
            if self.subscriptions.get(sub.group) is sub:
                del self.subscriptions[sub.group]
            if sub.channel is not None:
                self._spawn(self._discard(sub))
            if isinstance(exc, asyncio.CancelledError):
                sub.ready.cancel()
                raise
            sub.ready.set_exception(exc)
            sub.ready.exception()  # retrieved: joiners that were cancelled never will
            return
        sub.ready.set_result(None)
        if not sub.streams:  # every joiner left while we subscribed
            self._teardown(sub)
            return
        sub.task = self._spawn(self._receive(sub))
        self._ensure_refresher()

    def _teardown(self, sub: GroupSubscription) -> None:
        if self.subscriptions.get(sub.group) is sub:
            del self.subscriptions[sub.group]
        if sub.task is not None:
            sub.task.cancel()
        self._spawn(self._discard(sub))
        if not self.subscriptions and self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    async def _discard(self, sub: GroupSubscription) -> None:
        if sub.channel is None:
            return
        unfollow(sub.channel)
        try:
            await self.layer.group_discard(sub.group, sub.channel)
        except Exception:
            logger.warning("group_discard(%r) failed", sub.group, exc_info=True)
        task = sub.task
        # A cancel that lands while redis-py's blocking read times out can be lost: the
        # read reports "no message" and channels-redis reads again, for ever, as this
        # process's shared reader (seen about once per few hundred teardowns under churn).
        # Cancel again until the task ends, as daphne does with consumers that hang on.
        for _ in range(_CANCEL_ATTEMPTS):
            if task is None or task.done():
                return
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        logger.warning("the receive task of group %r did not stop", sub.group)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- keeping the membership alive ------------------------------------------

    def _ensure_refresher(self) -> None:
        expiry = getattr(self.layer, "group_expiry", None)
        running = self._refresher is not None and not self._refresher.done()
        if not running and isinstance(expiry, (int, float)) and expiry > 0:
            self._refresher = self._spawn(self._refresh(max(0.5, expiry / 2)))

    async def _refresh(self, interval: float) -> None:
        """Re-add each channel before the layer's ``group_expiry`` drops it."""
        while self.subscriptions:
            await asyncio.sleep(interval)
            for sub in list(self.subscriptions.values()):
                if sub.channel is not None and sub.ready.done():
                    try:
                        await self.layer.group_add(sub.group, sub.channel)
                    except Exception:
                        logger.warning("refreshing group %r failed", sub.group, exc_info=True)

    # -- receiving -------------------------------------------------------------

    async def _receive(self, sub: GroupSubscription) -> None:
        failures = 0
        assert sub.channel is not None
        while True:
            try:
                if failures:
                    # The layer failed (Redis down or restarted). A Redis restarted without
                    # persistence lost the group's members and the log: join again before
                    # reading, then replay the gap from the log or reset the streams.
                    await self.layer.group_add(sub.group, sub.channel)
                    await sub.catch_up(self.alias)
                    logger.warning("group %r resubscribed after %d failures", sub.group, failures)
                    failures = 0
                message = await raw_receive(self.layer.receive)(sub.channel)
                if message.get("type") == SUBSCRIPTION_LOST:  # a pub/sub gap: read it now
                    await sub.catch_up(self.alias)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.subscriptions.get(sub.group) is not sub:
                    return  # torn down (a cancel that surfaced as an error): never rejoin
                # One traceback per outage; the retries with backoff log a line each.
                logger.warning("receive on group %r failed (attempt %d)", sub.group,
                               failures + 1, exc_info=not failures)
                await asyncio.sleep(_BACKOFF[min(failures, len(_BACKOFF) - 1)])
                failures += 1
                continue
            if self.subscriptions.get(sub.group) is not sub:
                return  # torn down while the read returned (a lost cancel, see _discard)
            await self.handle(sub, message)

    async def handle(self, sub: GroupSubscription, raw: dict[str, Any]) -> None:
        """One receipt: number it, trace it, fan it out.

        A receipt is one delivery of the message on this worker, however many
        streams it reaches: one ``process`` span when sampled (never subject to
        the fan-out budget), counted like a consumer's delivery.
        """
        config = get_config()
        telemetry = _telemetry.get()
        message, carrier = _carrier.detach(raw, config.CARRIER_KEY)
        # A carrier-less message (an uninstrumented producer): the subscription knows the group.
        record = TABLE.lookup(carrier, message.get("type"), config, telemetry, group=sub.group)
        record.consumed[0] += 1
        first = record.started == 0
        record.started += 1
        now = time.time()
        span = _process.start_span(record, telemetry, None, now) if record.sampled else None
        token = otel_context.attach(
            record.dropped_context if span is None
            else trace.set_span_in_context(span, record.handler_context)
        )
        start = time.perf_counter()
        try:
            await self._deliver(sub, message, carrier, raw, span)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if span is not None:
                _spans.record_exception(span, exc)
            logger.warning("SSE delivery on group %r failed", sub.group, exc_info=True)
        finally:
            if span is not None:
                if first:
                    _process.record_histograms(record, telemetry, now,
                                               time.perf_counter() - start)
                span.end()
            otel_context.detach(token)

    async def _deliver(self, sub: GroupSubscription, message: dict[str, Any],
                       carrier: dict[str, Any] | None, raw: dict[str, Any],
                       span: trace.Span | None) -> None:
        # The SSE "traceparent:" field is for clients to read: only the sampled flag bit
        # (W3C Level 1 parsers refuse -03, see _carrier.client_traceparent), and a
        # producer's value that does not parse is not passed on.
        traceparent: str | None = None
        if span is not None and span.get_span_context().trace_flags.sampled:
            traceparent = _carrier.client_traceparent(span.get_span_context())
        else:
            producer = _carrier.remote_context(carrier)
            if producer is not None:
                traceparent = _carrier.client_traceparent(producer)
        try:
            envelopes = await sub.number(self.alias, message, carrier, raw, traceparent)
        except asyncio.CancelledError:
            raise
        except Exception:  # the log failed (Redis down): the event still goes out, without an id
            logger.warning("numbering an event of group %r failed; sent without an id",
                           sub.group, exc_info=True)
            envelopes = [Envelope(sub.group, None, message, traceparent)]
        reached: set[LocalStream] = set()
        for envelope in envelopes:
            for stream in list(sub.streams):
                if stream.offer(envelope):
                    reached.add(stream)
        if span is not None and span.is_recording():
            span.set_attribute(sc.CHANNELS_SSE_STREAMS, len(reached))
            span.set_attribute(sc.MESSAGING_BATCH_MESSAGE_COUNT, len(envelopes))
            if envelopes and envelopes[-1].id is not None:
                span.set_attribute(sc.MESSAGING_MESSAGE_ID, envelopes[-1].id)

def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Hub]] = (
    weakref.WeakKeyDictionary()
)


def get_hub(alias: str) -> Hub:
    """The hub of the running event loop for channel layer ``alias``."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer(alias)
    if layer is None:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"EventStreamView needs a channel layer: CHANNEL_LAYERS[{alias!r}] is not set."
        )
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(alias)
    if hub is None or hub.layer is not layer:  # settings changed: a fresh layer
        hub = hubs[alias] = Hub(layer, alias)
    return hub


def hubs() -> list[Hub]:
    """Every hub of the running loop (tests and diagnostics)."""
    return list(_hubs.get(asyncio.get_running_loop(), {}).values())
