"""Group memberships of traced consumers, discarded when the consumer ends (issue 20).

``group_add`` / ``group_discard`` are wrapped to remember which groups each traced
consumer's channel joined; :meth:`Memberships.release` discards what is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("otel_channels")


class Memberships:
    """The groups each traced consumer's channel joined, so that none outlives its consumer.

    Channels runs a consumer's ``disconnect()`` (where users ``group_discard``) only
    when the server reports the disconnect; a consumer that dies first (a send to a
    client that just reset raises, channels#1820; a server cancelling a hung
    consumer) leaves its memberships behind until ``group_expiry``, a day by
    default, and every broadcast keeps paying for them. :meth:`release`, run when a
    traced consumer ends however it ends, discards what is left.
    """

    def __init__(self) -> None:
        # Tuples, not sets: an empty set is 216 bytes, a one-group tuple 48, and a
        # consumer joins few groups (issue 20: thousands of idle connections per worker).
        self.by_channel: dict[str, tuple[str, ...]] = {}
        self._leaving: set[asyncio.Task[None]] = set()

    def track(self, channel: Any) -> None:
        if isinstance(channel, str):
            self.by_channel.setdefault(channel, ())

    def release(self, layer: Any, channel: Any) -> None:
        """Forget ``channel``; discard, in the background, the groups it never left."""
        groups = self.by_channel.pop(channel, None) if isinstance(channel, str) else None
        if not groups or layer is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(_leave(layer, channel, groups))
        except RuntimeError:  # no loop (the consumer ran in a loop that is gone)
            return
        self._leaving.add(task)  # a strong reference until it is done
        task.add_done_callback(self._leaving.discard)


#: Seconds between attempts to leave a group while the layer fails (Redis restarting);
#: after the last one the membership is left to the layer's group_expiry.
_LEAVE_RETRIES = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


async def _leave(layer: Any, channel: str, groups: tuple[str, ...]) -> None:
    pending = set(groups)
    for wait in (*_LEAVE_RETRIES, None):
        for group in sorted(pending):
            try:  # bounded: a layer that hangs must not keep the task forever
                await asyncio.wait_for(layer.group_discard(group, channel), 10)
            except Exception:
                continue
            pending.discard(group)
        if not pending:
            return
        if wait is not None:
            await asyncio.sleep(wait)  # the layer is down (a persistent Redis comes back)
    logger.warning("could not discard %r from groups %s", channel, sorted(pending))


MEMBERSHIPS = Memberships()


def traced_group_add(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper for ``group_add(group, channel)``: remember a traced consumer's groups."""
    group, channel = _group_and_channel(args, kwargs)
    groups = MEMBERSHIPS.by_channel.get(channel) if isinstance(channel, str) else None
    if groups is not None and isinstance(group, str) and group not in groups:
        MEMBERSHIPS.by_channel[channel] = (*groups, group)
    return wrapped(*args, **kwargs)


def traced_group_discard(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper for ``group_discard(group, channel)``."""
    group, channel = _group_and_channel(args, kwargs)
    groups = MEMBERSHIPS.by_channel.get(channel) if isinstance(channel, str) else None
    if groups is not None and group in groups:
        MEMBERSHIPS.by_channel[channel] = tuple(g for g in groups if g != group)
    return wrapped(*args, **kwargs)


def _group_and_channel(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    group = args[0] if args else kwargs.get("group")
    channel = args[1] if len(args) > 1 else kwargs.get("channel")
    return group, channel
