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


@csrf_exempt
@require_POST
async def broadcast_event(request, room):
    """Async view: ``abroadcast()`` ``{"text": ...}`` to ``room_<room>`` with the text as
    its idempotency key. 202 sent; 503 ``maybe_delivered`` (the producer retries with
    the same key); 500 refused, nothing sent (issue 20)."""
    from otel_channels.broadcast import BroadcastMaybeDelivered, abroadcast

    text = json.loads(request.body or b"{}").get("text")
    try:
        event_id = await abroadcast(f"room_{room}", "chat.message", {"text": text},
                                    idempotency_key=text)
    except BroadcastMaybeDelivered as exc:
        return JsonResponse({"maybe_delivered": True, "id": exc.event_id,
                             "error": type(exc.__cause__).__name__}, status=503)
    except Exception as exc:
        return JsonResponse({"error": type(exc).__name__}, status=500)
    return JsonResponse({"id": event_id}, status=202)


def health(request):
    return HttpResponse("ok")
