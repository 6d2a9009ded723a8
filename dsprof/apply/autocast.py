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
changed (none are: the knob installs as the script's ``import torch`` ends). GPU autocast is left alone.

Inside code ``torch.compile`` traces, ``__init__`` never runs: Dynamo models an autocast
region from its call's arguments (``AutocastModeVariable.create``, which binds them against
the class's signature). The wrapper keeps that signature (a bare ``*args`` wrapper made Dynamo
fail with ``KeyError: dtype`` on an autocast inside a compiled function), and Dynamo's
``create`` is wrapped too, so such a region is compiled disabled; ``compiled`` counts them
(once per graph compiled, not per call). Dynamo is not imported for that (1.1 s): the wrap is
put in place as ``torch._dynamo`` finishes loading (``collectors.torch_arrival``), whoever loads
it: ``torch.compile``'s first call, ``torch._dynamo.optimize`` (which the wrap of
``torch.compile`` alone missed: Dynamo then traced the wrapped ``__init__``, and ``compiled``
said 0), the script's import; at install where Dynamo is loaded already.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from dsprof.apply import Knob
from dsprof.collectors.torch_arrival import stop_waiting, when_imported
from dsprof.errors import ConfigError

DYNAMO = "torch._dynamo"

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
        self.compiled = 0
        self._original_init: Any = None
        self._original_create: Any = None
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

        @functools.wraps(original)  # Dynamo binds calls against this signature
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
        # the Dynamo wrap goes in as Dynamo loads, before anything is traced: by torch.compile's
        # first call, torch._dynamo.optimize (older scripts), or the script's own import
        when_imported(DYNAMO, self._off_in_compiled_code)

    def _off_in_compiled_code(self) -> None:
        """Autocast regions Dynamo traces on the CPU are compiled disabled."""
        try:
            from torch._dynamo.variables.ctx_manager import AutocastModeVariable
        except ImportError:  # no Dynamo in this torch: nothing is traced
            return
        if self._original_create is not None:
            return
        original = self._original_create = AutocastModeVariable.create
        knob = self

        def create(func: Any, args: Any, kwargs: Any) -> Any:
            var = original(func, args, kwargs)
            values = list(var.target_values)  # device_type, dtype, enabled, cache_enabled
            if len(values) >= 3 and values[0] == "cpu" and values[2]:
                values[2] = False
                knob.compiled += 1
                return AutocastModeVariable(values, initial_values=None)
            return var

        AutocastModeVariable.create = staticmethod(create)  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original_init is not None:
            from torch.amp import autocast_mode

            autocast_mode.autocast.__init__ = self._original_init  # type: ignore[method-assign]
            self._original_init = None
        stop_waiting(DYNAMO)
        if self._original_create is not None:
            from torch._dynamo.variables.ctx_manager import AutocastModeVariable

            AutocastModeVariable.create = staticmethod(  # type: ignore[method-assign]
                self._original_create)
            self._original_create = None
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
            return {"dtype": "off", "disabled": self.disabled, "compiled": self.compiled}
        return {"dtype": self.dtype_name, "forwards": self.forwards}
