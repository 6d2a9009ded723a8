"""Step boundaries for the whole run, without code changes.

A global optimizer step post-hook marks the end of each training step. The first optimizer
that steps leads: only its steps are boundaries, so a GAN's two optimizers or a model with a
separate optimizer per parameter group still give one boundary per iteration. ``dsprof.step()``
marks boundaries by hand (inference, custom loops); once it is called the optimizer hook stops
counting, so the two never double-count.

Without an optimizer (parameters updated by hand) the end of every ``backward()`` is the
fallback boundary (collectors/step_sources.py). Gradient accumulation runs several backwards per
optimizer step, so backward ends are only kept aside until the run shows no optimizer: at
``BACKWARD_DECIDE_CALLS`` backwards, or ``BACKWARD_DECIDE_S`` seconds after the first, with no
optimizer step in between (or at exit). Then the kept ends become boundaries, after the fact,
and every later backward marks one live. An optimizer that steps later still takes over (each
step row says which source marked it). The backward that ends an iteration precedes a manual
update, so with this source the update of iteration k is timed in step k+1: step times are the
same in a steady loop.

A run with neither, and no optimizer built, steps at the end of every outermost module call
(an inference run: collectors/forward_watch.py); its training, if any, takes over from them.

A run can hold several loops one after another: that inference loop, or an optimizer that
takes the boundaries over from one that is gone or stopped stepping (step_leader.py).
``loop_starts`` lists the first step of each loop after the first; the timeline is told
(``on_new_loop``), so each loop gets windows of its own (ingest/disturbed.py picks one).

Per boundary: a clock read, a list append, an RSS read, the step's DataLoader wait and on an
accelerator the allocator's peak counter: cheap enough for every step of the run.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

from dsprof.collectors.compile_watch import invisible_to_dynamo
from dsprof.collectors.device import Device
from dsprof.collectors.forward_watch import ForwardWatch
from dsprof.collectors.modules import ModuleAnnotator
from dsprof.collectors.script_signals import deferring
from dsprof.collectors.step_leader import StepLeader
from dsprof.collectors.step_loops import late_loop, new_loop, training_after_forwards
from dsprof.collectors.step_runtime import StepRuntime
from dsprof.collectors.step_samples import BoundarySamples, TakeData, log_step_line
from dsprof.collectors.step_scaler import scaler_updated
from dsprof.collectors.step_sources import (
    BackwardWatch,
    ClosureMarker,
    GradWatch,
    optimizer_made,
)
from dsprof.log import FILE_LINE, logger

# With no optimizer step seen, backward() becomes the step source after this many calls ...
BACKWARD_DECIDE_CALLS = 64
# ... or this many seconds after the first (gradient accumulation cycles are shorter than this
# in every loop we measured: nanoGPT's 40 micro-batches take seconds on a GPU)
BACKWARD_DECIDE_S = 20.0


class StepCollector:
    """Records every step boundary and notifies listeners (the timeline collector).

    Args:
        device: the rank's device (for per-step peak memory).
        on_boundary: called with the number of the step that just ended.
    """

    def __init__(self, device: Device, on_boundary: Callable[[int], None],
                 take_data: TakeData | None = None,
                 modules: ModuleAnnotator | None = None):
        self.on_boundary = on_boundary
        # what is read of the process at each boundary (memory, data loaders)
        self.samples = BoundarySamples(device, take_data)
        self.clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        self.start_ns = self.now_ns()
        self.boundaries_ns: list[int] = []
        # the run-clock time of the last end that is or may become a boundary (one kept aside,
        # another optimizer's step): what the host-sync collector keys a call by (step_at)
        self.last_end_ns = self.start_ns
        self.cpu_ns: list[int] = []
        # per step: the garbage collector's time and the optimizer's page faults
        self.runtime = StepRuntime()
        self._pre_hook: Any = None
        self._cpu_start = time.thread_time_ns()
        self.source: str | None = None
        self.sources: list[str] = []  # per boundary: what marked it
        # backward() ends not yet known to be step boundaries: (end_ns, thread cpu ns)
        self._pending_backward: list[tuple[int, int]] = []
        self.backward = BackwardWatch(deferring(self._backward_ended), self.now_ns)
        # torch.autograd.grad ends: backward() ends until the run's first backward()
        self.grads = GradWatch(deferring(self._grad_ended), self.now_ns)
        self.runtime.autograd_calls = (self.backward, self.grads)
        # the outermost-forward watch: on until a backward() or optimizer step (training)
        self.forwards = ForwardWatch(modules, deferring(self._forward_ended))
        # called at every watched forward end (the bootstrap capture's spans)
        self.after_forward: Callable[[], None] | None = None
        self.closures = self.runtime.closures = ClosureMarker()
        # called at every backward() end (the timeline's capture cap under torch.compile)
        self.after_backward: Callable[[], None] | None = None
        # told the last step found after the fact, before its boundary is announced
        self.on_late_steps: Callable[[int], None] | None = None
        # the first step of each loop after the first (module docstring), and who is told
        # (first step, the step the schedule counts from) before the boundary is announced
        self.loop_starts: list[int] = []
        self.on_new_loop: Callable[[int, int], None] | None = None
        # the step whose end made backward() the step source while the script ran: until the
        # step after it, the timeline's whole-run capture was recording (dsprof's own cost)
        self.decided_step: int | None = None
        self.leader = StepLeader()  # which optimizer's steps are the boundaries
        self._hook: Any = None
        # GradScaler, per step number: (loss scale after update, optimizer step skipped)
        self.scaler: dict[int, tuple[float, bool]] = {}
        self._stepped_since_update = False
        self._deferred: int | None = None  # a boundary marked inside backward(), not yet told

    def now_ns(self) -> int:
        """Epoch ns from the monotonic clock: the clock Kineto traces use, without NTP jumps."""
        return time.perf_counter_ns() + self.clock_offset_ns

    @property
    def steps_done(self) -> int:
        return len(self.boundaries_ns)

    def step_at(self, end_ns: int) -> int:
        """The step a moment after the end ``end_ns`` (a ``last_end_ns``) falls in, as the
        boundaries stand now: ends kept aside may have become boundaries since, or not."""
        return bisect.bisect_right(self.boundaries_ns, end_ns)

    def install(self) -> None:
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        invisible_to_dynamo(StepCollector._optimizer_stepped, recursive=True)
        invisible_to_dynamo(StepCollector._optimizer_starting, recursive=True)
        # the script's signal handlers wait for dsprof's work in them (script_signals.py)
        self._pre_hook = register_optimizer_step_pre_hook(deferring(self._optimizer_starting))
        self._hook = register_optimizer_step_post_hook(deferring(self._optimizer_stepped))
        self.closures.install()
        self.backward.install()
        self.grads.install()
        if self.forwards.modules is not None:
            invisible_to_dynamo(StepCollector._forward_ended, recursive=True)
            invisible_to_dynamo(ForwardWatch._called, recursive=True)
            self.forwards.install()
        self.runtime.install()
        self.samples.start()
        logger.debug("step collector: optimizer step hooks and backward watch installed")

    def uninstall(self) -> None:
        for hook in (self._hook, self._pre_hook):
            if hook is not None:
                hook.remove()
        self._hook = self._pre_hook = None
        self.closures.uninstall()
        self.backward.uninstall()
        self.grads.uninstall()
        self.runtime.uninstall()
        self.settle()
        self.forwards.stop()

    def settle(self) -> None:
        """At exit: backward ends still kept aside become the steps if nothing else marked
        any (a short loop with no optimizer), or else forward ends (a short inference loop)."""
        if self.source in (None, "forward") and self._pending_backward:
            self._use_backward_source(live=False)
        elif self.source is None and len(self.forwards.pending) >= 2:
            # one forward is the whole run either way: a run without steps says so
            self._use_forward_source(live=False)
        elif self.source == "optimizer":
            late_loop(self, self.leader.at_exit(), False)

    def forwards_off(self) -> None:
        """torch.compile is in use: the module hooks are gone (compile_watch.py), and forwards
        seen before it are not the steps of the compiled program; torch.autograd.grad is
        torch's own again (Dynamo handles it)."""
        self.forwards.stop()
        self.grads.uninstall()

    def _forward_ended(self, module: Any) -> None:
        """An outermost module call returned (a boundary raises nothing but the memory
        budget's error, into the script, as the optimizer hook's does)."""
        if self.source == "forward":
            self.boundary("forward")
            return
        if self.source is not None:
            return
        self.last_end_ns = self.now_ns()
        due = self.forwards.keep(self.last_end_ns, time.thread_time_ns())
        if self.after_forward is not None:
            self.after_forward()
        if due:
            self._use_forward_source(live=True)

    def _use_forward_source(self, live: bool) -> None:
        if optimizer_made():
            # a training script whose first backward() is still to come: its forwards are
            # never steps, and the watch is no use to it
            # (dsprof.log only: nothing for the user to do, the optimizer's steps will come;
            # an RL script's rollout of forwards before its first update said "call
            # dsprof.step()" on its terminal)
            logger.info("%d outermost forward calls and no optimizer step or backward() yet, "
                        "but an optimizer exists: the steps will be its steps, not these "
                        "forward calls", len(self.forwards.pending), extra=FILE_LINE)
            self.forwards.stop()
            return
        logger.info("no optimizer step and no backward() after %d outermost forward calls: "
                    "each one ends a step (inference; call dsprof.step() each iteration to "
                    "mark steps yourself)", len(self.forwards.pending))
        pending, self.forwards.pending = self.forwards.pending, []
        self._decide("forward", pending, live)

    def _grad_ended(self, end_ns: int) -> None:
        """A ``torch.autograd.grad`` returned: an iteration's end while the run has shown
        no ``backward()`` (collectors/step_sources.py)."""
        self._announce()
        if not self.backward.calls:
            self._backward_ended(end_ns)

    def _backward_ended(self, end_ns: int) -> None:
        self._announce()
        if self.backward.calls == 1 and self.source in (None, "forward"):
            # the run's first backward(): the ends kept aside so far were torch.autograd.grad
            # calls, parts of its iterations (a gradient penalty), not their ends
            self._pending_backward = []
        self.forwards.stop()
        if self.after_backward is not None:
            self.after_backward()
        if self.source in ("optimizer", "manual"):
            return
        if self.source == "backward":
            self.boundary("backward")
            return
        self._pending_backward.append((end_ns, time.thread_time_ns()))
        self.last_end_ns = end_ns
        n = len(self._pending_backward)
        if n >= BACKWARD_DECIDE_CALLS or (
                n >= 2 and end_ns - self._pending_backward[0][0] >= BACKWARD_DECIDE_S * 1e9):
            self._use_backward_source(live=True)

    def _use_backward_source(self, live: bool) -> None:
        pending, self._pending_backward = self._pending_backward, []
        what = "backward()" if self.backward.calls else "torch.autograd.grad"
        logger.info("no optimizer step after %d %s calls: each one ends a step (call "
                    "dsprof.step() each iteration to mark steps yourself)", len(pending), what)
        self._decide("backward", pending, live)

    def _decide(self, source: str, pending: list[tuple[int, int]], live: bool) -> None:
        """The ends kept aside become boundaries of ``source``. ``live=False`` at exit: the
        boundaries are recorded, but the timeline is not told (the whole-run capture it holds
        is kept, as for a run without steps)."""
        before = self.source
        self.source = source
        first = len(self.boundaries_ns)
        for end_ns, cpu in pending[:-1]:
            self._record_boundary(source, end_ns, cpu, sample=False)
        if before == "forward" and source != "forward":
            training_after_forwards(self, first, live)
        end_ns, cpu = pending[-1]
        self._record_boundary(source, end_ns, cpu, sample=live)
        if live:
            last = len(self.boundaries_ns) - 1
            if before is None:
                # only the first decision ends the whole-run capture: after forward steps,
                # the backward ends kept aside ran outside any capture (steady steps)
                self.decided_step = last
            if self.on_late_steps is not None:
                self.on_late_steps(last)
            self.on_boundary(last)

    def _optimizer_starting(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        if torch.compiler.is_compiling():
            return
        # Optimizer.step(closure=None): a closure runs forward and backward inside the call
        # (args[0] is the optimizer itself: torch passes the bound call's full args)
        self.runtime.optimizer_starting(
            optimizer, closure=(len(args) >= 2 and callable(args[1]))
            or callable((kwargs or {}).get("closure")))

    def _optimizer_stepped(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        # A compiled opt.step: Dynamo inlines this hook, and a boundary is no part of a graph
        # (steps then come from backward(), or from dsprof.step()).
        if torch.compiler.is_compiling():
            return
        self.runtime.optimizer_ended()
        self.forwards.stop()
        if self.source == "manual":
            return
        self.last_end_ns = self.now_ns()  # another optimizer's steps can be boundaries later
        ends, late = self.leader.stepped(optimizer, self.last_end_ns, time.thread_time_ns(),
                                         len(self.boundaries_ns))
        if not ends:
            if late:  # another optimizer's loop, over: its steps, and the last ends now
                self.on_boundary(late_loop(self, late, True))
            elif self.leader.new_loop:  # handed over after a long split: whole iterations now
                new_loop(self, len(self.boundaries_ns), True, "the optimizer that steps last")
            return
        first = len(self.boundaries_ns)
        late_loop(self, late, True if self.source == "optimizer" else None,
                  f"a new {type(optimizer).__name__}")
        if self.source == "forward":
            training_after_forwards(self, first, True)
        if self.source in ("backward", "forward"):
            logger.info("an optimizer stepped: step boundaries now come from it, "
                        "not from %s", "backward()" if self.source == "backward" else
                        "forward calls")
        self._pending_backward = []  # gradient accumulation: backwards were micro-batches
        self.source = "optimizer"
        self._stepped_since_update = True
        self.boundary("optimizer")

    @deferring
    def manual_step(self) -> None:
        self.forwards.stop()
        if self.source == "forward":
            training_after_forwards(self, len(self.boundaries_ns), True)
        if self.source != "manual":
            if self.source in ("optimizer", "backward", "forward"):
                logger.info("dsprof.step() called: step boundaries now come from it, "
                            "not from %s", self.source)
            self.source = "manual"
            self._pending_backward = []
        self.boundary("manual")

    @deferring
    def scaler_update(self, scale: float, skipped: bool) -> None:
        """A ``GradScaler.update()`` (collectors/step_scaler.py)."""
        scaler_updated(self, scale, skipped)

    def boundary(self, source: str) -> None:
        step = self._record_boundary(source, self.now_ns(), time.thread_time_ns(), sample=True)
        self._announce()
        if self.backward.in_call or self.grads.in_call:
            # an optimizer stepped in a backward hook: the window work waits for backward() to
            # return (inside it: "Profiler is already enabled on this thread")
            self._deferred = step
        else:
            self.on_boundary(step)

    def _announce(self) -> None:
        """Tell the timeline of a boundary a backward() held back, once it has returned."""
        if self._deferred is not None and not (self.backward.in_call or self.grads.in_call):
            step, self._deferred = self._deferred, None
            self.on_boundary(step)

    def _record_boundary(self, source: str, end: int, cpu: int, sample: bool) -> int:
        """Append one boundary; ``sample=False`` (a boundary recorded after the fact) leaves
        memory and data-loader figures null: they were not read at that moment."""
        self.cpu_ns.append(cpu - self._cpu_start)
        self._cpu_start = cpu
        self.runtime.take(sample)
        step = len(self.boundaries_ns)
        start = self.boundaries_ns[-1] if step else self.start_ns
        self.boundaries_ns.append(end)
        self.last_end_ns = max(self.last_end_ns, end)
        self.sources.append(source)
        if not sample:
            self.samples.skip()
            log_step_line(step, end - start, source)
        else:
            log_step_line(step, end - start, source, self.samples.take())
        return step

    def record(self) -> dict[str, Any]:
        n = len(self.boundaries_ns)
        return {
            "source": self.source or "none", "sources": self.sources,
            "backward_calls": self.backward.calls, "grad_calls": self.grads.calls,
            "forward_calls": self.forwards.calls, "forward_modules": self.forwards.classes,
            "decided_step": self.decided_step, "handover_step": self.leader.handover_step,
            "loop_starts": self.loop_starts, "closure_steps": self.closures.closures,
            "start_ns": self.start_ns, "boundaries_ns": self.boundaries_ns, "cpu_ns": self.cpu_ns,
            **self.runtime.record(),
            **self.samples.record(),
            "loss_scale": [self.scaler[i][0] if i in self.scaler else None for i in range(n)],
            "skipped": [self.scaler[i][1] if i in self.scaler else None for i in range(n)],
        }

