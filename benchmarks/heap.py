"""Resident heap: objects the cyclic collector tracks that otel_channels adds to a worker.

Each case runs in a fresh process: the benchmark app's settings
(``benchmarks/_fanout_app/settings.py``), Django, Channels, channels-redis and
daphne imported, optionally the SDK's tracer and meter providers installed;
then ``django.setup()`` with or without ``"otel_channels"`` in
``INSTALLED_APPS`` (which instruments Channels) and the traced consumers
imported. Reported: ``len(gc.get_objects())`` after a collection, and what the
app adds over plain Channels. Every full collection walks these objects.

    .venv/bin/python benchmarks/heap.py
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(sdk: bool, app: bool) -> dict[str, int]:
    """In this process: tracked objects before and after set-up (see the module docstring)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks._fanout_app.settings")
    if app:
        os.environ["FANOUT_APP"] = "1"
    if sdk:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
        metrics.set_meter_provider(MeterProvider())
    import channels.generic.websocket  # noqa: F401
    import channels.layers  # noqa: F401
    import channels_redis.core  # noqa: F401
    import daphne.server  # noqa: F401
    import django

    gc.collect()
    before = len(gc.get_objects())
    modules = len(sys.modules)
    django.setup()
    if app:
        import otel_channels.consumers  # noqa: F401
    gc.collect()
    return {"tracked": len(gc.get_objects()), "added": len(gc.get_objects()) - before,
            "modules": len(sys.modules) - modules}


def main() -> int:
    if len(sys.argv) == 3:  # a child: one case
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure(sys.argv[1] == "sdk", sys.argv[2] == "app")))
        return 0
    rows = {}
    for sdk in ("nosdk", "sdk"):
        for app in ("plain", "app"):
            done = subprocess.run([sys.executable, __file__, sdk, app], cwd=ROOT, check=True,
                                  capture_output=True, text=True, timeout=300)
            rows[sdk, app] = json.loads(done.stdout.strip().splitlines()[-1])
    print("| | tracked objects, plain Channels | with otel_channels (app, instrumented) "
          "| added by otel_channels | modules added |\n|---|--:|--:|--:|--:|")
    for sdk, label in (("nosdk", "no SDK"), ("sdk", "SDK providers installed")):
        plain, app = rows[sdk, "plain"], rows[sdk, "app"]
        print(f"| {label} | {plain['tracked']:,} | {app['tracked']:,} "
              f"| {app['tracked'] - plain['tracked']:,} "
              f"| {app['modules'] - plain['modules']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
