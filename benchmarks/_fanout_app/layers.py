"""An in-process channel layer that delivers the way channels-redis does, without Redis.

The instruction-count benchmark runs in one process under callgrind, where a
real Redis round trip's timing would move the counts. ``InMemoryChannelLayer``
is no stand-in for channels-redis on the delivery path: it deep-copies every
message once per member (in Python), and runs one task per member, where
channels-redis serializes a group message once per worker with msgpack (C),
deserializes it once on that worker and puts the same dict into every local
member's receive buffer (``channels_redis/core.py``, ``receive``). This layer
does exactly that: msgpack out and back once per send or group send, one
shared dict for all members, members over capacity dropped as channels-redis
drops them. Everything else is ``InMemoryChannelLayer``'s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer


class RedisLikeMemoryLayer(InMemoryChannelLayer):
    """``InMemoryChannelLayer`` with channels-redis's serialization and sharing."""

    def _queue(self, channel: str) -> asyncio.Queue[Any]:
        return self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        copy = msgpack.unpackb(msgpack.packb(message), raw=False)
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, copy))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        copy = msgpack.unpackb(msgpack.packb(message), raw=False)  # once, shared by all members
        expires = time.time() + self.expiry
        for channel in list(self.groups.get(group, ())):
            queue = self._queue(channel)
            if not queue.full():  # channels-redis drops a group message for a full member
                queue.put_nowait((expires, copy))
