"""Shared fixtures: one session-wide TracerProvider / MeterProvider with in-memory readers.

The global providers can be set only once per process, so they are set at
import time here; ``spans`` clears the exporter for each test and ``metrics``
collects once up front so every test sees only its own deltas.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SPAN_EXPORTER = InMemorySpanExporter()
_TRACER_PROVIDER = TracerProvider()
_TRACER_PROVIDER.add_span_processor(SimpleSpanProcessor(SPAN_EXPORTER))
trace.set_tracer_provider(_TRACER_PROVIDER)

_DELTA = AggregationTemporality.DELTA
METRIC_READER = InMemoryMetricReader(preferred_temporality={
    Counter: _DELTA, UpDownCounter: _DELTA, Histogram: _DELTA, ObservableCounter: _DELTA,
    ObservableUpDownCounter: _DELTA, ObservableGauge: _DELTA,
})
metrics.set_meter_provider(MeterProvider(metric_readers=[METRIC_READER]))

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class Spans:
    """Finished spans of the current test, with lookups by name."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [span.name for span in self.all()])
        return found[0]

    def names(self) -> list[str]:
        return [span.name for span in self.all()]

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture
def spans() -> Iterator[Spans]:
    SPAN_EXPORTER.clear()
    yield Spans(SPAN_EXPORTER)
    SPAN_EXPORTER.clear()


class Metrics:
    """Delta metric points collected since the fixture started (or last ``collect``)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader
        self.points: dict[str, list[Any]] = {}

    def collect(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        if data is not None:
            for resource_metrics in data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        # Observed counters report every attribute set they ever saw;
                        # a zero delta says nothing about this test, so leave it out.
                        points = [p for p in metric.data.data_points
                                  if getattr(p, "value", None) != 0]
                        self.points.setdefault(metric.name, []).extend(points)
        return self.points

    def sum(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's deltas whose attributes include ``attributes``."""
        self.collect()
        return sum(
            point.value for point in self.points.get(name, [])
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )

    def count(self, name: str, **attributes: Any) -> int:
        """Number of recordings of a histogram whose attributes include ``attributes``."""
        self.collect()
        return sum(
            point.count for point in self.points.get(name, [])
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )

    def total(self, name: str, **attributes: Any) -> float:
        """Sum of the values recorded by a histogram whose attributes include ``attributes``."""
        self.collect()
        return sum(
            point.sum for point in self.points.get(name, [])
            if all(point.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())
        )

    def attributes(self, name: str) -> list[dict[str, Any]]:
        self.collect()
        return [dict(point.attributes) for point in self.points.get(name, [])]


@pytest.fixture
def metric_reader() -> Metrics:
    METRIC_READER.get_metrics_data()  # drop deltas of earlier tests
    return Metrics(METRIC_READER)


def redis_available(url: str = REDIS_URL) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    """``REDIS_URL``; skips without Redis unless ``REQUIRE_REDIS=1`` (then it fails)."""
    if not redis_available():
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"REQUIRE_REDIS=1 but Redis does not answer at {REDIS_URL}")
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    return REDIS_URL


def redis_layer_config(url: str, backend: str = "channels_redis.core.RedisChannelLayer",
                       **config: Any) -> dict[str, Any]:
    """A channels-redis layer config safe under redis-py 8 (see checks W010/W011)."""
    return {
        "BACKEND": backend,
        "CONFIG": {
            "hosts": [{"address": url, "socket_timeout": 30, "max_connections": 2000}],
            **config,
        },
    }


# -- Other brokers: PostgreSQL, RabbitMQ, NATS, Valkey (tests/test_layers_*.py) -------------
# Each fixture skips when its service does not answer, unless ``REQUIRE_<NAME>=1`` (then the
# test fails), like ``redis_url``. The URLs default to the local services .ci/run starts.

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


def tcp_answers(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port),
                                      1):
            return True
    except OSError:
        return False


def _service(name: str, url: str, available: bool, why: str = "") -> str:
    """``url``; else skip (fail under ``REQUIRE_<NAME>=1``) saying ``why`` or "does not answer"."""
    if not available:
        why = why or f"{name} does not answer at {url}"
        if os.environ.get(f"REQUIRE_{name.upper()}") == "1":
            pytest.fail(f"REQUIRE_{name.upper()}=1 but {why}")
        pytest.skip(why)
    return url


def postgres_available(url: str = POSTGRES_URL) -> bool:
    if not tcp_answers(url, 5432):
        return False
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("select 1")
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """``POSTGRES_URL`` with channels_postgres's tables migrated into it (once per session).

    Skips without PostgreSQL unless ``REQUIRE_POSTGRES=1``. The migration runs in a
    subprocess on the worker settings (``CHANNEL_BACKEND=postgres``): pytest-django would
    point the ORM alias of this process at a ``test_`` database.
    """
    url = _service("postgres", POSTGRES_URL, postgres_available())
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
    return _service("rabbitmq", RABBITMQ_URL, tcp_answers(RABBITMQ_URL, 5672))


@pytest.fixture
def nats_url() -> str:
    """``NATS_URL``; skips without a NATS server unless ``REQUIRE_NATS=1``."""
    return _service("nats", NATS_URL, tcp_answers(NATS_URL, 4222))


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
        yield _service("valkey", url, tcp_answers(url, 6379))
        return
    binary = shutil.which("valkey-server")
    if binary is None:
        _service("valkey", "", False, "valkey-server is not on PATH (Debian bookworm: "
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
                _service("valkey", url, False, f"valkey-server did not start on port {port}")
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


# -- Fuzz, membership and persistence tests (tests/test_fuzz_*.py, tests/fuzzproject/) -------


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
    from tests._redis import delete_keys
    from tests.fuzzproject.harness import FuzzWorkers

    with FuzzWorkers(REDIS_URL, {"BAD_FRAME_POLICY": "close"}) as workers:
        yield workers
    delete_keys(REDIS_URL, workers.prefix)
