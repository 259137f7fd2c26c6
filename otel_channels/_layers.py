"""Instrumenting channel layers of any class: the producer side's ``send`` / ``group_send``.

No list of known backends: Channels' ``BaseChannelLayer`` states the interface
every backend implements (channels' layers module), so the instrumentor wraps

* at ``instrument()``, every ``BaseChannelLayer`` subclass imported so far and
  every layer Channels has already created;
* afterwards, every ``BaseChannelLayer`` subclass as it is defined (an
  ``__init_subclass__`` hook on ``BaseChannelLayer``), and the class of every
  layer Channels creates (``ChannelLayerManager._make_backend``, behind
  ``get_channel_layer()``), so layers constructed directly are covered too.

A method is wrapped once, on the class of the instance's MRO that defines it
(``wrapt``, so ``unwrap`` restores it exactly). A layer whose class defines
no ``send`` is a proxy that finds its methods in ``__getattr__`` (channels_redis's
and channels-valkey's pub/sub layers hand each call to a per-event-loop layer):
its instance gets wrapped methods that resolve the proxy's target at every call.

``receive`` is wrapped too, so that what user code sends is what it receives:
``await layer.receive(channel)`` returns the message without the carrier.
Consumers (the instrumentor swaps their ``channel_receive``) and the SSE hub
read through :func:`raw_receive`, which keeps it: they need the trace context.
A layer whose ``receive`` calls its parent's (also wrapped) ``receive`` strips
only in the outermost call, so raw readers get the carrier through it too.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import markcoroutinefunction
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from . import _producer
from .conf import get_config

logger = logging.getLogger("otel_channels")

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

def traced_receive(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper for ``ChannelLayer.receive(channel)``: the message without the carrier.

    Only user code reaches it (consumers and the SSE hub read through
    :func:`raw_receive`), or a subclass's ``receive`` calling ``super().receive()``:
    that inner call keeps the carrier, the outer one decides.
    """
    if not _outermost(type(instance), getattr(wrapped, "__func__", wrapped)):
        return wrapped(*args, **kwargs)
    return _without_carrier(wrapped(*args, **kwargs))


_OUTERMOST: dict[type, Any] = {}


def _outermost(cls: type, function: Any) -> bool:
    """Whether ``function`` is the ``receive`` ``cls`` itself resolves to (not a parent's).

    A proxy (no ``receive`` of its own) hands each call to another layer: outermost.
    """
    if cls not in _OUTERMOST:
        owner = _defining_class(cls, "receive")
        found = vars(owner)["receive"] if owner is not None else None
        _OUTERMOST[cls] = getattr(found, "__wrapped__", found)
    found = _OUTERMOST[cls]
    return found is None or found is function


async def _without_carrier(received: Any) -> Any:
    message = await received
    key = get_config().CARRIER_KEY
    if isinstance(message, dict) and key in message:
        message = dict(message)
        del message[key]
    return message


class Memberships:
    """The groups each traced consumer's channel joined, so that none outlives its consumer.

    Channels runs a consumer's ``disconnect()`` (where users ``group_discard``) only
    when the server reports the disconnect; a consumer that dies first (a send to a
    client that just reset raises, channels#1820; a server cancelling a hung
    consumer) leaves its memberships behind until ``group_expiry``, a day by
    default, and every broadcast keeps paying for them. :meth:`release`, run when a
    traced consumer ends however it ends, discards what is left.
    """

    def __init__(self) -> None:
        # Tuples, not sets: an empty set is 216 bytes, a one-group tuple 48, and a
        # consumer joins few groups (issue 20: thousands of idle connections per worker).
        self.by_channel: dict[str, tuple[str, ...]] = {}
        self._leaving: set[asyncio.Task[None]] = set()

    def track(self, channel: Any) -> None:
        if isinstance(channel, str):
            self.by_channel.setdefault(channel, ())

    def release(self, layer: Any, channel: Any) -> None:
        """Forget ``channel``; discard, in the background, the groups it never left."""
        groups = self.by_channel.pop(channel, None) if isinstance(channel, str) else None
        if not groups or layer is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(_leave(layer, channel, groups))
        except RuntimeError:  # no loop (the consumer ran in a loop that is gone)
            return
        self._leaving.add(task)  # a strong reference until it is done
        task.add_done_callback(self._leaving.discard)


#: Seconds between attempts to leave a group while the layer fails (Redis restarting);
#: after the last one the membership is left to the layer's group_expiry.
_LEAVE_RETRIES = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


async def _leave(layer: Any, channel: str, groups: tuple[str, ...]) -> None:
    pending = set(groups)
    for wait in (*_LEAVE_RETRIES, None):
        for group in sorted(pending):
            try:  # bounded: a layer that hangs must not keep the task forever
                await asyncio.wait_for(layer.group_discard(group, channel), 10)
            except Exception:
                continue
            pending.discard(group)
        if not pending:
            return
        if wait is not None:
            await asyncio.sleep(wait)  # the layer is down (a persistent Redis comes back)
    logger.warning("could not discard %r from groups %s", channel, sorted(pending))


MEMBERSHIPS = Memberships()


def traced_group_add(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper for ``group_add(group, channel)``: remember a traced consumer's groups."""
    group, channel = _group_and_channel(args, kwargs)
    groups = MEMBERSHIPS.by_channel.get(channel) if isinstance(channel, str) else None
    if groups is not None and isinstance(group, str) and group not in groups:
        MEMBERSHIPS.by_channel[channel] = (*groups, group)
    return wrapped(*args, **kwargs)


def traced_group_discard(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper for ``group_discard(group, channel)``."""
    group, channel = _group_and_channel(args, kwargs)
    groups = MEMBERSHIPS.by_channel.get(channel) if isinstance(channel, str) else None
    if groups is not None and group in groups:
        MEMBERSHIPS.by_channel[channel] = tuple(g for g in groups if g != group)
    return wrapped(*args, **kwargs)


def _group_and_channel(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    group = args[0] if args else kwargs.get("group")
    channel = args[1] if len(args) > 1 else kwargs.get("channel")
    return group, channel


#: The methods every channel layer has that the instrumentor wraps, and their wrappers.
METHODS: dict[str, Wrapper] = {
    "send": _producer.traced_send,
    "group_send": _producer.traced_group_send,
    "receive": traced_receive,
    "group_add": traced_group_add,
    "group_discard": traced_group_discard,
}


def raw_receive(receive: Any) -> Any:
    """The layer's own ``receive`` behind our wrapper (carrier kept), given ``layer.receive``."""
    if isinstance(receive, _ProxyMethod):
        return receive.raw
    if getattr(receive, "_self_wrapper", None) is traced_receive:  # wrapt's bound wrapper
        return receive.__wrapped__
    return receive  # not ours (a layer created before instrument(), or uninstrumented)


def _defining_class(cls: type, name: str) -> type | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            return None if klass is object else klass
    return None


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


class _ProxyMethod:
    """A wrapped method of a delegating layer, resolved through its ``__getattr__`` per call."""

    def __init__(self, layer: Any, name: str, wrapper: Wrapper) -> None:
        self._layer = weakref.ref(layer)
        self._name = name
        self._wrapper = wrapper

    def _target(self) -> Any:
        layer: Any = self._layer()
        return type(layer).__getattr__(layer, self._name)

    @markcoroutinefunction  # it returns an awaitable: sync code hands it to async_to_sync
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(self._target(), self._layer(), args, kwargs)

    def raw(self, *args: Any, **kwargs: Any) -> Any:
        """The target itself, unwrapped (a wrapped layer behind the proxy too)."""
        return raw_receive(self._target())(*args, **kwargs)


class LayerPatches:
    """What the instrumentor wrapped, so that uninstrument undoes exactly that."""

    def __init__(self) -> None:
        self.classes: set[tuple[type, str]] = set()
        self.proxies: weakref.WeakSet[Any] = weakref.WeakSet()
        self.hooked: type | None = None  # the class whose __init_subclass__ we set

    def instrument_class(self, cls: type) -> bool:
        """Wrap ``cls``'s producer methods where its MRO defines them; False if it has none."""
        found = False
        for name, wrapper in METHODS.items():
            owner = _defining_class(cls, name)
            if owner is None:
                continue
            found = True
            if (owner, name) not in self.classes:
                wrap_function_wrapper(owner, name, wrapper)
                self.classes.add((owner, name))
        return found

    def instrument_layer(self, layer: Any) -> Any:
        """Instrument one layer instance (its class, or the instance if it is a proxy)."""
        if layer is None or layer in self.proxies:
            return layer
        if not self.instrument_class(type(layer)) and hasattr(type(layer), "__getattr__"):
            try:
                for name, wrapper in METHODS.items():
                    vars(layer)[name] = _ProxyMethod(layer, name, wrapper)
                self.proxies.add(layer)
            except TypeError:  # no instance dict (__slots__): left uninstrumented
                pass
        return layer

    def instrument_existing(self) -> None:
        from channels.layers import BaseChannelLayer, channel_layers

        for cls in [BaseChannelLayer, *_subclasses(BaseChannelLayer)]:
            self.instrument_class(cls)
        for layer in list(channel_layers.backends.values()):
            self.instrument_layer(layer)
        if "__init_subclass__" not in vars(BaseChannelLayer):
            patches = self

            def init_subclass(cls: Any, /, **kwargs: Any) -> None:
                super(BaseChannelLayer, cls).__init_subclass__(**kwargs)
                patches.instrument_class(cls)

            BaseChannelLayer.__init_subclass__ = classmethod(init_subclass)
            self.hooked = BaseChannelLayer

    def uninstrument(self) -> None:
        if self.hooked is not None:
            del self.hooked.__init_subclass__
            self.hooked = None
        for owner, name in self.classes:
            unwrap(owner, name)
        self.classes.clear()
        for layer in list(self.proxies):
            for name in METHODS:
                vars(layer).pop(name, None)
        self.proxies = weakref.WeakSet()


PATCHES = LayerPatches()


def made_backend(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Wraps ``ChannelLayerManager._make_backend``: every layer Channels creates is traced."""
    return PATCHES.instrument_layer(wrapped(*args, **kwargs))
