"""``DS_OPTIMIZER_FUSED=1`` / ``DS_OPTIMIZER_FOREACH=1``: switch optimizers' implementation.

torch optimizers default to the per-parameter loop on CPU (and to ``foreach`` on CUDA): one
small op per parameter and state tensor. ``fused=True`` (Adam, AdamW, SGD, Adagrad on CPU and
CUDA) updates all parameters in one kernel per group; ``foreach=True`` batches each op over the
parameter list. A global optimizer step pre-hook sets the flag on every param group that has
neither before the optimizer's first step, so its state is created for that implementation.
Optimizers without a fused implementation are left as they are (and listed in meta.json).
"""

from __future__ import annotations

from typing import Any, ClassVar

from dsprof.apply import Knob
from dsprof.errors import ConfigError
from dsprof.settings import _FALSE, _TRUE

# torch 2.13 optimizers with a fused implementation (torch.optim._multi_tensor / _fused ops).
FUSED = ("Adam", "AdamW", "SGD", "Adagrad")


class _OptimizerKnob(Knob):
    flag: ClassVar[str] = ""

    def parse(self) -> None:
        low = self.value.lower()
        if low not in _TRUE | _FALSE:
            raise ConfigError(f"{self.env}={self.value!r}: expected 1 or 0")
        self.enabled = low in _TRUE
        self.switched: list[str] = []
        self.left: list[str] = []
        self._handle: Any = None

    def install(self) -> None:
        if not self.enabled:
            return
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._handle = register_optimizer_step_pre_hook(self._pre)

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if getattr(optimizer, "_dsprof_knob_seen", False):
            return
        optimizer._dsprof_knob_seen = True
        name = type(optimizer).__name__
        if optimizer.state or (self.flag == "fused" and name not in FUSED):
            self.left.append(name)
            return
        for group in optimizer.param_groups:
            if group.get("fused") or group.get("foreach"):
                continue
            if "foreach" in group:
                group["foreach"] = self.flag == "foreach"
            group[self.flag] = True
        self.switched.append(name)

    def report(self) -> dict[str, Any]:
        return {"switched": self.switched, "left_unchanged": self.left}


class OptimizerFusedKnob(_OptimizerKnob):
    env = "DS_OPTIMIZER_FUSED"
    doc = "1: use fused=True for Adam, AdamW, SGD and Adagrad"
    flag = "fused"


class OptimizerForeachKnob(_OptimizerKnob):
    env = "DS_OPTIMIZER_FOREACH"
    doc = "1: use foreach=True for every optimizer that has neither foreach nor fused"
    flag = "foreach"
