"""The documentation against the code, and the Markdown files against broken rendering.

* ``docs/settings.md``: its ``| key | default | meaning |`` tables list exactly
  the keys of :data:`otel_channels.conf.SPECS`, each default a Python literal in
  backticks equal to the code's (or a name defined in a ``python`` code block
  of the page, such as ``DEFAULT_SENSITIVE_QUERY_PARAMS``).
* ``docs/metrics.md``: its ``| name | instrument | unit | ... |`` table lists
  exactly the server's ``M_*`` metric names of :mod:`otel_channels.telemetry.semconv`, with
  the instrument kind and unit :class:`otel_channels.telemetry.instruments.Telemetry` creates;
  ``docs/clients.md`` lists exactly the clients' ``M_CLIENT_*`` names.
* Every Markdown file: no line starting with ``|`` outside a rendered table
  (a table that renders as raw pipes), every table row with the header's
  column count, every relative link and image pointing at a file that exists.

Plain functions: no Django database, no network.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from otel_channels import conf
from otel_channels.telemetry import instruments as _telemetry
from otel_channels.telemetry import semconv as _semconv

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SETTINGS_PAGE = DOCS / "settings.md"
METRICS_PAGE = DOCS / "metrics.md"
CLIENTS_PAGE = DOCS / "clients.md"


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
    files += sorted(DOCS.glob("*.md"))
    return [path for path in files if path.exists()]


def parse(text: str) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(text)


# --- tables -----------------------------------------------------------------------------


def split_row(line: str) -> list[str]:
    """The cells of one table source line, split as GFM does (only ``\\|`` escapes a pipe)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]


def tables(text: str) -> list[tuple[int, list[list[str]]]]:
    """``(first line number, rows)`` of every rendered table; rows exclude the separator."""
    lines = text.splitlines()
    found = []
    for token in parse(text):
        if token.type == "table_open" and token.map:
            start, end = token.map
            rows = [split_row(lines[i]) for i in range(start, end)]
            found.append((start + 1, [rows[0], *rows[2:]]))
    return found


def find_tables(path: Path, header: list[str]) -> list[list[list[str]]]:
    """The body rows of every table in ``path`` whose header starts with ``header``."""
    bodies = [
        rows[1:] for _, rows in tables(path.read_text(encoding="utf-8"))
        if [cell.lower() for cell in rows[0][: len(header)]] == header
    ]
    assert bodies, f"{path.relative_to(ROOT)}: no table with header {header}"
    return bodies


def code(cell: str) -> str:
    """The text of a cell that is exactly one code span."""
    match = re.fullmatch(r"`([^`]+)`", cell.strip())
    assert match, f"expected one `code` span, got {cell!r}"
    return match.group(1)


def leading_code(cell: str) -> str:
    """The text of the code span a cell starts with."""
    match = re.match(r"\s*`([^`]+)`", cell)
    assert match, f"expected a cell starting with a `code` span, got {cell!r}"
    return match.group(1)


# --- (a) settings -----------------------------------------------------------------------


def named_values(text: str) -> dict[str, Any]:
    """``NAME = <literal>`` assignments in the page's ``python`` code blocks."""
    values: dict[str, Any] = {}
    for token in parse(text):
        if token.type != "fence" or token.info.strip() != "python":
            continue
        for node in ast.parse(token.content).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue  # not a literal (e.g. an example using imports)
    return values


def documented_settings() -> dict[str, str]:
    rows: dict[str, str] = {}
    for body in find_tables(SETTINGS_PAGE, ["key", "default", "meaning"]):
        for row in body:
            key = code(row[0])
            assert key not in rows, f"{key} is documented twice"
            rows[key] = leading_code(row[1])
    return rows


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type, element by element (``1 == True == 1.0`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_settings_table_lists_every_key() -> None:
    documented = documented_settings()
    missing = sorted(set(conf.SPECS) - set(documented))
    unknown = sorted(set(documented) - set(conf.SPECS))
    assert not missing and not unknown, f"undocumented: {missing}; not settings: {unknown}"


def test_settings_table_defaults_match_the_code() -> None:
    names = named_values(SETTINGS_PAGE.read_text(encoding="utf-8"))
    wrong = []
    for key, text in documented_settings().items():
        if key not in conf.SPECS:
            continue  # reported by the test above
        if text.isidentifier() and text not in ("True", "False", "None"):
            assert text in names, f"{key}: default {text} is not defined in a python block"
            value = names[text]
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                wrong.append(f"{key}: {text!r} is not a Python literal")
                continue
        if not same(value, conf.SPECS[key].default):
            wrong.append(f"{key}: documented {value!r}, code {conf.SPECS[key].default!r}")
    assert not wrong, "\n".join(wrong)


# --- (b) metrics ------------------------------------------------------------------------

KINDS = {
    "create_counter": "Counter",
    "create_up_down_counter": "UpDownCounter",
    "create_histogram": "Histogram",
    "create_gauge": "Gauge",
    "create_observable_counter": "Asynchronous Counter",
    "create_observable_up_down_counter": "Asynchronous UpDownCounter",
    "create_observable_gauge": "Asynchronous Gauge",
}


class _RecordingMeter:
    """A meter that remembers the kind and unit of every instrument created on it."""

    def __init__(self) -> None:
        self.instruments: dict[str, tuple[str, str]] = {}

    def __getattr__(self, method: str) -> Any:
        if method not in KINDS:
            raise AttributeError(method)

        def create(name: str, *args: Any, unit: str = "", **kwargs: Any) -> Any:
            self.instruments[name] = (KINDS[method], unit)
            return _Instrument()

        return create


class _Instrument:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _RecordingMeterProvider:
    def __init__(self) -> None:
        self.meter = _RecordingMeter()

    def get_meter(self, *args: Any, **kwargs: Any) -> _RecordingMeter:
        return self.meter


def metric_names(client: bool = False) -> set[str]:
    """The server's ``M_*`` metric names of the semconv module (the clients': ``M_CLIENT_*``)."""
    return {
        value for name, value in vars(_semconv).items()
        if name.startswith("M_") and isinstance(value, str)
        and name.startswith("M_CLIENT_") == client
    }


def documented_metrics() -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for body in find_tables(METRICS_PAGE, ["name", "instrument", "unit"]):
        for row in body:
            name = code(row[0])
            assert name not in rows, f"{name} is documented twice"
            rows[name] = (row[1].strip(), code(row[2]))
    return rows


def test_metric_table_lists_every_metric() -> None:
    documented = set(documented_metrics())
    missing = sorted(metric_names() - documented)
    unknown = sorted(documented - metric_names())
    assert not missing and not unknown, f"undocumented: {missing}; not metrics: {unknown}"


def test_client_metric_table_lists_every_client_metric() -> None:
    rows = [row for body in tables(CLIENTS_PAGE.read_text(encoding="utf-8"))
            if body[1][0][0].lower().startswith("metric") for row in body[1][1:]]
    documented = {code(row[0]) for row in rows}
    assert documented == metric_names(client=True)


def test_metric_table_kinds_and_units_match_the_code() -> None:
    provider = _RecordingMeterProvider()
    _telemetry.Telemetry(meter_provider=provider)  # type: ignore[arg-type]
    created = provider.meter.instruments
    wrong = [
        f"{name}: documented {kind} in {unit!r}, code {created.get(name)}"
        for name, (kind, unit) in documented_metrics().items()
        if name in metric_names() and created.get(name) != (kind, unit)
    ]
    assert not wrong, "\n".join(wrong)


# --- (c) Markdown rendering and links ---------------------------------------------------


def code_lines(tokens: list[Token]) -> set[int]:
    """0-based source lines inside fenced or indented code blocks."""
    inside: set[int] = set()
    for token in tokens:
        if token.type in ("fence", "code_block") and token.map:
            inside.update(range(*token.map))
    return inside


def raw_pipe_lines(text: str) -> list[int]:
    """1-based numbers of lines starting with ``|`` that are not part of a rendered table."""
    tokens = parse(text)
    in_table: set[int] = set()
    for token in tokens:
        if token.type == "table_open" and token.map:
            in_table.update(range(*token.map))
    skip = code_lines(tokens) | in_table
    return [
        number + 1 for number, line in enumerate(text.splitlines())
        if line.lstrip().startswith("|") and number not in skip
    ]


def ragged_rows(text: str) -> list[str]:
    """Table rows (or separator rows) whose cell count differs from their header's."""
    lines = text.splitlines()
    problems = []
    for first, rows in tables(text):
        width = len(rows[0])
        separator = split_row(lines[first])  # the line after the header
        numbered = [(first + 1, separator)]
        numbered += [(first + 2 + i, row) for i, row in enumerate(rows[1:])]
        for number, row in numbered:
            if len(row) != width:
                problems.append(f"line {number}: {len(row)} cells, header has {width}")
    return problems


def link_targets(tokens: list[Token]) -> list[tuple[int, str]]:
    """``(1-based line, target)`` of every link and image."""
    found = []
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        line = token.map[0] + 1 if token.map else 0
        for child in token.children:
            if child.type == "link_open":
                found.append((line, str(child.attrs.get("href", ""))))
            elif child.type == "image":
                found.append((line, str(child.attrs.get("src", ""))))
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for line, target in link_targets(parse(path.read_text(encoding="utf-8"))):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path:
            continue  # http(s), mailto, ... or a pure #anchor
        if not (path.parent / unquote(parts.path)).exists():
            problems.append(f"line {line}: {target} does not exist")
    return problems


MARKDOWN = markdown_files()
IDS = [str(path.relative_to(ROOT)) for path in MARKDOWN]


@pytest.mark.parametrize("path", MARKDOWN, ids=IDS)
def test_no_raw_pipe_lines(path: Path) -> None:
    lines = raw_pipe_lines(path.read_text(encoding="utf-8"))
    assert not lines, f"{path.relative_to(ROOT)}: lines {lines} start with | outside a table"


@pytest.mark.parametrize("path", MARKDOWN, ids=IDS)
def test_table_rows_have_the_header_column_count(path: Path) -> None:
    problems = ragged_rows(path.read_text(encoding="utf-8"))
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", MARKDOWN, ids=IDS)
def test_relative_links_exist(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_docs_exist() -> None:
    assert {"README.md", "CHANGELOG.md", "docs/settings.md", "docs/metrics.md"} <= set(IDS)


# --- the checks themselves can fail -----------------------------------------------------

BROKEN = """\
# Broken

| a | b |
|---|---|
| 1 | 2 |
stray note

| 3 | 4 |

| x | y |
|---|---|
| 1 | `a|b` |

[gone](no/such/file.md#top) [fine](https://example.com) [anchor](#broken)

![img](missing.png)

```text
| inside a code block: fine |
```
"""


def test_the_markdown_checks_catch_broken_input(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(BROKEN, encoding="utf-8")
    assert raw_pipe_lines(BROKEN) == [8]
    assert ragged_rows(BROKEN) == [
        "line 6: 1 cells, header has 2",
        "line 12: 3 cells, header has 2",
    ]
    assert broken_links(page) == [
        "line 14: no/such/file.md#top does not exist",
        "line 16: missing.png does not exist",
    ]


def test_the_default_check_compares_types() -> None:
    assert same((1, "a"), (1, "a"))
    assert not same(1, True)
    assert not same(15, 15.0)
    assert not same(["a"], ("a",))
