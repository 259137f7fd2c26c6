"""Settings of the worker processes the multi-process tests start (never example_project).

``CHANNEL_BACKEND``: ``memory`` (default), ``redis`` (RedisChannelLayer) or
``pubsub`` (RedisPubSubChannelLayer), against ``REDIS_URL``. ``OTEL_CHANNELS_JSON``
(a JSON object) overrides ``OTEL_CHANNELS`` keys.
"""

import json
import os

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.project.urls"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [*INSTALLED_APPS, "tests.project"]  # noqa: F405
_BACKEND = os.environ.get("CHANNEL_BACKEND", "memory")
_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_HOSTS = [{"address": _REDIS_URL, "socket_timeout": 30, "max_connections": 2000}]
if os.environ.get("CHANNEL_HOSTS_JSON"):  # the reliability tests compare host configs (W011)
    _HOSTS = json.loads(os.environ["CHANNEL_HOSTS_JSON"])
if _BACKEND == "redis":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": _HOSTS, "prefix": os.environ.get("CHANNEL_PREFIX", "asgi")},
    }}
elif _BACKEND == "pubsub":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": _HOSTS, "prefix": os.environ.get("CHANNEL_PREFIX", "asgi")},
    }}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
OTEL_CHANNELS = json.loads(os.environ.get("OTEL_CHANNELS_JSON", "{}"))
