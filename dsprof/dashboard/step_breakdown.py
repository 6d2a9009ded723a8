"""Where each profiled step's wall time went, one category per instant, as TensorBoard's
profiler overview drew it (its "step time breakdown").

Each instant of a step goes to the first category that is active then, so the categories of a
step add up to its wall time:

* GPU run (the run has kernels): kernel > memcpy > memset > communication > runtime (CUDA API
  calls) > data loading > CPU ops > idle. This is tb_plugin's ``ProfileRole`` order (Kernel >
  Memcpy > Memset > Communication > Runtime > DataLoader > CpuOp > Other); "idle" is its
  Other: neither device nor host was doing recorded work. The first four together are the
  GPU's busy time, so ``gpu_idle_ns`` = step - their sum.
* CPU run: backward > forward > optimizer > data loading > other ops > untraced, the order
  ``dsprof summary``'s time by phase uses (backward runs on autograd's thread while the main
  thread sits in ``loss.backward()``), per step instead of summed.

Data loading is the ops of phase ``data`` and torch's ``enumerate(DataLoader)#...`` spans;
a ``dsprof run`` also times the wait for each batch (``steps.data_wait_ns``) outside any op:
that wait is taken out of the lowest category (idle / untraced), up to what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

GPU_CATEGORIES = ("kernel", "memcpy", "memset", "communication", "runtime", "data loading",
                  "CPU ops", "idle")
GPU_BUSY = GPU_CATEGORIES[:4]
CPU_CATEGORIES = ("backward", "forward", "optimizer", "data loading", "other ops", "untraced")

_KERNEL_CATEGORY = {"compute": 0, "memcpy": 1, "memset": 2, "communication": 3}
_CPU_PHASE = {"backward": 0, "forward": 1, "optimizer": 2, "data": 3}


@dataclass
class StepBreakdown:
    """Per profiled (rank, step): ns per category, in ``categories`` order."""

    gpu: bool
    categories: tuple[str, ...]
    rank: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dur_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ns: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def __len__(self) -> int:
        return len(self.step)

    def share(self, category: str) -> float:
        """``category``'s share of all profiled step time (0 without steps)."""
        total = int(self.dur_ns.sum())
        return float(self.ns[:, self.categories.index(category)].sum()) / total if total else 0.0

    def gpu_idle_share(self) -> float | None:
        """Share of profiled step time with no kernel, copy or collective running (GPU runs)."""
        if not self.gpu or not len(self):
            return None
        busy = sum(int(self.ns[:, self.categories.index(c)].sum()) for c in GPU_BUSY)
        return 1.0 - busy / int(self.dur_ns.sum())


def step_breakdown(src: Any) -> StepBreakdown:
    """The breakdown of ``src``'s (a RunSource) profiled steps; empty without ops or steps."""
    gpu = src.has("kernels") and src.sql("SELECT count(*) FROM kernels")[0][0] > 0
    out = StepBreakdown(gpu, GPU_CATEGORIES if gpu else CPU_CATEGORIES)
    if not (src.has("steps") and src.has("ops")):
        return out
    wait = "data_wait_ns" if "data_wait_ns" in src.columns("steps") else "NULL::BIGINT"
    steps = src.arrow(f"""SELECT rank, step, start_ns, end_ns, coalesce({wait}, 0) AS wait
                          FROM steps WHERE profiled AND end_ns > start_ns
                          ORDER BY rank, start_ns""")
    if not steps.num_rows:
        return out
    spans = _spans(src, gpu)
    cols = {c: steps.column(c).to_numpy(zero_copy_only=False).astype(np.int64)
            for c in ("rank", "step", "start_ns", "end_ns", "wait")}
    n_cat = len(out.categories)
    ns = np.zeros((steps.num_rows, n_cat), np.int64)
    for r in np.unique(cols["rank"]):
        m = np.flatnonzero(cols["rank"] == r)
        s = spans[spans[:, 0] == r]
        ns[m] = _sweep(s[:, 1], s[:, 2], s[:, 3], n_cat - 1,
                       cols["start_ns"][m], cols["end_ns"][m])
    dur = cols["end_ns"] - cols["start_ns"]
    ns[:, -1] = np.maximum(dur - ns[:, :-1].sum(axis=1), 0)  # what no category covers
    data = out.categories.index("data loading")
    moved = np.clip(cols["wait"] - ns[:, data], 0, ns[:, -1])
    ns[:, data] += moved
    ns[:, -1] -= moved
    out.rank, out.step, out.dur_ns, out.ns = cols["rank"], cols["step"], dur, ns
    return out


def _spans(src: Any, gpu: bool) -> np.ndarray:
    """(rank, category index, start, end) of every span that counts, int64."""
    data = "(o.phase = 'data' OR o.name LIKE 'enumerate(DataLoader)%')"
    if gpu:
        kind = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _KERNEL_CATEGORY.items())
        query = f"""
            SELECT rank, CASE kind {kind} ELSE 0 END, start_ns, start_ns + dur_ns
            FROM kernels WHERE kind <> 'sync' AND dur_ns > 0
            UNION ALL
            SELECT rank, CASE WHEN o.cat = 'cuda_runtime' THEN 4 WHEN {data} THEN 5 ELSE 6 END,
                   start_ns, start_ns + dur_ns
            FROM ops o WHERE o.step IS NOT NULL AND o.dur_ns > 0
              AND (o.cat IN ('cpu_op', 'cuda_runtime') OR {data})"""
    else:
        phase = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _CPU_PHASE.items())
        query = f"""
            SELECT rank, CASE WHEN {data} THEN 3 ELSE CASE o.phase {phase} ELSE 4 END END,
                   start_ns, start_ns + dur_ns
            FROM ops o WHERE o.step IS NOT NULL AND o.dur_ns > 0
              AND o.cat IN ('cpu_op', 'user_annotation', 'module')
              AND o.name NOT LIKE 'ProfilerStep#%'"""
    table = src.arrow(query)
    if not table.num_rows:
        return np.zeros((0, 4), np.int64)
    return np.column_stack([table.column(i).to_numpy(zero_copy_only=False).astype(np.int64)
                            for i in range(4)])


def _sweep(cat: np.ndarray, start: np.ndarray, end: np.ndarray, n_cat: int,
           step_start: np.ndarray, step_end: np.ndarray) -> np.ndarray:
    """ns per (step, category) for one rank: each instant of a step goes to the lowest
    category index active then. Steps are sorted and do not overlap."""
    out = np.zeros((len(step_start), n_cat + 1), np.int64)
    if not len(cat):
        return out
    times = np.concatenate([start, end])
    delta = np.zeros((len(times), n_cat), np.int32)
    idx = np.arange(len(cat))
    delta[idx, cat] = 1
    delta[len(cat) + idx, cat] = -1
    order = np.argsort(times, kind="stable")
    times, delta = times[order], delta[order]
    active = np.cumsum(delta, axis=0)[:-1] > 0
    owner = np.where(active.any(axis=1), active.argmax(axis=1), -1)
    seg_lo, seg_hi = times[:-1], times[1:]
    keep = (owner >= 0) & (seg_hi > seg_lo)
    seg_lo, seg_hi, owner = seg_lo[keep], seg_hi[keep], owner[keep]
    # a segment can cross step boundaries: cut it at every step edge it spans
    for k, (lo, hi) in enumerate(zip(step_start, step_end)):
        a = np.searchsorted(seg_hi, lo, "right")
        b = np.searchsorted(seg_lo, hi, "left")
        if b <= a:
            continue
        part = np.minimum(seg_hi[a:b], hi) - np.maximum(seg_lo[a:b], lo)
        np.add.at(out[k], owner[a:b], np.maximum(part, 0))
    return out
