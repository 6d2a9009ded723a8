"""What the Python runtime and the allocator cost inside each step, beside the script's work:
the cyclic garbage collector's time, and the page faults the optimizer's update took.

Garbage collection: ``gc.callbacks`` are called only when a collection runs, so nothing is paid
per step. A slow step that was a collection is the runtime's periodic work, not the script's
(``steps.gc_ns``/``gc_generation``, analyzers/step_outliers.py).

Autograd anomaly mode: a script that turns on ``torch.autograd.set_detect_anomaly(True)`` (or
runs steps inside ``detect_anomaly()``) records a Python stack for every forward op and checks
every backward output; such steps time the debugging, not the program. Whether it was on is
read at each boundary (one C call) and those steps are ``disturbed_by = autograd_anomaly``.

Page faults: the minor faults the stepping thread took inside ``optimizer.step()`` calls
(getrusage around each call: two syscalls a step). A per-parameter update whose temporaries
malloc gives back to the kernel and takes again faults every page of them every step
(examples/periodic_eval.py's 1 MiB weight: ~480 a step, ~0.9 us each), a cost the fused
kernel, which allocates nothing, does not pay (``steps.optimizer_faults``,
analyzers/fusion_optimizer.py).
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Any


class StepRuntime:
    """Per-step garbage collection and optimizer page faults, appended at each boundary."""

    def __init__(self) -> None:
        self.gc_ns: list[int | None] = []
        self.gc_generation: list[int | None] = []
        self.optimizer_faults: list[int | None] = []
        self.autograd_anomaly: list[bool] = []
        self._gc_ns = 0
        self._gc_generation: int | None = None
        self._gc_started: int | None = None
        self._faults = 0
        self._faults_at: int | None = None

    def install(self) -> None:
        gc.callbacks.append(self._gc_event)

    def uninstall(self) -> None:
        if self._gc_event in gc.callbacks:
            gc.callbacks.remove(self._gc_event)

    def optimizer_starting(self) -> None:
        self._faults_at = minor_faults()

    def optimizer_ended(self) -> None:
        if self._faults_at is not None:
            self._faults += minor_faults() - self._faults_at
            self._faults_at = None

    def take(self, sample: bool) -> None:
        """A boundary: the step's figures appended, the counters reset. ``sample=False`` (a
        boundary found after the fact) cannot say which of the steps since the last one held
        them: null."""
        self.gc_ns.append(self._gc_ns if sample else None)
        self.gc_generation.append(self._gc_generation if sample else None)
        self.optimizer_faults.append(self._faults if sample else None)
        self.autograd_anomaly.append(_anomaly_mode())
        self._gc_ns, self._gc_generation, self._faults = 0, None, 0

    def record(self) -> dict[str, Any]:
        return {"gc_ns": self.gc_ns, "gc_generation": self.gc_generation,
                "optimizer_faults": self.optimizer_faults,
                "autograd_anomaly": self.autograd_anomaly}

    def _gc_event(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter_ns()
        elif self._gc_started is not None:
            self._gc_ns += time.perf_counter_ns() - self._gc_started
            self._gc_started = None
            gen = info.get("generation")
            if isinstance(gen, int) and (self._gc_generation is None or gen > self._gc_generation):
                self._gc_generation = gen


def _anomaly_mode() -> bool:
    """torch's autograd anomaly mode is on (the script's ``set_detect_anomaly(True)``)."""
    import torch

    return bool(torch.is_anomaly_enabled())


def minor_faults() -> int:
    """Minor page faults of the calling thread so far (RUSAGE_THREAD: Linux; the process's
    elsewhere, where a data worker thread's faults then count too)."""
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return resource.getrusage(who).ru_minflt
