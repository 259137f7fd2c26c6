"""HTTP routes of the example (WebSocket routes are in ``asgi.py``)."""

from __future__ import annotations

from django.urls import path

from .browser_spans import otlp_traces
from .chat import views

urlpatterns = [
    path("", views.index, name="index"),
    path("rooms/<slug:room>/", views.room, name="room"),
    path("rooms/<slug:room>/follow/", views.follow, name="follow"),
    path("rooms/<slug:room>/events/", views.RoomEventsView.as_view(), name="room-events"),
    path("rooms/<slug:room>/messages/", views.MessagesView.as_view(), name="messages"),
    path("traces/", views.traces, name="traces"),
    path("traces/events/", views.TraceEventsView.as_view(), name="trace-events"),
    path("stats/", views.stats_view, name="stats"),
    # The pages' spans (OpenTelemetry JS web SDK, OTLP/HTTP JSON), re-exported by this worker.
    path("otlp/v1/traces", otlp_traces, name="otlp-traces"),
]
