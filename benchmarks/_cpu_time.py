"""Thread CPU time per call, for the benchmarks that price one call of dsprof's in the
training thread (``host_sync_cost.py``, ``worker_clock_cost.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def cpu_per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Least thread CPU seconds per call of ``fn`` over ``repeats`` runs of ``calls``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - t0) / calls)
    return best
