"""Settings of the example chat: no Redis and SQLite unless the environment says otherwise.

Environment:

* ``DATABASE_URL`` (dj-database-url syntax): default ``sqlite:///<repo>/db.sqlite3``;
  ``postgres://user:pass@127.0.0.1/chat`` for PostgreSQL.
* ``REDIS_URL``: use channels-redis (so several daphne workers share rooms)
  instead of the in-memory layer; ``CHANNEL_PREFIX`` sets its key prefix.
* ``WORKER_NAME``: this worker's ``service.name`` (default ``chat-<port>``).
* ``OTEL_EXPORTER_OTLP_ENDPOINT``: also export spans and metrics over OTLP/HTTP.
* ``DJANGO_ALLOWED_HOSTS``: extra comma-separated hosts (WebSocket origins are
  checked against ``ALLOWED_HOSTS`` too).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
import django

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"] + [
    host.strip() for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if host.strip()
]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "otel_channels",
    "example_project.chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "example_project.urls"
ASGI_APPLICATION = "example_project.asgi.application"

DATABASES = {
    "default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Two workers writing one SQLite file: wait for the lock instead of failing
    # at once, and let readers run beside the writer (WAL, Django >= 5.1).
    _OPTIONS: dict[str, object] = {"timeout": 20}
    if django.VERSION >= (5, 1):
        _OPTIONS["init_command"] = "PRAGMA journal_mode=WAL;"
        _OPTIONS["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"].setdefault("OPTIONS", {}).update(_OPTIONS)

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, which kills idle
                # blocking reads; its pool holds 100 connections (check W010/W011).
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 2000}],
                "prefix": os.environ.get("CHANNEL_PREFIX", "chat"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

OTEL_CHANNELS = {
    # The room page's keep-alive frame (every 15 s per tab): answered, never traced.
    "IGNORED_FRAMES": ['{"action":"ping"}'],
    # The pages' browser module (otel_channels/otel-channels.js) sends its connect span's
    # context as ?traceparent= (browsers cannot set WebSocket headers) ...
    "QUERY_TRACEPARENT": True,
    # ... and reads the context of the SSE feed's delivery from a traceparent: field.
    "SSE_TRACEPARENT_FIELD": True,
}

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]
STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
