"""What maxidetect runs with: the files it ships and the CPUs it may use.

The model manifest and weights (the repository's ``weights/``) and the
SExtractor configuration (``sextractor_configs/``) are installed inside the
package as ``maxidetect/weights`` and ``maxidetect/sextractor_configs``; a
source checkout (editable install, or no install) has them beside the package."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "usable_cpus"]

_HERE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder ``name`` ("weights" or "sextractor_configs")."""
    installed = _HERE / name
    return installed if installed.is_dir() else _HERE.parent / name


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, bounded by its container's cgroup (v2)
    quota (a container may see every core of its host and be allowed two)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = _cpu_quota()
    return max(1, min(n, quota) if quota else n)


def _cpu_quota() -> int | None:
    """The CPUs a container's cgroup (v2) quota allows, rounded down (at least 1); None: no quota."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else max(1, int(quota) // int(period))
    except (OSError, ValueError):
        return None
