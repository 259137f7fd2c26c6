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

``receive`` (:mod:`.receive`) and ``group_add`` / ``group_discard``
(:mod:`.memberships`) are wrapped too; :func:`raw_receive` reads past our ``receive``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import markcoroutinefunction
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from . import producer as _producer
from .memberships import traced_group_add, traced_group_discard
from .receive import defining_class, traced_receive

logger = logging.getLogger("otel_channels")

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


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
            owner = defining_class(cls, name)
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
