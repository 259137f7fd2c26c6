from django.urls import path

from tests.project.urls import urlpatterns as project_urlpatterns

from . import views

urlpatterns = [
    *project_urlpatterns,
    path("fuzz/events/<str:room>/", views.FuzzEvents.as_view()),
    path("fuzz/broadcast/<str:room>/", views.broadcast),
]
