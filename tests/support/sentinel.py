"""A Redis Sentinel set-up of our own: a master, a replica and three sentinels on free ports.

Debian's ``redis-sentinel`` is ``redis-server`` run in sentinel mode (the same
binary and version); without the package, ``redis-server <conf> --sentinel`` is
the same program. Nothing is persisted; every file lives in a temporary
directory removed on exit. ``down-after-milliseconds`` is 1000 and
``failover-timeout`` 5000, so a killed master is replaced within a few seconds
(production defaults are 30 s and 3 min).

:meth:`SentinelSetup.hosts` is the channels-redis host entry for it::

    {"master_name": "otelmaster", "sentinels": [["127.0.0.1", 26379], ...],
     "socket_timeout": 30, "max_connections": 2000,
     "sentinel_kwargs": {"socket_timeout": 2}}
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import free_port, wait_for_port

__all__ = ["MASTER_NAME", "SentinelSetup", "require_sentinel"]

MASTER_NAME = "otelmaster"


def _sentinel_command() -> list[str] | None:
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel"]
    if shutil.which("redis-server"):
        return ["redis-server"]  # with --sentinel after the configuration file
    return None


def require_sentinel(why: str) -> None:
    """Skip (or, with ``REQUIRE_REDIS=1``, fail) when no redis-server can run a sentinel."""
    import os

    if _sentinel_command() is None:
        message = f"redis-sentinel / redis-server not installed: {why}"
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)


class SentinelSetup:
    """Master, replica and three sentinels, all on 127.0.0.1; ``kill_master()`` for a failover."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="otel-sentinel-"))
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def _redis(self, port: int, *extra: str) -> None:
        self.processes[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--maxclients", "10000",
             "--loglevel", "warning", "--dir", str(self.directory), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_port(port, 10, self.processes[port])

    def _sentinel(self, port: int) -> None:
        conf = self.directory / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n",
            encoding="utf-8",
        )
        command = _sentinel_command()
        assert command is not None
        args = [*command, str(conf)]
        if command == ["redis-server"]:
            args.append("--sentinel")
        log = self.directory / f"sentinel-{port}.log"
        with log.open("wb") as out:
            self.processes[port] = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(port, 10, self.processes[port])

    def start(self, timeout: float = 30.0) -> SentinelSetup:
        try:
            self._redis(self.master_port)
            self._redis(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
            for port in self.sentinel_ports:
                self._sentinel(port)
            self.wait(lambda: self._replica_in_sync() and self._sentinels_agree(), timeout,
                      "replica in sync and every sentinel knowing it")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelSetup:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what the tests use ----------------------------------------------------------------

    def hosts(self, socket_timeout: float = 30,
              sentinel_timeout: float = 2) -> list[dict[str, Any]]:
        """The ``CHANNEL_LAYERS`` ``hosts`` list (one Sentinel entry, as checks W010/W011 want)."""
        return [{
            "master_name": MASTER_NAME,
            "sentinels": [["127.0.0.1", port] for port in self.sentinel_ports],
            "socket_timeout": socket_timeout,
            "max_connections": 2000,
            "sentinel_kwargs": {"socket_timeout": sentinel_timeout},
        }]

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                           socket_connect_timeout=2)

    def master_address(self) -> tuple[str, int] | None:
        """What the first sentinel that answers says the master is."""
        for port in self.sentinel_ports:
            try:
                found = self.client(port).execute_command(
                    "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            except Exception:
                continue
            if found:
                return found[0].decode(), int(found[1])
        return None

    def kill_master(self) -> int:
        """SIGKILL the current master (a crash); returns its port."""
        address = self.master_address()
        assert address is not None, "no sentinel answers"
        port = address[1]
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        return port

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """The new master's port, once a sentinel names another one and it takes writes."""
        found: list[int] = []

        def promoted() -> bool:
            address = self.master_address()
            if address is None or address[1] == old_port:
                return False
            try:
                role = self.client(address[1]).execute_command("ROLE")
            except Exception:
                return False
            found[:] = [address[1]]
            return bool(role) and role[0] == b"master"

        self.wait(promoted, timeout, "a replica promoted")
        return found[0]

    # -- internals ---------------------------------------------------------------------------

    def _replica_in_sync(self) -> bool:
        try:
            info = self.client(self.replica_port).info("replication")
        except Exception:
            return False
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            try:
                replicas = self.client(port).execute_command(
                    "SENTINEL", "replicas", MASTER_NAME)
                others = self.client(port).execute_command(
                    "SENTINEL", "sentinels", MASTER_NAME)
            except Exception:
                return False
            if len(replicas) < 1 or len(others) < 2:
                return False
        return True

    @staticmethod
    def wait(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise TimeoutError(f"not within {timeout} s: {what}")
