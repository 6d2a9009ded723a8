"""Module spans with qualified names, for the op timeline; and the end of every outermost
module call, for runs whose steps are forwards.

One pair of global forward hooks does both. While a profiler window records, they bracket every
module call in a ``dsprof.module: <name>`` annotation. The Python tracer's own
``nn.Module: Linear_0`` events number instances per class; users (and the checkpointing advice,
which must name modules to wrap) need ``TransformerLM.blocks.3.mlp``. The first module called
with no module above it is a root; its ``named_modules()`` give every descendant its qualified
name, once per window (the rule, shared with the knobs: :class:`dsprof.module_paths.ModuleNames`).

While a run may still turn out to be inference only (no optimizer step, no ``backward()`` yet:
collectors/steps.py), the same hooks tell the step collector each time a call with no module
call above it on the stepping thread returns. The per-thread stack of open calls is what both
need, so the hooks stay installed while either is wanted and never twice; outside windows a
hook is a list push or pop. Hooks are skipped while torch.compile traces, and removed for good
once the program uses it (collectors/compile_watch.py). They are skipped too while
``torch.jit.trace`` runs the model: the tracer records every op a hook calls, and a
``record_function`` span's handle is an object the trace cannot hold (the script's trace
failed with a JIT internal assert); nor is a traced call an inference step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dsprof.log import logger
from dsprof.module_paths import ModuleNames
from dsprof.vocabulary import DSPROF_MODULE_PREFIX

__all__ = ["ModuleAnnotator", "ModuleNames"]

# torch's, looked up when the hooks are installed (importing dsprof imports no torch)
_is_compiling: Callable[[], bool] = bool
_record_function: Any = None
_tracing_state: Callable[[], Any] = type(None)


class ModuleAnnotator:
    def __init__(self) -> None:
        self._names = ModuleNames()
        self._local = threading.local()
        self._handles: list[Any] = []
        self.annotating = False
        # (thread, callback): told the module of every outermost call that returns there
        self._outermost: tuple[int, Callable[[Any], None]] | None = None

    @property
    def installed(self) -> bool:
        """Whether module spans are being written (a window records)."""
        return self.annotating

    def install(self) -> None:
        """Annotate module calls (a window starts recording)."""
        if self.annotating:
            return
        self._names.clear()
        self.annotating = True
        self._hook()
        logger.debug("module annotator: annotating module calls")

    def uninstall(self) -> None:
        """Stop annotating (the window stopped): the spans open on this thread are closed; the
        calls stay on the stack while the outermost-call watch still counts them."""
        self.annotating = False
        stack = getattr(self._local, "stack", None)
        if self._outermost is None:
            self._unhook()
            while stack:
                _close(stack.pop())
        elif stack:
            for k, entry in enumerate(stack):
                _close(entry)
                stack[k] = (entry[0], entry[1], None)

    def watch_outermost(self, on_end: Callable[[Any], None]) -> None:
        """Call ``on_end(module)`` whenever a module call with no module call above it returns
        (normally or by an exception) on the calling thread."""
        self._outermost = (threading.get_ident(), on_end)
        self._hook()

    def stop_watching(self) -> None:
        if self._outermost is None:
            return
        self._outermost = None
        if not self.annotating:
            self.uninstall()

    def remove(self) -> None:
        """Every hook off (torch.compile in use, a forked child)."""
        self._outermost = None
        self.uninstall()

    def _hook(self) -> None:
        if self._handles:
            return
        global _is_compiling, _record_function, _tracing_state
        import torch
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        # bound once: the hooks run at every module call of the run
        _is_compiling = torch.compiler.is_compiling
        _record_function = torch.autograd.profiler.record_function
        _tracing_state = torch._C._get_tracing_state
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        logger.debug("module annotator: global forward hooks installed")

    def _unhook(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, module: Any, args: Any) -> None:
        if _is_compiling() or _tracing_state() is not None:
            return
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        if not self.annotating:
            stack.append((module, None, None))
            return
        parent = stack[-1][1] if stack else None
        name = self._names.name(module, parent)
        if name == parent:
            # a wrapper's call of the module it wraps (Fabric's _FabricModule): one path, one
            # span, or the model's time would count twice in its own total
            stack.append((module, name, None))
            return
        rf = _record_function(DSPROF_MODULE_PREFIX + name)
        rf.__enter__()
        stack.append((module, name, rf))

    def _post(self, module: Any, args: Any, output: Any) -> None:
        # traced, the stack (which holds the compiled call's OptimizedModule) is a Dynamo
        # internal error ("already tracked for mutation"); the pre-hook skipped this call anyway
        if _is_compiling() or _tracing_state() is not None:
            return
        stack = getattr(self._local, "stack", None)
        if not stack:
            return
        if stack[-1][0] is module:  # the call that returns is the last one opened
            entry = stack.pop()
            if entry[2] is not None:
                _close(entry)
        else:
            # Pop to this module: a module whose forward raised may have left entries above it.
            for k in range(len(stack) - 1, -1, -1):
                if stack[k][0] is module:
                    while len(stack) > k:
                        _close(stack.pop())
                    break
            else:
                return
        watch = self._outermost
        if not stack and watch is not None and watch[0] == threading.get_ident():
            watch[1](module)


def _close(entry: tuple[Any, str | None, Any]) -> None:
    if entry[2] is None:
        return
    try:
        entry[2].__exit__(None, None, None)
    except RuntimeError:  # the profiler stopped under it; nothing left to close
        pass
