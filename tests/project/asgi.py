"""ASGI application of the test project's worker processes."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")

from tests.project import otel  # noqa: E402

otel.configure()

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from tests.project.consumers import (  # noqa: E402
    ChatConsumer,
    EchoConsumer,
    FlakyConsumer,
    PlainChatConsumer,
    TraceReplyChatConsumer,
)

websocket_routes = [
    path("ws/chat/<str:room>/", ChatConsumer.as_asgi()),
    path("ws/plain/<str:room>/", PlainChatConsumer.as_asgi()),
    path("ws/chat-traced/<str:room>/", TraceReplyChatConsumer.as_asgi()),
    path("ws/echo/<str:room>/", EchoConsumer.as_asgi()),
    path("ws/flaky/<str:room>/", FlakyConsumer.as_asgi()),
]

from tests.project.consumers import (  # noqa: E402
    BaggageChatConsumer,
    CloseConsumer,
    PlainBaggageConsumer,
)

websocket_routes += [  # baggage, close codes (tests/multiprocess/test_baggage*.py, test_servers_*)
    path("ws/baggage/<str:room>/", BaggageChatConsumer.as_asgi()),
    path("ws/baggage-plain/<str:room>/", PlainBaggageConsumer.as_asgi()),
    path("ws/close/<str:room>/", CloseConsumer.as_asgi()),
]

application = ProtocolTypeRouter({
    "http": django_app,
    "websocket": URLRouter(websocket_routes),
})
