"""Outermost forward calls as a step source of last resort (collectors/steps.py decides).

A run with no optimizer step, no ``backward()`` and no ``dsprof.step()``, and no optimizer
built (inference: ``torch.inference_mode()`` or ``no_grad()`` loops, HF ``generate()``,
Lightning's ``predict``), steps at the end of every *outermost* module call, one with no module
call above it on the stepping thread (collectors/modules.py watches them with the module
annotator's hooks). ``generate()`` calls the model once per token, so a step there is one
decode step (the first of each call is the prompt's prefill), not a whole generation: a
token's latency is the figure decoding is judged by, and a ``generate()`` call is no module
call (finding it would need one more wrapper).

Training must stay as it was, and a training loop runs forwards before its first
``backward()`` (several, with evaluation first), so forward ends are kept aside here: the first
``backward()`` or optimizer step drops them and takes the watch away for good;
``FORWARD_DECIDE_CALLS`` forwards, or ``FORWARD_DECIDE_S`` seconds of them, with neither, make
them the steps (or the exit does), unless the script has built an optimizer by then
(``optimizer_made``: it trains later; PPO's rollouts run thousands of forwards first): then
the watch goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dsprof.collectors.modules import ModuleAnnotator

# Outermost forwards become the step source after this many calls (a 40-forward loop then
# still gets a window at the default schedule: steps 22-24), or this many seconds after the
# first. A training script's evaluation before it trains (Lightning's sanity check: 2
# batches) stays below it.
FORWARD_DECIDE_CALLS = 16
FORWARD_DECIDE_S = 20.0
# grad-mode outermost calls remembered for training_forwards: a first iteration's forward is
# a handful of them (the model, a loss module, a teacher)
TAIL_KEPT = 8


class ForwardWatch:
    """Counts outermost forward calls (their module classes too) and keeps their ends aside
    while the step source is undecided.

    Args:
        modules: the module annotator whose hooks see the calls (None: no watch).
        on_forward: told the module of every outermost call while watched.
    """

    def __init__(self, modules: ModuleAnnotator | None, on_forward: Callable[[Any], None]):
        self.modules = modules
        self.on_forward = on_forward
        self.watching = False
        self.pending: list[tuple[int, int]] = []  # (end_ns, thread cpu ns)
        self.calls = 0
        self.classes: dict[str, int] = {}
        # the outermost calls since the last one run without grad (no_grad, inference_mode):
        # when training takes over they are its first iteration's forward (training_forwards)
        self.grad_tail: list[str] = []
        self.saw_no_grad = False

    def install(self) -> None:
        if self.modules is not None:
            self.modules.watch_outermost(self._called)
            self.watching = True

    def _called(self, module: Any) -> None:
        self.calls += 1
        name = type(module).__name__
        self.classes[name] = self.classes.get(name, 0) + 1
        if torch.is_grad_enabled():
            self.grad_tail.append(name)
            del self.grad_tail[:-TAIL_KEPT]
        else:
            self.grad_tail.clear()
            self.saw_no_grad = True
        self.on_forward(module)

    def training_forwards(self) -> int:
        """Training took over (its first ``backward()`` or optimizer step): how many of the
        last outermost calls were its first iteration's forward, not inference. Those since
        the last call without grad, where the inference ran under ``no_grad`` or
        ``inference_mode`` (features extracted, then a head trained); else, every call in
        grad mode (an evaluation that forgot ``no_grad``), the last calls up to the first
        module class seen twice: one iteration of a loop that calls its model, then a loss
        module (``nn.CrossEntropyLoss``), gives both, and one that calls a single module gives
        that one, which the ``backward()`` needed. They leave the counts of inference
        forwards (meta ``forward_calls``, ``forward_modules``)."""
        tail = self.grad_tail if self.saw_no_grad else _one_iteration(self.grad_tail)
        for name in tail:
            self.calls -= 1
            self.classes[name] -= 1
            if not self.classes[name]:
                del self.classes[name]
        self.grad_tail = []
        return len(tail)

    def keep(self, end_ns: int, cpu_ns: int) -> bool:
        """Keep a forward end aside; True when the decision is due."""
        self.pending.append((end_ns, cpu_ns))
        n = len(self.pending)
        return n >= FORWARD_DECIDE_CALLS or (
            n >= 2 and end_ns - self.pending[0][0] >= FORWARD_DECIDE_S * 1e9)

    def stop(self) -> None:
        """Forward ends are no steps from here on (training, torch.compile, or the end)."""
        self.pending = []
        if self.watching and self.modules is not None:
            self.modules.stop_watching()
        self.watching = False


def _one_iteration(calls: list[str]) -> list[str]:
    """The last calls of ``calls`` whose module classes are all different: a loop's last
    iteration, where the loop calls each module once."""
    seen: set[str] = set()
    for i in range(len(calls) - 1, -1, -1):
        if calls[i] in seen:
            return calls[i + 1:]
        seen.add(calls[i])
    return calls
