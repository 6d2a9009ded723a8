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

Step page faults: the minor faults the stepping thread took over the whole step, from one
boundary to the next (one more getrusage a step). A library-op swap removes intermediates that
malloc gives back to the kernel at the end of a step and maps again in the next (convnext_gelu's
hand GELU: 2,500-4,000 faults a step, F.gelu in its place 500-600), a cost no per-op price sees
(``steps.step_faults``, analyzers/fusion.py).

Optimizer CPU time: the stepping thread's CPU time inside the same calls (two clock reads a
step). The steps outside profiler windows give what the update costs on this machine at this
run's pace, unprofiled: thread CPU time itself moved 1.7x with the machine's load here, and a
price calibrated on a quiet machine is off by that much on a busy one (``steps.optimizer_cpu_ns``,
analyzers/fusion_optimizer.py). A call given a closure (LBFGS, Lightning) runs forward and
backward inside: its step's figure is null.

Checkpoints: the time ``torch.save`` took in the step and the line that called it
(``steps.save_ns``/``save_site``, collectors/save_watch.py).
"""

from __future__ import annotations

import gc
import resource
import threading
import time
from typing import Any

from dsprof.collectors import script_signals
from dsprof.collectors.optimizer_wrappers import OptimizerWrappers
from dsprof.collectors.save_watch import SaveWatch
from dsprof.collectors.thread_runq import ThreadRunq


class StepRuntime:
    """Per-step garbage collection and optimizer page faults, appended at each boundary."""

    def __init__(self) -> None:
        self.gc_ns: list[int | None] = []
        self.gc_generation: list[int | None] = []
        self.optimizer_faults: list[int | None] = []
        self.step_faults: list[int | None] = []
        self.optimizer_cpu_ns: list[int | None] = []
        # wall ns in optimizer.step() and in backward()/autograd.grad per step: the phases of
        # a full-speed step (reports/full_speed_phases.py), which the profiled ones are not
        self.optimizer_ns: list[int | None] = []
        self.backward_ns: list[int | None] = []
        self.autograd_calls: tuple[Any, ...] = ()  # the backward/grad watches (take_ns)
        self.closures: Any = None  # the closure marker (take_ns): its time is not the update's
        # the stepping thread's wait for a CPU per step (collectors/thread_runq.py)
        self.runq_ns: list[int | None] = []
        self._runq = ThreadRunq()
        self._runq_at: tuple[int, int] | None = None
        self._wall_ns = 0
        self._wall_at: int | None = None
        self.autograd_anomaly: list[bool] = []
        self._gc_ns = 0
        self._gc_generation: int | None = None
        self._gc_started: int | None = None
        self._faults = 0
        self._faults_at: int | None = None
        # the stepping thread's fault count at the last boundary, and that thread
        self._step_faults_at: tuple[int, int] | None = None
        self._cpu_ns = 0
        self._cpu_at: int | None = None
        self._closure = False
        # inside the step of an optimizer that wraps the one torch hooks (Opacus' DPOptimizer,
        # collectors/optimizer_wrappers.py): its whole call is the phase, the inner one is in it
        self._wrapper_depth = 0
        self.saves = SaveWatch()
        self.wrappers = OptimizerWrappers(self, None)  # made again with the closures at install

    def install(self) -> None:
        self.wrappers = OptimizerWrappers(self, self.closures)
        self.wrappers.install()
        self._step_faults_at = (threading.get_ident(), minor_faults())
        # Python drops what a gc callback raises: the script's signal handlers wait there
        script_signals.defer_in(StepRuntime._gc_event.__code__)
        gc.callbacks.append(self._gc_event)
        self.saves.install()

    def uninstall(self) -> None:
        if self._gc_event in gc.callbacks:
            gc.callbacks.remove(self._gc_event)
        self.saves.uninstall()
        self.wrappers.uninstall()
        self._runq.close()

    def optimizer_starting(self, optimizer: Any = None, closure: bool = False) -> None:
        if optimizer is not None:
            self.wrappers.seen(optimizer)  # once per optimizer: does another step it?
        self._closure = self._closure or closure
        self._faults_at = minor_faults()
        self._cpu_at = time.thread_time_ns()
        if not self._wrapper_depth:
            self._wall_at = self._wall_start()

    def optimizer_ended(self) -> None:
        if self._cpu_at is not None:
            self._cpu_ns += time.thread_time_ns() - self._cpu_at
            self._cpu_at = None
        if self._wall_at is not None and not self._wrapper_depth:
            self._wall_ns += time.perf_counter_ns() - self._wall_at
            self._wall_at = None
        if self._faults_at is not None:
            self._faults += minor_faults() - self._faults_at
            self._faults_at = None

    def wrapper_starting(self) -> None:
        """An optimizer wrapper's step began: the optimizer phase's wall time starts here."""
        self._wrapper_depth += 1
        if self._wrapper_depth == 1:
            self._wall_at = self._wall_start()

    def wrapper_ended(self) -> None:
        self._wrapper_depth = max(self._wrapper_depth - 1, 0)
        if not self._wrapper_depth and self._wall_at is not None:
            self._wall_ns += time.perf_counter_ns() - self._wall_at
            self._wall_at = None

    def _wall_start(self) -> int | None:
        # an optimizer stepped from a backward hook (optimizer in backward): its time is in
        # backward's already
        inside = any(w.in_call for w in self.autograd_calls)
        return None if inside else time.perf_counter_ns()

    def take(self, sample: bool) -> None:
        """A boundary: the step's figures appended, the counters reset. ``sample=False`` (a
        boundary found after the fact) cannot say which of the steps since the last one held
        them: null."""
        self.gc_ns.append(self._gc_ns if sample else None)
        self.gc_generation.append(self._gc_generation if sample else None)
        self.optimizer_faults.append(self._faults if sample else None)
        self.step_faults.append(self._step_faults(sample))
        self.optimizer_cpu_ns.append(self._cpu_ns if sample and self._cpu_ns
                                     and not self._closure else None)
        if self._wrapper_depth and self._wall_at is not None:
            # the boundary is the inner optimizer's end, inside the wrapper's step: what the
            # wrapper does after it is the next step's
            now = time.perf_counter_ns()
            self._wall_ns += now - self._wall_at
            self._wall_at = now
        # a closure's step holds forward and backward: the update is the rest of it
        closure_ns = self.closures.take_ns() if self.closures is not None else 0
        self.optimizer_ns.append(None if not sample or (self._closure and not closure_ns)
                                 else max(self._wall_ns - closure_ns, 0))
        autograd = sum(w.take_ns() for w in self.autograd_calls)
        self.backward_ns.append(autograd if sample else None)
        self._wall_ns = 0
        self.runq_ns.append(self._step_runq(sample))
        self.autograd_anomaly.append(_anomaly_mode())
        self._gc_ns, self._gc_generation, self._faults = 0, None, 0
        self._cpu_ns, self._closure = 0, False
        self.saves.take(sample)

    def record(self) -> dict[str, Any]:
        return {"gc_ns": self.gc_ns, "gc_generation": self.gc_generation,
                "optimizer_faults": self.optimizer_faults, "step_faults": self.step_faults,
                "optimizer_cpu_ns": self.optimizer_cpu_ns, "optimizer_ns": self.optimizer_ns,
                "backward_ns": self.backward_ns, "runq_ns": self.runq_ns,
                **self.saves.record(),
                "autograd_anomaly": self.autograd_anomaly}

    def _step_runq(self, sample: bool) -> int | None:
        """The thread's run-queue delay since the last boundary, read as ``_step_faults`` is
        (the same thread at both ends, this boundary read now)."""
        last, self._runq_at = self._runq_at, None
        if not sample:
            return None
        now = self._runq.read()
        if now is None:
            return None
        me = threading.get_ident()
        self._runq_at = (me, now)
        return now - last[1] if last is not None and last[0] == me else None

    def _step_faults(self, sample: bool) -> int | None:
        """Faults since the last boundary, if the same thread read both counts (RUSAGE_THREAD
        is per thread) and this boundary is read now; a boundary found after the fact leaves
        this step and the next null (the count since then spans several steps)."""
        last, self._step_faults_at = self._step_faults_at, None
        if not sample:
            return None
        me, now = threading.get_ident(), minor_faults()
        self._step_faults_at = (me, now)
        return now - last[1] if last is not None and last[0] == me else None

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
