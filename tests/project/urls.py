from django.urls import path

from . import browser, debug, views
from .sse import RoomEvents

urlpatterns = [
    path("health/", views.health),
    path("debug/state/", debug.state),  # leak counters for the churn soak (tests only)
    path("broadcast/<str:room>/", views.broadcast),
    path("broadcast-event/<str:room>/", views.broadcast_event),
    path("events/<str:room>/", RoomEvents.as_view()),
    path("_browser/<str:name>", browser.serve),  # tests/browser/test_browser_*.py
]
