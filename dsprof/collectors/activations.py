"""Activations: what each module's forward saves for backward, and the model's inputs.

While a window records, a ``torch.autograd.graph.saved_tensors_hooks`` pair sees every tensor
autograd saves, and global forward hooks keep the stack of module calls. A saved storage is
charged, once per step, to the module it was *created in*: the innermost module call on the
stack that did not receive it as an argument. So a block's output saved by the next block's
first op is charged to the block that made it, a layer's input is charged to whoever made the
input, and the model's own input (an argument of every call on the stack) is charged to no
module. A module's output that it saved itself (ReLU saves its result) and that a later op
saves again stays alive whatever the module does, so it moves to the caller. Summed over a
module's subtree this is what wrapping that module in ``torch.utils.checkpoint`` frees (its
inputs and outputs stay; checkpoint keeps them).
Parameters and buffers that ops save (weights) are not activations and are skipped.

Nothing here keeps a tensor alive: the pack hook returns ``t.detach()`` (returning ``t`` itself
makes a reference cycle through ``grad_fn`` that never frees a saved output) with its version,
so autograd's in-place check, which hooks turn off, still runs (``saved_versions.py``); only
``(device, data_ptr, nbytes)`` plus a weak reference to the storage are recorded. Under
activation checkpointing the checkpoint's own hooks are innermost, so what it does not save is
not seen: the drop shows.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from dsprof.collectors import saved_hooks_aside, saved_versions
from dsprof.collectors.memory_census import storage_key
from dsprof.frames import DSPROF_DIR, internal_file, raised_in_signal_handler
from dsprof.log import logger
from dsprof.module_paths import ModuleNames, named_module_paths

_MAX_FRAMES = 12


class ActivationTracker:
    """Args:
        clock: returns the run clock in ns.
    """

    def __init__(self, clock: Any):
        self.clock = clock
        self.names = ModuleNames()
        self.step = 0
        self.param_keys: set[tuple[str, int]] = set()
        # (step, device, ptr, nbytes, module it was created in, module whose op saved it,
        #  site id, ts_ns)
        self.saved: list[tuple[Any, ...]] = []
        self.inputs: list[tuple[Any, ...]] = []  # (step, device, ptr, nbytes, ts_ns)
        self.calls: dict[tuple[int, str], int] = {}
        self.modules: dict[str, tuple[str, int, int, int]] = {}  # name -> type, depth, params, bytes
        self.sites: dict[tuple[tuple[str, int, str], ...], int] = {}
        # storage -> (weak reference, index in saved): a storage saved again is not recounted
        self._seen: dict[tuple[str, int], tuple[weakref.ref[Any], int]] = {}
        # storages a module returned that were charged to it: if a later op saves them again,
        # they outlive the module's forward whatever it does, so they belong to its caller
        self._returned: set[tuple[str, int]] = set()
        self._local = threading.local()
        self._handles: list[Any] = []
        self._hooks_ctx: Any = None
        self._failed = False
        self._said_script_hooks = False

    # -- lifecycle ------------------------------------------------------------------------
    def install(self, step: int, param_keys: set[tuple[str, int]]) -> None:
        import torch
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self.set_step(step, param_keys)
        self.names.clear()
        if not saved_hooks_aside.can_push():
            logger.debug("activations: the window opened inside a torch.func transform; "
                         "no saved-tensor hooks in it")
        elif saved_hooks_aside.scripts_pair_on():
            (logger.debug if self._said_script_hooks else logger.info)(
                "the script's own saved-tensor hooks are on at step %d: dsprof's would stand "
                "in for them, so this window records no activations by module", step)
            self._said_script_hooks = True
        else:
            self._hooks_ctx = torch.autograd.graph.saved_tensors_hooks(self._pack,
                                                                       saved_versions.unpack)
            self._hooks_ctx.__enter__()
            # torch.func refuses to run under them
            saved_hooks_aside.install(self._pack, saved_versions.unpack)
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._hooks_ctx is not None and not saved_hooks_aside.uninstall():
            self._hooks_ctx = None  # held aside by a transform, which leaves it off the stack
        if self._hooks_ctx is not None:
            try:
                saved_hooks_aside.pop_own(self._pack)  # a pair the script pushed since stays
            except RuntimeError as exc:
                logger.debug("saved tensor hooks: %s", exc)
            self._hooks_ctx = None
        self._local = threading.local()
        self._seen.clear()

    def set_step(self, step: int, param_keys: set[tuple[str, int]]) -> None:
        self.step = step
        self.param_keys = param_keys
        self._seen.clear()
        self._returned.clear()

    def reset(self) -> None:
        self.saved, self.inputs, self.calls, self.modules, self.sites = [], [], {}, {}, {}

    # -- hooks ----------------------------------------------------------------------------
    def _stack(self) -> list[tuple[str, set[tuple[str, int]], Any]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _pack(self, t: Any) -> Any:
        # torch.jit.trace running the model is no step's forward (and its sizes are tensors)
        if not self._failed and _tracing_state() is None:
            try:
                self._saved(t)
            except Exception as exc:  # never break the user's forward
                if raised_in_signal_handler(exc):
                    raise  # the script's own signal handler's: it is the script's
                self._failed = True
                logger.error("activation tracking failed and is off: %s: %s",
                             type(exc).__name__, exc)
        return saved_versions.pack(t)  # detached, with autograd's in-place check kept

    def _saved(self, t: Any) -> None:
        key = storage_key(t)
        if key is None:
            return
        device, ptr, nbytes, st = key
        k = (device, ptr)
        if k in self.param_keys:
            return
        stack = self._stack()
        hit = self._seen.get(k)
        if hit is not None and hit[0]() is not None:
            # saved again (q, k and v all save their input): count the storage once
            if k in self._returned:
                self._returned.discard(k)
                rec = self.saved[hit[1]]
                self.saved[hit[1]] = (*rec[:4], _created_in(k, stack), *rec[5:])
            return
        self._seen[k] = (weakref.ref(st), len(self.saved))
        saver = stack[-1][0] if stack else ""
        self.saved.append((self.step, device, ptr, nbytes, _created_in(k, stack), saver,
                           self._site(sys._getframe(2)), self.clock()))

    def _site(self, frame: Any) -> int | None:
        frames: list[tuple[str, int, str]] = []
        f = frame
        while f is not None and len(frames) < _MAX_FRAMES:
            code = f.f_code
            if not internal_file(code.co_filename):
                frames.append((code.co_filename, f.f_lineno, code.co_name))
            elif frames and code.co_filename.startswith(DSPROF_DIR):
                break  # dsprof's launcher: what lies beyond it is not the user's
            f = f.f_back
        if not frames:
            return None
        key = tuple(frames)
        sid = self.sites.get(key)
        if sid is None:
            sid = self.sites[key] = len(self.sites)
        return sid

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        # under torch.jit.trace a parameter's numel() is a traced tensor: the trace would hold
        # the census's reads, and the trace's forward is no step's
        if torch.compiler.is_compiling() or self._failed or _tracing_state() is not None:
            return
        stack = self._stack()
        parent = stack[-1][0] if stack else None
        name = self.names.name(module, parent)
        keys: set[tuple[str, int]] = set()
        for a in _tensors(args):
            key = storage_key(a)
            if key is not None:
                keys.add((key[0], key[1]))
                if not stack and a.grad_fn is None and not a.requires_grad:
                    self.inputs.append((self.step, key[0], key[1], key[2], self.clock()))
        if not stack and name not in self.modules:
            self._describe(module, name)
        elif name not in self.modules:
            self.modules[name] = _describe_one(module, name.count("."))
        stack.append((name, keys, module))
        if name != parent:  # a wrapper's call of the module it wraps (Fabric's) is one call
            ck = (self.step, name)
            self.calls[ck] = self.calls.get(ck, 0) + 1

    def _post(self, module: Any, args: Any, output: Any) -> None:
        stack = getattr(self._local, "stack", None)
        if not stack:
            return
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][2] is module:
                self._note_outputs(stack[k][0], output)
                del stack[k:]
                return

    def _note_outputs(self, name: str, output: Any) -> None:
        for t in _tensors(output):
            key = storage_key(t)
            if key is None:
                continue
            hit = self._seen.get((key[0], key[1]))
            if hit is not None and hit[0]() is not None:
                charged = self.saved[hit[1]][4]
                if charged == name or charged.startswith(name + "."):
                    self._returned.add((key[0], key[1]))

    def _describe(self, root: Any, root_name: str) -> None:
        for name, sub in named_module_paths(root, root_name):
            self.modules[name] = _describe_one(sub, name.count("."))


def _created_in(key: tuple[str, int], stack: list[tuple[str, Any, Any]]) -> str:
    """The innermost module call on ``stack`` that did not receive ``key`` as an argument
    ("" when every call did: the storage came from outside the model)."""
    for name, arg_keys, _ in reversed(stack):
        if key not in arg_keys:
            return name
    return ""


def _describe_one(module: Any, depth: int) -> tuple[str, int, int, int]:
    params = list(module.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in params)
    nbytes += sum(b.numel() * b.element_size() for b in module.buffers())
    return type(module).__name__, depth, sum(p.numel() for p in params), nbytes


def _tensors(args: Any) -> list[Any]:
    import torch

    out = []
    for a in args if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (tuple, list)):
            out.extend(x for x in a if isinstance(x, torch.Tensor))
        elif isinstance(a, dict):
            out.extend(x for x in a.values() if isinstance(x, torch.Tensor))
    return out


def _tracing_state() -> Any:
    import torch

    return torch._C._get_tracing_state()
