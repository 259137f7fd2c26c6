"""``receive`` without the carrier, for user code (split from the layer patches).

``receive`` is wrapped so that what user code sends is what it receives:
``await layer.receive(channel)`` returns the message without the carrier.
Consumers (the instrumentor swaps their ``channel_receive``) and the SSE hub
read through :func:`.patches.raw_receive`, which keeps it: they need the trace context.
A layer whose ``receive`` calls its parent's (also wrapped) ``receive`` strips
only in the outermost call, so raw readers get the carrier through it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..conf import get_config


def traced_receive(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper for ``ChannelLayer.receive(channel)``: the message without the carrier.

    Only user code reaches it (consumers and the SSE hub read through
    :func:`.patches.raw_receive`), or a subclass's ``receive`` calling ``super().receive()``:
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
        owner = defining_class(cls, "receive")
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


def defining_class(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines ``name`` (``None`` for ``object`` or none)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return None if klass is object else klass
    return None

