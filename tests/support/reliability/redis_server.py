"""A ``redis-server`` of our own on a free port, without persistence (or with it),
that a test may kill and restart (never the shared one on 6379).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any

from tests.support.servers import free_port, wait_for_port

# -- Redis of our own ------------------------------------------------------------


class RedisServer:
    """``redis-server --port N --save "" --appendonly no``, owned by the test."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--maxclients", "10000", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, 10, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, nothing written anywhere (there is no persistence anyway)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(5)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def require_redis_server(why: str) -> str:
    """Path of ``redis-server``; skips the test without it (fails under ``REQUIRE_REDIS=1``)."""
    import pytest  # here, not at the top: benchmarks/storm.py imports this module without pytest

    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail("REQUIRE_REDIS=1 but redis-server is not on PATH")
        pytest.skip(f"redis-server is not on PATH ({why})")
    return found

def group_members(redis: RedisServer, prefix: str) -> dict[str, int]:
    """``ZCARD`` of every channels-redis group key under ``prefix`` (empty: no members)."""
    client = redis.client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}:group:*", count=1000))
        return {key.decode(): int(client.zcard(key)) for key in keys}
    finally:
        client.close()


# -- Redis with persistence (tests/reliability/test_redis_persistence.py) --------------------------


class PersistentRedisServer(RedisServer):
    """``redis-server`` with an append-only file written on every command
    (``--appendonly yes --appendfsync always``, no RDB snapshots) in a directory of
    its own: :meth:`kill` (SIGKILL) then :meth:`start` brings back everything it had
    acknowledged (group memberships, queued messages, the SSE replay log)."""

    def __init__(self, port: int | None = None, directory: str | None = None) -> None:
        import tempfile

        super().__init__(port)
        self.directory = directory or tempfile.mkdtemp(prefix="otel-redis-aof-")
        self.owns_directory = directory is None

    def start(self) -> PersistentRedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--dir", self.directory, "--daemonize", "no",
             "--maxclients", "10000", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(self.port, 10, self.process)
        self.wait_loaded()
        return self

    def wait_loaded(self, timeout: float = 10.0) -> None:
        """Until PING answers (a restarted server says LOADING while it reads the AOF)."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            client = self.client()
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
