"""``STRICT_PAYLOADS``: refuse, on every layer, what channels-redis cannot carry.

channels-redis packs messages with msgpack: ``datetime``, ``Decimal``,
``UUID``, ``set`` and the like raise deep inside the layer (or, for
``group_send``, are logged and lost), and non-string dict keys fail on the
receiving side (``strict_map_key``). The in-memory layer carries them all, so
tests pass and production breaks. With the setting on, ``send`` /
``group_send`` / ``broadcast`` raise a ``TypeError`` naming the offending key.
"""

from __future__ import annotations

from typing import Any

_SCALARS = (str, bytes, bool, int, float, type(None))
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


def _problem(value: Any, path: str, depth: int) -> str | None:
    if depth > 64:
        return f"{path}: nested deeper than 64 levels"
    if isinstance(value, _SCALARS):
        if isinstance(value, int) and not isinstance(value, bool) and not (
            _INT_MIN <= value <= _INT_MAX
        ):
            return f"{path}: int out of msgpack's 64-bit range"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}: dict key {key!r} is {type(key).__name__}, not str"
            found = _problem(item, f"{path}[{key!r}]", depth + 1)
            if found:
                return found
        return None
    return f"{path}: {type(value).__name__} is not msgpack-serializable"


def check_payload(message: dict[str, Any], carrier_key: str | None = None) -> None:
    """Raise ``TypeError`` naming the first key the Redis layer cannot carry."""
    for key, value in message.items():
        if not isinstance(key, str):
            raise TypeError(
                f"channel-layer message key {key!r} is {type(key).__name__}; "
                "the Redis layer needs str keys"
            )
        if key == carrier_key:
            continue
        found = _problem(value, f"message[{key!r}]", 0)
        if found:
            raise TypeError(
                f"{found} (channels-redis cannot carry it; convert it before sending, "
                "e.g. str(uuid), value.isoformat(), list(a_set))"
            )
