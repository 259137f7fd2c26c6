"""System checks: the ``OTEL_CHANNELS`` setting and channel-layer traps.

=====================  ==================================================
id                     what
=====================  ==================================================
otel_channels.E001     ``OTEL_CHANNELS`` is not a dict
otel_channels.W001     unknown key in ``OTEL_CHANNELS``
otel_channels.E002     wrong type or value for a key
otel_channels.E003     a dotted path (``SPAN_HOOK``, ``GROUP_TEMPLATE``) does not import
otel_channels.W010     a channels-redis host whose ``socket_timeout`` would cut the
                       layer's own blocking reads (redis-py 8 default: 5 s)
otel_channels.W011     a channels-redis host without ``max_connections`` (redis-py
                       8 pools raise ``MaxConnectionsError`` past 100)
=====================  ==================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import SETTING_NAME, SPECS

__all__ = ["check_channel_layers", "check_settings"]

_REDIS_BACKENDS = {
    "channels_redis.core.RedisChannelLayer": 5,  # RedisChannelLayer.brpop_timeout
    "channels_redis.pubsub.RedisPubSubChannelLayer": 0,  # pub/sub reads block too
}
#: Seconds above the layer's blocking read timeout a socket timeout must leave.
_MARGIN = 5
RECOMMENDED_SOCKET_TIMEOUT = 30
RECOMMENDED_MAX_CONNECTIONS = 2000


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Validate ``OTEL_CHANNELS``: a dict, known keys, values of the right type."""
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return [Error(
            f"{SETTING_NAME} must be a dict, not {type(value).__name__}.",
            hint=f"Set {SETTING_NAME} = {{...}} with keys from the README's settings table.",
            id="otel_channels.E001",
        )]
    messages: list[CheckMessage] = []
    for key, item in value.items():
        spec = SPECS.get(key)
        if spec is None:
            messages.append(Warning(
                f"{SETTING_NAME} has an unknown key {key!r}; it is ignored.",
                hint="Known keys: " + ", ".join(sorted(SPECS)) + ".",
                id="otel_channels.W001",
            ))
        elif not spec.valid(item):
            messages.append(Error(
                f"{SETTING_NAME}[{key!r}] is {item!r}; expected {spec.expected}.",
                hint=f"Fix the value or remove the key to use the default ({spec.default!r}).",
                id="otel_channels.E002",
            ))
        elif key in ("SPAN_HOOK", "GROUP_TEMPLATE") and isinstance(item, str):
            from django.utils.module_loading import import_string

            try:
                import_string(item)
            except ImportError as exc:
                messages.append(Error(
                    f"{SETTING_NAME}[{key!r}] = {item!r} cannot be imported: {exc}.",
                    hint="Give the dotted path of a callable, or the callable itself.",
                    id="otel_channels.E003",
                ))
    return messages


def _redis_default_socket_timeout() -> float | None:
    try:
        from redis import _defaults
    except ImportError:  # redis-py < 8: no socket timeout unless given
        return None
    value = getattr(_defaults, "DEFAULT_SOCKET_TIMEOUT", None)
    return float(value) if isinstance(value, (int, float)) else None


def _host_options(host: Any) -> dict[str, Any]:
    """The pool options channels-redis would use for one ``hosts`` entry."""
    if isinstance(host, dict):
        options = dict(host)
        address = options.get("address")
    elif isinstance(host, (list, tuple)):
        return {}
    else:
        options, address = {}, host
    if isinstance(address, str):
        for name, values in parse_qs(urlsplit(address).query).items():
            options.setdefault(name, values[-1])
    return options


def check_channel_layers(**kwargs: Any) -> list[CheckMessage]:
    """Spot channels-redis configurations that break under redis-py 8."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not isinstance(layers, dict):
        return []
    default_timeout = _redis_default_socket_timeout()
    messages: list[CheckMessage] = []
    for alias, layer in layers.items():
        if not isinstance(layer, dict) or layer.get("BACKEND") not in _REDIS_BACKENDS:
            continue
        blocking = _REDIS_BACKENDS[layer["BACKEND"]]
        hosts = (layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
        if isinstance(hosts, (str, bytes)):
            continue  # channels-redis itself refuses this with a clear error
        for index, host in enumerate(hosts):
            options = _host_options(host)
            timeout: Any = options.get("socket_timeout", default_timeout)
            try:
                timeout = None if timeout in (None, "None", "") else float(timeout)
            except (TypeError, ValueError):
                timeout = None
            if timeout is not None and timeout <= blocking + _MARGIN:
                messages.append(Warning(
                    f"CHANNEL_LAYERS[{alias!r}] host {index}: redis-py's socket_timeout is "
                    f"{timeout:g} s, not above the layer's {blocking} s blocking read plus "
                    f"{_MARGIN} s; idle consumers die with 'Timeout reading from' and clients "
                    "see close 1011 (channels_redis#422, redis-py 8 default of 5 s).",
                    hint=(
                        "Give the host as a dict with a larger timeout, e.g. "
                        f"{{'address': 'redis://127.0.0.1:6379/0', "
                        f"'socket_timeout': {RECOMMENDED_SOCKET_TIMEOUT}}}."
                    ),
                    id="otel_channels.W010",
                ))
            if "max_connections" not in options and default_timeout is not None:
                messages.append(Warning(
                    f"CHANNEL_LAYERS[{alias!r}] host {index}: no max_connections; redis-py 8 "
                    "pools hold 100 connections per process and raise MaxConnectionsError "
                    "past that, so a reconnect storm (one group_add per WebSocket) fails.",
                    hint=(
                        "Add 'max_connections' to the host dict, above the connections one "
                        f"worker may open at once, e.g. 'max_connections': "
                        f"{RECOMMENDED_MAX_CONNECTIONS} (and keep Redis's maxclients above "
                        "workers x max_connections)."
                    ),
                    id="otel_channels.W011",
                ))
    return messages
