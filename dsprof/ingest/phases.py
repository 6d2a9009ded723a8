"""Phase and module naming rules for host spans (used by host_ops.build_host_ops).

A span's own name decides its phase when it can: ``autograd::engine::evaluate_function: ...``
and legacy ``...Backward`` nodes are backward, ``Optimizer.step#``/``Optimizer.zero_grad#`` are
optimizer, ``enumerate(DataLoader)#`` is data, ``## forward ##`` and
``DistributedDataParallel.forward`` are forward, and so is ``## closure ##``, dsprof's span
around an optimizer's closure (its forward; the backward ops in it name themselves), so that
``optimizer.step(closure)`` leaves only the parameter update in the optimizer phase. Module paths of traces recorded elsewhere are
rebuilt from the Python tracer's ``nn.Module:`` events and their ``Python parent id`` links.
"""

from __future__ import annotations

import re
from typing import Any

from dsprof.ingest.events import CLOSURE_SPAN, MODULE_PREFIX
from dsprof.ingest.split_trace import HostEvents

_BACKWARD_NAME = re.compile(r"(Backward\d*$)|(^torch::autograd::AccumulateGrad$)|(^## backward ##$)")


def module_paths(host: HostEvents) -> dict[int, str]:
    """Python tracer: index of each ``nn.Module:`` event -> dotted path of module names."""
    by_pid: dict[Any, tuple[Any, str | None]] = {}
    module_rows: list[tuple[int, Any]] = []
    for i, (python_id, parent_id) in sorted(host.python.items()):
        name = host.name[i]
        # ids are ints; any other value links nothing (a module then is named on its own)
        pid = python_id if type(python_id) is int else ("row", i)
        parent = parent_id if type(parent_id) is int else None
        is_module = name.startswith(MODULE_PREFIX)
        by_pid[pid] = (parent, name[len(MODULE_PREFIX):] if is_module else None)
        if is_module:
            module_rows.append((i, pid))
    cache: dict[Any, str] = {}

    def path(pid: Any, depth: int = 0) -> str:
        if pid in cache:
            return cache[pid]
        entry = by_pid.get(pid)
        if entry is None or depth > 500:
            return ""
        parent, mod = entry
        above = path(parent, depth + 1) if parent is not None else ""
        result = (f"{above}.{mod}" if above else mod) if mod else above
        cache[pid] = result
        return result

    return {i: path(pid) for i, pid in module_rows}


def own_phase(name: str) -> str | None:
    c = name[:1]
    if c == "a" and name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if c == "O" and (name.startswith(("Optimizer.step#", "Optimizer.zero_grad#"))):
        return "optimizer"
    if c == "e" and name.startswith("enumerate(DataLoader)#"):
        return "data"
    if c == "#" and name in ("## forward ##", CLOSURE_SPAN):
        return "forward"
    if c == "D" and name == "DistributedDataParallel.forward":
        return "forward"
    if ("ackward" in name or c == "t") and _BACKWARD_NAME.search(name):
        return "backward"
    return None
