"""The example's vendored OpenTelemetry JS web SDK is what the lock file builds, byte for byte.

``js/build_browser_sdk.mjs`` bundles the packages ``js/package-lock.json`` pins
with esbuild; rebuilding must give the committed file and licence, so the
vendored bundle is reproducible (and nobody edited it by hand). Needs
``npm ci`` in ``js/`` (.ci/run does it); skipped without it unless
``REQUIRE_BROWSER`` is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
VENDOR = ROOT / "example_project" / "chat" / "static" / "chat" / "vendor"


def test_lock_file_has_no_download_addresses() -> None:
    lock = (JS / "package-lock.json").read_text(encoding="utf-8")
    assert '"resolved"' not in lock and "://" not in lock
    assert "omit-lockfile-registry-resolved=true" in (JS / ".npmrc").read_text(encoding="utf-8")


def test_vendored_bundle_rebuilds_byte_for_byte(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "esbuild").is_dir():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but node or js/node_modules is missing (npm ci)")
        pytest.skip("needs node and `npm ci` in js/")
    subprocess.run([node, "build_browser_sdk.mjs", str(tmp_path)], cwd=JS, check=True,
                   capture_output=True, timeout=120)
    for name in ("opentelemetry-web.js", "opentelemetry-web.LICENSE"):
        assert (tmp_path / name).read_bytes() == (VENDOR / name).read_bytes(), name
    bundle = (VENDOR / "opentelemetry-web.js").read_text(encoding="utf-8")
    assert str(ROOT) not in bundle and "/root/" not in bundle  # nothing of this machine
