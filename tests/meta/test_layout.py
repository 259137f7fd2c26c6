"""The house drawn from the code: sizes and import rules (docs/design.md, "The house").

Read from the sources with ``ast``, nothing imported: no module over 450
lines, no class over 250; the producer side never imports the consumer side;
the clients import neither Channels nor any server-side module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "otel_channels"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 250

PRODUCER_SIDE = {"otel_channels._producer", "otel_channels.broadcast"}
CONSUMER_SIDE = {"otel_channels._process", "otel_channels._fanout", "otel_channels._websocket",
                 "otel_channels.sse._hub", "otel_channels.sse._subscription",
                 "otel_channels.sse.view", "otel_channels.sse._stream"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), at any depth of the file."""
    package = module_name(path.parent / "__init__.py").split(".")  # what "." stands for
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_module_and_class_sizes(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno + 1 <= MAX_CLASS_LINES, node.name


def test_the_rules_know_every_module_they_name() -> None:
    names = {module_name(p) for p in MODULES}
    assert names >= PRODUCER_SIDE | CONSUMER_SIDE, (PRODUCER_SIDE | CONSUMER_SIDE) - names


def test_the_producer_side_never_imports_the_consumer_side() -> None:
    for path in MODULES:
        if module_name(path) in PRODUCER_SIDE:
            assert not imports_of(path) & CONSUMER_SIDE, module_name(path)


def test_the_clients_import_no_channels_and_no_server_side() -> None:
    """What ``otel_channels.client`` loads, followed through our own modules, never
    imports Channels or Django: a client runs in any asyncio program."""
    paths = {module_name(p): p for p in MODULES}
    todo = [name for name in paths if name.startswith("otel_channels.client")]
    loaded: set[str] = set()
    while todo:
        name = todo.pop()
        if name in loaded or name not in paths:
            continue
        loaded.add(name)
        for imported in imports_of(paths[name]):
            assert imported.split(".")[0] not in {"channels", "django", "asgiref"}, (
                name, imported)
            parts = imported.split(".")
            # "from .. import _carrier": the package, and its submodule if it is one.
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    assert {"otel_channels.client.websocket", "otel_channels._carrier"} <= loaded
    assert not loaded & (CONSUMER_SIDE | PRODUCER_SIDE), loaded & (CONSUMER_SIDE | PRODUCER_SIDE)


def test_imports_are_resolved() -> None:
    """The reader above resolves relative imports the way Python does."""
    found = imports_of(PACKAGE / "sse" / "_hub.py")
    assert "otel_channels.sse._subscription" in found
    assert "otel_channels._fanout" in found


# -- The tests' own house: tests/support holds every shared helper ---------------------------

TESTS = PACKAGE.parent / "tests"
SUPPORT_MODULES = sorted((TESTS / "support").rglob("*.py"))
TEST_MODULES = sorted(TESTS.rglob("test_*.py"))


def dotted_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("path", SUPPORT_MODULES, ids=dotted_name)
def test_support_module_and_class_sizes(path: Path) -> None:
    """tests/support keeps the package's limits: 450 lines a module, 250 a class."""
    test_module_and_class_sizes(path)


def test_support_is_where_the_helpers_are() -> None:
    assert {"servers", "otlp", "redis_layer", "telemetry", "reliability", "sse", "websocket"} <= {
        p.stem if p.stem != "__init__" else p.parent.name for p in SUPPORT_MODULES}
    assert not [p for p in TESTS.glob("*.py")
                if p.name not in {"__init__.py", "conftest.py", "settings.py", "urls.py"}]


@pytest.mark.parametrize("path", [*TEST_MODULES, *SUPPORT_MODULES,
                                  *sorted((PACKAGE.parent / "benchmarks").rglob("*.py"))],
                         ids=dotted_name)
def test_no_module_imports_a_test_module_or_conftest(path: Path) -> None:
    """Helpers live in tests/support: test modules and benchmarks import neither another
    test module nor ``conftest`` (whose import would install the global providers)."""
    for name in imports_of(path):
        parts = name.split(".")
        assert "conftest" not in parts, (path, name)
        if parts[0] == "tests":
            assert not any(part.startswith("test_") for part in parts), (path, name)
