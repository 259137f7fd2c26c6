"""File-descriptor limits (``RLIMIT_NOFILE``) of this process and of a worker.
"""

from __future__ import annotations

import os
import resource

# -- file descriptors ---------------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns (soft, hard).

    Worker processes started afterwards inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def nofile_of(pid: int) -> int:
    """The soft open-files limit of process ``pid`` (from ``/proc/<pid>/limits``)."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                value = line.split()[3]
                return 1 << 62 if value == "unlimited" else int(value)
    raise LookupError(pid)


def listen_overflows() -> int:
    """The kernel's count of connections dropped from full listen queues (all sockets)."""
    with open("/proc/net/netstat") as netstat:
        lines = netstat.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        keys = names.split()
        if "ListenOverflows" in keys:
            return int(values.split()[keys.index("ListenOverflows")])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


