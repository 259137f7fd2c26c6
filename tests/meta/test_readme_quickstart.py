"""The README's "Use it in your project", followed to the letter by a new user.

A fresh ``django-admin startproject myproject`` gets the README's settings
block (its ``# ... django.contrib apps ...`` line standing for the apps
``startproject`` wrote), its consumer file and its ``asgi.py`` with the SDK
block at the top, exactly as printed: the snippets are read from README.md,
so the README cannot drift from what works. Then, as the README says:
``manage.py check`` finds nothing, two daphne workers share Redis and export
over OTLP/HTTP (here to an in-test receiver, through the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``), and one chat message from a browser-like
client on one worker reaches the clients on both, with one trace linking the
``receive``, the ``group_send`` and a ``process`` span on each worker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.anyserver import new_room, settle
from tests.support.otlp import OTLPReceiver, Span
from tests.support.servers import ROOT, DaphneWorker, running
from tests.support.websocket import open_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

README = ROOT / "README.md"
README_REDIS = "redis://127.0.0.1:6379/0"
ROUTE = "/ws/chat/<room>/"  # the route template of path("ws/chat/<slug:room>/", ...)
GROUP = "chat_{id}"  # group chat_<digits> under the default group template


def python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def block(first_line: str) -> str:
    """The README's python block whose first line is ``first_line``."""
    found = [b for b in python_blocks() if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"README.md: one python block must start with {first_line!r}"
    return found[0]


def sdk_block() -> str:
    found = [b for b in python_blocks() if "BatchSpanProcessor(OTLPSpanExporter())" in b]
    assert len(found) == 1, "README.md: one python block sets up the SDK with OTLP"
    return found[0]


def make_project(where: Path, redis_url: str) -> Path:
    subprocess.run([sys.executable, "-m", "django", "startproject", "myproject", str(where)],
                   check=True, capture_output=True)
    package = where / "myproject"
    settings = block("# myproject/settings.py")
    # The user keeps the apps startproject wrote where the README's comment stands.
    marker = "    # ... django.contrib apps, your apps ...\n"
    assert marker in settings
    settings = settings.replace(marker, "    *INSTALLED_APPS,\n")
    assert README_REDIS in settings
    settings = settings.replace(README_REDIS, redis_url)  # CI's Redis may live elsewhere
    with (package / "settings.py").open("a", encoding="utf-8") as out:
        out.write("\n# --- from README.md ---\n" + settings)
    (package / "chat").mkdir()
    (package / "chat" / "consumers.py").write_text(block("# myproject/chat/consumers.py"))
    # "set up the SDK in code, at the top of asgi.py (before get_asgi_application())"
    (package / "asgi.py").write_text(sdk_block() + "\n" + block("# myproject/asgi.py"))
    return where


def in_trace(spans: list[Span], trace_id: str, name: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id and s.name == name]


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> Path:
    """The README's project; ``manage.py check`` (our checks included) finds nothing."""
    where = make_project(tmp_path, redis_url)
    checked = subprocess.run([sys.executable, "manage.py", "check"], cwd=where,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues" in checked.stdout, checked.stdout + checked.stderr
    return where


async def test_the_readme_project_traces_a_message_across_two_workers(project: Path) -> None:
    with OTLPReceiver() as receiver:
        workers = [
            DaphneWorker(
                name=f"readme-{name}", app="myproject.asgi:application",
                settings="myproject.settings", cwd=project,
                env={**receiver.env(), "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={name}"})
            for name in ("a", "b")
        ]
        room = new_room()
        with running(*workers):
            urls = {w.name: f"{w.ws_url}/ws/chat/{room}/" for w in workers}
            # AllowedHostsOriginValidator: a browser sends its Origin.
            origin = {"Origin": workers[0].url}
            async with open_clients(urls, headers=origin) as clients:
                sender, other = clients["readme-a"], clients["readme-b"]
                sampled = None
                # MESSAGE_SAMPLE_RATE 0.1 as printed: chat until a message is traced
                # (60 messages all unsampled: 0.9 ** 60, about 0.2 %).
                for n in range(60):
                    await sender.send_json({"text": f"hello {n}"})
                    for client in (sender, other):
                        assert await client.receive_json() == {"text": f"hello {n}"}
                    with receiver.lock:
                        sampled = next((s for s in receiver.spans
                                        if s.name == f"group_send {GROUP}"), None)
                    if sampled is not None:
                        break
                    await asyncio.sleep(0.15)  # a batch export every 100 ms here
                assert not sender.leaked() and not other.leaked()

            assert sampled is not None, "no message of 60 was traced at rate 0.1"
            trace_id = sampled.trace_id
            spans = await settle(receiver, lambda s: len(
                in_trace(s, trace_id, f"process {GROUP}")) >= 2, timeout=10)

    (receive,) = in_trace(spans, trace_id, f"receive {ROUTE}")
    (producer,) = in_trace(spans, trace_id, f"group_send {GROUP}")
    processes = in_trace(spans, trace_id, f"process {GROUP}")
    assert receive.kind == "CONSUMER", receive.kind
    assert receive.resource.get("service.name") == "chat"  # the README's Resource
    assert receive.resource.get("service.instance.id") == "a"
    assert producer.kind == "PRODUCER" and producer.parent_span_id == receive.span_id
    assert producer.resource.get("service.instance.id") == "a"
    # One delivery per worker (one client each), each a child of the producer span.
    assert sorted(p.resource.get("service.instance.id") for p in processes) == ["a", "b"], [
        (p.resource, p.parent_span_id) for p in processes]
    assert all(p.kind == "CONSUMER" and p.parent_span_id == producer.span_id
               for p in processes)
    assert all(p.attributes.get("messaging.destination.name") == f"chat_{room}"
               and p.attributes.get("messaging.destination.template") == GROUP
               for p in processes), [p.attributes for p in processes]
    print("readme quick start:", json.dumps({
        "spans": len(spans), "trace": trace_id,
        "process_spans": [p.resource.get("service.instance.id") for p in processes]}))


def _install_requirements() -> list[Requirement]:
    """The requirements of the README's ``pip install 'otel_channels[redis]' ...`` line."""
    text = README.read_text(encoding="utf-8")
    lines = [line for line in re.findall(r"^pip install (.+)$", text, flags=re.M)
             if "otel_channels[" in line]
    assert len(lines) == 1, lines
    return [Requirement(word.strip("'\"")) for word in lines[0].split()]


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution those requirements install (as installed here), by canonical name."""
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()  # (distribution, extras asked for)
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


def _distribution_of(module: str) -> str | None:
    """The installed distribution holding ``module`` (a dotted name), canonical; None for
    a namespace package (``opentelemetry``: its submodules are what is checked)."""
    wanted = {f"{module.replace('.', '/')}/__init__.py", f"{module.replace('.', '/')}.py"}
    # Python 3.10's packages_distributions() reads only top_level.txt: look at every file.
    for dist in metadata.distributions():
        if any(str(f) in wanted for f in dist.files or []):
            return canonicalize_name(dist.metadata["Name"])
    try:  # an editable install (this package) lists no module files
        return canonicalize_name(metadata.distribution(module.split(".")[0]).name)
    except metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is None, f"no installed distribution holds {module}"
    return None


def test_the_readme_install_line_installs_what_the_readme_project_imports() -> None:
    """A new user runs only the README's install line: every module the project's
    snippets import, list in INSTALLED_APPS or name as a backend must come with it."""
    snippets = "\n".join([block("# myproject/settings.py"),
                          block("# myproject/chat/consumers.py"),
                          block("# myproject/asgi.py"), sdk_block()])
    modules = set(re.findall(r"^\s*(?:from|import) ([\w.]+)", snippets, flags=re.M))
    modules |= set(re.findall(r'^\s*"(\w+)",', snippets, flags=re.M))  # INSTALLED_APPS
    modules |= {b.rsplit(".", 1)[0] for b in re.findall(r'"BACKEND": "([\w.]+)"', snippets)}
    modules = {m for m in modules
               if not m.startswith("myproject") and m not in sys.stdlib_module_names}
    found = {m: _distribution_of(m) for m in sorted(modules)}
    needed = {m: d for m, d in found.items() if d is not None}
    assert {"daphne", "channels-redis", "opentelemetry-sdk"} <= set(needed.values()), needed
    installed = _closure(_install_requirements())
    missing = {m: d for m, d in needed.items() if d not in installed}
    assert missing == {}, f"the README's install line does not install {missing}"
