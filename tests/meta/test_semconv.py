"""Every span, attribute and metric name lives in ``otel_channels._semconv``.

A name spelled twice drifts (the SSE ``connect`` span once lacked
``client.port``; the client's ``receive`` said ``messaging.operation.type =
receive`` where the server's says ``process``), so no other module may spell
one: this scans the package's source for string literals shaped like an
attribute or metric name, and for span names built from a literal verb.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from opentelemetry.semconv._incubating.attributes import messaging_attributes

from otel_channels import _semconv as sc

PACKAGE = Path(__file__).resolve().parents[2] / "otel_channels"
NAMESPACES = ("messaging", "channels", "websocket", "sse", "http", "url", "client", "server",
              "network", "user_agent", "error", "process", "exception")
NAME = re.compile(rf"(?:{'|'.join(NAMESPACES)})\.[a-z_]+(?:\.[a-z_]+)*")
#: ASGI message types: protocol, not telemetry names.
ASGI_TYPES = {
    "websocket.connect", "websocket.accept", "websocket.receive", "websocket.send",
    "websocket.close", "websocket.disconnect", "http.request", "http.disconnect",
    "http.response.start", "http.response.body",
}
SPAN_VERBS = {sc.SPAN_CONNECT, sc.SPAN_RECEIVE, sc.SPAN_SEND, sc.SPAN_DISCONNECT,
              sc.SPAN_GROUP_SEND, sc.SPAN_PROCESS, sc.SPAN_DELIVER}


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "_semconv.py")


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_spells_a_telemetry_name(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = docstring_nodes(tree)
    spelled = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings or node.value in ASGI_TYPES:
                continue
            if NAME.fullmatch(node.value):
                spelled.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if (isinstance(first, ast.Constant) and isinstance(first.value, str)
                    and first.value.split(" ")[0] in SPAN_VERBS and " " in first.value):
                spelled.append(f"line {node.lineno}: span name f-string {first.value!r}")
    assert not spelled, "\n".join(spelled)


def test_messaging_names_come_from_the_conventions() -> None:
    for name in ("MESSAGING_SYSTEM", "MESSAGING_OPERATION_NAME", "MESSAGING_OPERATION_TYPE",
                 "MESSAGING_DESTINATION_NAME", "MESSAGING_DESTINATION_TEMPLATE",
                 "MESSAGING_BATCH_MESSAGE_COUNT", "MESSAGING_MESSAGE_BODY_SIZE"):
        assert getattr(sc, name) == getattr(messaging_attributes, name)
