"""ASGI application of the benchmark workers; ``FANOUT_*`` variables pick the variant.

* ``FANOUT_CONSUMER``: ``plain`` (Channels' AsyncJsonWebsocketConsumer) or
  ``traced`` (otel_channels' TracedAsyncJsonWebsocketConsumer);
* ``FANOUT_SDK=1``: SDK providers (see :mod:`.otel`), else the API no-ops;
* ``FANOUT_ASGI_MW=1``: the WebSocket app wrapped in OpenTelemetry's ASGI middleware;
* ``FANOUT_GC_FREEZE=1``: ``gc.freeze()`` once the app is built.

HTTP ``GET /stats`` returns the worker's counters as JSON (for the benchmark).
"""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks._fanout_app.settings")

from benchmarks._fanout_app import otel  # noqa: E402

otel.configure()

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from benchmarks._fanout_app.consumers import (  # noqa: E402
    PlainFanoutConsumer,
    TracedFanoutConsumer,
)

_consumer = TracedFanoutConsumer if os.environ.get("FANOUT_CONSUMER") == "traced" else (
    PlainFanoutConsumer
)
websocket_app: Any = URLRouter([path("ws/fanout/", _consumer.as_asgi())])
if os.environ.get("FANOUT_ASGI_MW") == "1":
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    websocket_app = OpenTelemetryMiddleware(websocket_app)


async def stats_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /stats``: JSON counters of this worker; anything else 404."""
    found = scope["type"] == "http" and scope["path"] == "/stats"
    body = json.dumps(otel.stats()).encode() if found else b"not found"
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter({"http": stats_app, "websocket": websocket_app})

if os.environ.get("FANOUT_GC_FREEZE") == "1":
    import gc

    # Move everything allocated at start-up out of the collector's reach, so a full
    # collection scans only what the run allocates
    # (``python -m benchmarks.fanout --gc-freeze``).
    gc.freeze()
