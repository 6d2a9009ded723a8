"""Where each profiled step's wall time went, one category per instant, as TensorBoard's
profiler overview drew it (its "step time breakdown"). Read by the dashboard's Overview and by
``dsprof summary --json`` (field ``step_breakdown``).

Each instant of a step goes to the first category that is active then, so the categories of a
step add up to its wall time:

* GPU run (the run has kernels): kernel > memcpy > memset > communication > runtime (CUDA API
  calls) > data loading > CPU ops > untraced. This is tb_plugin's ``ProfileRole`` order (Kernel
  > Memcpy > Memset > Communication > Runtime > DataLoader > CpuOp > Other); "untraced" is its
  Other: neither device nor host was doing recorded work (Python between ops, waiting). The
  first four together are the GPU's busy time, so ``gpu_idle_ns`` = step - their sum;
  communication is the collectives' kernels with no compute kernel or copy beside them.
* CPU run: backward > forward > optimizer > communication > data loading > other ops >
  untraced, the order ``dsprof summary``'s time by phase uses (backward runs on autograd's
  thread while the main thread sits in ``loss.backward()``), per step instead of summed.
  Communication is the ``comms`` table's transfers (gloo's worker threads, and their
  ``gloo:*``/``nccl:*`` annotations) while no forward, backward or optimizer op runs: the
  exposed communication of ``metrics/comm/overlap.py``, which a DDP run on CPU waits for at
  the end of its backward.

Data loading is the ops of phase ``data`` and torch's ``enumerate(DataLoader)#...`` spans;
a ``dsprof run`` also times the wait for each batch (``steps.data_wait_ns``) outside any op:
that wait is taken out of the lowest category (untraced), up to what it holds.

DuckDB picks the spans from the tables and gives each its category, rank by rank. numpy merges
each category's spans into disjoint intervals (an op nested in an op of its own category adds
no time: a run's millions of nested ops become the few intervals where a category runs) and
sweeps those: every interval adds +1 at its start and -1 at its end to its category's counter,
step edges add instants that change nothing (so no segment crosses one), and running sums say
which categories are active until the next instant. (The same sweep as DuckDB window
functions was 5x slower at 1 M spans: DuckDB 2.0's running sum over 2 M rows alone took 2.5 s
on 2 cores, numpy's sort and cumulative sums take a fraction of that.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsprof.run import Run
from dsprof.sqlsafe import table_columns

GPU_CATEGORIES = ("kernel", "memcpy", "memset", "communication", "runtime", "data loading",
                  "CPU ops", "untraced")
GPU_BUSY = GPU_CATEGORIES[:4]
CPU_CATEGORIES = ("backward", "forward", "optimizer", "communication", "data loading",
                  "other ops", "untraced")

_KERNEL_CATEGORY = {"compute": 0, "memcpy": 1, "memset": 2, "communication": 3}
_CPU_PHASE = {"backward": 0, "forward": 1, "optimizer": 2, "data": 4}
_CPU_COMM, _CPU_OTHER = 3, 5


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

    def to_json(self) -> dict[str, Any]:
        """``dsprof summary --json``'s ``step_breakdown``: the categories in priority order and,
        per profiled (rank, step), its wall time and ns per category."""
        return {
            "kind": "gpu" if self.gpu else "cpu",
            "categories": list(self.categories),
            "steps": [{"rank": int(r), "step": int(s), "dur_ns": int(d),
                       "ns": dict(zip(self.categories, (int(v) for v in row)))}
                      for r, s, d, row in zip(self.rank, self.step, self.dur_ns, self.ns)],
        }


def step_breakdown(run: Run) -> StepBreakdown:
    """The breakdown of ``run``'s profiled steps; empty without ops or profiled steps."""
    gpu = run.has("kernels") and run.sql("SELECT count(*) FROM kernels")[0][0] > 0
    out = StepBreakdown(gpu, GPU_CATEGORIES if gpu else CPU_CATEGORIES)
    if not (run.has("steps") and run.has("ops")):
        return out
    steps_cols = table_columns(run, "steps")
    if "profiled" not in steps_cols:
        return out
    wait = "data_wait_ns" if "data_wait_ns" in steps_cols else "NULL::BIGINT"
    steps = run.sql(f"""SELECT rank, step, start_ns, end_ns, coalesce({wait}, 0)
                        FROM steps WHERE profiled AND end_ns > start_ns
                        ORDER BY rank, start_ns""")
    if not steps:
        return out
    cols = np.array(steps, dtype=np.int64).reshape(-1, 5)
    rank, step_start, step_end = cols[:, 0], cols[:, 2], cols[:, 3]
    n_cat = len(out.categories)
    ns = np.zeros((len(cols), n_cat), np.int64)
    for r in np.unique(rank):
        m = np.flatnonzero(rank == r)
        cat, start, end = _union(*_spans(run, gpu, int(r), int(step_start[m].min()),
                                         int(step_end[m].max())))
        ns[m] = _sweep(cat, start, end, n_cat - 1, step_start[m], step_end[m])
    dur = step_end - step_start
    ns[:, -1] = np.maximum(dur - ns[:, :-1].sum(axis=1), 0)  # what no category covers
    data = out.categories.index("data loading")
    moved = np.clip(cols[:, 4] - ns[:, data], 0, ns[:, -1])
    ns[:, data] += moved
    ns[:, -1] -= moved
    out.rank, out.step, out.dur_ns, out.ns = rank, cols[:, 1], dur, ns
    return out


def _spans(run: Run, gpu: bool, rank: int, lo: int, hi: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(category, start, end) of the spans of ``rank`` that count and overlap [lo, hi)."""
    table = run.arrow(f"""
        SELECT c, s, e FROM ({_spans_sql(run, gpu)})
        WHERE rank = ? AND e > ? AND s < ? AND e > s""", [rank, lo, hi])
    return tuple(table.column(i).to_numpy(zero_copy_only=False).astype(np.int64)
                 for i in range(3))  # type: ignore[return-value]


def _union(cat: np.ndarray, start: np.ndarray, end: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per category, the union of its spans as disjoint intervals (category, start, end).

    An op nested in an op of its own category, or overlapping one, adds nothing to the time
    the category is active, and a run's millions of nested ops merge into the few intervals
    where a category runs, so the sweep sorts those instead. One sort by (category, start),
    a running maximum of the ends (offset per category so that one pass serves all), and an
    interval starts where a span begins after everything before it in its category ended.
    """
    if not len(cat):
        return cat, start, end
    lo = int(start.min())
    width = int(end.max()) - lo + 1
    key_start = cat.astype(np.int64) * width + (start - lo)
    order = np.argsort(key_start)
    key_start = key_start[order]
    key_end = cat[order].astype(np.int64) * width + (end[order] - lo)
    reach = np.maximum.accumulate(key_end)
    first = np.empty(len(order), bool)
    first[0] = True
    first[1:] = key_start[1:] > reach[:-1]
    at = np.flatnonzero(first)
    last = np.append(at[1:], len(order)) - 1
    ucat = cat[order][at]
    return ucat, key_start[at] - ucat.astype(np.int64) * width + lo, \
        reach[last] - ucat.astype(np.int64) * width + lo


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
    kind = np.concatenate([cat, cat, np.full(2 * m, -1)]).astype(np.int8)
    sign = np.concatenate([np.ones(n, np.int8), np.full(n, -1, np.int8),
                           np.zeros(2 * m, np.int8)])
    order = np.argsort(times, kind="stable")
    times, kind, sign = times[order], kind[order], sign[order]
    owner = np.full(len(times) - 1, -1, np.int8)
    for k in range(n_cat):  # lowest index first: it keeps the instants it is active in
        active = np.cumsum(np.where(kind == k, sign, 0), dtype=np.int32)[:-1] > 0
        owner[(owner < 0) & active] = k
    lo, length = times[:-1], np.diff(times)
    step = np.searchsorted(step_start, lo, "right") - 1
    keep = (owner >= 0) & (length > 0) & (step >= 0)
    keep[keep] = lo[keep] < step_end[step[keep]]
    flat = np.bincount(step[keep] * (n_cat + 1) + owner[keep], weights=length[keep],
                       minlength=out_shape[0] * out_shape[1])
    return np.rint(flat).astype(np.int64).reshape(out_shape)


def _spans_sql(run: Run, gpu: bool) -> str:
    """A query of (rank, c, s, e) over every span that counts."""
    if gpu:
        def category(o: str) -> str:
            return (f"CASE WHEN {o}.cat = 'cuda_runtime' THEN 4 WHEN {_data(o)} THEN 5 "
                    f"WHEN {o}.cat = 'cpu_op' THEN 6 END")
        kind = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _KERNEL_CATEGORY.items())
        extra = f"""
            SELECT rank, CASE kind {kind} ELSE 0 END AS c, start_ns AS s,
                   start_ns + dur_ns AS e
            FROM kernels WHERE kind <> 'sync' AND dur_ns > 0
            UNION ALL"""
    else:
        def category(o: str) -> str:
            phase = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _CPU_PHASE.items() if k != "data")
            return (f"CASE WHEN {o}.name LIKE 'ProfilerStep#%' THEN NULL "
                    f"WHEN {o}.cat NOT IN ('cpu_op', 'user_annotation', 'module') THEN NULL "
                    f"WHEN {o}.cat = 'user_annotation' AND ({o}.name LIKE 'gloo:%' "
                    f"OR {o}.name LIKE 'nccl:%') THEN {_CPU_COMM} "
                    f"WHEN {_data(o)} THEN {_CPU_PHASE['data']} "
                    f"ELSE CASE {o}.phase {phase} ELSE {_CPU_OTHER} END END")
        extra = ""
        if run.has("comms"):
            extra = f"""
                SELECT rank, {_CPU_COMM} AS c, start_ns AS s, start_ns + dur_ns AS e
                FROM comms WHERE dur_ns > 0
                UNION ALL"""
    # every op in a step (nested ones too: _union merges them into their parents' time)
    return f"""{extra}
        SELECT rank, c, s, e FROM (
            SELECT rank, step, {category('ops')} AS c, start_ns AS s,
                   start_ns + dur_ns AS e FROM ops)
        WHERE step IS NOT NULL AND c IS NOT NULL AND e > s"""


def _data(o: str) -> str:
    """Whether op alias ``o`` is data loading."""
    return f"({o}.phase = 'data' OR {o}.name LIKE 'enumerate(DataLoader)%')"
