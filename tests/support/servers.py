"""Real daphne worker processes for multi-process tests.

``DaphneWorker`` starts ``daphne tests.project.asgi:application`` (or any app)
on a free port with a given environment, waits until it answers, and stops it
(SIGTERM, then SIGKILL) on exit. Output goes to a log file shown on failure.
``UvicornWorker`` (``--ws websockets`` / ``wsproto`` / ``websockets-sansio``) and
``HypercornWorker`` do the same under the other ASGI servers (same interface).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.otlp import OTLPReceiver

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen[Any] | None = None,
                  log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s:\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 60) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class DaphneWorker:
    """One daphne process. ``command`` defaults to plain daphne; pass a prefix such as
    ``["opentelemetry-instrument"]`` to run it zero-code."""

    #: The ASGI server this class runs (its log file is named after it).
    server = "daphne"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        app: str = "tests.project.asgi:application",
        settings: str = "tests.project.settings",
        prefix: list[str] | None = None,
        port: int | None = None,
        name: str = "worker",
        cwd: Path = ROOT,
    ) -> None:
        self.port = port or free_port()
        self.cwd = cwd  # where the app's modules are found (the repository, or a project)
        self.name = name
        self.app = app
        self.prefix = prefix or []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings,
            "PYTHONPATH": os.pathsep.join(
                dict.fromkeys((str(cwd), str(ROOT), os.environ.get("PYTHONPATH", "")))),
            "OTEL_SERVICE_NAME": name,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env.pop("PYTHONDEVMODE", None)  # keep worker start-up fast and quiet
        self.log = Path(tempfile.mkstemp(prefix=f"{self.server}-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The daphne command line (subclasses add options)."""
        bindir = Path(sys.executable).parent
        daphne = str(bindir / "daphne")
        return [*[str(bindir / p) if (bindir / p).exists() else p for p in self.prefix],
                daphne, "-b", "127.0.0.1", "-p", str(self.port), self.app]

    def start(self, timeout: float = 30.0) -> DaphneWorker:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command(), cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, timeout, self.process, self.log)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        return process.returncode

    def __enter__(self) -> DaphneWorker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextmanager
def running(*workers: DaphneWorker, start_timeout: float = 30.0, join_timeout: float = 45.0,
            log_tail: int = 4000, tracebacks: bool = False) -> Iterator[tuple[DaphneWorker, ...]]:
    """Start ``workers`` in parallel, fail on any worker traceback, stop them at the end.

    They start at once because Django's import dominates start-up and two cores are
    available. ``log_tail`` characters of each log are printed (shown on failure); 0: none.
    ``tracebacks``: the test makes consumers raise on purpose, so their tracebacks are fine.
    """
    errors: list[BaseException] = []

    def start(worker: DaphneWorker) -> None:
        try:
            worker.start(timeout=start_timeout)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout)
    try:
        if errors:
            raise errors[0]
        yield workers
        for worker in workers:
            # Any traceback in a worker (a failed export, a consumer crash) fails the test.
            assert tracebacks or "Traceback" not in worker.output(), worker.output()[-4000:]
    finally:
        for worker in workers:
            worker.stop()
            if log_tail:
                print(f"--- {worker.name} log ---\n{worker.output()[-log_tail:]}")


@contextmanager
def two_workers(
    redis_url: str, backend: str = "redis", prefix: str = "otel",
    extra_env: dict[str, str] | None = None, command_prefix: list[str] | None = None,
    join_timeout: float = 45.0, log_tail: int = 4000, tracebacks: bool = False,
) -> Iterator[tuple[OTLPReceiver, DaphneWorker, DaphneWorker]]:
    """An OTLP receiver and two tests/project workers (A, B) on one channel layer.

    The layer's prefix is ``prefix`` plus a random suffix, unique per call;
    ``command_prefix`` runs daphne under another command (``opentelemetry-instrument``).
    """
    with OTLPReceiver() as receiver:
        env = {
            **receiver.env(),
            "CHANNEL_BACKEND": backend,
            "CHANNEL_PREFIX": f"{prefix}{uuid.uuid4().hex[:12]}",
            "REDIS_URL": redis_url,
            **(extra_env or {}),
        }
        workers = (DaphneWorker(env, name="worker-a", prefix=command_prefix),
                   DaphneWorker(env, name="worker-b", prefix=command_prefix))
        with running(*workers, join_timeout=join_timeout, log_tail=log_tail,
                     tracebacks=tracebacks):
            yield receiver, workers[0], workers[1]


class UvicornWorker(DaphneWorker):
    """One uvicorn process (``ws``: ``websockets`` (legacy), ``wsproto`` or ``websockets-sansio``).

    ``--lifespan off``: Channels' ProtocolTypeRouter has no lifespan. ``--ws websockets``
    prints uvicorn's deprecation warning of that implementation at start-up (a warning
    line, not a traceback).
    """

    server = "uvicorn"

    def __init__(self, env: dict[str, str] | None = None, ws: str = "websockets",
                 **kwargs: Any) -> None:
        self.ws = ws
        super().__init__(env, **kwargs)

    def command(self) -> list[str]:
        bindir = Path(sys.executable).parent
        return [*[str(bindir / p) if (bindir / p).exists() else p for p in self.prefix],
                str(bindir / "uvicorn"), "--host", "127.0.0.1", "--port", str(self.port),
                "--ws", self.ws, "--lifespan", "off", "--log-level", "warning", self.app]


class HypercornWorker(DaphneWorker):
    """One hypercorn process. It logs "ASGI Framework Lifespan error, continuing without
    Lifespan support" at every start (Channels has no lifespan; hypercorn has no option)."""

    server = "hypercorn"

    def command(self) -> list[str]:
        bindir = Path(sys.executable).parent
        return [*[str(bindir / p) if (bindir / p).exists() else p for p in self.prefix],
                str(bindir / "hypercorn"), "--bind", f"127.0.0.1:{self.port}", self.app]


#: Every ASGI server the tests run the project under: name -> worker factory
#: (``factory(env, name=...)``, the DaphneWorker interface).
SERVERS: dict[str, Any] = {
    "daphne": DaphneWorker,
    "uvicorn-websockets": lambda env=None, **kw: UvicornWorker(env, ws="websockets", **kw),
    "uvicorn-wsproto": lambda env=None, **kw: UvicornWorker(env, ws="wsproto", **kw),
    "uvicorn-websockets-sansio": lambda env=None, **kw: UvicornWorker(
        env, ws="websockets-sansio", **kw),
    "hypercorn": HypercornWorker,
}


@contextmanager
def e2e_cluster(redis_url: str, extra_env: dict[str, str] | None = None
                ) -> Iterator[tuple[OTLPReceiver, DaphneWorker, DaphneWorker]]:
    """An OTLP receiver and two daphne workers of tests/project on one Redis layer."""
    with two_workers(redis_url, "redis", "otelclient", extra_env, log_tail=3000) as found:
        yield found
