"""What the fan-out programs share besides the variants: paths, CPU from ``/proc``, medians,
the source fingerprint printed above every table."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Wait after the warm-up and after the measured phase before reading the workers' stats:
#: a worker writes its ``deliver`` summary span 0.25 s after a broadcast went quiet on it.
QUIET_WAIT = 0.75


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def median(values: list[float]) -> float:
    """The median of the values that are numbers (NaN: a failed or empty run)."""
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def source_fingerprint() -> str:
    """Git HEAD plus a hash of ``otel_channels/**/*.py`` as measured (the tree may be
    uncommitted)."""
    digest = hashlib.sha256()
    package = ROOT / "otel_channels"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "otel_channels"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "?", ""
    return f"git {head or '?'}{' + uncommitted otel_channels changes' if dirty else ''}, " \
           f"otel_channels sources sha256 {digest.hexdigest()[:12]}"
