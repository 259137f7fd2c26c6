"""Settings of the connections benchmark's worker, chosen by environment variables.

``CONNECTIONS_APP=1`` puts ``otel_channels`` in ``INSTALLED_APPS`` (it instruments
Channels at start-up); ``CONNECTIONS_PREFIX`` is the channel-layer prefix, unique
per run on the shared Redis; ``REDIS_URL`` the server.
"""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
if os.environ.get("CONNECTIONS_APP") == "1":
    INSTALLED_APPS.append("otel_channels")
DATABASES: dict[str, object] = {}
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchmarks._connections_app.asgi"
LOGGING_CONFIG = None

# Host dicts (checks W010/W011): redis-py 8's 5 s socket_timeout kills idle blocking
# reads, and its default pool of 100 refuses the group_add of a connection storm.
CHANNEL_LAYERS = {"default": {
    "BACKEND": "channels_redis.core.RedisChannelLayer",
    "CONFIG": {
        "hosts": [{"address": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                   "socket_timeout": 30, "max_connections": 20_000}],
        "prefix": os.environ.get("CONNECTIONS_PREFIX", "connections-bench"),
    },
}}
OTEL_CHANNELS: dict[str, object] = {}
