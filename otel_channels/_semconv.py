"""Attribute, span-event and metric names in one place.

Stable names come from ``opentelemetry.semconv``; the messaging names are
still "development" in the semantic conventions, so they are spelled here
(https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/).
Names with no convention are namespaced ``websocket.*`` / ``channels.*``.
"""

from __future__ import annotations

from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_NAME
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL

__all__ = [
    "CLIENT_ADDRESS", "CLIENT_PORT", "ERROR_TYPE", "HTTP_REQUEST_METHOD",
    "HTTP_RESPONSE_STATUS_CODE", "HTTP_ROUTE", "NETWORK_PROTOCOL_NAME", "URL_PATH",
    "URL_QUERY", "URL_SCHEME", "USER_AGENT_ORIGINAL",
]

INSTRUMENTATION_NAME = "otel_channels"

MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_DESTINATION_TEMPLATE = "messaging.destination.template"
MESSAGING_DESTINATION_TEMPORARY = "messaging.destination.temporary"
MESSAGING_MESSAGE_BODY_SIZE = "messaging.message.body.size"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
MESSAGING_MESSAGE_ID = "messaging.message.id"
NETWORK_IO_DIRECTION = "network.io.direction"
PROCESS_PID = "process.pid"  # still "development" in the conventions too
SYSTEM_CHANNELS = "channels"

WEBSOCKET_CLOSE_CODE = "websocket.close.code"
WEBSOCKET_CLOSE_REASON = "websocket.close.reason"
WEBSOCKET_MESSAGE_TYPE = "websocket.message.type"
WEBSOCKET_SUBPROTOCOL = "websocket.subprotocol"
CHANNELS_CONSUMER = "channels.consumer"
CHANNELS_CONNECTION_STATUS = "channels.connection.status"
CHANNELS_CONNECTION_DURATION = "channels.connection.duration"
CHANNELS_FRAMES_RECEIVED = "channels.frames.received"
CHANNELS_FRAMES_SENT = "channels.frames.sent"
CHANNELS_MESSAGE_TYPE = "channels.message.type"
CHANNELS_DELIVERY_DELAY = "channels.message.delivery.delay"
CHANNELS_SPANS_DROPPED = "channels.spans.dropped"
CHANNELS_DELIVERY_SLOW = "channels.delivery.slow"
# The ``deliver {group}`` summary of one broadcast on one worker (see _fanout.py).
CHANNELS_DELIVERIES_RECORDED = "channels.deliveries.recorded"
CHANNELS_DELIVERIES_UNRECORDED = "channels.deliveries.unrecorded"
CHANNELS_DELIVERIES_FAILED = "channels.deliveries.failed"
CHANNELS_DELIVERIES_SLOW = "channels.deliveries.slow"
CHANNELS_DELIVERIES_DURATION_MAX = "channels.deliveries.duration.max"
CHANNELS_SSE_STREAMS = "channels.sse.streams"
CHANNELS_SSE_EVENTS_SENT = "channels.sse.events.sent"
CHANNELS_SSE_REPLAY_OUTCOME = "channels.sse.replay.outcome"
CHANNELS_SSE_REPLAYED = "channels.sse.replayed"

EVENT_WEBSOCKET_SEND = "websocket.send"

# Metric names (DESIGN.md, "Metrics").
M_ACTIVE_CONNECTIONS = "channels.server.active_connections"
M_CONNECTION_DURATION = "channels.server.connection.duration"
M_WEBSOCKET_MESSAGES = "channels.websocket.messages"
M_WEBSOCKET_MESSAGE_SIZE = "channels.websocket.message.size"
M_SENT_MESSAGES = "messaging.client.sent.messages"
M_OPERATION_DURATION = "messaging.client.operation.duration"
M_CONSUMED_MESSAGES = "messaging.client.consumed.messages"
M_PROCESS_DURATION = "messaging.process.duration"
M_DELIVERY_DURATION = "channels.message.delivery.duration"
M_SSE_EVENTS = "channels.sse.events"
M_SSE_REPLAY = "channels.sse.replay"
M_SSE_DROPPED = "channels.sse.dropped"
M_DROPPED_MESSAGES = "channels.messages.dropped"
