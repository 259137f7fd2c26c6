"""Every span, attribute, event and metric name otel_channels writes, in one place.

Names come from ``opentelemetry.semconv`` where the semantic conventions have
one (the messaging, process and network names are still "development" there,
hence the ``_incubating`` modules); names with no convention are namespaced
``websocket.*``, ``sse.*`` and ``channels.*`` and spelled here. No other module
spells an attribute or metric name: ``tests/meta/test_semconv.py`` checks that.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_TEMPLATE,
    MESSAGING_DESTINATION_TEMPORARY,
    MESSAGING_MESSAGE_BODY_SIZE,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION_NAME,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
)
from opentelemetry.semconv._incubating.attributes.network_attributes import NETWORK_IO_DIRECTION
from opentelemetry.semconv._incubating.attributes.process_attributes import PROCESS_PID
from opentelemetry.semconv._incubating.attributes.url_attributes import URL_TEMPLATE
from opentelemetry.semconv._incubating.metrics.messaging_metrics import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_PROCESS_DURATION,
)
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_NAME
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import (
    URL_FULL,
    URL_PATH,
    URL_QUERY,
    URL_SCHEME,
)
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL

__all__ = [
    "CLIENT_ADDRESS", "CLIENT_PORT", "ERROR_TYPE", "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_RESEND_COUNT", "HTTP_RESPONSE_STATUS_CODE", "HTTP_ROUTE",
    "MESSAGING_BATCH_MESSAGE_COUNT", "MESSAGING_DESTINATION_NAME",
    "MESSAGING_DESTINATION_TEMPLATE", "MESSAGING_DESTINATION_TEMPORARY",
    "MESSAGING_MESSAGE_BODY_SIZE", "MESSAGING_MESSAGE_ID", "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE", "MESSAGING_SYSTEM", "NETWORK_IO_DIRECTION",
    "NETWORK_PROTOCOL_NAME", "PROCESS_PID", "SERVER_ADDRESS", "SERVER_PORT", "URL_FULL",
    "URL_PATH", "URL_QUERY", "URL_SCHEME", "URL_TEMPLATE", "USER_AGENT_ORIGINAL",
]

#: Instrumentation scopes (tracer and meter names).
INSTRUMENTATION_NAME = "otel_channels"
CLIENT_INSTRUMENTATION_NAME = "otel_channels.client"

# -- span names: "<operation> <route or group template>" ---------------------------------
SPAN_CONNECT = "connect"
SPAN_RECEIVE = "receive"
SPAN_SEND = "send"
SPAN_DISCONNECT = "disconnect"
SPAN_GROUP_SEND = "group_send"
SPAN_PROCESS = "process"
SPAN_DELIVER = "deliver"  # the per-worker summary of a broadcast past the span budget

# -- attribute values ----------------------------------------------------------------------
SYSTEM_CHANNELS = "channels"
OPERATION_SEND = "send"  # messaging.operation.type
OPERATION_PROCESS = "process"
ERROR_OVER_CAPACITY = "over_capacity"  # error.type of group messages a full member lost
ERROR_UNKNOWN_TYPE = "unknown_type"  # error.type of a message no handler takes (policy "drop")
PROTOCOL_WEBSOCKET = "websocket"
PROTOCOL_SSE = "sse"
IO_RECEIVE, IO_TRANSMIT = "receive", "transmit"  # network.io.direction

# -- attributes with no convention ---------------------------------------------------------
WEBSOCKET_CLOSE_CODE = "websocket.close.code"
WEBSOCKET_CLOSE_REASON = "websocket.close.reason"
WEBSOCKET_MESSAGE_TYPE = "websocket.message.type"
WEBSOCKET_SUBPROTOCOL = "websocket.subprotocol"
SSE_LAST_EVENT_ID = "sse.last_event_id"
SSE_EVENT_TYPE = "sse.event.type"
CHANNELS_CONSUMER = "channels.consumer"
CHANNELS_CONNECTION_STATUS = "channels.connection.status"
CHANNELS_CONNECTION_DURATION = "channels.connection.duration"
CHANNELS_FRAMES_RECEIVED = "channels.frames.received"
CHANNELS_FRAMES_SENT = "channels.frames.sent"
CHANNELS_MESSAGE_TYPE = "channels.message.type"
CHANNELS_DELIVERY_DELAY = "channels.message.delivery.delay"
CHANNELS_SPANS_DROPPED = "channels.spans.dropped"
CHANNELS_DELIVERY_SLOW = "channels.delivery.slow"
CHANNELS_GROUP_SEND_OVER_CAPACITY = "channels.group_send.over_capacity"
# The ``deliver {group}`` summary of one broadcast on one worker (see delivery/fanout.py).
CHANNELS_DELIVERIES_RECORDED = "channels.deliveries.recorded"
CHANNELS_DELIVERIES_UNRECORDED = "channels.deliveries.unrecorded"
CHANNELS_DELIVERIES_FAILED = "channels.deliveries.failed"
CHANNELS_DELIVERIES_SLOW = "channels.deliveries.slow"
CHANNELS_DELIVERIES_DURATION_MAX = "channels.deliveries.duration.max"
CHANNELS_SSE_STREAMS = "channels.sse.streams"
CHANNELS_SSE_EVENTS_SENT = "channels.sse.events.sent"
CHANNELS_SSE_REPLAY_OUTCOME = "channels.sse.replay.outcome"
CHANNELS_SSE_REPLAYED = "channels.sse.replayed"
#: The class of the channel layer a metric point is about (``RedisPubSubChannelLayer``).
CHANNELS_LAYER = "channels.layer"

# -- span events ---------------------------------------------------------------------------
EVENT_WEBSOCKET_SEND = "websocket.send"

# -- metrics: the server (DESIGN: "Metrics") -----------------------------------------------
M_ACTIVE_CONNECTIONS = "channels.server.active_connections"
M_CONNECTION_DURATION = "channels.server.connection.duration"
M_WEBSOCKET_MESSAGES = "channels.websocket.messages"
M_WEBSOCKET_MESSAGE_SIZE = "channels.websocket.message.size"
M_SENT_MESSAGES = MESSAGING_CLIENT_SENT_MESSAGES
M_OPERATION_DURATION = MESSAGING_CLIENT_OPERATION_DURATION
M_CONSUMED_MESSAGES = MESSAGING_CLIENT_CONSUMED_MESSAGES
M_PROCESS_DURATION = MESSAGING_PROCESS_DURATION
M_DELIVERY_DURATION = "channels.message.delivery.duration"
M_SSE_EVENTS = "channels.sse.events"
M_SSE_REPLAY = "channels.sse.replay"
M_SSE_DROPPED = "channels.sse.dropped"
M_DROPPED_MESSAGES = "channels.messages.dropped"
#: A pub/sub layer's group subscription dropped and re-made: what was published between
#: the two is lost (issue 20; channels-redis's receive loop resubscribes silently).
M_SUBSCRIPTIONS_LOST = "channels.layer.subscription.lost"

# -- metrics: the traced clients -----------------------------------------------------------
M_CLIENT_CONNECTION_DURATION = "channels.client.connection.duration"
M_CLIENT_WEBSOCKET_MESSAGES = "channels.client.websocket.messages"
M_CLIENT_WEBSOCKET_MESSAGE_SIZE = "channels.client.websocket.message.size"
M_CLIENT_SSE_EVENTS = "channels.client.sse.events"
M_CLIENT_RECONNECTS = "channels.client.reconnects"
