"""Group messages a layer dropped for members over capacity, made visible.

A ``group_send`` never fails for a full member: channels-redis and channels-valkey
skip it in their Lua script and only log ``"N of M channels over capacity in
group G"`` at INFO; Channels' in-memory layer swallows the member's
``ChannelFull``. The producer's span would say the broadcast went fine while a
member lost it. While a traced ``send`` / ``group_send`` runs, :data:`DROPS`
holds a counter cell: the in-memory layer's member sends add their
``ChannelFull`` to it, and a logging filter on the redis-like layers' loggers
adds their count. Nothing happens when nothing is dropped, beyond one context
variable per send.

The filter needs the INFO record: :func:`watch` lowers those loggers to INFO when
they were above it, and the filter then drops what the old level would have
dropped, so what reaches handlers does not change.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable
from typing import Any

from channels.exceptions import ChannelFull

#: The counter cell of the traced send / group_send running in this context, or None.
DROPS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "otel_channels_drops", default=None)

#: The layers that log their group_send drops, and the message they log.
LOGGERS = ("channels_redis.core", "channels_valkey.core")
MESSAGE = "%s of %s channels over capacity in group %s"


async def counting_full(sending: Awaitable[Any], cell: list[int]) -> Any:
    """Await one member's send of a group send; count it when the member is full."""
    try:
        return await sending
    except ChannelFull:
        cell[0] += 1
        raise


class _OverCapacity(logging.Filter):
    """Reads the layer's INFO line into the running send's cell; lets through what the
    logger's own level would have."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == MESSAGE and record.args:
            cell = DROPS.get()
            count = record.args[0] if isinstance(record.args, tuple) else None
            if cell is not None and isinstance(count, int):
                cell[0] += count
        return record.levelno >= self.level


_installed: list[tuple[logging.Logger, _OverCapacity, int]] = []


def watch() -> None:
    """Install the filters (idempotent)."""
    if _installed:
        return
    for name in LOGGERS:
        logger = logging.getLogger(name)
        level = logger.getEffectiveLevel()
        watcher = _OverCapacity(level)
        logger.addFilter(watcher)
        _installed.append((logger, watcher, logger.level))
        if level > logging.INFO:
            logger.setLevel(logging.INFO)


def unwatch() -> None:
    """Remove the filters and put the loggers' levels back."""
    while _installed:
        logger, watcher, level = _installed.pop()
        logger.removeFilter(watcher)
        logger.setLevel(level)
