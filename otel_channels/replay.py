"""The replay log: the bounded per-group event log that numbers SSE events and replays them.

Public (issue 22): ``broadcast()`` appends to it, ``EventStreamView`` resumes
streams from it, and a view may read it too (the example's trace view starts a
stream with the log's recent tail)::

    from otel_channels.replay import ZERO, get_log

    log = get_log("default")              # None when SSE_REPLAY_MAXLEN = 0
    head = await log.head("room_42")      # the newest id, ZERO when empty
    entries = await log.between("room_42", ZERO, head)   # Entry(id, prev, message, traceparent)

It lives outside ``otel_channels.sse`` so that the producer side
(``otel_channels.broadcast``) loads neither the view nor the hub.

Ids
---
An event id is the id of its log entry, ``<milliseconds>-<sequence>`` as in
Redis Streams (``1764121200123-0``): short, digits and ``-`` only (nothing
that makes a browser's ``Last-Event-ID`` force a CORS preflight), ordered
per group across every worker because one log assigns them. ``0-0`` is the
position before the first entry. Every entry also stores the id of the entry
before it (``prev``): a hub that receives entry ``n`` but last delivered an
entry older than ``prev`` knows it missed something and reads the gap from
the log, so every worker delivers each group's events in log order, once.

Backends
--------
* Redis Streams when the channel layer is channels-redis: one stream per group
  (``{prefix}:sse:{group}``), ``XADD MAXLEN ~ SSE_REPLAY_MAXLEN`` and
  ``EXPIRE SSE_REPLAY_TTL`` on every append, appended by a Lua script that
  also reads ``prev`` atomically. The connection settings are the layer's own
  first host (``socket_timeout``, ``max_connections``...), one client per
  event loop, and never more commands in flight than the pool allows.
* Memory otherwise: a deque per group in this process.

``SSE_REPLAY_MAXLEN = 0`` turns the log, ids and replay off.

Idempotency keys
----------------
``append(..., idempotency_key=k)`` appends once per group and key: a second
call with the same key returns the first entry's ``(id, prev)`` and appends
nothing (in Redis, ``{prefix}:sse:{group}:idem:{sha1(k)}`` set by the append
script in the same step as the ``XADD``, expiring with the log's
``SSE_REPLAY_TTL``). ``broadcast(..., idempotency_key=k)`` uses it so that a
producer retrying a failed broadcast never makes a second SSE event.

Resuming
--------
``since(group, after, upto)`` returns the entries after ``after`` up to
``upto`` only when ``after`` is provably contiguous with the log (it is an
entry still in the log, or the ``prev`` of its oldest entry); otherwise
``None``: too old, trimmed, expired or made up, and the stream sends a
``stream-reset`` event instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from .conf import get_config

__all__ = ["FINGERPRINT_TTL", "ZERO", "Entry", "MemoryLog", "RedisLog", "ReplayLog", "fingerprint",
           "get_log", "normalise_id", "parse_id", "reset"]

#: The position before a group's first entry.
ZERO = "0-0"
_ID = re.compile(r"\A(\d{1,20})-(\d{1,20})\Z")
_U64 = 1 << 64
#: Seconds a plain group message's fingerprint maps to the id the first hub gave it:
#: longer than channels-redis keeps an undelivered message (its ``expiry``, 60 s).
FINGERPRINT_TTL = 90


def parse_id(value: Any) -> tuple[int, int] | None:
    """``"1764121200123-4"`` -> ``(1764121200123, 4)``; None unless a valid stream id."""
    if not isinstance(value, str):
        return None
    match = _ID.match(value)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    return (ms, seq) if ms < _U64 and seq < _U64 else None


def normalise_id(value: Any) -> str:
    """An explicit id for ``broadcast(id=...)``: ``"ms-seq"`` or a non-negative int."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64:
        return f"{value}-0"
    if parse_id(value) is None:
        raise ValueError(f"event id must be 'ms-seq' digits or a non-negative int, not {value!r}")
    return str(value)


def fingerprint(message: dict[str, Any]) -> str:
    """A stable digest of a received message, whatever it holds.

    Canonical JSON when the message has one; ``repr`` otherwise (bytes or mixed-type
    keys, which msgpack carries): every worker decodes the same bytes into the same
    dict, in the same order, so the digest still agrees across workers.
    """
    try:
        text = json.dumps(message, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(message)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class Entry(NamedTuple):
    """One logged event: its id, the id before it, the message and its traceparent."""

    id: str
    prev: str
    message: dict[str, Any]
    traceparent: str | None


class MemoryLog:
    """The log in this process's memory (the in-memory channel layer's scope)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # sync broadcast() may run on another thread's loop
        self._groups: dict[str, deque[Entry]] = {}
        self._touched: dict[str, float] = {}
        self._last: dict[str, tuple[int, int]] = {}
        #: The newest id of any group: new ids follow it, so that events of a stream on
        #: several groups replay in the order they were sent even within one millisecond.
        self._newest: tuple[int, int] = (0, 0)
        self._fingerprints: dict[str, tuple[str, str, float]] = {}
        #: (group, idempotency key) -> (id, prev, expiry): a retried broadcast's entry.
        self._idempotent: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        ttl = get_config().SSE_REPLAY_TTL
        self._next_sweep = now + min(ttl, FINGERPRINT_TTL) / 2
        for group, touched in list(self._touched.items()):
            if now - touched > ttl:  # EXPIRE: a quiet group's log goes away
                self._groups.pop(group, None)
                self._touched.pop(group, None)
                self._last.pop(group, None)
        for key, (_, _, expires) in list(self._fingerprints.items()):
            if expires < now:
                del self._fingerprints[key]
        for pair, (_, _, expires) in list(self._idempotent.items()):
            if expires < now:
                del self._idempotent[pair]

    async def head(self, group: str) -> str:
        with self._lock:
            self._sweep(time.time())
            entries = self._groups.get(group)
            return entries[-1].id if entries else ZERO

    async def append(
        self, group: str, message: dict[str, Any], traceparent: str | None,
        fingerprint: str | None = None, explicit_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[str, str]:
        with self._lock:
            now = time.time()
            self._sweep(now)
            if fingerprint is not None:
                known = self._fingerprints.get(fingerprint)
                if known is not None:
                    return known[0], known[1]
            if idempotency_key is not None:
                known = self._idempotent.get((group, idempotency_key))
                if known is not None:
                    return known[0], known[1]
            entries = self._groups.get(group)
            if entries is None:
                entries = self._groups[group] = deque()
            last = self._last.get(group, (0, 0))
            if explicit_id is not None:
                new = parse_id(explicit_id)
                assert new is not None
                if new <= last:
                    raise ValueError(f"event id {explicit_id} is not greater than the "
                                     f"group's last id {last[0]}-{last[1]}")
            else:  # what XADD '*' does: the clock's ms, or a sequence when it stalls
                ms = int(now * 1000)
                newest = self._newest  # never behind this group's last id
                new = (ms, 0) if ms > newest[0] else (newest[0], newest[1] + 1)
            self._newest = max(self._newest, new)
            prev = entries[-1].id if entries else ZERO
            entry = Entry(f"{new[0]}-{new[1]}", prev, message, traceparent)
            entries.append(entry)
            maxlen = get_config().SSE_REPLAY_MAXLEN
            while len(entries) > maxlen:
                entries.popleft()
            self._last[group] = new
            self._touched[group] = now
            if fingerprint is not None:
                self._fingerprints[fingerprint] = (entry.id, prev, now + FINGERPRINT_TTL)
            if idempotency_key is not None:  # kept as long as the log keeps the group
                self._idempotent[(group, idempotency_key)] = (
                    entry.id, prev, now + get_config().SSE_REPLAY_TTL)
            return entry.id, prev

    async def since(self, group: str, after: str, upto: str) -> list[Entry] | None:
        with self._lock:
            self._sweep(time.time())
            entries = self._groups.get(group)
            if not entries:
                return [] if after == ZERO else None
            if after != entries[0].prev and not any(e.id == after for e in entries):
                return None
            return _between(entries, after, upto)

    async def between(self, group: str, after: str, upto: str) -> list[Entry]:
        with self._lock:
            return _between(self._groups.get(group) or (), after, upto)


def _between(entries: Any, after: str, upto: str) -> list[Entry]:
    low, high = parse_id(after), parse_id(upto)
    assert low is not None and high is not None
    return [e for e in entries if low < parse_id(e.id) <= high]  # type: ignore[operator]


_APPEND = """
if #KEYS == 2 then
  local known = redis.call('GET', KEYS[2])
  if known then return known end
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #top > 0 then prev = top[1][1] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[4],
                      'm', ARGV[1], 'p', prev, 't', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if #KEYS == 2 then redis.call('SET', KEYS[2], id .. ' ' .. prev, 'EX', ARGV[6]) end
return id .. ' ' .. prev
"""

_SINCE = """
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then
  if ARGV[1] == '0-0' then return {1} end
  return {0}
end
local fields, prev = first[1][2], nil
for i = 1, #fields, 2 do if fields[i] == 'p' then prev = fields[i + 1] end end
if ARGV[1] ~= prev and #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return {0}
end
return {1, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], ARGV[2])}
"""


class RedisLog:
    """The log in Redis Streams, shared by every worker on the layer's Redis."""

    def __init__(self, host: dict[str, Any], prefix: str) -> None:
        self.host = dict(host)
        self.prefix = prefix
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore, Any, Any]
        ] = weakref.WeakKeyDictionary()

    def key(self, group: str) -> str:
        return f"{self.prefix}:sse:{group}"

    def _client(self) -> tuple[Any, asyncio.Semaphore, Any, Any]:
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            from channels_redis.utils import create_pool
            from redis import asyncio as aioredis

            pool = create_pool(self.host)
            client = aioredis.Redis(connection_pool=pool)
            # redis-py raises MaxConnectionsError past the pool size; a reconnect
            # storm of resuming streams waits here instead.
            limit = asyncio.Semaphore(max(1, min(int(pool.max_connections), 1000)))
            found = (client, limit, client.register_script(_APPEND),
                     client.register_script(_SINCE))
            self._clients[loop] = found
            _close_with_loop(loop, client)
        return found

    async def _run(self, call: Callable[[Any, Any, Any], Any]) -> Any:
        client, limit, append, since = self._client()
        async with limit:
            return await call(client, append, since)

    async def head(self, group: str) -> str:
        found = await self._run(lambda c, a, s: c.xrevrange(self.key(group), "+", "-", count=1))
        return found[0][0].decode() if found else ZERO

    async def append(
        self, group: str, message: dict[str, Any], traceparent: str | None,
        fingerprint: str | None = None, explicit_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[str, str]:
        import msgpack
        from redis.exceptions import ResponseError

        config = get_config()
        ttl = max(1, int(config.SSE_REPLAY_TTL))
        keys = [self.key(group)]
        known_ttl = FINGERPRINT_TTL
        if fingerprint is not None:
            keys.append(f"{self.key(group)}:fp:{fingerprint}")
        elif idempotency_key is not None:  # the same script: found, its entry; else appended
            digest = hashlib.sha1(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()
            keys.append(f"{self.key(group)}:idem:{digest}")
            known_ttl = ttl
        args = [
            msgpack.packb(message, use_bin_type=True), traceparent or "",
            config.SSE_REPLAY_MAXLEN, explicit_id or "*", ttl, known_ttl,
        ]
        try:
            reply = await self._run(lambda c, a, s: a(keys=keys, args=args))
        except ResponseError as exc:
            if explicit_id is not None and "smaller" in str(exc):
                raise ValueError(f"event id {explicit_id} is not greater than the "
                                 "group's last id") from exc
            raise
        event_id, prev = reply.decode().split(" ")
        return event_id, prev

    async def since(self, group: str, after: str, upto: str) -> list[Entry] | None:
        reply = await self._run(lambda c, a, s: s(keys=[self.key(group)], args=[after, upto]))
        if not reply or reply[0] != 1:
            return None
        return [_decode(raw) for raw in (reply[1] if len(reply) > 1 else [])]

    async def between(self, group: str, after: str, upto: str) -> list[Entry]:
        found = await self._run(lambda c, a, s: c.xrange(self.key(group), f"({after}", upto))
        return [_decode(raw) for raw in found]


def _decode(raw: Any) -> Entry:
    import msgpack

    entry_id, fields = raw
    if isinstance(fields, list):  # Lua replies are flat [k, v, k, v]
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    message = msgpack.unpackb(fields[b"m"], raw=False, strict_map_key=False)
    traceparent = fields.get(b"t") or b""
    return Entry(entry_id.decode(), fields[b"p"].decode(), message,
                 traceparent.decode() or None)


def _close_with_loop(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close ``client`` when ``loop`` closes (what channels-redis does for its pools)."""
    original = loop.close

    def close() -> None:
        loop.close = original  # type: ignore[method-assign]
        if not loop.is_closed() and not loop.is_running():
            # A dead connection must not stop the loop from closing.
            with contextlib.suppress(Exception):
                loop.run_until_complete(client.aclose(close_connection_pool=True))
        original()

    loop.close = close  # type: ignore[method-assign]


ReplayLog = MemoryLog | RedisLog
_logs: dict[str, ReplayLog] = {}
_logs_lock = threading.Lock()


def get_log(alias: str) -> ReplayLog | None:
    """The log for channel layer ``alias``; None when ``SSE_REPLAY_MAXLEN`` is 0."""
    if get_config().SSE_REPLAY_MAXLEN == 0:
        return None
    log = _logs.get(alias)
    if log is None:
        with _logs_lock:
            log = _logs.get(alias)
            if log is None:
                log = _logs[alias] = _build(alias)
    return log


def _build(alias: str) -> ReplayLog:
    from django.conf import settings

    layer = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get(alias) or {}
    backend = str(layer.get("BACKEND", ""))
    if backend.startswith("channels_redis."):
        from channels_redis.utils import decode_hosts

        config = layer.get("CONFIG") or {}
        hosts = decode_hosts(config.get("hosts"))
        return RedisLog(hosts[0], str(config.get("prefix", "asgi")))
    return MemoryLog()


def reset(*, setting: str | None = None, **kwargs: Any) -> None:
    """Forget the logs (``setting_changed`` on ``CHANNEL_LAYERS``, and tests)."""
    if setting is None or setting == "CHANNEL_LAYERS":
        _logs.clear()


def _connect_signal() -> None:
    from django.test.signals import setting_changed

    setting_changed.connect(reset, dispatch_uid="otel_channels.replay.reset")


_connect_signal()
