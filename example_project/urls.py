from django.http import HttpResponse
from django.urls import path


def index(request):
    return HttpResponse("otel_channels example: WebSocket echo at ws://127.0.0.1:8000/ws/echo/")


urlpatterns = [path("", index)]
