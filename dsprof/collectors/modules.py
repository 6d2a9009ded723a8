"""Module spans with qualified names, for the op timeline.

While a profiler window records, global forward hooks bracket every module call in a
``dsprof.module: <name>`` annotation. The Python tracer's own ``nn.Module: Linear_0`` events
number instances per class; users (and the checkpointing advice, which must name modules to
wrap) need ``TransformerLM.blocks.3.mlp``. The first module called with no module above it is a
root; its ``named_modules()`` give every descendant its qualified name, once per window (the
rule, shared with the knobs: :class:`dsprof.module_paths.ModuleNames`).
Hooks exist only inside windows and are skipped while torch.compile traces.
"""

from __future__ import annotations

import threading
from typing import Any

from dsprof.log import logger
from dsprof.module_paths import ModuleNames
from dsprof.vocabulary import DSPROF_MODULE_PREFIX

__all__ = ["ModuleAnnotator", "ModuleNames"]


class ModuleAnnotator:
    def __init__(self) -> None:
        self._names = ModuleNames()
        self._local = threading.local()
        self._handles: list[Any] = []

    @property
    def installed(self) -> bool:
        return bool(self._handles)

    def install(self) -> None:
        if self._handles:
            return
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self._names.clear()
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        logger.debug("module annotator: global forward hooks installed")

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        stack = getattr(self._local, "stack", None)
        while stack:
            _close(stack.pop())

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        if torch.compiler.is_compiling():
            return
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        name = self._names.name(module, stack[-1][1] if stack else None)
        rf = torch.autograd.profiler.record_function(DSPROF_MODULE_PREFIX + name)
        rf.__enter__()
        stack.append((module, name, rf))

    def _post(self, module: Any, args: Any, output: Any) -> None:
        import torch

        # traced, the stack (which holds the compiled call's OptimizedModule) is a Dynamo
        # internal error ("already tracked for mutation"); the pre-hook skipped this call anyway
        if torch.compiler.is_compiling():
            return
        stack = getattr(self._local, "stack", None)
        if not stack:
            return
        # Pop to this module: a module whose forward raised may have left entries above it.
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][0] is module:
                while len(stack) > k:
                    _close(stack.pop())
                return


def _close(entry: tuple[Any, str, Any]) -> None:
    try:
        entry[2].__exit__(None, None, None)
    except RuntimeError:  # the profiler stopped under it; nothing left to close
        pass
