"""Real daphne worker processes for multi-process tests.

``DaphneWorker`` starts ``daphne tests.project.asgi:application`` (or any app)
on a free port with a given environment, waits until it answers, and stops it
(SIGTERM, then SIGKILL) on exit. Output goes to a log file shown on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


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

    def __init__(
        self,
        env: dict[str, str] | None = None,
        app: str = "tests.project.asgi:application",
        settings: str = "tests.project.settings",
        prefix: list[str] | None = None,
        port: int | None = None,
        name: str = "worker",
    ) -> None:
        self.port = port or free_port()
        self.name = name
        self.app = app
        self.prefix = prefix or []
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OTEL_SERVICE_NAME": name,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env.pop("PYTHONDEVMODE", None)  # keep worker start-up fast and quiet
        self.log = Path(tempfile.mkstemp(prefix=f"daphne-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> DaphneWorker:
        bindir = Path(sys.executable).parent
        daphne = str(bindir / "daphne")
        command = [*[str(bindir / p) if (bindir / p).exists() else p for p in self.prefix],
                   daphne, "-b", "127.0.0.1", "-p", str(self.port), self.app]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
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
