"""Settings of the fan-out benchmark's daphne workers, chosen by environment variables.

``FANOUT_APP=1`` puts ``otel_channels`` in ``INSTALLED_APPS`` (so it instruments
Channels at start-up); ``FANOUT_RATE`` is its ``MESSAGE_SAMPLE_RATE``,
``FANOUT_GROUP_RATE`` the benchmark group's rate in ``SAMPLE_RATES``;
``FANOUT_BUDGET`` its ``MAX_PROCESS_SPANS_PER_BROADCAST`` (``none`` for None,
i.e. a ``process`` span per delivery, or an int; unset: the library default);
``FANOUT_PREFIX`` is the channel-layer prefix, unique per benchmark run so
parallel runs on the shared Redis never collide; ``FANOUT_LAYER=memory``
switches to the in-memory layer, ``redislike`` to the in-process layer of
``layers.py`` that delivers as channels-redis does (``fanout_instructions.sh``).
"""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
if os.environ.get("FANOUT_APP") == "1":
    INSTALLED_APPS.append("otel_channels")
DATABASES: dict[str, object] = {}
MIDDLEWARE: list[str] = []
LOGGING_CONFIG = None  # keep Django's logging set-up out of the measured path

# redis-py 8 defaults to a 5 s socket_timeout (kills idle blocking reads) and a
# 100-connection pool: both too small for a channel layer (see checks W010/W011).
_HOSTS = [{
    "address": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "socket_timeout": 30,
    "max_connections": 2000,
}]
CHANNEL_LAYERS = {"default": {
    "BACKEND": "channels_redis.core.RedisChannelLayer",
    "CONFIG": {"hosts": _HOSTS, "prefix": os.environ.get("FANOUT_PREFIX", "fanout-bench")},
}}
if os.environ.get("FANOUT_LAYER") == "memory":  # InMemoryChannelLayer: no Redis, no sockets
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
elif os.environ.get("FANOUT_LAYER") == "redislike":  # fanout_instructions.sh (see layers.py)
    CHANNEL_LAYERS = {"default": {"BACKEND": "benchmarks._fanout_app.layers.RedisLikeMemoryLayer"}}
OTEL_CHANNELS: dict[str, object] = {
    "MESSAGE_SAMPLE_RATE": float(os.environ.get("FANOUT_RATE", "1.0")),
}
if os.environ.get("FANOUT_GROUP_RATE"):  # the benchmark's group at a rate of its own
    OTEL_CHANNELS["SAMPLE_RATES"] = {"groups": {"fanout": float(os.environ["FANOUT_GROUP_RATE"])}}
_budget = os.environ.get("FANOUT_BUDGET", "").strip().lower()
if _budget:  # unset: leave the library's default budget
    OTEL_CHANNELS["MAX_PROCESS_SPANS_PER_BROADCAST"] = None if _budget == "none" else int(_budget)
