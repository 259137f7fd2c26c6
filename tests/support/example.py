"""The example project run as its users run it: ``manage.py`` and daphne workers of
``example_project`` in their own processes, on a temporary SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path

from tests.support.servers import DaphneWorker
from tests.support.servers import running as start_all

ROOT = Path(__file__).resolve().parents[2]
APP = "example_project.asgi:application"
SETTINGS = "example_project.settings"


def example_env(database_url: str, **extra: str) -> dict[str, str]:
    """Environment of an example process: this database, no Redis and no OTLP unless given."""
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **extra,
    }


def migrate(db_path: Path) -> str:
    """``manage.py migrate`` against a fresh SQLite file; returns its ``DATABASE_URL``."""
    url = f"sqlite:///{db_path}"
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0", "--no-input"],
        cwd=ROOT, env={**os.environ, **example_env(url)}, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return url


def manage(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT,
        env={**os.environ, **example_env(database_url, **env)}, capture_output=True, text=True,
        timeout=60,
    )


def example_worker(database_url: str, name: str, port: int | None = None,
                   **env: str) -> DaphneWorker:
    return DaphneWorker(
        example_env(database_url, WORKER_NAME=name, **env), app=APP, settings=SETTINGS,
        name=name, port=port,
    )


def running(*workers: DaphneWorker) -> AbstractContextManager[tuple[DaphneWorker, ...]]:
    """Start workers in parallel (Django's import dominates start-up); stop them at the end."""
    return start_all(*workers, start_timeout=60, join_timeout=90, log_tail=0)


