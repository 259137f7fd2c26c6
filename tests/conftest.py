"""Fixtures only: telemetry readers, broker URLs, the fuzz workers.

Importing :mod:`tests.support.telemetry` installs the session's global providers
(they can be set only once per process). Helpers live in tests/support; test
modules import them from there, never from this file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.services import (
    NATS_URL,
    POSTGRES_URL,
    RABBITMQ_URL,
    REDIS_URL,
    postgres_available,
    redis_available,
    service,
    tcp_answers,
)
from tests.support.telemetry import METRIC_READER, SPAN_EXPORTER, Metrics, Spans


@pytest.fixture
def spans() -> Iterator[Spans]:
    SPAN_EXPORTER.clear()
    yield Spans(SPAN_EXPORTER)
    SPAN_EXPORTER.clear()



@pytest.fixture
def metric_reader() -> Metrics:
    METRIC_READER.get_metrics_data()  # drop deltas of earlier tests
    return Metrics(METRIC_READER)



@pytest.fixture
def redis_url() -> str:
    """``REDIS_URL``; skips without Redis unless ``REQUIRE_REDIS=1`` (then it fails)."""
    if not redis_available():
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"REQUIRE_REDIS=1 but Redis does not answer at {REDIS_URL}")
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """``POSTGRES_URL`` with channels_postgres's tables migrated into it (once per session).

    Skips without PostgreSQL unless ``REQUIRE_POSTGRES=1``. The migration runs in a
    subprocess on the worker settings (``CHANNEL_BACKEND=postgres``): pytest-django would
    point the ORM alias of this process at a ``test_`` database.
    """
    url = service("postgres", POSTGRES_URL, postgres_available())
    import subprocess
    import sys

    env = {**os.environ, "CHANNEL_BACKEND": "postgres", "POSTGRES_URL": url,
           "DJANGO_SETTINGS_MODULE": "tests.project.settings"}
    env.pop("PYTHONDEVMODE", None)
    done = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "channels_postgres",
         "--database", "channels_postgres", "-v", "0"],
        env=env, capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return url


@pytest.fixture
def rabbitmq_url() -> str:
    """``RABBITMQ_URL``; skips without RabbitMQ unless ``REQUIRE_RABBITMQ=1``."""
    return service("rabbitmq", RABBITMQ_URL, tcp_answers(RABBITMQ_URL, 5672))


@pytest.fixture
def nats_url() -> str:
    """``NATS_URL``; skips without a NATS server unless ``REQUIRE_NATS=1``."""
    return service("nats", NATS_URL, tcp_answers(NATS_URL, 4222))


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """A Valkey server for channels-valkey's core layer (its Lua needs Valkey, not Redis).

    ``VALKEY_URL`` when set (and answering); else a ``valkey-server`` started on a free
    port for the session and stopped after. Skips without one unless ``REQUIRE_VALKEY=1``.
    """
    import shutil
    import subprocess
    import tempfile
    import time

    if os.environ.get("VALKEY_URL"):
        url = os.environ["VALKEY_URL"]
        yield service("valkey", url, tcp_answers(url, 6379))
        return
    binary = shutil.which("valkey-server")
    if binary is None:
        service("valkey", "", False, "valkey-server is not on PATH (Debian bookworm: "
                 "apt-get install -t bookworm-backports valkey-server; or set VALKEY_URL)")
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="valkey-")
    log = open(os.path.join(workdir, "valkey.log"), "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"valkey://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 15
        while not tcp_answers(url, port):
            if process.poll() is not None or time.monotonic() > deadline:
                service("valkey", url, False, f"valkey-server did not start on port {port}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


# -- Fuzz, membership and persistence tests (tests/multiprocess/test_fuzz_*.py, tests/fuzzproject/)


@pytest.fixture(scope="session")
def fuzz_workers() -> Iterator[Any]:
    """Two ``tests.fuzzproject`` daphne workers on the shared Redis (``REDIS_URL``), one
    unique channel-layer prefix, an in-test OTLP receiver; ``BAD_FRAME_POLICY="close"``.

    Started once per session and shared by the property tests (each uses its own
    rooms and checks only its own part of the logs and spans). Skips without Redis
    unless ``REQUIRE_REDIS=1``.
    """
    if not redis_available():
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"REQUIRE_REDIS=1 but Redis does not answer at {REDIS_URL}")
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    from tests.fuzzproject.harness import FuzzWorkers
    from tests.support.redis_layer import delete_keys

    with FuzzWorkers(REDIS_URL, {"BAD_FRAME_POLICY": "close"}) as workers:
        yield workers
    delete_keys(REDIS_URL, workers.prefix)
