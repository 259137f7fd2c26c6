import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def broadcast(request, room):
    """Sync view: POST a JSON body, broadcast it to ``room_<room>``."""
    body = json.loads(request.body or b"{}")
    async_to_sync(get_channel_layer().group_send)(
        f"room_{room}", {"type": "chat.message", "text": body.get("text"), "via": "http"},
    )
    return JsonResponse({"ok": True}, status=202)


def health(request):
    return HttpResponse("ok")
