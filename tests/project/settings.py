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

# -- More channel layers (tests/multiprocess/test_layers_*.py): every layer Channels works with. ---
# ``CHANNEL_BACKEND`` also takes ``postgres`` (POSTGRES_URL), ``rabbitmq`` (RABBITMQ_URL),
# ``nats`` (NATS_URL), ``valkey-pubsub`` (channels-valkey's pub/sub layer on REDIS_URL) and
# ``valkey`` (channels-valkey's core layer on VALKEY_URL, a valkey-server the tests start).
_PREFIX = os.environ.get("CHANNEL_PREFIX", "asgi")
if _BACKEND == "postgres":
    from urllib.parse import unquote, urlsplit

    _PG_URL = urlsplit(os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    _PG = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _PG_URL.path.lstrip("/") or "postgres",
        "USER": unquote(_PG_URL.username or "postgres"),
        "PASSWORD": unquote(_PG_URL.password or ""),
        "HOST": _PG_URL.hostname or "127.0.0.1",
        "PORT": str(_PG_URL.port or 5432),
    }
    # Trap: the layer's GroupChannel / Message models need the app installed ("doesn't
    # declare an explicit app_label" otherwise), and group_discard goes through the ORM
    # alias "channels_postgres" (ConnectionDoesNotExist without it). Its tables come from
    # `migrate channels_postgres --database channels_postgres` (the tests' postgres fixture).
    INSTALLED_APPS = [*INSTALLED_APPS, "channels_postgres"]
    DATABASES = {**DATABASES, "channels_postgres": dict(_PG)}  # noqa: F405
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_postgres.core.PostgresChannelLayer",
        # Trap: the layer builds a Django DatabaseWrapper from CONFIG, so NAME, USER,
        # PASSWORD, HOST, PORT *and* TIME_ZONE must all be there: a missing one is a
        # KeyError that get_channel_layer() swallows, returning None (then "'NoneType'
        # object has no attribute 'send'" far from the cause).
        "CONFIG": {**_PG, "TIME_ZONE": None, "prefix": _PREFIX,
                   "PSYCOPG_OPTIONS": {"min_size": 1, "max_size": 4}},
    }}
elif _BACKEND == "rabbitmq":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_rabbitmq.core.RabbitmqChannelLayer",
        # Trap: the default host is amqp://guest:guest@127.0.0.1/asgi (vhost "asgi"): where
        # it does not exist every operation hangs while the layer retries every second.
        # The layer also refuses to be built without a running event loop (fine in a
        # worker: the first consumer builds it on the server's loop). No "/" at the end of
        # the URL: carehare reads ".../" as vhost "" and raises a DeprecationWarning (in
        # the connect task, where it kills the connection under -W error); no path is
        # the default vhost "/".
        "CONFIG": {"host": os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")},
    }}
elif _BACKEND == "nats":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_nats.NatsChannelLayer",
        # Core NATS only (no JetStream); state is per event loop. Trap: a message published
        # before its channel has subscribed is lost (group_add flushes, so groups are safe).
        "CONFIG": {"servers": [os.environ.get("NATS_URL", "nats://127.0.0.1:4222")],
                   "prefix": _PREFIX},
    }}
elif _BACKEND == "valkey-pubsub":
    CHANNEL_LAYERS = {"default": {
        # A proxy like channels_redis's pub/sub layer (no BaseChannelLayer, __getattr__ per
        # call); runs on Redis too (valkey-py takes redis:// URLs).
        "BACKEND": "channels_valkey.pubsub.ValkeyPubSubChannelLayer",
        "CONFIG": {"hosts": [_REDIS_URL], "prefix": _PREFIX},
    }}
elif _BACKEND == "valkey":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_valkey.core.ValkeyChannelLayer",
        # Traps: valkey-py 6 defaults to socket_timeout=5, the same as the layer's blocking
        # read (5 s), so idle consumers die with TimeoutError unless the host dict sets a
        # longer one; and its Lua scripts call server.call, which exists on Valkey only
        # (every group_send fails on Redis 7): VALKEY_URL must be a valkey-server.
        "CONFIG": {"hosts": [{"address": os.environ.get("VALKEY_URL", "valkey://127.0.0.1:6380/0"),
                              "socket_timeout": 30}],
                   "prefix": _PREFIX},
    }}
