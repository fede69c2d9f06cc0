"""Where a run's time goes: wall time per pipeline stage, each second counted once.

Stages nest (the network runs inside ``maps``): a stage's time excludes the
stages opened inside it, so the times of one :func:`record` add up to the
time spent in stages. Outside :func:`record` a stage costs one attribute
lookup. Per thread: the runner's worker threads keep separate records.

    with timing.record() as seconds:
        ...                              # code that opens stages
    seconds  # {"read": 0.2, "normalise": 0.5, "network": 7.1, ...}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = ["STAGES", "record", "stage", "timed"]

#: The stages the pipeline opens, in data-flow order.
STAGES = ("read", "normalise", "network", "priors", "masks_write", "fusion", "maps", "maps_write", "extract",
          "score", "catalog_write")

_local = threading.local()


@contextmanager
def record():
    """Collect the stage times of the code inside, in this thread: yields a
    dict ``{stage: seconds}`` filled as stages close."""
    saved = getattr(_local, "sink", None), getattr(_local, "stack", None)
    sink: dict[str, float] = {}
    _local.sink, _local.stack = sink, []
    try:
        yield sink
    finally:
        _local.sink, _local.stack = saved


@contextmanager
def stage(name: str):
    """Count the wall time inside, less that of nested stages, as ``name``."""
    sink = getattr(_local, "sink", None)
    if sink is None:
        yield
        return
    stack = _local.stack
    now = time.perf_counter()
    if stack:  # pause the enclosing stage
        outer = stack[-1]
        sink[outer[0]] = sink.get(outer[0], 0.0) + now - outer[1]
    stack.append([name, now])
    try:
        yield
    finally:
        end = time.perf_counter()
        _, start = stack.pop()
        sink[name] = sink.get(name, 0.0) + end - start
        if stack:
            stack[-1][1] = end


def timed(items: Iterable, name: str) -> Iterator:
    """``items``, with the time spent producing each counted as ``name``
    (for generators that compute lazily, e.g. the network's tiles)."""
    it = iter(items)
    while True:
        with stage(name):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item
