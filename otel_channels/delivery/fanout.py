"""What one worker knows about each message it delivers: parsed once, budgeted, summarized.

A broadcast reaches every member on a worker with the same carrier. Its
:class:`Broadcast` record is built at the first delivery (the carrier parsed,
the group template, the span name, parent context, links and attributes
prepared) and found by the carrier's message id for every later one, so a
delivery costs a dict lookup, not a parse.

The record also holds the fan-out budget: per worker process and per
broadcast, only the first ``MAX_PROCESS_SPANS_PER_BROADCAST`` sampled
deliveries get ``process`` spans; the rest run untraced and are tallied here
(a failed or slow one still gets its span, after the fact: see
:mod:`.process`). When a worker did not record some deliveries of a
broadcast as spans, it writes one ``deliver {group}`` summary span for it
(same parent and links as the ``process`` spans, from the first delivery's
start to the last one's end) saying how many deliveries it made, how many
have no span, how many failed or were slow, and the longest one.

The summary is written once the broadcast has been quiet on this worker for
:data:`QUIET_SECONDS`, by one timer per process that is armed only while a
summary is pending: no timer, task or lock per broadcast or per delivery.
Records live in one bounded, insertion-ordered table; when it is full the
oldest is dropped (its summary written first), so memory stays bounded
however many broadcasts are in flight. Tables are touched only from event
loop threads; a race between loops of one process can at worst miscount.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from ..conf import Config, on_change
from ..telemetry import carrier as _carrier
from ..telemetry import instruments as _telemetry
from ..telemetry import rates as _rates
from ..telemetry import sampling as _sampling
from ..telemetry import semconv as sc
from ..telemetry.names import group_template

#: A broadcast with no delivery on this worker for this long has ended here.
QUIET_SECONDS = 0.25
_QUIET_NS = int(QUIET_SECONDS * 1e9)
#: A summary waits at most this long for deliveries still running (a hung handler).
_MAX_WAIT_NS = 30 * 10**9
#: Broadcasts remembered at once per process; beyond, the oldest is summarized and forgotten.
MAX_RECORDS = 2048

_EMPTY = otel_context.Context()


class Broadcast:
    """One channel-layer message as this worker delivers it (to one or many members)."""

    __slots__ = (
        "key", "group", "template", "sampled", "parent", "handler_context",
        "dropped_context", "producer_link", "metric_attributes", "span_attributes",
        "span_name", "sent_at", "consumed",
        # the budget and the tally of the current summary window
        "started", "spans", "deliveries", "recorded", "failed", "slow", "max_duration",
        "first_ns", "last_ns", "in_flight", "pending",
    )

    def __init__(
        self,
        key: str | None,
        carrier: dict[str, Any] | None,
        message_type: Any,
        config: Config,
        telemetry: _telemetry.Telemetry,
        group: str | None = None,
    ) -> None:
        self.key = key
        carried_group = _carrier.destination(carrier)
        self.group = carried_group or group
        template = self.template = (
            group_template(self.group, config.GROUP_TEMPLATE) if self.group else None
        )
        producer, base = _carrier.extract(carrier) if carrier is not None else (None, None)
        if producer is not None:
            self.sampled = producer.trace_flags.sampled
        else:  # an untraced producer: decided once per message, from its id (every worker agrees)
            self.sampled = _rates.keep_untraced(config, template, key)
        # The handler's context: the producer's baggage (if any) and our span.
        self.handler_context = base if base is not None else _EMPTY
        if producer is not None and config.GROUP_MESSAGE_PARENT == "producer":
            # A child of the producer span. No link to it as well: it would repeat the
            # parent, and a link costs the span as much as two attributes do.
            self.parent = trace.set_span_in_context(trace.NonRecordingSpan(producer),
                                                    self.handler_context)
            self.producer_link = None
        else:
            self.parent = self.handler_context  # a new trace, linked to the producer
            self.producer_link = Link(producer) if producer is not None else None
        self.dropped_context = _sampling.DROPPED_CONTEXT if base is None else (
            trace.set_span_in_context(_sampling.DROPPED_SPAN, base))
        attributes = self.metric_attributes = _telemetry.metric_attributes(sc.OPERATION_PROCESS,
                                                                        template)
        span_attributes = {**attributes, sc.MESSAGING_OPERATION_NAME: sc.SPAN_PROCESS}
        if self.group is not None:
            span_attributes[sc.MESSAGING_DESTINATION_NAME] = self.group
        elif carrier is not None:  # a carrier without a group: a send to one channel
            span_attributes[sc.MESSAGING_DESTINATION_TEMPORARY] = True
        if isinstance(message_type, str):
            span_attributes[sc.CHANNELS_MESSAGE_TYPE] = message_type[:256]
        self.span_attributes = span_attributes
        self.span_name = f"{sc.SPAN_PROCESS} {template}" if template else sc.SPAN_PROCESS
        self.sent_at = _carrier.sent_at(carrier)
        self.consumed = telemetry.consumed_messages.cell_for(template, attributes)
        self.started = 0  # deliveries begun on this worker (0: the next one is the first)
        self.spans = 0  # budget used (never reset: a late tail gets no new budget)
        self.deliveries = 0
        self.recorded = 0
        self.failed = 0
        self.slow = 0
        self.max_duration = 0.0
        self.first_ns = 0
        self.last_ns = 0
        self.in_flight = 0
        self.pending = False

    def delay(self, now: float) -> float | None:
        """Seconds from the producer's send to ``now`` (a ``time.time()``), if it was stamped."""
        sent_at = self.sent_at
        return None if sent_at is None else max(0.0, now - sent_at)

    def links(self, connect: Link | None,
              connect_only: tuple[Link, ...] | None = None) -> tuple[Link, ...]:
        """The span's links; ``connect_only``: the caller's prepared ``(connect,)``."""
        producer = self.producer_link
        if producer is None:
            if connect is None:
                return ()
            return connect_only if connect_only is not None else (connect,)
        return (producer,) if connect is None else (producer, connect)


class Table:
    """The per-process records and the summary flush."""

    def __init__(self) -> None:
        self.records: dict[Any, Broadcast] = {}
        self.pending: dict[Any, Broadcast] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._atexit = False

    def lookup(
        self,
        carrier: dict[str, Any] | None,
        message_type: Any,
        config: Config,
        telemetry: _telemetry.Telemetry,
        group: str | None = None,
    ) -> Broadcast:
        """The record of the message ``carrier`` came with (``group``: for carrier-less ones)."""
        key = _carrier.message_key(carrier)
        if key is None:  # no carrier, or one we cannot tell apart from others: not shared
            return Broadcast(None, carrier, message_type, config, telemetry, group)
        found = self.records.get(key)
        if found is None:
            records = self.records
            if len(records) >= MAX_RECORDS:
                oldest = records.pop(next(iter(records)))
                if self.pending.pop(oldest.key, None) is not None:
                    summarize(oldest)
            found = records[key] = Broadcast(key, carrier, message_type, config, telemetry,
                                             group)
        return found

    def mark_pending(self, record: Broadcast) -> None:
        """``record`` has a delivery without a span: make sure a flush will summarize it."""
        record.pending = True
        self.pending[record.key] = record
        loop = self._timer_loop
        if self._timer is not None and loop is not None and not loop.is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - deliveries always run in a loop
            return
        if not self._atexit:  # registered after the SDK's own hook, so it runs before it
            self._atexit = True
            atexit.register(self.flush, True)
        self._timer_loop = loop
        self._timer = loop.call_later(QUIET_SECONDS, self.flush)

    def flush(self, force: bool = False) -> None:
        """Summarize every pending broadcast quiet for QUIET_SECONDS (all of them: ``force``)."""
        self._timer = None
        now = time.time_ns()
        for key, record in list(self.pending.items()):
            idle = now - record.last_ns
            if force or (idle >= _QUIET_NS and (record.in_flight == 0 or idle >= _MAX_WAIT_NS)):
                del self.pending[key]
                summarize(record)
        loop = self._timer_loop
        if self.pending and loop is not None and not loop.is_closed():
            self._timer = loop.call_later(QUIET_SECONDS, self.flush)

    def clear(self) -> None:
        """Forget every record (settings or providers changed); pending summaries are written."""
        self.flush(force=True)
        self.records.clear()


TABLE = Table()
on_change(TABLE.clear)  # records hold prepared settings (template, parent mode)


def summarize(record: Broadcast) -> None:
    """Write the ``deliver {group}`` span of a record's window and open a new window."""
    record.pending = False
    deliveries, recorded = record.deliveries, record.recorded
    first_ns, last_ns = record.first_ns, record.last_ns
    attributes: dict[str, Any] = {
        **record.span_attributes,
        sc.MESSAGING_OPERATION_NAME: sc.SPAN_DELIVER,
        sc.MESSAGING_BATCH_MESSAGE_COUNT: deliveries,
        sc.CHANNELS_DELIVERIES_RECORDED: recorded,
        sc.CHANNELS_DELIVERIES_UNRECORDED: deliveries - recorded,
        sc.CHANNELS_DELIVERIES_FAILED: record.failed,
        sc.CHANNELS_DELIVERIES_SLOW: record.slow,
        sc.CHANNELS_DELIVERIES_DURATION_MAX: record.max_duration,
        sc.PROCESS_PID: os.getpid(),  # which worker, when the resource does not say
    }
    record.deliveries = record.recorded = record.failed = record.slow = 0
    record.max_duration = 0.0
    record.first_ns = 0
    if deliveries <= recorded:
        return  # every delivery of the window is a span already
    name = f"{sc.SPAN_DELIVER} {record.template}" if record.template else sc.SPAN_DELIVER
    span = _telemetry.get().tracer.start_span(
        name, context=record.parent, kind=SpanKind.CONSUMER, links=record.links(None),
        attributes=attributes, start_time=first_ns or None,
    )
    span.end(end_time=max(last_ns, first_ns) or None)
