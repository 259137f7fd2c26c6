"""Low-cardinality names: route templates, group templates, redacted queries."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote_plus

#: Query parameter names whose values are replaced by ``REDACTED`` in ``url.query``.
DEFAULT_SENSITIVE_QUERY_PARAMS = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "authorization",
    "key",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "jwt",
    "session",
    "sessionid",
    "code",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
)

#: The scope key where the instrumented URLRouter records the matched route template.
ROUTE_SCOPE_KEY = "otel_channels.route"

_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<([^>]+)>(?:[^()\\]|\\.|\([^()]*\))*\)")
_ID_RUN = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"  # uuid
    r"|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{16,}"  # long hex ids (with at least one digit)
    r"|\d+"  # digit runs
)


def pattern_template(pattern: Any) -> str:
    """``chat/<str:room>/`` -> ``chat/<room>/``; ``^chat/(?P<room>\\w+)/$`` -> ``chat/<room>/``."""
    route = getattr(pattern, "_route", None)
    if isinstance(route, str):
        return _CONVERTER.sub(r"<\1>", route)
    regex = getattr(pattern, "_regex", None)
    if isinstance(regex, str):
        text = _REGEX_GROUP.sub(r"<\1>", regex)
        return text.lstrip("^").rstrip("$").replace("\\", "")
    return str(pattern)


def route_of(scope: dict[str, Any], fallback: str) -> str:
    """The route template recorded by the instrumented URLRouter, else ``fallback``."""
    route = scope.get(ROUTE_SCOPE_KEY)
    return route if isinstance(route, str) else fallback


@functools.lru_cache(maxsize=4096)
def default_group_template(group: str) -> str:
    """``chat_42`` -> ``chat_{id}``; UUIDs, long hex ids and digit runs become ``{id}``."""
    return _ID_RUN.sub("{id}", group)


def group_template(group: str, custom: Any = None) -> str:
    if custom is not None:
        try:
            return str(custom(group))
        except Exception:  # a broken hook must not break delivery
            return default_group_template(group)
    return default_group_template(group)


def redact_query(query: bytes | str, sensitive: Iterable[str]) -> str:
    """The query string with values of sensitive parameters replaced by ``REDACTED``."""
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if not text:
        return ""
    parts = []
    for part in text.split("&"):
        name, sep, _value = part.partition("=")
        if sep and unquote_plus(name).lower() in sensitive:
            parts.append(f"{name}=REDACTED")
        else:
            parts.append(part)
    return "&".join(parts)


def request_route(request: Any, fallback: str) -> str:
    """The URL pattern template (``/events/<room>/``), else ``fallback``."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str) or not route:
        return fallback
    if route.startswith("^") or "(?P<" in route:
        text = pattern_template(SimpleNamespace(_regex=route))
    else:
        text = pattern_template(SimpleNamespace(_route=route))
    return "/" + text.lstrip("/")
