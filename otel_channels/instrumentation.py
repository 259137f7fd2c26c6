"""OpenTelemetry instrumentation for Django Channels' channel layers.

Usage
-----
Automatic: ``"otel_channels"`` in ``INSTALLED_APPS`` instruments when Django
starts (``OTEL_CHANNELS = {"AUTO_INSTRUMENT": False}`` turns that off). Zero
code: ``opentelemetry-instrument daphne myproject.asgi:application`` finds the
``channels`` entry point; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=channels``
disables it. By hand::

    from otel_channels.instrumentation import ChannelsInstrumentor

    ChannelsInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)

What it does
------------
* wraps ``send`` and ``group_send`` of every channel layer, whatever its
  backend (every ``channels.layers.BaseChannelLayer`` subclass, every layer
  ``get_channel_layer()`` creates, delegating proxies such as channels_redis's
  pub/sub layer): a PRODUCER span ``group_send {group}`` / ``send`` and a
  trace carrier in a copy of the message under ``CARRIER_KEY``;
* makes every consumer, plain Channels ones included, strip that carrier
  before its handler runs and handle the message inside a ``process {group}``
  CONSUMER span (the ``Traced*`` consumers do this themselves, instrumented or
  not);
* watches channels-redis's pub/sub layer for subscriptions it loses and
  re-makes (``channels.layer.subscription.lost``, ``ON_SUBSCRIPTION_LOST``;
  see ``layer.subscriptions``);
* makes ``URLRouter`` record the matched route template in the scope, so
  span names say ``/chat/<room>/`` rather than a raw path.

Configuration
-------------
``instrument(tracer_provider=..., meter_provider=...)``; everything else is
the ``OTEL_CHANNELS`` Django setting (read lazily: this module never touches
``django.conf.settings`` at instrument time, because ``opentelemetry-instrument``
runs before ``django.setup()``).
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import register_post_import_hook, wrap_function_wrapper

from ._package import _instruments
from .conf import get_config
from .delivery import fanout as _fanout
from .delivery import process as _process
from .layer import capacity as _capacity
from .layer import patches as _layers
from .layer import subscriptions as _subscriptions
from .telemetry import instruments as _telemetry
from .telemetry.names import ROUTE_SCOPE_KEY, pattern_template
from .websocket import asgi as _asgi

__all__ = ["ChannelsInstrumentor"]

_HYPERCORN = "hypercorn.protocol.ws_stream"

class _RouteRecorder:
    """A URLRouter route's application that records the route template in the scope."""

    def __init__(self, application: Any, template: str) -> None:
        self.application = application
        self.template = template

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        # URLRouter hands each route a fresh scope dict, so adding a key is safe;
        # a nested URLRouter copies it and its own recorder appends to it.
        prefix = scope.get(ROUTE_SCOPE_KEY) or "/"
        scope[ROUTE_SCOPE_KEY] = prefix.rstrip("/") + "/" + self.template.lstrip("/")
        # The application's own awaitable: no frame of ours stays in the consumer's
        # await chain (every resumption of the connection walks that chain).
        return self.application(scope, receive, send)

    def __getattr__(self, name: str) -> Any:  # consumer_class, consumer_initkwargs, ...
        return getattr(self.application, name)


_routers: weakref.WeakSet[Any] = weakref.WeakSet()


def _record_routes(router: Any) -> None:
    if router in _routers:
        return
    for route in getattr(router, "routes", ()):
        callback = getattr(route, "callback", None)
        if callback is not None and not isinstance(callback, _RouteRecorder):
            route.callback = _RouteRecorder(callback, pattern_template(route.pattern))
    _routers.add(router)


def _forget_routes() -> None:
    for router in list(_routers):
        for route in getattr(router, "routes", ()):
            if isinstance(route.callback, _RouteRecorder):
                route.callback = route.callback.application
    _routers.clear()


def _router_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    _record_routes(instance)
    return wrapped(*args, **kwargs)


def _consumer_of(dispatch: Any) -> Any:
    """The consumer whose ``dispatch`` this is, or None."""
    consumer = getattr(dispatch, "__self__", None)
    if consumer is None and isinstance(dispatch, functools.partial) and dispatch.args:
        # SyncConsumer.dispatch is a database_sync_to_async descriptor: bound, it is
        # functools.partial(SyncToAsync.__call__, consumer), with no __self__.
        # Missing this once let plain sync consumers hand the carrier to user code.
        from channels.consumer import AsyncConsumer

        if isinstance(dispatch.args[0], AsyncConsumer):
            consumer = dispatch.args[0]
    return consumer


def _raw_channel_receive(callable_: Any) -> Any:
    """A consumer's ``partial(layer.receive, channel)``, reading through the unwrapped receive."""
    if isinstance(callable_, functools.partial):
        raw = _layers.raw_receive(callable_.func)
        if raw is not callable_.func:
            return functools.partial(raw, *callable_.args, **callable_.keywords)
    return callable_


def _dispatch_loop(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Wraps ``channels.consumer.await_many_dispatch``: consumers get carriers, plain ones spans.

    Every consumer reads the channel layer through the unwrapped ``receive`` (its
    dispatch needs the carrier; user code calling ``layer.receive`` does not get it).
    """
    consumer_callables, dispatch = [_raw_channel_receive(c) for c in args[0]], args[1]
    consumer = _consumer_of(dispatch)
    if consumer is None or getattr(consumer, "_otel_traced", False):
        return wrapped(consumer_callables, dispatch)
    client_events = _process.CLIENT_EVENT_TYPES

    def traced_dispatch(message: dict[str, Any]) -> Any:
        if message.get("type") in client_events and get_config().CARRIER_KEY not in message:
            return dispatch(message)
        return _process.process(consumer, message, dispatch)

    return wrapped(consumer_callables, traced_dispatch)


class ChannelsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces Django Channels channel layers and routes (see the module docstring)."""

    _wrapped: list[tuple[Any, str]]
    _hook_registered = False
    _pubsub_hooks: set[str] = set()  # modules hooked (class-wide, like _hook_registered)

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        _telemetry.configure(kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        _fanout.TABLE.clear()  # records hold the previous providers' counter cells
        import channels.consumer
        import channels.layers
        import channels.routing

        _layers.PATCHES.instrument_existing()
        _capacity.watch()
        wrap_function_wrapper(channels.layers, "ChannelLayerManager._make_backend",
                              _layers.made_backend)
        wrap_function_wrapper(channels.routing, "URLRouter.__call__", _router_call)
        wrap_function_wrapper(channels.consumer, "await_many_dispatch", _dispatch_loop)
        self._wrapped = [(channels.layers.ChannelLayerManager, "_make_backend"),
                         (channels.routing.URLRouter, "__call__"),
                         (channels.consumer, "await_many_dispatch")]
        # hypercorn drops the client's close code: keep it (see websocket.asgi). Wrapped when
        # hypercorn is loaded, now or later: importing it here would load a server
        # nobody runs (and grow every worker's heap, which the collector pays for).
        if _HYPERCORN in sys.modules:
            self._wrap_hypercorn(sys.modules[_HYPERCORN])
        elif not ChannelsInstrumentor._hook_registered:
            ChannelsInstrumentor._hook_registered = True
            register_post_import_hook(self._hypercorn_imported, _HYPERCORN)
        # channels-redis's (and channels-valkey's) pub/sub layer: the same, when imported.
        _subscriptions.enabled = True
        for module_name in _subscriptions.TARGETS:
            if module_name in sys.modules:
                self._wrap_pubsub(sys.modules[module_name])
            elif module_name not in ChannelsInstrumentor._pubsub_hooks:
                ChannelsInstrumentor._pubsub_hooks.add(module_name)
                register_post_import_hook(self._pubsub_imported, module_name)

    def _pubsub_imported(self, module: Any) -> None:
        if self.is_instrumented_by_opentelemetry:
            self._wrap_pubsub(module)

    def _wrap_pubsub(self, module: Any) -> None:
        class_name, method = _subscriptions.TARGETS[module.__name__]
        owner = getattr(module, class_name, None)
        if owner is None or not hasattr(owner, method):  # another version: not watched
            return
        if (owner, method) not in self._wrapped:
            wrap_function_wrapper(module, f"{class_name}.{method}", _subscriptions.watch_shard)
            self._wrapped.append((owner, method))

    def _hypercorn_imported(self, module: Any) -> None:
        if self.is_instrumented_by_opentelemetry:
            self._wrap_hypercorn(module)

    def _wrap_hypercorn(self, module: Any) -> None:
        target = (module.WSStream, "_handle_events")
        if target not in self._wrapped:
            wrap_function_wrapper(module, "WSStream._handle_events",
                                  _asgi.hypercorn_handle_events)
            self._wrapped.append(target)

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, attribute in getattr(self, "_wrapped", ()):
            unwrap(owner, attribute)
        self._wrapped = []
        _subscriptions.enabled = False
        _layers.PATCHES.uninstrument()
        _capacity.unwatch()
        _forget_routes()
        _telemetry.reset()
        _fanout.TABLE.clear()
