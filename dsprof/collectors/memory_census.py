"""Which tensors are alive at a step boundary, and what each one is.

There is no allocator API for CPU tensors, and the profiler's ``[memory]`` events only see
allocations made while it records. So when a window begins, dsprof counts what is already
alive: the models and optimizers it can reach from the running frames (the training loop's
locals, one attribute level deep) and the tensors held there. Each storage is counted once
(views share it) and categorized by storage identity:

* parameter: parameters and buffers of a reachable module, or parameters of an optimizer;
* gradient: ``.grad`` of those parameters;
* optimizer_state: tensors in an optimizer's ``state``;
* other: any other tensor a frame holds (the last step's inputs, outputs, loss...).

Only ``(device, data_ptr, nbytes)`` and weak references leave this module: a census never
keeps a tensor alive.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from dsprof.frames import internal_file, shown_path
from dsprof.module_paths import named_module_paths
from dsprof.vocabulary import MEMORY_CATEGORIES, MEMORY_PRIORITY

CATEGORIES = MEMORY_CATEGORIES
PRIORITY = MEMORY_PRIORITY

_MAX_ITEMS = 256  # items looked at in one container held by a frame
_MAX_GRAPH = 100_000  # autograd nodes walked per graph holder


def storage_key(t: Any) -> tuple[str, int, int, Any] | None:
    """(device, data_ptr, nbytes, storage) of a tensor's storage, None when it has none that
    dsprof can count (sparse, meta, fake, empty)."""
    try:
        if t.is_sparse or t.device.type == "meta":
            return None
        st = t.untyped_storage()
        ptr, nbytes = st.data_ptr(), st.nbytes()
    except (RuntimeError, NotImplementedError, TypeError, AttributeError):
        return None
    if not ptr or not nbytes:
        return None
    return str(t.device), ptr, nbytes, st


@dataclass
class Holder:
    """A Python variable holding a tensor with an autograd graph."""

    name: str
    function: str
    filename: str
    firstlineno: int
    graph_nodes: int


@dataclass
class Census:
    """Storages alive at one boundary: ``entries[(device, ptr)] = (nbytes, category, module)``
    (the module owning the parameter it is, or is the gradient or optimizer state of).

    ``storages`` holds the storages themselves only until :meth:`release` (the collector takes
    weak references to them first); a census kept past its boundary holds none.
    """

    ts_ns: int
    entries: dict[tuple[str, int], tuple[int, str, str]] = field(default_factory=dict)
    storages: dict[tuple[str, int], Any] = field(default_factory=dict)
    holders: list[Holder] = field(default_factory=list)

    def add(self, t: Any, category: str, name: str) -> None:
        key = storage_key(t)
        if key is None:
            return
        device, ptr, nbytes, st = key
        old = self.entries.get((device, ptr))
        if old is not None and PRIORITY[old[1]] <= PRIORITY[category]:
            return
        self.entries[(device, ptr)] = (nbytes, category, name)
        self.storages[(device, ptr)] = st

    def release(self) -> None:
        self.storages.clear()

    def by_category(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for nbytes, cat, _ in self.entries.values():
            out[cat] = out.get(cat, 0) + nbytes
        return out


def reachable(frame: FrameType | None) -> tuple[list[Any], list[Any], list[tuple[str, Any, FrameType]]]:
    """Modules, optimizers and (name, tensor, frame) held by the frames from ``frame`` outwards.

    A frame's locals are searched, and one level below them: items of lists, tuples and dicts,
    and attributes of plain objects (a trainer's ``self.model``). Frames of torch and dsprof
    contribute modules and optimizers (the optimizer is ``self`` in torch's step wrapper) but not
    tensors: their locals are torch's working variables, not the user's.
    """
    import torch

    modules: dict[int, Any] = {}
    optimizers: dict[int, Any] = {}
    tensors: list[tuple[str, Any, FrameType]] = []
    seen: set[int] = set()
    # An explicit work list, not a recursive closure: a closure that calls itself is a
    # reference cycle, which would keep the tensors it saw alive until the cyclic collector
    # runs, and move their frees in the timeline.
    todo: list[tuple[str, Any, int]] = []

    def visit_all(f: FrameType, user: bool) -> None:
        while todo:
            name, value, depth = todo.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, torch.Tensor):
                if user:
                    tensors.append((name, value, f))
            elif isinstance(value, torch.nn.Module):
                modules[id(value)] = value
            elif isinstance(value, torch.optim.Optimizer):
                optimizers[id(value)] = value
            elif depth == 0:
                todo.extend((f"{name}{k}", item, 1) for k, item in _children(value))

    f = frame
    while f is not None:
        user = not internal_file(f.f_code.co_filename)
        optimized = bool(f.f_code.co_flags & inspect.CO_OPTIMIZED)
        scopes = [f.f_locals]
        if not optimized:
            scopes.append(f.f_globals)
        for scope in scopes:
            todo.extend((name, value, 0) for name, value in list(scope.items())
                        if not name.startswith("__"))
            visit_all(f, user)
        if optimized and sys.version_info < (3, 13):
            # Before PEP 667, f_locals of a function is a snapshot dict kept on the frame: it
            # would hold this step's tensors past their last use (the training loop's `x`
            # would outlive its reassignment). Emptying it changes nothing else: every reader
            # (locals(), a tracer) refreshes it from the fast locals first.
            f.f_locals.clear()
        f = f.f_back
    return list(modules.values()), list(optimizers.values()), tensors


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value[:_MAX_ITEMS]):
            yield f"[{i}]", item
    elif isinstance(value, dict):
        for i, (k, item) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                break
            yield f"[{k!r}]", item
    elif not isinstance(value, type) and hasattr(value, "__dict__") and \
            type(value).__module__ not in ("builtins", "types"):
        try:
            attrs = vars(value)
        except TypeError:
            return
        for i, (k, item) in enumerate(list(attrs.items())):
            if i >= _MAX_ITEMS:
                break
            yield f".{k}", item


def take_census(ts_ns: int, frame: FrameType | None, extra_modules: list[Any] = (),
                extra_optimizers: list[Any] = (), holders: bool = False) -> Census:
    """Count the storages alive now (see the module docstring).

    Args:
        ts_ns: the time stamped on the census.
        frame: the innermost frame to search from (the caller's).
        extra_modules, extra_optimizers: ones known otherwise (hooks saw them).
        holders: also list variables that hold a tensor with an autograd graph.
    """
    modules, optimizers, tensors = reachable(frame)
    seen_m = {id(m) for m in modules}
    modules += [m for m in extra_modules if id(m) not in seen_m]
    seen_o = {id(o) for o in optimizers}
    optimizers += [o for o in extra_optimizers if id(o) not in seen_o]
    census = Census(ts_ns)
    owner: dict[int, str] = {}  # id(parameter) -> path of the module that owns it
    children = {id(sub) for m in modules for sub in m.modules() if sub is not m}
    for m in [m for m in modules if id(m) not in children] + \
            [m for m in modules if id(m) in children]:
        for path, sub in named_module_paths(m):
            for p in sub.parameters(recurse=False):
                owner.setdefault(id(p), path)
                census.add(p, "parameter", owner[id(p)])
                if p.grad is not None:
                    census.add(p.grad, "gradient", owner[id(p)])
            for b in sub.buffers(recurse=False):
                census.add(b, "parameter", path)
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                where = owner.get(id(p), "")
                census.add(p, "parameter", where)
                if p.grad is not None:
                    census.add(p.grad, "gradient", where)
        for p, state in opt.state.items():
            if isinstance(state, dict):
                for v in state.values():
                    if hasattr(v, "untyped_storage"):
                        census.add(v, "optimizer_state", owner.get(id(p), ""))
    for name, t, f in tensors:
        census.add(t, "other", "")
        if holders and t.grad_fn is not None:
            census.holders.append(Holder(name, f.f_code.co_name, shown_path(f.f_code.co_filename),
                                         f.f_code.co_firstlineno, graph_size(t.grad_fn)))
    return census


def graph_size(node: Any) -> int:
    """Autograd nodes reachable from ``node`` (at most ``_MAX_GRAPH``)."""
    seen = {id(node)}
    todo = [node]
    while todo and len(seen) < _MAX_GRAPH:
        for nxt, _ in todo.pop().next_functions:
            if nxt is not None and id(nxt) not in seen:
                seen.add(id(nxt))
                todo.append(nxt)
    return len(seen)
