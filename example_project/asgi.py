"""ASGI entry point: ``daphne example_project.asgi:application``.

HTTP goes to Django (pages, the JSON API, the SSE feeds); WebSockets go to the
chat consumer behind ``AllowedHostsOriginValidator`` (a page on another origin
cannot open a socket here: 403 at the handshake) and ``AuthMiddlewareStack``.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

from example_project import tracing  # noqa: E402

# Before Django starts: the provider must exist before the first span.
tracing.configure()

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from example_project.chat.consumers import ChatConsumer  # noqa: E402

websocket_urlpatterns = [
    path("ws/chat/<slug:room>/", ChatConsumer.as_asgi()),
]

application = tracing.LivePublisherMiddleware(ProtocolTypeRouter({
    # Plain daphne serves no static files; this handler does (use WhiteNoise or
    # a proxy in production).
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    ),
}))
