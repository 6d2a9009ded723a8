"""``DS_AUTOCAST=bf16|fp16``: run every root module's forward under ``torch.autocast``;
``DS_AUTOCAST=off``: the script's own CPU autocast regions run with ``enabled=False``.

Autocast belongs around the forward pass (and the loss), not the backward pass or the
optimizer. Without a code change the closest place is the outermost module call: a global
forward pre-hook enters ``torch.autocast(device, dtype)`` when a module is called with no
module above it on this thread, and the matching forward hook (``always_call``) leaves it.
The loss computed outside the model runs in the dtype autocast left its inputs in; losses
that autocast lists as fp32 ops (cross_entropy, mse_loss) are upcast by torch itself.

``off`` applies the cpu_autocast finding's fix exactly: every ``torch.autocast("cpu", ...)``
(also ``torch.cpu.amp.autocast``, a subclass, and the one Lightning's ``precision="bf16-mixed"``
enters around each training step: ``torch.autocast(self.device, dtype=..., ...)`` in its
MixedPrecision plugin, and the HF Trainer's ``bf16=True``) is built with ``enabled=False``,
which is what the pasted ``enabled=False`` (or deleting the block) does. The class's
``__init__`` is wrapped for the run, so contexts made before the session started are not
changed (none are: the knob installs before the script runs). GPU autocast is left alone.
"""

from __future__ import annotations

import threading
from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}
OFF = ("off", "0", "fp32", "false")


class AutocastKnob(Knob):
    env = "DS_AUTOCAST"
    doc = ("bf16 or fp16: run forward passes under torch.autocast with that dtype; off: the "
           "script's CPU autocast regions run disabled")

    def parse(self) -> None:
        low = self.value.lower()
        self.off = low in OFF
        self.disabled = 0
        self._original_init: Any = None
        self._handles: list[Any] = []
        if self.off:
            return
        if low not in _DTYPES:
            raise ConfigError(f"{self.env}={self.value!r}: expected bf16, fp16 or off")
        if _DTYPES[low] == "float16" and self.device_kind == "cpu":
            raise ConfigError(f"{self.env}=fp16 on a CPU run: CPU autocast supports bf16; "
                              f"use {self.env}=bf16")
        self.dtype_name = _DTYPES[low]
        self._local = threading.local()
        self.forwards = 0

    def install(self) -> None:
        if self.off:
            self._install_off()
            return
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]

    def _install_off(self) -> None:
        from torch.amp import autocast_mode

        original = self._original_init = autocast_mode.autocast.__init__
        knob = self

        def init_disabled(ctx: Any, device_type: str, *args: Any, **kwargs: Any) -> None:
            if device_type == "cpu":
                # enabled is the third positional parameter (device_type, dtype, enabled, ...)
                if len(args) >= 2:
                    args = (args[0], False, *args[2:])
                else:
                    kwargs["enabled"] = False
                knob.disabled += 1
            original(ctx, device_type, *args, **kwargs)

        autocast_mode.autocast.__init__ = init_disabled  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        if self._original_init is not None:
            from torch.amp import autocast_mode

            autocast_mode.autocast.__init__ = self._original_init  # type: ignore[method-assign]
            self._original_init = None
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
        if self.off:
            return {"dtype": "off", "disabled": self.disabled}
        return {"dtype": self.dtype_name, "forwards": self.forwards}
