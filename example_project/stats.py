"""A process-local count of open connections per protocol and route, for ``/stats/``.

Fed by the chat consumer (accept / disconnect) and the SSE views (stream
open / close). One daphne worker is one process, so ``/stats/`` answers for the
worker that serves the request; ask each worker's port for the whole picture.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

__all__ = ["closed", "opened", "snapshot"]

_lock = threading.Lock()
_open: collections.Counter[tuple[str, str]] = collections.Counter()
_total: collections.Counter[tuple[str, str]] = collections.Counter()
_started = time.time()


def opened(protocol: str, route: str) -> None:
    with _lock:
        _open[(protocol, route)] += 1
        _total[(protocol, route)] += 1


def closed(protocol: str, route: str) -> None:
    with _lock:
        if _open[(protocol, route)] > 0:
            _open[(protocol, route)] -= 1


def snapshot() -> dict[str, Any]:
    """``{"websocket": {route: open}, "sse": {...}, "opened_total": {...}, ...}``."""
    with _lock:
        current = dict(_open)
        total = dict(_total)
    result: dict[str, Any] = {
        "websocket": {}, "sse": {}, "opened_total": {"websocket": {}, "sse": {}},
    }
    for (protocol, route), count in sorted(current.items()):
        result.setdefault(protocol, {})[route] = count
    for (protocol, route), count in sorted(total.items()):
        result["opened_total"].setdefault(protocol, {})[route] = count
    result["open"] = {
        protocol: sum(routes.values())
        for protocol, routes in result.items() if protocol in ("websocket", "sse")
    }
    result["uptime_s"] = round(time.time() - _started, 1)
    return result
