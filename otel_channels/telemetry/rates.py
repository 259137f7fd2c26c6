"""Per-route and per-group sampling rates (``SAMPLE_RATES``, ``otel_sample_rate``).

``MESSAGE_SAMPLE_RATE`` is the rate of every route and group that has none of
its own. Each rate is resolved once, never per frame or per delivery:

* a WebSocket connection's rate when the connection starts
  (:func:`route_rate`): the consumer class's ``otel_sample_rate``, else its
  route template's entry in ``SAMPLE_RATES["routes"]``. It applies to the
  connection's ``receive`` spans (hence the ``send`` spans under them) and, at
  0, turns the connection's tracing off altogether;
* a group's rate where the ``group_send`` starts (:func:`group_rate`, from the
  group template the producer computes anyway), and on a worker once per
  broadcast record, only for a message whose producer sent no trace context
  (:func:`keep_untraced`). A producer in a trace keeps following it: a sampled
  trace is then kept or dropped by the group's rate from its trace id.

Deliveries follow the producer's decision through the carrier's sampled flag
(:mod:`..delivery.fanout`), so one broadcast is kept or dropped together on every worker.
"""

from __future__ import annotations

import zlib
from typing import Any

from ..conf import Config
from . import sampling as _sampling

#: ``hash(message id)`` is salted per process; CRC-32 is the same on every worker.
_CRC_LIMIT = 1 << 32


def valid_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= 1.0)


def route_rate(config: Config, route: str, consumer: Any) -> tuple[float, bool]:
    """A connection's ``(rate, off)``: its consumer's ``otel_sample_rate``, else its route's,
    else ``MESSAGE_SAMPLE_RATE``.

    ``off``: a rate of 0 given for this consumer or route turns the connection's
    tracing off altogether (no ``connect`` or ``disconnect`` span either; counters
    still count). ``MESSAGE_SAMPLE_RATE = 0`` keeps the lifecycle spans, as always.
    """
    rate = getattr(consumer, "otel_sample_rate", None)
    if rate is None or not valid_rate(rate):
        rate = config.SAMPLE_RATES.routes.get(route)
        if rate is None:
            return config.MESSAGE_SAMPLE_RATE, False
    return float(rate), rate <= 0.0


def group_rate(config: Config, template: str | None) -> float | None:
    """The group template's own rate, or None (then ``MESSAGE_SAMPLE_RATE`` rules)."""
    groups = config.SAMPLE_RATES.groups
    if not groups or template is None:
        return None
    return groups.get(template)


def keep_send(config: Config, template: str | None, current: Any) -> bool:
    """Whether a ``group_send`` / ``send`` is traced; ``current``: the caller's span context."""
    rate = group_rate(config, template)
    if current.is_valid:  # follow the trace we are in, thinned by the group's own rate
        return bool(current.trace_flags.sampled) and (
            rate is None or _sampling.keep_trace(current.trace_id, rate))
    return _sampling.draw(config.MESSAGE_SAMPLE_RATE if rate is None else rate)


def keep_untraced(config: Config, template: str | None, message_id: Any) -> bool:
    """A message whose producer sent no trace context: decided from its id.

    Every worker reaches the same decision for the same message (the id is in
    the carrier even when the producer has no SDK); without an id, a draw.
    """
    rate = group_rate(config, template)
    if rate is None:
        rate = config.MESSAGE_SAMPLE_RATE
    if rate >= 1.0 or rate <= 0.0 or not isinstance(message_id, str):
        return _sampling.draw(rate)
    return zlib.crc32(message_id.encode()) < rate * _CRC_LIMIT
