"""The house drawn from the code: sizes and folder rules (docs/design.md, "The house").

Read from the sources with ``ast``, nothing imported: no module over 450
lines, no class over 250; every private module lives in a role package, and
what a module may import follows from its folder alone (``ROLES``), so a new
module is checked the day it is added. The producer side never imports the
consumer side; the clients import neither Channels nor any server-side module;
no import circle among the modules' top-level imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "otel_channels"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 250

#: Each role package and the packages (and top-level modules) its modules may import.
#: ``conf`` is the typed settings table, ``eventstream`` the event-stream parser; both
#: import no role package but telemetry's names.
ROLES: dict[str, set[str]] = {
    "telemetry": {"telemetry", "conf"},
    "layer": {"layer", "telemetry", "conf"},
    "delivery": {"delivery", "layer", "telemetry", "conf"},
    "websocket": {"websocket", "delivery", "layer", "telemetry", "conf"},
    "sse": {"sse", "delivery", "layer", "telemetry", "conf", "eventstream", "replay"},
    "client": {"client", "telemetry", "eventstream"},
}
#: The public modules at the top (their import paths are the API) and the package's metadata.
TOP_LEVEL = {"apps", "broadcast", "checks", "conf", "consumers", "eventstream",
             "instrumentation", "replay", "testing", "_package"}
#: The producer side, whatever folder it is in: what a broadcast loads.
PRODUCER_SIDE_PACKAGES = {"layer"}
PRODUCER_SIDE_MODULES = {"otel_channels.broadcast"}
CONSUMER_SIDE_PACKAGES = {"delivery", "websocket", "sse"}
#: What the producer side may read of the SSE machinery: the replay log that numbers a broadcast.
PRODUCER_MAY_READ = {"otel_channels.replay"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), at any depth of the file
    (only its top-level statements with ``top_level_only``)."""
    package = module_name(path.parent / "__init__.py").split(".")  # what "." stands for
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
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


def folder_of(name: str) -> str | None:
    """The role package (or top-level module) ``otel_channels.x...`` belongs to."""
    parts = name.split(".")
    if parts[0] != "otel_channels" or len(parts) < 2:
        return None
    return parts[1]


NAMES = {module_name(p): p for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_module_and_class_sizes(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno + 1 <= MAX_CLASS_LINES, node.name


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_every_module_is_public_or_in_a_role_package(path: Path) -> None:
    parts = module_name(path).split(".")
    if len(parts) == 1 or parts[1] == "static":
        return
    assert parts[1] in ROLES or (len(parts) == 2 and parts[1] in TOP_LEVEL), (
        f"{module_name(path)}: put a private module in a role package (docs/design.md)")


@pytest.mark.parametrize("path", [p for p in MODULES if folder_of(module_name(p)) in ROLES],
                         ids=module_name)
def test_a_role_package_imports_what_its_folder_allows(path: Path) -> None:
    role = folder_of(module_name(path))
    assert role is not None
    allowed = ROLES[role]
    wrong = set()
    for imported in imports_of(path):
        folder = folder_of(imported)
        if folder is None or f"otel_channels.{folder}" not in NAMES:
            continue  # a third-party module, or a name of the package root (__version__)
        if folder not in allowed:
            wrong.add(imported)
    assert not wrong, (role, sorted(wrong))


def test_the_rules_cover_every_folder() -> None:
    folders = {p.relative_to(PACKAGE).parts[0] for p in MODULES if p.parent != PACKAGE}
    assert folders <= set(ROLES), folders - set(ROLES)


def test_the_producer_side_never_imports_the_consumer_side() -> None:
    for name, path in NAMES.items():
        if folder_of(name) in PRODUCER_SIDE_PACKAGES or name in PRODUCER_SIDE_MODULES:
            wrong = {imported for imported in imports_of(path)
                     if folder_of(imported) in CONSUMER_SIDE_PACKAGES
                     and not any(imported == m or imported.startswith(f"{m}.")
                                 for m in PRODUCER_MAY_READ)}
            assert not wrong, (name, wrong)


def test_no_import_circle() -> None:
    """Among the top-level imports of every module (lazy imports in functions excepted)."""
    graph = {name: {i for i in imports_of(path, top_level_only=True) if i in NAMES and i != name}
             for name, path in NAMES.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in graph[name]:
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*trail, name, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_clients_import_no_channels_and_no_server_side() -> None:
    """What ``otel_channels.client`` loads, followed through our own modules, never
    imports Channels or Django: a client runs in any asyncio program."""
    todo = [name for name in NAMES if name.startswith("otel_channels.client")]
    loaded: set[str] = set()
    while todo:
        name = todo.pop()
        if name in loaded or name not in NAMES:
            continue
        loaded.add(name)
        for imported in imports_of(NAMES[name]):
            assert imported.split(".")[0] not in {"channels", "django", "asgiref"}, (
                name, imported)
            parts = imported.split(".")
            # "from ..telemetry import carrier": the package, and its submodule if it is one.
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    assert {"otel_channels.client.websocket", "otel_channels.telemetry.carrier"} <= loaded
    server_side = {name for name in loaded if folder_of(name) in
                   CONSUMER_SIDE_PACKAGES | PRODUCER_SIDE_PACKAGES}
    assert not server_side, server_side


def test_imports_are_resolved() -> None:
    """The reader above resolves relative imports the way Python does."""
    found = imports_of(PACKAGE / "sse" / "_hub.py")
    assert "otel_channels.sse._subscription" in found
    assert "otel_channels.delivery.fanout" in found
    assert "otel_channels.delivery" in imports_of(PACKAGE / "websocket" / "mixin.py")


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
