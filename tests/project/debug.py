"""``/debug/state/``: what the churn soak checks for leaks in a worker (tests only).

Read on the server's event loop: its live asyncio tasks, the SSE hubs'
subscriptions and local streams, the channel layer's per-channel receive
buffers, open fds and the resident set size from ``/proc/self/statm``.
Diagnostics: ``?gc=1`` collects first; ``?stacks=1`` adds where each task
waits; with ``PYTHONTRACEMALLOC=1``, ``growth`` lists the allocation sites
that grew since ``?mark=1``. Counts and code locations only: no ids, no payloads.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from typing import Any

from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse

_PAGE = os.sysconf("SC_PAGE_SIZE")
_MARK: tracemalloc.Snapshot | None = None


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


async def state(request: HttpRequest) -> JsonResponse:
    """The worker's leak counters (see the module docstring)."""
    if request.GET.get("gc"):
        gc.collect()  # RSS after a collection is comparable between two reads
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    hub_state: dict[str, Any] = {"hubs": 0, "groups": 0, "streams": 0, "tasks": 0}
    try:
        from otel_channels.sse import _hub

        for hub in _hub.hubs():
            hub_state["hubs"] += 1
            hub_state["groups"] += len(hub.subscriptions)
            hub_state["streams"] += sum(len(s.streams) for s in hub.subscriptions.values())
            hub_state["tasks"] += len(getattr(hub, "_tasks", ()))
            hub_state.setdefault("task_names", []).extend(
                sorted(_coro_name(t) for t in getattr(hub, "_tasks", ())))
    except ImportError:  # an older otel_channels without the hub
        pass
    stacks = None
    if request.GET.get("stacks"):  # where each live task waits (diagnosing a leak)
        stacks = [{"name": _coro_name(t),
                   "cancelling": getattr(t, "cancelling", lambda: None)(),  # Python 3.11+
                   "stack": _await_chain(t.get_coro())}
                  for t in tasks]
    growth = None
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1: where memory grew since ?mark=1
        global _MARK
        snapshot = tracemalloc.take_snapshot()
        if request.GET.get("mark") or _MARK is None:
            _MARK = snapshot
        growth = [str(stat)[-160:] for stat in
                  snapshot.compare_to(_MARK, "lineno")[:int(request.GET.get("top", 15))]]
    layer = get_channel_layer()
    # channels-redis keeps a queue per channel a message was read for; one whose consumer
    # is gone is never removed (channels_redis#384): counted here, not ours to clear.
    buffers = getattr(layer, "receive_buffer", None) or {}
    return JsonResponse({
        "tasks": len(tasks),
        "task_names": sorted({_coro_name(t) for t in tasks}),
        "hub": hub_state,
        "receive_buffers": len(buffers),
        "receive_buffered_messages": sum(queue.qsize() for queue in buffers.values()),
        "rss_bytes": _rss(),
        "fds": len(os.listdir("/proc/self/fd")),
        # gc.freeze() recipe (docs/performance.md): objects frozen at start-up, and what
        # the collector's generations still hold.
        "gc_frozen": gc.get_freeze_count(),
        "gc_tracked": len(gc.get_objects()),
        **({"stacks": stacks} if stacks is not None else {}),
        **({"growth": growth} if growth is not None else {}),
    })


def _coro_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", type(coro).__name__)


def _await_chain(coro: Any, limit: int = 40) -> list[str]:
    """``file:line function`` of each coroutine ``coro`` awaits, down to the leaf."""
    chain = []
    for _ in range(limit):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            chain.append(repr(coro)[:200])
            break
        chain.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} "
                     f"{frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            break
    return chain
