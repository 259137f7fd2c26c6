"""What every traced WebSocket connection of one consumer class on one route shares.

Built once per ``(consumer class, route)`` and rebuilt when settings or providers
change (issue 20: the per-connection cost): names, metric attributes, counter
cells, the route's rate and frame decision, a frame guard without per-connection state.
"""

from __future__ import annotations

from typing import Any

from ..conf import Config
from ..telemetry import instruments as _telemetry
from ..telemetry import rates as _rates
from ..telemetry import semconv as sc
from ..telemetry.names import route_of
from .frames import FrameGuard, FrameParent


class Route:
    """What every connection of one consumer class on one route shares (issue 20: the
    per-connection cost): its names, metric attributes and counter cells, and the
    objects that hold no per-connection state until the connection needs its own."""

    __slots__ = ("attrs_in", "attrs_out", "config", "count_in", "count_out", "frame_parent",
                 "guard", "metric_attributes", "name", "off", "route", "telemetry")

    def __init__(self, cls: type, route: str, telemetry: _telemetry.Telemetry,
                 config: Config) -> None:
        self.telemetry, self.config = telemetry, config
        self.name = cls.__qualname__
        self.route = route
        self.metric_attributes = {sc.NETWORK_PROTOCOL_NAME: sc.PROTOCOL_WEBSOCKET,
                                  sc.HTTP_ROUTE: route}
        self.attrs_in = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: sc.IO_RECEIVE}
        self.attrs_out = {**self.metric_attributes, sc.NETWORK_IO_DIRECTION: sc.IO_TRANSMIT}
        self.count_in = telemetry.websocket_messages.cell(self.attrs_in)
        self.count_out = telemetry.websocket_messages.cell(self.attrs_out)
        # The class's or route's own rate (off: 0, no span of the connection at all).
        rate, self.off = _rates.route_rate(config, route, cls)
        # Until the handshake, and after it for connections with nothing of their own (no
        # connect context, baggage or user to ask). Its parse hand-off (``parsed``/``plain``)
        # is then shared: ``take`` matches the frame text by identity, so interleaved
        # connections only lose the reuse (the consumer parses again), never swap frames.
        self.frame_parent = FrameParent(config, None, rate=rate)
        guard = FrameGuard(config.MAX_FRAME_SIZE, config.MAX_FRAME_RATE)
        self.guard = None if guard.active else guard  # a rate limit counts per connection


#: ``(consumer class, route)`` -> its :class:`Route`; rebuilt when settings or providers change.
_ROUTES: dict[tuple[type, str], Route] = {}
_MAX_ROUTES = 4096  # route templates and classes are few; a bound all the same


def route_for(cls: type, scope: dict[str, Any], telemetry: _telemetry.Telemetry,
               config: Config) -> Route:
    route = route_of(scope, cls.__name__)
    shared = _ROUTES.get((cls, route))
    if shared is None or shared.config is not config or shared.telemetry is not telemetry:
        if len(_ROUTES) >= _MAX_ROUTES:
            _ROUTES.clear()
        shared = _ROUTES[(cls, route)] = Route(cls, route, telemetry, config)
    return shared
