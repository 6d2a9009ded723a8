"""``DS_AUTOCAST=bf16|fp16``: run every root module's forward under ``torch.autocast``.

Autocast belongs around the forward pass (and the loss), not the backward pass or the
optimizer. Without a code change the closest place is the outermost module call: a global
forward pre-hook enters ``torch.autocast(device, dtype)`` when a module is called with no
module above it on this thread, and the matching forward hook (``always_call``) leaves it.
The loss computed outside the model runs in the dtype autocast left its inputs in; losses
that autocast lists as fp32 ops (cross_entropy, mse_loss) are upcast by torch itself.
"""

from __future__ import annotations

import threading
from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


class AutocastKnob(Knob):
    env = "DS_AUTOCAST"
    doc = "bf16 or fp16: run forward passes under torch.autocast with that dtype"

    def parse(self) -> None:
        low = self.value.lower()
        if low not in _DTYPES:
            raise ConfigError(f"{self.env}={self.value!r}: expected bf16 or fp16")
        if _DTYPES[low] == "float16" and self.device_kind == "cpu":
            raise ConfigError(f"{self.env}=fp16 on a CPU run: CPU autocast supports bf16; "
                              f"use {self.env}=bf16")
        self.dtype_name = _DTYPES[low]
        self._local = threading.local()
        self._handles: list[Any] = []
        self.forwards = 0

    def install(self) -> None:
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        if torch.compiler.is_compiling():
            return
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        if stack:
            stack.append((module, None))
            return
        device = "cpu" if self.device_kind == "cpu" else "cuda"
        ctx = torch.autocast(device_type=device, dtype=getattr(torch, self.dtype_name))
        ctx.__enter__()
        stack.append((module, ctx))
        self.forwards += 1

    def _post(self, module: Any, args: Any, output: Any) -> None:
        stack = getattr(self._local, "stack", None)
        if not stack:
            return
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][0] is module:
                while len(stack) > k:
                    _, ctx = stack.pop()
                    if ctx is not None:
                        ctx.__exit__(None, None, None)
                return

    def report(self) -> dict[str, Any]:
        return {"dtype": self.dtype_name, "forwards": self.forwards}
