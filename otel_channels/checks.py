"""System checks: the ``OTEL_CHANNELS`` setting and channel-layer traps.

=====================  ==================================================
id                     what
=====================  ==================================================
otel_channels.E001     ``OTEL_CHANNELS`` is not a dict
otel_channels.W001     unknown key in ``OTEL_CHANNELS``
otel_channels.E002     wrong type or value for a key
otel_channels.E003     a dotted path (``SPAN_HOOK``, ``GROUP_TEMPLATE``) does not import
otel_channels.W002     an ``OTEL_PYTHON_CHANNELS_*`` variable with a value the key refuses
otel_channels.W003     ``JSON_CONTEXT_TO_CLIENT`` on with ``JSON_TRACEPARENT_KEY`` None: no
                       key to write the context under, nothing is added
otel_channels.W004     a ``SAMPLE_RATES`` template no span can have (``chat_42`` where the
                       default group template gives ``chat_{id}``; ``<int:pk>`` in a route)
otel_channels.W010     a channels-redis or channels-valkey host whose ``socket_timeout``
                       would cut the layer's own blocking reads (redis-py 8 and
                       valkey-py 6 default: 5 s)
otel_channels.W011     a channels-redis host without ``max_connections`` (redis-py
                       8 pools raise ``MaxConnectionsError`` past 100)
otel_channels.W012     a Sentinel host entry that will not follow failovers as meant:
                       sentinel lookups without a timeout, or an ``address`` that
                       makes channels-redis ignore ``master_name``
=====================  ==================================================

Sentinel host entries (``{"master_name": ..., "sentinels": [...], ...}``, which
channels-redis hands to redis-py's ``SentinelConnectionPool``): the entry's own
keys (``socket_timeout``, ``max_connections``) configure the connections to the
*master*, so W010 and W011 read them there; ``sentinel_kwargs`` configures only
the short lookups sent to the sentinels, so a ``socket_timeout`` put there does
not protect the master connections (W010 says so).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import (
    ENVIRONMENT_PREFIX,
    SETTING_NAME,
    SPECS,
    environment_settings,
    sample_rate_problems,
)
from .telemetry.names import default_group_template, pattern_template

__all__ = ["check_channel_layers", "check_settings"]

#: Backends on a redis-py style client: (the client library, the layer's blocking read).
_REDIS_BACKENDS = {
    "channels_redis.core.RedisChannelLayer": ("redis", 5),  # RedisChannelLayer.brpop_timeout
    "channels_redis.pubsub.RedisPubSubChannelLayer": ("redis", 0),  # pub/sub reads block too
    # channels-valkey is channels-redis on valkey-py, which kept redis-py 8's 5 s default.
    "channels_valkey.core.ValkeyChannelLayer": ("valkey", 5),
    "channels_valkey.pubsub.ValkeyPubSubChannelLayer": ("valkey", 0),
}
#: Seconds above the layer's blocking read timeout a socket timeout must leave.
_MARGIN = 5
RECOMMENDED_SOCKET_TIMEOUT = 30
RECOMMENDED_MAX_CONNECTIONS = 2000
RECOMMENDED_SENTINEL_TIMEOUT = 2


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Validate ``OTEL_CHANNELS``: a dict, known keys, values of the right type."""
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return [Error(
            f"{SETTING_NAME} must be a dict, not {type(value).__name__}.",
            hint=f"Set {SETTING_NAME} = {{...}} with keys from docs/settings.md.",
            id="otel_channels.E001",
        )]
    messages: list[CheckMessage] = []
    for key, (raw, parsed) in environment_settings().items():
        if not SPECS[key].valid(parsed):
            messages.append(Warning(
                f"{ENVIRONMENT_PREFIX}{key}={raw!r} is ignored; expected {SPECS[key].expected}.",
                hint=f"Fix or unset the variable (the default is {SPECS[key].default!r}).",
                id="otel_channels.W002",
            ))
    for key, item in value.items():
        spec = SPECS.get(key)
        if spec is None:
            messages.append(Warning(
                f"{SETTING_NAME} has an unknown key {key!r}; it is ignored.",
                hint="Known keys: " + ", ".join(sorted(SPECS)) + ".",
                id="otel_channels.W001",
            ))
        elif key == "SAMPLE_RATES":
            messages.extend(_check_sample_rates(item))
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
    if value.get("JSON_CONTEXT_TO_CLIENT") is True and "JSON_TRACEPARENT_KEY" in value and (
            value["JSON_TRACEPARENT_KEY"] is None):
        messages.append(Warning(
            f"{SETTING_NAME}['JSON_CONTEXT_TO_CLIENT'] is on but JSON_TRACEPARENT_KEY is None: "
            "frames sent to clients get no trace context.",
            hint="Set JSON_TRACEPARENT_KEY to the key your clients read (\"traceparent\" for a "
                 "top-level W3C traceparent, any other name for a carrier object).",
            id="otel_channels.W003",
        ))
    return messages


_SAMPLE_RATES_HINT = (
    "Map route templates (the http.route of the spans, e.g. '/ws/chat/<room>/') and group "
    "templates (their messaging.destination.template, e.g. 'chat_{id}') to a number from "
    "0.0 (not traced) to 1.0; see docs/settings.md."
)


def _check_sample_rates(value: Any) -> list[CheckMessage]:
    """``SAMPLE_RATES``: one error per problem, and templates that can never match."""
    problems = sample_rate_problems(value)
    if problems:
        return [Error(f"{SETTING_NAME}['SAMPLE_RATES']{'' if p.startswith('[') else ' '}{p}.",
                      hint=_SAMPLE_RATES_HINT, id="otel_channels.E002") for p in problems]
    messages: list[CheckMessage] = []
    custom_groups = (getattr(settings, SETTING_NAME, {}) or {}).get("GROUP_TEMPLATE")
    for template in (value or {}).get("groups", {}):
        expected = default_group_template(template)
        if custom_groups is None and expected != template:
            messages.append(Warning(
                f"{SETTING_NAME}['SAMPLE_RATES']['groups'] has {template!r}, which no group "
                f"template is: the default GROUP_TEMPLATE turns ids into {{id}}.",
                hint=f"Write the template, {expected!r}.", id="otel_channels.W004"))
    for template in (value or {}).get("routes", {}):
        expected = pattern_template(_Route(template))
        if expected != template:
            messages.append(Warning(
                f"{SETTING_NAME}['SAMPLE_RATES']['routes'] has {template!r}, which no route "
                "template is: routes are recorded without converters or regex syntax.",
                hint=f"Write the template, {expected!r}.", id="otel_channels.W004"))
    return messages


class _Route:
    """A path() pattern stand-in, so a route key is normalized the way the router's are."""

    def __init__(self, route: str) -> None:
        self._route = route


def _default_socket_timeout(client: str) -> float | None:
    """The socket timeout a client library uses when the host does not give one."""
    if client == "valkey":
        try:
            import inspect

            from valkey.asyncio.connection import AbstractConnection
        except ImportError:
            return None
        value = inspect.signature(AbstractConnection.__init__).parameters["socket_timeout"].default
        return float(value) if isinstance(value, (int, float)) else None
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
    """Spot channels-redis / channels-valkey configurations that break under their clients."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if not isinstance(layers, dict):
        return []
    messages: list[CheckMessage] = []
    for alias, layer in layers.items():
        if not isinstance(layer, dict) or layer.get("BACKEND") not in _REDIS_BACKENDS:
            continue
        client, blocking = _REDIS_BACKENDS[layer["BACKEND"]]
        default_timeout = _default_socket_timeout(client)
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
            sentinel = isinstance(host, dict) and host.get("master_name") is not None
            if sentinel:
                messages += _sentinel_messages(alias, index, host, client, default_timeout)
            if timeout is not None and timeout <= blocking + _MARGIN:
                messages.append(Warning(
                    f"CHANNEL_LAYERS[{alias!r}] host {index}: {client}-py's socket_timeout is "
                    f"{timeout:g} s, not above the layer's {blocking} s blocking read plus "
                    f"{_MARGIN} s; idle consumers die with 'Timeout reading from' and clients "
                    f"see close 1011 (channels_redis#422; {client}-py's default is 5 s).",
                    hint=_timeout_hint(host, sentinel),
                    id="otel_channels.W010",
                ))
            # valkey-py's pools have no cap; redis-py 8's refuse a 101st connection.
            if client == "redis" and "max_connections" not in options and (
                    default_timeout is not None):
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


def _timeout_hint(host: Any, sentinel: bool) -> str:
    if not sentinel:
        return ("Give the host as a dict with a larger timeout, e.g. "
                f"{{'address': 'redis://127.0.0.1:6379/0', "
                f"'socket_timeout': {RECOMMENDED_SOCKET_TIMEOUT}}}.")
    misplaced = "socket_timeout" in (host.get("sentinel_kwargs") or {})
    return (("sentinel_kwargs['socket_timeout'] applies to the sentinel lookups only. "
             if misplaced else "")
            + f"Put 'socket_timeout': {RECOMMENDED_SOCKET_TIMEOUT} at the top level of the "
            "Sentinel entry (the master's connections), e.g. {'master_name': 'mymaster', "
            "'sentinels': [('10.0.0.1', 26379), ...], "
            f"'socket_timeout': {RECOMMENDED_SOCKET_TIMEOUT}, "
            f"'max_connections': {RECOMMENDED_MAX_CONNECTIONS}, "
            f"'sentinel_kwargs': {{'socket_timeout': {RECOMMENDED_SENTINEL_TIMEOUT}}}}}.")


def _sentinel_messages(alias: str, index: int, host: dict[str, Any], client: str,
                       default_timeout: float | None) -> list[CheckMessage]:
    """W012: a Sentinel entry that channels-redis ignores, or whose lookups can hang."""
    where = f"CHANNEL_LAYERS[{alias!r}] host {index} (Sentinel master {host['master_name']!r})"
    if "address" in host:  # channels_redis.utils.create_pool reads "address" first
        return [Warning(
            f"{where}: has an 'address' too, so channels-redis connects to that address "
            "and never asks the sentinels: a failover is not followed.",
            hint="Remove 'address' from the Sentinel entry.",
            id="otel_channels.W012",
        )]
    kwargs = host.get("sentinel_kwargs")
    if not isinstance(kwargs, dict):
        kwargs = {}
    timeout = kwargs.get("socket_timeout", default_timeout)
    if timeout is None:
        return [Warning(
            f"{where}: the sentinel lookups have no socket_timeout ({client}-py's default "
            "here is none), so a sentinel that stops answering during a failover hangs "
            "every reconnect of the layer.",
            hint=("Add 'sentinel_kwargs': {'socket_timeout': "
                  f"{RECOMMENDED_SENTINEL_TIMEOUT}}} to the Sentinel entry (seconds per "
                  "lookup; the master's own socket_timeout stays at the top level)."),
            id="otel_channels.W012",
        )]
    return []
