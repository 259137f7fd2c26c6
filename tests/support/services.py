"""Where the brokers are, and whether they answer: Redis, PostgreSQL, RabbitMQ, NATS.

The fixtures of tests/conftest.py skip a test when its service does not answer,
unless ``REQUIRE_<NAME>=1`` (then the test fails). The URLs default to the local
services .ci/run starts.
"""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available(url: str = REDIS_URL) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False



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


def service(name: str, url: str, available: bool, why: str = "") -> str:
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

