"""Whether the optimizer that marks the step boundaries stopped stepping while another one
took over the loop, for :mod:`dsprof.collectors.steps`.

An LR range test runs its own optimizer for a few dozen steps, then training builds a new one.
When the script keeps the first one alive (a variable of its own, an ``LRFinder`` holding it),
the step collector's leader never steps again, and the new optimizer's steps, read as a second
optimizer of the same loop (a GAN's generator), ended no step: every training step was lost
(47 range-test steps, none of the 60 training steps). A GAN's or WGAN's optimizers also step
in runs (5 critic steps per generator step, 100 in the reference WGAN's first iterations), so
a run hands the boundaries over only when it is long (``STALE_RUN`` steps in a row), at least
as long as the leader's whole reign, and its optimizer never led (a WGAN's critic led before
the generator took over)."""

from __future__ import annotations

import weakref
from typing import Any

# Steps in a row of one other optimizer, with no step of the leader, before the leader can be
# judged gone: above any critic-to-generator ratio seen in practice within one iteration.
STALE_RUN = 16


class LeaderWatch:
    """The leader's step count, and the current run of another optimizer's step ends."""

    def __init__(self) -> None:
        self._led: weakref.WeakSet[Any] = weakref.WeakSet()
        self.leader_steps = 0
        self._run_of: weakref.ref[Any] | None = None
        self._run: list[tuple[int, int]] = []

    def leads(self, optimizer: Any) -> None:
        """``optimizer`` marks the boundaries from now on."""
        self._led.add(optimizer)
        self.leader_steps = 0
        self._run_of, self._run = None, []

    def leader_stepped(self) -> None:
        self.leader_steps += 1
        self._run_of, self._run = None, []

    def other_stepped(self, optimizer: Any, end_ns: int, cpu_ns: int) -> list[tuple[int, int]]:
        """The ends of ``optimizer``'s run (this step's last) when it has taken over the loop,
        else an empty list."""
        if optimizer in self._led:
            return []  # a WGAN's critic after the generator took over: its runs are normal
        if self._run_of is None or self._run_of() is not optimizer:
            self._run_of, self._run = weakref.ref(optimizer), []
        self._run.append((end_ns, cpu_ns))
        if len(self._run) < max(STALE_RUN, self.leader_steps):
            return []
        run, self._run_of, self._run = self._run, None, []
        return run
