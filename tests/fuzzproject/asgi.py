"""ASGI application of the fuzz workers: ``tests.project`` plus ``/ws/fuzz/<kind>/<room>/``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.fuzzproject.settings")

from tests.project import otel  # noqa: E402

otel.configure()

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from tests.fuzzproject.consumers import KINDS  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_app,
    "websocket": URLRouter([
        path(f"ws/fuzz/{kind}/<str:room>/", consumer.as_asgi())
        for kind, (consumer, _) in KINDS.items()
    ]),
})
