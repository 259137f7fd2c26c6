"""Lost pub/sub subscriptions: counted, logged and, with ``ON_SUBSCRIPTION_LOST = "close"``, closed.

Redis pub/sub keeps nothing for a subscriber that is away: what is published
to a group between the moment its subscriber's connection drops and the
moment it subscribes again reaches nobody. channels-redis's
``RedisPubSubChannelLayer`` does not say when that happens
(``channels_redis/pubsub.py``: the receive loop logs, sleeps and reads again;
redis-py's ``PubSub`` reconnects and resubscribes on its own, on a Sentinel
failover to the new master), so its consumers never learn that they missed
broadcasts (channels_redis#256). Issue 20 measured 8 broadcasts, accepted
without error, that reached none of 20 WebSocket clients during a failover.
channels-valkey's pub/sub layer is the same code on valkey-py and is watched
the same way (:data:`TARGETS`).

What is observed is the resubscription itself: redis-py calls a ``PubSub``'s
``on_connect`` callback every time the connection it subscribed on connects
*again* (never on the first connect; ``redis/asyncio/client.py``,
``PubSub.connect`` registers it after the pool hands out a connected
connection), and that callback is what re-sends ``SUBSCRIBE``. Each shard's
``PubSub`` gets, at its creation (``RedisSingleShardConnection._ensure_redis``,
wrapped by the instrumentor), a watcher in place of that callback: it lets
redis-py resubscribe, then for every group the shard was subscribed to

* adds 1 to ``channels.layer.subscription.lost`` (``channels.layer``: the layer
  class; ``messaging.destination.template``: the group template);
* logs a warning on the ``otel_channels`` logger naming the layer and group;
* queues a message of type :data:`SUBSCRIPTION_LOST` for every SSE hub of
  this process in the group (:func:`follow`): the hub reads what it missed from
  the replay log at once, or resets its streams if the log lost it too,
  instead of waiting for the next event to show the gap;
* with ``ON_SUBSCRIPTION_LOST = "close"``, queues a message of type
  :data:`SUBSCRIPTION_LOST` for every traced consumer of this process that was
  in the group or whose own channel is on the shard: the consumer closes its
  WebSocket with 1012 (Service Restart, RFC 6455 7.4.1 / the IANA registry:
  "the client may reconnect"; daphne sends it as 4012, see ``websocket.asgi``), so the
  client reconnects and, like a core-layer client, sees a reconnect where it
  missed something.

SSE streams lose nothing either way: the hub numbers events from the replay
log and reads any gap from it (``sse/_subscription``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from ..conf import get_config
from ..telemetry import instruments as _telemetry
from ..telemetry import semconv as sc
from ..telemetry.names import group_template
from .memberships import MEMBERSHIPS

logger = logging.getLogger("otel_channels")

#: The message type a traced consumer closes on (with :data:`CLOSE_CODE`).
SUBSCRIPTION_LOST = "otel_channels.subscription_lost"
#: 1012 Service Restart: a retryable close (1011 would say the server failed).
CLOSE_CODE = 1012
CLOSE_REASON = "subscription lost"
#: Groups named one by one in the log per reconnect; the rest are counted.
_LOGGED_GROUPS = 20

#: Whether watchers report (False after uninstrument: their PubSubs may live on).
enabled = False
#: Channels of SSE hubs (``sse/_hub``): told of a lost subscription whatever the policy.
_followers: set[str] = set()


def follow(channel: str) -> None:
    """Queue :data:`SUBSCRIPTION_LOST` to ``channel`` when a group it is in was lost."""
    _followers.add(channel)


def unfollow(channel: str) -> None:
    _followers.discard(channel)


class _Watch:
    """Stands in for one ``PubSub``'s ``on_connect``: resubscribe, then report."""

    def __init__(self, shard: Any, pubsub: Any) -> None:
        self.shard = weakref.ref(shard)
        self.resubscribe: Callable[[Any], Any] = pubsub.on_connect  # redis-py's own

    async def on_connect(self, connection: Any) -> None:
        try:
            await self.resubscribe(connection)
        finally:
            shard = self.shard()
            if enabled and shard is not None:
                try:
                    subscription_lost(shard)
                except Exception:  # reporting must never break the layer's receive loop
                    logger.exception("could not report a lost subscription")


def watch_shard(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Wraps ``RedisSingleShardConnection._ensure_redis`` (:data:`TARGETS`): watch each PubSub."""
    result = wrapped(*args, **kwargs)
    pubsub = getattr(instance, "_pubsub", None)
    if pubsub is not None and "_otel_watch" not in vars(pubsub):
        watch = _Watch(instance, pubsub)
        # redis-py keeps connect callbacks as weakref.WeakMethod: the PubSub holds the
        # watcher, and redis-py registers pubsub.on_connect (ours) on its first command.
        pubsub._otel_watch = watch
        pubsub.on_connect = watch.on_connect
    return result


def subscription_lost(shard: Any) -> None:
    """Report (and, per the setting, close) what one shard's resubscription tells."""
    layer = shard.channel_layer  # RedisPubSubLoopLayer: this event loop's state
    proxy = getattr(layer, "channel_layer", None) or layer
    layer_name = type(proxy).__name__
    group_prefix = f"{layer.prefix}__group__"
    names = sorted(str(n) for n in shard._subscribed_to)
    groups = {n: n[len(group_prefix):] for n in names if n.startswith(group_prefix)}
    config = get_config()
    counter = _telemetry.get().subscriptions_lost
    for group in groups.values():
        counter.add(1, {
            sc.MESSAGING_SYSTEM: sc.SYSTEM_CHANNELS,
            sc.CHANNELS_LAYER: layer_name,
            sc.MESSAGING_DESTINATION_TEMPLATE: group_template(group, config.GROUP_TEMPLATE),
        })
    closing = config.ON_SUBSCRIPTION_LOST == "close"
    listed = sorted(groups.values())
    if listed:
        more = len(listed) - _LOGGED_GROUPS
        named = ", ".join(repr(g) for g in listed[:_LOGGED_GROUPS])
        logger.warning(
            "%s lost its subscription to group%s %s%s: the Redis connection was re-made, and "
            "what was published meanwhile reached no consumer of this process%s.",
            layer_name, "s" if len(listed) > 1 else "", named,
            f" and {more} more" if more > 0 else "",
            " (ON_SUBSCRIPTION_LOST='close': closing their traced consumers)" if closing else "",
        )
    affected = {n for n in names if n in layer.channels}  # consumers' own channels
    for name in groups:
        affected.update(layer.groups.get(name, ()))
    serialize = getattr(proxy, "serialize", None)
    if serialize is None:
        return
    message = serialize({"type": SUBSCRIPTION_LOST})
    for channel in sorted(affected):
        queue = layer.channels.get(channel)
        if queue is not None and (channel in _followers or (
                closing and channel in MEMBERSHIPS.by_channel)):  # hubs; traced consumers
            queue.put_nowait(message)


#: What the instrumentor wraps, when the module is imported: module -> (class, method that
#: creates the shard's client and PubSub). channels-valkey's pub/sub layer is channels-redis's
#: on valkey-py (same shard class, same PubSub callbacks).
TARGETS = {
    "channels_redis.pubsub": ("RedisSingleShardConnection", "_ensure_redis"),
    "channels_valkey.pubsub": ("ValkeySingleShardConnection", "_ensure_valkey"),
}
