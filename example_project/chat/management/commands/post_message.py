"""``manage.py post_message <room> <user> <text>``: persist a message and broadcast it to the room.

With ``REDIS_URL`` set (the same as the running workers), every browser in the
room on every worker receives it, and its spans (service ``chat-cli``) join
the live trace view. With the in-memory layer it is only stored.
"""

from __future__ import annotations

from typing import Any

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
    help = "Persist a chat message and broadcast it to the room on every worker."

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
