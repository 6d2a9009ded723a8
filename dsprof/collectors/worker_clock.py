"""What a DataLoader's worker processes did while the training thread waited for a batch: ran on
a CPU, waited for one, or slept.

With workers, the training thread inside ``__next__`` sleeps on their queue whatever they do,
so its own CPU time says nothing of theirs. Whether one more worker helps depends on them:
workers that sleep on disk or network deliver more batches with more of them; workers that
compute (or wait for a core they share) only contend for the same cores. Linux keeps each
process's time on a CPU and waiting on a run queue in ``/proc/<pid>/schedstat`` (nanoseconds);
the rest of the wall time between two readings is sleep.

Sampled, not read on every batch: at most once every ``SAMPLE_EVERY_NS`` a ``__next__`` call
is bracketed by a reading of each worker before and after it (one ~10 us file read per worker
each side, outside the timed wait; ``benchmarks/worker_clock_cost.py`` measures both costs).
Only time inside a wait is counted: between passes, or
while the training thread computes with a full prefetch queue, workers sleep for lack of work,
which says nothing of what held the batch back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

SAMPLE_EVERY_NS = 250_000_000


@dataclass
class WorkerTimes:
    """Sums over the sampled waits, over the workers read on both sides of each."""

    cpu_ns: int = 0
    """Time the workers ran on a CPU."""
    runq_ns: int = 0
    """Time they were runnable, waiting for a CPU."""
    wall_ns: int = 0
    """Wall time of the windows, once per worker read: cpu + runq + sleep."""
    waits: int = 0
    """Waits sampled."""


def schedstat(pid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting on a run queue) of ``pid``, or None where it cannot be read
    (not Linux, a kernel without schedstat, the process gone)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            fields = f.read(128).split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def worker_pids(it: Any) -> list[int]:
    """The pids of a multiprocessing DataLoader iterator's workers (none for other iterators)."""
    workers = getattr(it, "_workers", None)
    if not isinstance(workers, list):
        return []
    pids = [getattr(w, "pid", None) for w in workers]
    return [p for p in pids if isinstance(p, int) and p > 0]


Readings = dict[int, tuple[int, int, int]]
"""pid -> (perf_counter ns of the reading, ns on a CPU, ns on a run queue)."""


def _read(pid: int) -> tuple[int, int, int] | None:
    times = schedstat(pid)
    return None if times is None else (time.perf_counter_ns(), *times)


class WorkerSampler:
    """Decides which waits to sample and adds each sampled one to a loader's ``WorkerTimes``."""

    def __init__(self) -> None:
        self._last_ns = 0

    def before(self, it: Any) -> Readings | None:
        """Readings of ``it``'s workers if this wait is to be sampled, else None."""
        now = time.perf_counter_ns()
        if self._last_ns and now - self._last_ns < SAMPLE_EVERY_NS:
            return None
        pids = worker_pids(it)
        if not pids:
            return None
        self._last_ns = now
        read = {pid: r for pid in pids if (r := _read(pid)) is not None}
        return read or None

    @staticmethod
    def after(start: Readings, out: WorkerTimes) -> None:
        counted = False
        for pid, (t0, cpu0, runq0) in start.items():
            now = _read(pid)
            if now is None:
                continue  # the worker ended during the wait: no second reading
            t1, cpu1, runq1 = now
            out.cpu_ns += max(cpu1 - cpu0, 0)
            out.runq_ns += max(runq1 - runq0, 0)
            out.wall_ns += max(t1 - t0, 0)
            counted = True
        out.waits += counted
