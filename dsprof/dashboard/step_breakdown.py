"""Where each profiled step's wall time went, one category per instant, as TensorBoard's
profiler overview drew it (its "step time breakdown").

Each instant of a step goes to the first category that is active then, so the categories of a
step add up to its wall time:

* GPU run (the run has kernels): kernel > memcpy > memset > communication > runtime (CUDA API
  calls) > data loading > CPU ops > untraced. This is tb_plugin's ``ProfileRole`` order (Kernel
  > Memcpy > Memset > Communication > Runtime > DataLoader > CpuOp > Other); "untraced" is its
  Other: neither device nor host was doing recorded work (Python between ops, waiting). The first four together are the
  GPU's busy time, so ``gpu_idle_ns`` = step - their sum.
* CPU run: backward > forward > optimizer > data loading > other ops > untraced, the order
  ``dsprof summary``'s time by phase uses (backward runs on autograd's thread while the main
  thread sits in ``loss.backward()``), per step instead of summed.

Data loading is the ops of phase ``data`` and torch's ``enumerate(DataLoader)#...`` spans;
a ``dsprof run`` also times the wait for each batch (``steps.data_wait_ns``) outside any op:
that wait is taken out of the lowest category (untraced), up to what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

GPU_CATEGORIES = ("kernel", "memcpy", "memset", "communication", "runtime", "data loading",
                  "CPU ops", "untraced")
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
    """(rank, category index, start, end) of every span that counts, int64.

    An op nested in an op of its own category adds no time to it (same thread, inside its
    parent), so only the ops whose parent has another category or none are read: a run's
    millions of nested ops become the few that begin each category.
    """
    if gpu:
        def category(o: str) -> str:
            return (f"CASE WHEN {o}.cat = 'cuda_runtime' THEN 4 WHEN {_data(o)} THEN 5 "
                    f"WHEN {o}.cat = 'cpu_op' THEN 6 END")
        kind = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _KERNEL_CATEGORY.items())
        kernels = f"""
            SELECT rank, CASE kind {kind} ELSE 0 END, start_ns, start_ns + dur_ns
            FROM kernels WHERE kind <> 'sync' AND dur_ns > 0
            UNION ALL"""
    else:
        def category(o: str) -> str:
            phase = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _CPU_PHASE.items())
            return (f"CASE WHEN {o}.name LIKE 'ProfilerStep#%' THEN NULL "
                    f"WHEN {o}.cat NOT IN ('cpu_op', 'user_annotation', 'module') THEN NULL "
                    f"WHEN {_data(o)} THEN 3 ELSE CASE {o}.phase {phase} ELSE 4 END END")
        kernels = ""
    table = src.arrow(f"""{kernels}
        SELECT o.rank, {category('o')}, o.start_ns, o.start_ns + o.dur_ns
        FROM ops o LEFT JOIN ops p ON p.rank = o.rank AND p.id = o.parent_id
        WHERE o.step IS NOT NULL AND o.dur_ns > 0 AND {category('o')} IS NOT NULL
          AND (p.id IS NULL OR {category('p')} IS DISTINCT FROM {category('o')})""")
    if not table.num_rows:
        return np.zeros((0, 4), np.int64)
    return np.column_stack([table.column(i).to_numpy(zero_copy_only=False).astype(np.int64)
                            for i in range(4)])


def _data(o: str) -> str:
    """Whether op alias ``o`` is data loading."""
    return f"({o}.phase = 'data' OR {o}.name LIKE 'enumerate(DataLoader)%')"


def _sweep(cat: np.ndarray, start: np.ndarray, end: np.ndarray, n_cat: int,
           step_start: np.ndarray, step_end: np.ndarray) -> np.ndarray:
    """ns per (step, category) for one rank: each instant of a step goes to the lowest
    category index active then; the last column (what no category covers) is left 0.

    Steps are sorted and do not overlap. Their edges go into the sweep as events that change
    nothing, so no segment crosses one; one pass per category keeps memory linear in the
    spans (a run has millions).
    """
    out_shape = (len(step_start), n_cat + 1)
    if not len(cat) or not len(step_start):
        return np.zeros(out_shape, np.int64)
    n, m = len(cat), len(step_start)
    times = np.concatenate([start, end, step_start, step_end])
    kind = np.concatenate([cat, cat, np.full(2 * m, -1)])
    sign = np.concatenate([np.ones(n, np.int32), np.full(n, -1, np.int32),
                           np.zeros(2 * m, np.int32)])
    order = np.argsort(times, kind="stable")
    times, kind, sign = times[order], kind[order], sign[order]
    owner = np.full(len(times) - 1, -1, np.int64)
    for k in range(n_cat):  # lowest index first: it keeps the instants it is active in
        active = np.cumsum(np.where(kind == k, sign, 0))[:-1] > 0
        owner[(owner < 0) & active] = k
    lo, length = times[:-1], np.diff(times)
    step = np.searchsorted(step_start, lo, "right") - 1
    keep = (owner >= 0) & (length > 0) & (step >= 0)
    keep[keep] = lo[keep] < step_end[step[keep]]
    flat = np.bincount(step[keep] * (n_cat + 1) + owner[keep], weights=length[keep],
                       minlength=out_shape[0] * out_shape[1])
    return np.rint(flat).astype(np.int64).reshape(out_shape)
