"""What the machine running slmdeploy offers a model: the cores this process may use."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, so a container's or taskset's limit counts)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """A thread count from a setting: None or 0 (automatic) is every available core."""
    return available_cores() if not threads else int(threads)
