"""Host spans -> the ``ops`` table: nesting, self time, module path, phase, step, FLOPs.

Algorithm (one rank, one trace):

1. Module spans. dsprof's own collector brackets every module forward in a
   ``dsprof.module: <qualified name>`` annotation; traces recorded elsewhere carry the Python
   tracer's ``nn.Module: Linear_0`` functions (``with_stack=True``), whose path is rebuilt from
   ``Python parent id`` links. Either becomes an ops row with ``cat = 'module'``. Other Python
   function events are dropped (they are stacks, not ops).
2. Nesting. Per thread, sort by (start, longest first) and sweep with a stack: the parent of a
   span is the innermost open span that contains its start. Self time is duration minus the
   direct children's (clipped) durations.
3. Phase and module, parents before children. A span's own name decides when it can
   (``autograd::engine::evaluate_function: ...`` and legacy ``...Backward`` nodes -> backward,
   ``Optimizer.step#``/``Optimizer.zero_grad#`` -> optimizer, ``enumerate(DataLoader)#`` -> data,
   module spans -> forward); otherwise it inherits a definite parent phase; a top-level op that
   autograd recorded (it has a ``Sequence number``) is forward (the loss), anything else other.
4. Backward ops get the module of the forward op with the same autograd sequence number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from dsprof.ingest.events import DSPROF_MODULE_PREFIX, MODULE_PREFIX, HostEvents, dur_ns, thread_id, to_ns
from dsprof.ingest.flops import FORMULAS, op_flops
from dsprof.ingest.trace_schema import Args, raw_text

_BACKWARD_NAME = re.compile(r"(Backward\d*$)|(^torch::autograd::AccumulateGrad$)|(^## backward ##$)")
STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")


@dataclass
class HostOps:
    """Column arrays of the ops table for one trace (row order: thread, start)."""

    columns: dict[str, Any]
    n: int
    # ProfilerStep spans found on the host: (step, start_ns, end_ns)
    step_spans: list[tuple[int, int, int]]

    def ids_by_correlation(self, cats: set[str]) -> dict[int, tuple[int, int, int]]:
        """correlation -> (op id, parent op id or -1, start_ns) of runtime/driver calls."""
        out: dict[int, tuple[int, int, int]] = {}
        c = self.columns
        cat, corr, parent = c["cat"], c["correlation"], c["parent_id"]
        rows = [i for i, k in enumerate(cat) if k in cats]
        if not rows:
            return out
        ids = c["id"][rows].tolist()
        start = c["start_ns"][rows].tolist()
        for j, i in enumerate(rows):
            if corr[i] is not None:
                p = parent[i]
                out[corr[i]] = (ids[j], -1 if p is None else p, start[j])
        return out


def _module_paths(host: HostEvents) -> dict[int, str]:
    """Python tracer: index of each ``nn.Module:`` event -> dotted path of module names."""
    by_pid: dict[Any, tuple[Any, str | None]] = {}
    module_rows: list[tuple[int, Any]] = []
    for i, (cat, name, args) in enumerate(zip(host.cat, host.name, host.args)):
        if cat != "python_function":
            continue
        pid = args.python_id
        is_module = name.startswith(MODULE_PREFIX)
        by_pid[pid] = (args.python_parent_id, name[len(MODULE_PREFIX):] if is_module else None)
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


def build_host_ops(host: HostEvents, *, base_ns: int, rank: int, first_id: int) -> HostOps:
    has_dsprof_modules = any(n.startswith(DSPROF_MODULE_PREFIX) for n in host.name
                             if n[:1] == "d")
    tracer_modules = {} if has_dsprof_modules else _module_paths(host)

    keep: list[int] = []
    cats: list[str] = []
    names: list[str] = []
    for i, (cat, name) in enumerate(zip(host.cat, host.name)):
        if cat == "python_function":
            if i in tracer_modules:
                keep.append(i)
                cats.append("module")
                names.append(tracer_modules[i])
            continue
        if cat == "user_annotation" and name.startswith(DSPROF_MODULE_PREFIX):
            keep.append(i)
            cats.append("module")
            names.append(name[len(DSPROF_MODULE_PREFIX):])
            continue
        if cat == "cpu_op" and STEP_NAME.match(name):
            cat = "user_annotation"  # legacy traces record ProfilerStep as an Operator
        keep.append(i)
        cats.append(cat)
        names.append(name)

    n = len(keep)
    ts_raw = [host.ts[i] for i in keep]
    start = to_ns(ts_raw, base_ns) if n else np.zeros(0, np.int64)
    dur = dur_ns([host.dur[i] for i in keep]) if n else np.zeros(0, np.int64)
    end = start + dur
    threads = np.fromiter((thread_id(host.tid[i]) for i in keep), dtype=np.int64, count=n)
    args = [host.args[i] for i in keep]

    order = np.lexsort((-dur, start, threads)) if n else np.zeros(0, np.int64)
    parent = [-1] * n      # index (into the kept events) of the parent span, -1: none
    depth = [0] * n
    child_sum = [0] * n
    module: list[str | None] = [None] * n
    phase: list[str] = ["other"] * n
    definite = [False] * n
    seq: list[int | None] = [None] * n
    corr: list[int | None] = [None] * n

    for i, a in enumerate(args):
        s = a.seq
        seq[i] = s if isinstance(s, int) else None
        c = a.correlation
        if c is None:
            c = a.external_id if a.external_id is not None else a.external_id_legacy
        corr[i] = c if isinstance(c, int) else None

    # Nesting sweep, per thread, in (start, -dur) order.
    stack: list[int] = []
    cur_thread = None
    order_list = order.tolist()
    start_l, end_l, thr_l = start.tolist(), end.tolist(), threads.tolist()
    for i in order_list:
        t = thr_l[i]
        if t != cur_thread:
            stack.clear()
            cur_thread = t
        s = start_l[i]
        while stack and end_l[stack[-1]] <= s:
            stack.pop()
        if stack:
            p = stack[-1]
            parent[i] = p
            depth[i] = depth[p] + 1
            child_sum[p] += min(end_l[i], end_l[p]) - s
        stack.append(i)

        # phase and module (parents are visited before children)
        name, cat = names[i], cats[i]
        p = parent[i]
        pmod = module[p] if p >= 0 else None
        pphase = phase[p] if p >= 0 and definite[p] else None
        if cat == "module":
            module[i] = name
            phase[i] = "backward" if pphase == "backward" else "forward"
            definite[i] = True
            continue
        module[i] = pmod
        own = _own_phase(name)
        if own is not None:
            phase[i], definite[i] = own, True
        elif pphase is not None:
            phase[i], definite[i] = pphase, True
        elif seq[i] is not None and cat == "cpu_op":
            phase[i], definite[i] = "forward", True

    # Backward ops: the module of the forward op with the same sequence number.
    fwd_module: dict[int, str] = {}
    for i in order_list:
        if phase[i] == "forward" and seq[i] is not None and module[i] is not None:
            fwd_module.setdefault(seq[i], module[i])
    if fwd_module:
        for i in order_list:
            if phase[i] != "backward" or module[i] is not None:
                continue
            p = parent[i]
            if p >= 0 and module[p] is not None and phase[p] == "backward":
                module[i] = module[p]
            elif seq[i] is not None:
                module[i] = fwd_module.get(seq[i])

    # FLOPs, then drop those under an ancestor that already counts them.
    flops: list[int | None] = [None] * n
    counted = [i for i in range(n) if names[i] in FORMULAS]
    for i in counted:
        flops[i] = op_flops(names[i], args[i])
    for i in counted:
        if flops[i] is None:
            continue
        p = parent[i]
        while p >= 0:
            if flops[p] is not None:
                flops[i] = None
                break
            p = parent[p]

    shapes, dtypes = _shape_columns(args)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    # Write rows in (thread, start) order; ids follow that order.
    ids_sorted = np.empty(n, np.int64)
    ids_sorted[order] = ids
    ids_of = ids_sorted.tolist()
    parent_ids = [ids_of[p] if p >= 0 else None for p in parent]

    step_spans = [(int(m.group(1)), start_l[i], end_l[i]) for i in range(n)
                  if cats[i] == "user_annotation" and (m := STEP_NAME.match(names[i]))]
    step_spans.sort(key=lambda s: s[1])

    idx = order
    columns = {
        "rank": np.full(n, rank, np.int32),
        "id": ids,
        "parent_id": [parent_ids[i] for i in idx.tolist()],
        "depth": np.asarray(depth, np.int32)[idx],
        "thread": threads[idx],
        "cat": [cats[i] for i in idx.tolist()],
        "name": [names[i] for i in idx.tolist()],
        "start_ns": start[idx],
        "dur_ns": dur[idx],
        "self_ns": np.maximum(dur - np.asarray(child_sum, np.int64), 0)[idx],
        "module": [module[i] for i in idx.tolist()],
        "phase": [phase[i] for i in idx.tolist()],
        "input_shapes": [shapes[i] for i in idx.tolist()],
        "dtypes": [dtypes[i] for i in idx.tolist()],
        "flops": [flops[i] for i in idx.tolist()],
        "correlation": [corr[i] for i in idx.tolist()],
        "seq": [seq[i] for i in idx.tolist()],
    }
    return HostOps(columns, n, step_spans)


def _own_phase(name: str) -> str | None:
    c = name[:1]
    if c == "a" and name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if c == "O" and (name.startswith("Optimizer.step#") or name.startswith("Optimizer.zero_grad#")):
        return "optimizer"
    if c == "e" and name.startswith("enumerate(DataLoader)#"):
        return "data"
    if c == "#" and name == "## forward ##":
        return "forward"
    if c == "D" and name == "DistributedDataParallel.forward":
        return "forward"
    if ("ackward" in name or c == "t") and _BACKWARD_NAME.search(name):
        return "backward"
    return None


def _shape_columns(args: list[Args]) -> tuple[list[str | None], list[str | None]]:
    return [raw_text(a.input_dims) for a in args], [raw_text(a.input_type) for a in args]


def assign_steps(starts: np.ndarray, spans: list[tuple[int, int, int]]) -> list[int | None]:
    """Step number of each start time, from ProfilerStep spans (None outside any span)."""
    if not spans or len(starts) == 0:
        return [None] * len(starts)
    span_start = np.array([s[1] for s in spans], np.int64)
    span_end = np.array([s[2] for s in spans], np.int64)
    span_step = np.array([s[0] for s in spans], np.int64)
    k = np.searchsorted(span_start, starts, side="right") - 1
    inside = (k >= 0) & (starts < span_end[np.clip(k, 0, None)])
    steps = np.where(inside, span_step[np.clip(k, 0, None)], -1)
    return [int(s) if s >= 0 else None for s in steps.tolist()]
