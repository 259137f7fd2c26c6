"""Two ``daphne tests.project.asgi:application`` workers on one channel-layer prefix,
started at once, optionally exporting to an :class:`~tests.support.otlp.OTLPReceiver`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from tests.support.otlp import OTLPReceiver
from tests.support.redis_layer import redis_host
from tests.support.servers import DaphneWorker

#: ``asyncio.wait_for`` raises ``asyncio.TimeoutError``: not the built-in before 3.11.
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)
#: The host entry the checks recommend (W010 / W011), as the test project uses it.
RECOMMENDED_HOSTS = "recommended"
#: The stock entry a user copies from the channels-redis README: a bare URL.
STOCK_HOSTS = "stock"


# -- two workers -------------------------------------------------------------------


def hosts_json(url: str, kind: str) -> str:
    """``CHANNEL_HOSTS_JSON`` for the test project: the recommended dict or a bare URL."""
    if kind == STOCK_HOSTS:
        return json.dumps([url])
    return json.dumps([redis_host(url)])


class Worker(DaphneWorker):
    """A :class:`DaphneWorker` with extra daphne options (``--websocket_connect_timeout``)."""

    def __init__(self, env: dict[str, str], name: str, options: list[str],
                 backlog: int | None = None) -> None:
        super().__init__(env, name=name)
        self.options = options
        self.backlog = backlog

    def command(self) -> list[str]:
        """Daphne with ``options`` and, given a ``backlog``, a Twisted endpoint to listen on."""
        bindir = Path(sys.executable).parent
        if self.backlog is None:
            bind = ["-b", "127.0.0.1", "-p", str(self.port)]
        else:  # a Twisted endpoint: daphne's -b/-p listen with Twisted's backlog of 50
            bind = ["-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={self.backlog}"]
        return [str(bindir / "daphne"), *bind, *self.options, self.app]


class Cluster:
    """Two daphne workers (A, B) on one channel layer prefix of ``redis_url``.

    ``connect_timeout``: daphne's ``--websocket_connect_timeout`` (default 5 s), the
    time a WebSocket handshake may take from its TCP connection to the app's accept.
    ``backlog``: the listen queue (daphne's ``-b``/``-p`` get Twisted's 50; a storm
    overflows it and the kernel drops connection attempts, see ``ListenOverflows``).
    """

    def __init__(self, redis_url: str, receiver: OTLPReceiver | None = None,
                 hosts: str = RECOMMENDED_HOSTS, extra_env: dict[str, str] | None = None,
                 names: tuple[str, str] = ("worker-a", "worker-b"),
                 connect_timeout: int | None = None, backlog: int | None = None) -> None:
        self.prefix = f"otelrel{uuid.uuid4().hex[:10]}"
        env = {
            **(receiver.env() if receiver is not None else {}),
            "CHANNEL_BACKEND": "redis",
            "CHANNEL_PREFIX": self.prefix,
            "REDIS_URL": redis_url,
            "CHANNEL_HOSTS_JSON": hosts_json(redis_url, hosts),
            **(extra_env or {}),
        }
        options = ([] if connect_timeout is None
                   else ["--websocket_connect_timeout", str(connect_timeout)])
        self.workers = [Worker(env, name, options, backlog) for name in names]

    @property
    def a(self) -> DaphneWorker:
        return self.workers[0]

    @property
    def b(self) -> DaphneWorker:
        return self.workers[1]

    def start(self) -> Cluster:
        errors: list[BaseException] = []

        def start(worker: DaphneWorker) -> None:
            try:
                worker.start(timeout=40)
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,)) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
        if errors:
            self.stop()
            raise errors[0]
        return self

    def alive(self) -> bool:
        return all(w.process is not None and w.process.poll() is None for w in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def exceptions_in(log: str) -> list[str]:
    """The final ``SomeError: ...`` line of every traceback in a worker log."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in block.splitlines() if line and not line.startswith(" ")]
        found.append(lines[0] if lines else "")
    return found


async def worker_state(worker: DaphneWorker, collect: bool = True) -> dict[str, Any]:
    """The test project's ``/debug/state/`` of one worker."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{worker.url}/debug/state/", params={"gc": "1"} if collect
                                  else None)
    response.raise_for_status()
    return response.json()


