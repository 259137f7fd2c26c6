"""Harness of the reliability tests and ``benchmarks/storm.py``, one module per job.

* :class:`RedisServer`: a ``redis-server`` of our own on a free port, without
  persistence, that a test may kill and restart (never the shared one on 6379).
* :class:`Cluster`: two ``daphne tests.project.asgi:application`` workers on
  one channel-layer prefix, started at once, optionally exporting to an
  :class:`~tests.support.otlp.OTLPReceiver`.
* Browser-like clients that reconnect (:class:`ChatClient`, :class:`EventSourceClient`,
  on :class:`tests.support.sse.RawEventStream`), the Redis fault, storm and churn runs.
* File-descriptor limits (``RLIMIT_NOFILE``) of this process and of a worker.
* :func:`require_redis_server`, :func:`active_connections`: shared test set-up.
"""

from __future__ import annotations

from tests.support.reliability.churn import ChurnStats, churn
from tests.support.reliability.clients import ChatClient, EventSourceClient, Sent, broadcaster
from tests.support.reliability.cluster import (
    RECOMMENDED_HOSTS,
    STOCK_HOSTS,
    TIMEOUTS,
    Cluster,
    Worker,
    exceptions_in,
    hosts_json,
    worker_state,
)
from tests.support.reliability.faults import FaultRun, redis_fault_run
from tests.support.reliability.fds import listen_overflows, nofile_of, open_fds, raise_nofile
from tests.support.reliability.receiver_metrics import (
    active_connections,
    latest,
    latest_by_attributes,
    sum_metric,
)
from tests.support.reliability.redis_server import (
    PersistentRedisServer,
    RedisServer,
    group_members,
    require_redis_server,
)
from tests.support.reliability.storm import StormResult, storm

__all__ = [
    "ChatClient",
    "ChurnStats",
    "Cluster",
    "EventSourceClient",
    "FaultRun",
    "PersistentRedisServer",
    "RECOMMENDED_HOSTS",
    "RedisServer",
    "STOCK_HOSTS",
    "Sent",
    "StormResult",
    "TIMEOUTS",
    "Worker",
    "sum_metric",
    "active_connections",
    "broadcaster",
    "churn",
    "exceptions_in",
    "group_members",
    "hosts_json",
    "latest",
    "latest_by_attributes",
    "listen_overflows",
    "nofile_of",
    "open_fds",
    "raise_nofile",
    "redis_fault_run",
    "require_redis_server",
    "storm",
    "worker_state",
]
