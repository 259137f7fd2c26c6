"""Redis helpers for tests and benchmarks: the recommended layer config, a MONITOR
log, key clean-up by prefix.

:func:`redis_host` is the one place that spells the host dict the checks recommend
(W010/W011); the log and the clean-up work on a shared Redis server: they only look
at, and only delete, keys under one test's own prefix.
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import redis

__all__ = ["CommandLog", "delete_keys", "redis_host", "redis_layer_config"]


def redis_host(url: str, max_connections: int = 2000) -> dict[str, Any]:
    """The host dict the checks recommend (W010/W011): redis-py 8's 5 s ``socket_timeout``
    would end idle blocking reads, its default pool size is too small for a busy worker."""
    return {"address": url, "socket_timeout": 30, "max_connections": max_connections}


def redis_layer_config(url: str, backend: str = "channels_redis.core.RedisChannelLayer",
                       **config: Any) -> dict[str, Any]:
    """A channels-redis layer config safe under redis-py 8 (see checks W010/W011)."""
    return {"BACKEND": backend, "CONFIG": {"hosts": [redis_host(url)], **config}}


class CommandLog:
    """Redis MONITOR lines naming one key prefix (other tests share the server)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        parts = urlsplit(redis_url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self.sock.sendall(b"MONITOR\r\n")
        self.file = self.sock.makefile("rb")
        reply = self.file.readline()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"MONITOR refused: {reply!r}")
        self.prefix = prefix.encode()
        self.lines: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.file:
                if self.prefix in line:
                    self.lines.append(line)
        except (OSError, ValueError):  # closed by close()
            pass

    def mark(self) -> int:
        return len(self.lines)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every key that starts with ``prefix``."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
