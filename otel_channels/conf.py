"""The ``OTEL_CHANNELS`` setting: one dict merged over documented defaults.

Read on every frame and every delivery, so the merged result is cached and
the cache is cleared when Django's ``setting_changed`` signal fires (tests
using ``override_settings``). Works without configured Django settings (the
traced consumers may be used outside ``INSTALLED_APPS``): defaults apply.

Validation lives in :mod:`otel_channels.checks`; the runtime never raises on
a bad value it can ignore, it falls back to the default instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from wrapt import register_post_import_hook

from .telemetry.names import DEFAULT_SENSITIVE_QUERY_PARAMS

__all__ = [
    "DEFAULTS", "DEFAULT_SENSITIVE_QUERY_PARAMS", "SETTING_NAME", "SPECS", "Config",
    "SampleRates", "Spec", "get_config", "on_change", "reload",
]

SETTING_NAME = "OTEL_CHANNELS"

def _is_rate(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0


def _is_positive_int_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)


def _is_positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _is_count_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, (list, tuple, set, frozenset)) and all(isinstance(x, str) for x in v)


def _is_callable_or_path(v: Any) -> bool:
    return v is None or callable(v) or (isinstance(v, str) and "." in v)


def _one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


class SampleRates(NamedTuple):
    """``SAMPLE_RATES`` as the runtime reads it: template -> rate, for routes and for groups."""

    routes: Mapping[str, float]
    groups: Mapping[str, float]


#: The sub-keys of ``SAMPLE_RATES`` and what their keys are.
SAMPLE_RATE_KINDS = {"routes": "route template (http.route, e.g. '/ws/chat/<room>/')",
                     "groups": "group template (messaging.destination.template, e.g. 'chat_{id}')"}


def sample_rate_problems(value: Any) -> list[str]:
    """What is wrong with a ``SAMPLE_RATES`` value, one sentence each (empty: valid)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"must be a dict like {{'routes': {{'/ws/cursors/<room>/': 0.0}}, "
                f"'groups': {{'cursors_{{id}}': 0.0}}}}, not {type(value).__name__}"]
    problems = []
    for kind, rates in value.items():
        if kind not in SAMPLE_RATE_KINDS:
            problems.append(f"has an unknown sub-key {kind!r} (only 'routes' and 'groups')")
        elif not isinstance(rates, dict):
            problems.append(f"[{kind!r}] must be a dict of {SAMPLE_RATE_KINDS[kind]} -> rate, "
                            f"not {type(rates).__name__}")
        else:
            for template, rate in rates.items():
                if not isinstance(template, str) or not template:
                    problems.append(f"[{kind!r}] has the key {template!r}; a "
                                    f"{SAMPLE_RATE_KINDS[kind]} is a non-empty str")
                elif not _is_rate(rate):
                    problems.append(f"[{kind!r}][{template!r}] is {rate!r}; a rate is a "
                                    "number from 0.0 to 1.0")
    return problems


def sample_rates(value: Any) -> SampleRates:
    """The runtime form of a valid ``SAMPLE_RATES`` value (None: no rate of its own anywhere)."""
    value = value or {}
    return SampleRates(
        routes={k: float(v) for k, v in (value.get("routes") or {}).items()},
        groups={k: float(v) for k, v in (value.get("groups") or {}).items()},
    )


@dataclass(frozen=True)
class Spec:
    """One setting: its default, a validator, and the words the check prints."""

    default: Any
    valid: Callable[[Any], bool]
    expected: str


def _setting(default: Any, valid: Callable[[Any], bool], expected: str) -> Any:
    return field(default=default, metadata={"spec": Spec(default, valid, expected)})


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


@dataclass(frozen=True)
class Config:
    """The merged ``OTEL_CHANNELS`` setting, typed: the one table of keys, defaults and checks.

    Each field is a key of the setting; its metadata holds the validator and the
    words the system check prints (:data:`SPECS`). ``SPAN_HOOK`` and
    ``GROUP_TEMPLATE`` hold the resolved callables, the two lists frozensets,
    ``SAMPLE_RATES`` a :class:`SampleRates`.
    """

    # --- keys of the design contract ---
    AUTO_INSTRUMENT: bool = _setting(True, _is_bool, "a bool")
    CARRIER_KEY: str = _setting("_otel", lambda v: isinstance(v, str) and v != "type" and bool(v),
                                "a non-empty str other than 'type'")
    MESSAGE_SAMPLE_RATE: float = _setting(1.0, _is_rate, "a number from 0.0 to 1.0")
    FRAME_TRACE_MODE: str = _setting("link", _one_of("link", "child"), "'link' or 'child'")
    GROUP_MESSAGE_PARENT: str = _setting("producer", _one_of("producer", "link"),
                                         "'producer' or 'link'")
    CLIENT_CONTEXT: str = _setting("parent", _one_of("parent", "link", "ignore", "authenticated"),
                                   "'parent', 'link', 'ignore' or 'authenticated'")
    QUERY_TRACEPARENT: bool = _setting(False, _is_bool, "a bool")
    JSON_TRACEPARENT_KEY: str | None = _setting(
        "traceparent", lambda v: v is None or (isinstance(v, str) and v != ""),
        "a non-empty str or None (the key whose value in a JSON frame is a W3C traceparent "
        "string or a carrier object of strings)")
    MAX_FRAME_SIZE: int | None = _setting(None, _is_positive_int_or_none,
                                          "a positive int (bytes) or None")
    SSE_HEARTBEAT: float = _setting(15, _is_positive_number, "a positive number of seconds")
    MAX_PROCESS_SPANS_PER_BROADCAST: int | None = _setting(
        10, _is_count_or_none, "an int >= 0, or None (a span per delivery)")
    SLOW_PROCESS_THRESHOLD: float | None = _setting(
        0.5, lambda v: v is None or _is_positive_number(v), "a positive number of seconds, or None")
    # --- keys of our own (documented in docs/settings.md) ---
    MAX_FRAME_RATE: float | None = _setting(None, lambda v: v is None or _is_positive_number(v),
                                            "a positive number of frames per second, or None")
    SEND_SPANS: bool = _setting(False, _is_bool, "a bool")
    SEND_EVENTS: bool = _setting(False, _is_bool, "a bool")
    MAX_SPANS_PER_CONNECTION: int | None = _setting(1000, _is_positive_int_or_none,
                                                    "a positive int or None")
    IGNORED_FRAMES: frozenset[str] = _setting((), _is_str_list,
                                              "a list of str (exact frame texts)")
    SPAN_HOOK: Callable[[Any, Any, Any], Any] | None = _setting(
        None, _is_callable_or_path, "a callable(span, scope, message) or its dotted path, or None")
    GROUP_TEMPLATE: Callable[[str], str] | None = _setting(
        None, _is_callable_or_path, "a callable(group_name) -> str or its dotted path, or None")
    SENSITIVE_QUERY_PARAMS: frozenset[str] = _setting(DEFAULT_SENSITIVE_QUERY_PARAMS, _is_str_list,
                                                      "a list of str")
    BAD_FRAME_POLICY: str = _setting("raise", _one_of("raise", "close", "error_frame"),
                                     "'raise', 'close' or 'error_frame'")
    UNKNOWN_MESSAGE_POLICY: str = _setting("raise", _one_of("raise", "drop"), "'raise' or 'drop'")
    STRICT_PAYLOADS: bool = _setting(False, _is_bool, "a bool")
    SSE_QUEUE_SIZE: int | None = _setting(256, _is_positive_int_or_none,
                                          "a positive int, or None (unbounded)")
    SSE_SLOW_CLIENT_POLICY: str = _setting("reset", _one_of("reset", "close"), "'reset' or 'close'")
    SSE_REPLAY_MAXLEN: int = _setting(
        1000, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "an int >= 0 (0 disables replay)")
    SSE_REPLAY_TTL: float = _setting(3600, _is_positive_number, "a positive number of seconds")
    SSE_RETRY: int | None = _setting(None, _is_positive_int_or_none,
                                     "a positive int (milliseconds) or None")
    SSE_TRACEPARENT_FIELD: bool = _setting(False, _is_bool, "a bool")
    ON_SUBSCRIPTION_LOST: str = _setting("count", _one_of("count", "close"),
                                         "'count' or 'close'")
    JSON_CONTEXT_TO_CLIENT: bool = _setting(False, _is_bool, "a bool")
    # Validated by sample_rate_problems (the check prints each problem); None or {}: no
    # route or group has a rate of its own. get_config gives the runtime SampleRates.
    SAMPLE_RATES: SampleRates = _setting(
        None, lambda v: not sample_rate_problems(v),
        "None or a dict {'routes': {route template: rate}, 'groups': {group template: rate}}")


#: The settings table: key -> Spec (default, validator, expected), in field order.
SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(Config)}
DEFAULTS: dict[str, Any] = {key: spec.default for key, spec in SPECS.items()}


def _user_settings() -> dict[str, Any]:
    try:
        from django.conf import settings

        value = getattr(settings, SETTING_NAME, None)
    except Exception:  # settings not configured: the consumers still work
        return {}
    return value if isinstance(value, dict) else {}


#: Keys zero-code users (``opentelemetry-instrument``, no settings edit) can set in the
#: environment as ``OTEL_PYTHON_CHANNELS_<KEY>``; the Django setting wins over them.
ENVIRONMENT_PREFIX = "OTEL_PYTHON_CHANNELS_"
ENVIRONMENT_KEYS = ("MESSAGE_SAMPLE_RATE", "MAX_PROCESS_SPANS_PER_BROADCAST",
                    "SLOW_PROCESS_THRESHOLD")


def _parse_environment(text: str) -> Any:
    """``"0.1"`` -> 0.1, ``"10"`` -> 10, ``"none"`` / ``""`` -> None; else the text itself."""
    text = text.strip()
    if text.lower() in ("none", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def environment_settings() -> dict[str, tuple[str, Any]]:
    """``{key: (raw text, parsed value)}`` of the ``OTEL_PYTHON_CHANNELS_*`` variables set."""
    found = {}
    for key in ENVIRONMENT_KEYS:
        raw = os.environ.get(ENVIRONMENT_PREFIX + key)
        if raw is not None:
            found[key] = (raw, _parse_environment(raw))
    return found


@functools.cache
def get_config() -> Config:
    """The merged settings; invalid values fall back to their default.

    Precedence: ``OTEL_CHANNELS`` in Django settings, then ``OTEL_PYTHON_CHANNELS_*``
    environment variables, then the defaults.
    """
    values = dict(DEFAULTS)
    for key, (_raw, value) in environment_settings().items():
        if SPECS[key].valid(value):
            values[key] = value
    for key, value in _user_settings().items():
        spec = SPECS.get(key)
        if spec is not None and spec.valid(value):
            values[key] = value
    values["SPAN_HOOK"] = _resolve(values["SPAN_HOOK"])
    values["GROUP_TEMPLATE"] = _resolve(values["GROUP_TEMPLATE"])
    values["IGNORED_FRAMES"] = frozenset(values["IGNORED_FRAMES"])
    values["SAMPLE_RATES"] = sample_rates(values["SAMPLE_RATES"])
    values["SENSITIVE_QUERY_PARAMS"] = frozenset(
        name.lower() for name in values["SENSITIVE_QUERY_PARAMS"]
    )
    return Config(**values)


def _resolve(value: Any) -> Any:
    if isinstance(value, str):
        from django.utils.module_loading import import_string

        try:
            return import_string(value)
        except ImportError:
            return None  # reported by check otel_channels.E002
    return value


_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever ``OTEL_CHANNELS`` changes (state prepared from the config)."""
    _listeners.append(listener)


def reload(*, setting: str | None = None, **kwargs: Any) -> None:
    """``setting_changed`` receiver: forget the cached config, and what was built from it."""
    if setting is None or setting == SETTING_NAME:
        get_config.cache_clear()
        for listener in _listeners:
            listener()


def _connect_signal(module: Any) -> None:
    module.setting_changed.connect(reload, dispatch_uid="otel_channels.conf.reload")


# ``setting_changed`` lives in django.test.signals, whose import loads the test client,
# unittest, wsgiref and http.server: about 5,900 objects every full collection of a
# worker would walk (benchmarks/README.md, "Resident heap"). Only code that changes
# settings at run time (override_settings, i.e. tests) sends it, and that code has
# imported django.test: connect when it is imported, now or later.
register_post_import_hook(_connect_signal, "django.test.signals")
