"""Keeping Python's cyclic garbage collector off the objects a worker holds for good.

A worker with a compiled model holds about 760,000 long-lived Python objects (the imported code,
the compiled graphs and their guards, inductor's caches): a full collection of the oldest
generation walks them all and took 380-420 ms with a compiled int8 engine on a 2-core AMD EPYC
(``gc.collect()`` timed after warm-up), holding the GIL, so every batch and every message thread
waits. Under a stream of small jobs the allocations of each job keep triggering collections, and
the full ones land in the latency tail (BENCHMARKS.md, "A frozen heap"). ``gc.freeze()`` moves
every object alive at that moment into a permanent generation the collector never visits;
garbage made afterwards is collected as before, and frozen objects are still freed when their
last reference goes.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

__all__ = ["settle"]

log = logging.getLogger(__name__)

_lock = threading.Lock()


def settle(reason: str) -> float:
    """Collect what is garbage now, then freeze everything left; returns the milliseconds taken.

    Called once a worker's engine is ready and again after each switch to another engine: the
    unfreeze first lets the collector reclaim the old engine's reference cycles, at the price of
    one full collection per switch rather than one every few seconds under load."""
    with _lock:
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        ms = (time.perf_counter() - started) * 1000
    log.info("heap settled (%s): %d objects frozen in %.0f ms", reason, gc.get_freeze_count(), ms)
    return ms
