"""``manage.py post_message <room> <user> <text>``: persist a message and broadcast it to the room.

With ``REDIS_URL`` set (the same as the running workers), every browser in the
room on every worker receives it, and its spans (service ``chat-cli``) join
the live trace view. Without it the channel layer is this process's own
in-memory one, which reaches no running worker: the message is only stored
(pages show it when they next load the room's history), and the command says
so on stderr. It still exits 0, since the message was saved; a bad room, user or
text exits 1 (``CommandError``).
"""

from __future__ import annotations

import shlex
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.management.base import BaseCommand, CommandError, CommandParser
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from example_project import tracing
from example_project.chat.services import (
    CHAT_EVENT,
    ValidationError,
    chat_data,
    room_group,
    save_message,
    valid_room,
    validate_chat,
)


class Command(BaseCommand):
    help = (
        "Persist a chat message and broadcast it to the room on every worker. Set REDIS_URL "
        "to the workers' Redis: without it the message is only stored (a warning on stderr, "
        "exit status 0), because an in-memory channel layer reaches no running worker."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room")
        parser.add_argument("user")
        parser.add_argument("text")

    def handle(self, *args: Any, **options: Any) -> None:
        from otel_channels.broadcast import broadcast

        room = options["room"]
        if not valid_room(room):
            raise CommandError("room names are letters, digits, '-' and '_' (at most 50)")
        try:
            user, text = validate_chat(options["user"], options["text"])
        except ValidationError as exc:
            raise CommandError(str(exc)) from exc
        tracing.configure(name="chat-cli")
        tracer = trace.get_tracer("example_project.chat")
        with tracer.start_as_current_span(
            "post_message", kind=SpanKind.INTERNAL, attributes={"chat.room": room}
        ) as span:
            with tracer.start_as_current_span("save message") as save:
                message = save_message(room, user, text, "cli")
                save.set_attribute("chat.message.id", message["id"])
            broadcast(room_group(room), CHAT_EVENT, chat_data(message, tracing.worker().as_dict(),
                                                              "cli"))
            trace_id = f"{span.get_span_context().trace_id:032x}"
        tracing.flush()
        self.stdout.write(f"message {message['id']} posted to #{room} (trace {trace_id})")
        if isinstance(get_channel_layer(), InMemoryChannelLayer):
            self.stderr.write(self.style.WARNING(
                "warning: REDIS_URL is not set, so this command used its own in-memory channel "
                "layer, which reaches no running worker: the message is stored, but open pages "
                "do not receive it (they show it when they next load the room) and /traces/ "
                "gets none of its spans. Run it with the workers' Redis, e.g.\n"
                f"  REDIS_URL=redis://127.0.0.1:6379/0 python manage.py post_message "
                f"{shlex.join([room, user, text])}"
            ))
