"""Host spans -> the ``ops`` table: nesting, self time, module path, phase, step, FLOPs.

Algorithm (one rank, one trace):

1. Module spans. dsprof's own collector brackets every module forward in a
   ``dsprof.module: <qualified name>`` annotation; traces recorded elsewhere carry the Python
   tracer's ``nn.Module: Linear_0`` functions (``with_stack=True``), whose path is rebuilt from
   ``Python parent id`` links. Either becomes an ops row with ``cat = 'module'``. Other Python
   function events are dropped (they are stacks, not ops).
2. Nesting. Per thread, sort by (start, longest first) and sweep with a stack: the parent of a
   span is the innermost open span that contains its start. Self time is duration minus the
   direct children's (clipped) durations. (The sweep's result is computed with numpy, without
   a Python loop over the spans: see ``_nest``.)
3. Phase and module, parents before children (one nesting level at a time, in numpy). A
   span's own name decides when it can (``autograd::engine::evaluate_function: ...`` and
   legacy ``...Backward`` nodes -> backward, ``Optimizer.step#``/``Optimizer.zero_grad#`` ->
   optimizer, ``enumerate(DataLoader)#`` -> data, module spans -> forward); otherwise it
   inherits a definite parent phase; a top-level op that autograd recorded (it has a
   ``Sequence number``) is forward (the loss), anything else other.
4. Backward ops get the module of the forward op with the same autograd sequence number.

``ProfilerStep#N`` spans are step markers, not parents: they stay top-level rows and nothing
nests under them. dsprof marks a step where the optimizer's post-step hook runs, which is inside
torch's ``Optimizer.step#...`` span, so its markers straddle that span; nesting them would put a
whole step under the previous step's optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.ingest.events import (
    DSPROF_MODULE_PREFIX,
    dur_ns,
    int_values,
    strings_object_array,
    to_ns,
)
from dsprof.ingest.flops import FORMULAS, op_flops
from dsprof.ingest.nesting import levels as depth_levels
from dsprof.ingest.nesting import nest
from dsprof.ingest.phases import module_paths, own_phase
from dsprof.ingest.split_trace import HostEvents
from dsprof.ingest.steps import STEP_NAME
from dsprof.ingest.trace_schema import Args

# phase codes used while building; PHASES[code] is the column value
PHASES = np.array(["other", "forward", "backward", "optimizer", "data"], dtype=object)
_PHASE_NAMES = pa.array(PHASES.tolist(), pa.string())
_OTHER, _FWD, _BWD = 0, 1, 2
_PHASE_CODE = {None: _OTHER, "forward": _FWD, "backward": _BWD, "optimizer": 3, "data": 4}


@dataclass
class HostOps:
    """Column arrays of the ops table for one trace (row order: thread, start).

    Integer columns are numpy arrays, nullable ones Arrow arrays; text columns are numpy
    object arrays (str or None), so ``columns["name"][i]`` is a ``str``.
    """

    columns: dict[str, Any]
    n: int
    # ProfilerStep spans found on the host: (step, start_ns, end_ns)
    step_spans: list[tuple[int, int, int]]
    # the text columns of ``columns`` as Arrow string arrays (what the table is built from)
    text: dict[str, pa.Array] = field(default_factory=dict, repr=False)
    # Row-aligned working arrays for the device builders: parent row (-1: none), end,
    # correlation (and whether there is one), category as a code into ``cats``
    parent_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    end_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    corr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    corr_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    cat_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    cats: list[str] = field(default_factory=list, repr=False)  # cat_code -> cat
    # ops whose FLOPs could not be computed, by op name (counted in meta.json's notes)
    flops_unknown: dict[str, int] = field(default_factory=dict)

    def table_columns(self) -> dict[str, Any]:
        """The columns to build the ops table from."""
        return {**self.columns, **self.text}

    def launch_rows(self, cats: set[str], corr: np.ndarray, corr_ok: np.ndarray) -> np.ndarray:
        """Row of the op among ``cats`` with each correlation id (the last one if several
        share it), -1 where none has it."""
        out = np.full(len(corr), -1, np.int64)
        codes = [i for i, k in enumerate(self.cats) if k in cats]
        if not codes or not len(corr):
            return out
        in_cats = np.isin(self.cat_code, codes)
        rows = np.flatnonzero(in_cats & self.corr_ok)[::-1]  # last first: it wins
        if not len(rows):
            return out
        keys, first = np.unique(self.corr[rows], return_index=True)
        rows = rows[first]
        pos = np.minimum(np.searchsorted(keys, corr), len(keys) - 1)
        hit = corr_ok & (keys[pos] == corr)
        out[hit] = rows[pos[hit]]
        return out

    def innermost_rows(self, ts: np.ndarray, threads: np.ndarray) -> np.ndarray:
        """For each instant, the row of the innermost op on its thread whose span contains it
        (-1: none)."""
        out = np.full(len(ts), -1, np.int64)
        if not len(ts) or not self.n:
            return out
        op_thread = self.columns["thread"]
        op_start = self.columns["start_ns"]
        cand = np.full(len(ts), -1, np.int64)
        for t in np.unique(threads).tolist():
            lo = int(np.searchsorted(op_thread, t, side="left"))  # rows are sorted by thread
            hi = int(np.searchsorted(op_thread, t, side="right"))
            sel = np.flatnonzero(threads == t)
            j = np.searchsorted(op_start[lo:hi], ts[sel], side="right") - 1
            cand[sel] = np.where(j >= 0, lo + j, -1)
        # climb from the last op that started before each instant to the first that holds it
        todo = np.flatnonzero(cand >= 0)
        row = cand[todo]
        while len(todo):
            t = ts[todo]
            end = self.end_ns[row]
            ok = (end > t) | ((end == t) & (op_start[row] == t))
            out[todo[ok]] = row[ok]
            up = self.parent_row[row[~ok]]
            todo, row = todo[~ok][up >= 0], up[up >= 0]
        return out


def _kept_events(host: HostEvents) -> tuple[list[int] | None, np.ndarray, list[str],
                                            np.ndarray, list[str]]:
    """Which host events become ops rows (None: all), with the code of each one's ops cat and
    name (indices into the two lists returned with them)."""
    names_in, cats_in = host.name, host.cat
    distinct = dict.fromkeys(names_in)
    has_dsprof_modules = any(n.startswith(DSPROF_MODULE_PREFIX) for n in distinct
                             if n[:1] == "d")
    step_names = {n for n in distinct if STEP_NAME.match(n)}
    if not has_dsprof_modules and "python_function" not in set(cats_in):
        cat_code, cats = _codes(cats_in)
        name_code, names = _codes(names_in, distinct)
        if step_names and "cpu_op" in cats:  # legacy traces record ProfilerStep as an Operator
            relabel = (cat_code == cats.index("cpu_op")) & \
                np.array([n in step_names for n in names], bool)[name_code]
            if relabel.any():
                if "user_annotation" not in cats:
                    cats.append("user_annotation")
                cat_code[relabel] = cats.index("user_annotation")
        return None, cat_code, cats, name_code, names

    tracer_modules = {} if has_dsprof_modules else module_paths(host)
    keep: list[int] = []
    cats_kept = []
    names_kept = []
    for i, (cat, name) in enumerate(zip(cats_in, names_in)):
        if cat == "python_function":
            if i in tracer_modules:
                keep.append(i)
                cats_kept.append("module")
                names_kept.append(tracer_modules[i])
            continue
        if cat == "user_annotation" and name.startswith(DSPROF_MODULE_PREFIX):
            keep.append(i)
            cats_kept.append("module")
            names_kept.append(name[len(DSPROF_MODULE_PREFIX):])
            continue
        if cat == "cpu_op" and name in step_names:
            cat = "user_annotation"  # legacy traces record ProfilerStep as an Operator
        keep.append(i)
        cats_kept.append(cat)
        names_kept.append(name)
    return keep, *_codes(cats_kept), *_codes(names_kept)


def _codes(values: list[Any], distinct: dict[Any, None] | None = None
           ) -> tuple[np.ndarray, list[Any]]:
    """(code of each value, distinct values in first-seen order)."""
    seen = list(dict.fromkeys(values) if distinct is None else distinct)
    code = {v: i for i, v in enumerate(seen)}
    return np.fromiter(map(code.__getitem__, values), np.int64, len(values)), seen


def build_host_ops(host: HostEvents, *, base_ns: int, rank: int, first_id: int) -> HostOps:
    keep, cat_code, cats, name_code, names = _kept_events(host)
    # ``event[k]``: the host event of kept row k (trace order); the args columns are taken
    # by it once, here
    event = np.arange(len(host.name)) if keep is None else np.asarray(keep, np.int64)
    args = host.args.arrow
    if keep is not None:
        args = {k: v.take(event) for k, v in args.items()}
    n = len(name_code)
    start_k = to_ns(host.ts[event], base_ns) if n else np.zeros(0, np.int64)
    dur_k = dur_ns(host.dur[event]) if n else np.zeros(0, np.int64)
    threads_k = host.thread[event]

    # Rows are written in (thread, start, longest first) order; everything below is in it
    # (``args`` and ``event`` stay in trace order: ``args[order[i]]`` belongs to row i).
    order = np.lexsort((-dur_k, start_k, threads_k)) if n else np.zeros(0, np.int64)
    start, dur, threads = start_k[order], dur_k[order], threads_k[order]
    end = start + dur
    name_code, cat_code = name_code[order], cat_code[order]
    names_arr = np.array(names + [None], dtype=object)  # code -1 -> None
    cats_arr = np.array(cats, dtype=object)

    def is_cat(c: str) -> np.ndarray:
        return cat_code == cats.index(c) if c in cats else np.zeros(n, bool)

    # ProfilerStep markers are neither parents nor children (module docstring)
    step_marker = is_cat("user_annotation") & np.array(
        [nm[:13] == "ProfilerStep#" for nm in names] + [False], bool)[name_code]

    seq_col = args["seq"].take(order)
    seq, seq_ok = int_values(seq_col)
    corr_col = args["correlation"].take(order)
    corr, corr_ok = int_values(corr_col)

    # Nesting, per thread.
    parent, depth = nest(start, end, step_marker, threads)
    has_parent = np.flatnonzero(parent >= 0)
    pp = parent[has_parent]
    child_sum = np.zeros(n, np.int64)
    np.add.at(child_sum, pp, np.minimum(end[has_parent], end[pp]) - start[has_parent])
    levels = depth_levels(depth)

    # Phase and module, level by level (a parent is always one level above its children).
    own = np.array([_PHASE_CODE[own_phase(nm)] for nm in names] + [0], np.int8)[name_code]
    is_module = is_cat("module")
    seq_forward = seq_ok & is_cat("cpu_op")
    phase = np.zeros(n, np.int8)
    module = np.full(n, -1, np.int64)  # a name code (module rows' names are module paths)
    for level, rows in enumerate(levels):
        r = rows[~step_marker[rows]]
        if level:
            pphase, pmod = phase[parent[r]], module[parent[r]]
        else:
            pphase, pmod = np.zeros(len(r), np.int8), np.full(len(r), -1, np.int64)
        ph = np.where(own[r] != _OTHER, own[r],
                      np.where(pphase != _OTHER, pphase,
                               np.where(seq_forward[r], _FWD, _OTHER)))
        m = is_module[r]
        phase[r] = np.where(m, np.where(pphase == _BWD, _BWD, _FWD), ph)
        module[r] = np.where(m, name_code[r], pmod)

    # Backward ops: the module of the forward op with the same sequence number.
    fwd = np.flatnonzero((phase == _FWD) & seq_ok & (module >= 0))
    if len(fwd):
        fwd_seq, first = np.unique(seq[fwd], return_index=True)
        fwd_module = module[fwd[first]]
        need = (phase == _BWD) & (module < 0)
        for rows in levels:
            r = rows[need[rows]]
            if not len(r):
                continue
            p = parent[r]
            pc = np.maximum(p, 0)
            value = np.where((p >= 0) & (module[pc] >= 0) & (phase[pc] == _BWD), module[pc], -1)
            look = (value < 0) & seq_ok[r]
            if look.any():
                s = seq[r[look]]
                pos = np.minimum(np.searchsorted(fwd_seq, s), len(fwd_seq) - 1)
                value[look] = np.where(fwd_seq[pos] == s, fwd_module[pos], -1)
            module[r] = value

    flops, flops_ok, flops_unknown = _flops(names, name_code, host.args.at, event[order],
                                            parent, levels)

    step_rows = np.flatnonzero(is_cat("user_annotation") & np.array(
        [bool(STEP_NAME.match(nm)) for nm in names] + [False], bool)[name_code])
    kept_index = order[step_rows]  # spans in trace order before the (stable) sort by start
    step_spans = [(int(STEP_NAME.match(names[name_code[i]]).group(1)), int(start[i]), int(end[i]))
                  for i in step_rows[np.argsort(kept_index, kind="stable")].tolist()]
    step_spans.sort(key=lambda s: s[1])

    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    columns = {
        "rank": np.full(n, rank, np.int32),
        "id": ids,
        "parent_id": pa.array(parent + first_id, pa.int64(), mask=parent < 0),
        "depth": depth,
        "thread": threads,
        "cat": cats_arr[cat_code],
        "name": names_arr[name_code],
        "start_ns": start,
        "dur_ns": dur,
        "self_ns": np.maximum(dur - child_sum, 0),
        "module": names_arr[module],
        "phase": PHASES[phase],
        "input_shapes": strings_object_array(args["input_shapes"].take(order)),
        "dtypes": strings_object_array(args["dtypes"].take(order)),
        "flops": pa.array(flops, pa.int64(), mask=~flops_ok),
        "correlation": corr_col,
        "seq": seq_col,
    }
    # the text columns again as Arrow arrays, for the table: taken from the few distinct
    # values in C instead of encoding a Python str per row
    distinct_names = pa.array(names + [None], pa.string())
    text = {
        "cat": pa.array(cats, pa.string()).take(cat_code),
        "name": distinct_names.take(name_code),
        "module": distinct_names.take(np.where(module < 0, len(names), module)),
        "phase": _PHASE_NAMES.take(phase),
        "input_shapes": args["input_shapes"].take(order).cast(pa.string()),
        "dtypes": args["dtypes"].take(order).cast(pa.string()),
    }
    return HostOps(columns, n, step_spans, text, parent, end, corr, corr_ok, cat_code, cats,
                   flops_unknown)


def _flops(names: list[str], name_code: np.ndarray, args_at: Callable[[int], Args],
           event: np.ndarray, parent: np.ndarray, levels: list[np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """FLOPs per row (and whether known), counted once per computation: a row under an
    ancestor that has FLOPs keeps none (``aten::convolution`` over ``mkldnn_convolution``).
    Also the ops FLOPs are unknown for, by name: the outermost op with a formula that gave
    nothing, when no ancestor or descendant counted the computation either (a GPU conv
    without Concrete Inputs, a layout no formula knows)."""
    n = len(name_code)
    flops = np.zeros(n, np.int64)
    flops_ok = np.zeros(n, bool)
    counted = [i for i, nm in enumerate(names) if nm in FORMULAS]
    if not counted:
        return flops, flops_ok, {}
    tried = np.flatnonzero(np.isin(name_code, counted))
    for i in tried.tolist():
        value = op_flops(names[name_code[i]], args_at(int(event[i])))
        if value is not None:
            flops[i], flops_ok[i] = value, True
    is_tried = np.zeros(n, bool)
    is_tried[tried] = True
    under = np.zeros(n, bool)  # some ancestor has FLOPs
    under_tried = np.zeros(n, bool)  # some ancestor has a formula (one computation, one note)
    for rows in levels[1:]:
        p = parent[rows]
        under[rows] = (p >= 0) & (under[p] | flops_ok[p])
        under_tried[rows] = (p >= 0) & (under_tried[p] | is_tried[p])
    above = np.zeros(n, bool)  # some descendant has FLOPs
    for rows in reversed(levels[1:]):
        up = parent[rows[flops_ok[rows] | above[rows]]]
        above[up[up >= 0]] = True
    failed = tried[~flops_ok[tried] & ~under[tried] & ~above[tried] & ~under_tried[tried]]
    unknown: dict[str, int] = {}
    for code, count in zip(*np.unique(name_code[failed], return_counts=True)):
        unknown[names[int(code)]] = int(count)
    flops_ok &= ~under
    return flops, flops_ok, unknown
