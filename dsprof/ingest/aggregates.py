"""Per-rank aggregates: the small tables that ``summary`` reads instead of rescanning the big ones.

Ingest writes them with each rank's other tables (``tables/<name>/rank<R>.parquet``), from that
rank's ops, kernels and steps; a run ingested before they existed gets the same rows computed
from its tables when a command first asks (:meth:`dsprof.run.Run.aggregate`). Both go through
:func:`compute_aggregates`, so a stored aggregate and one computed on the fly are the same rows
by construction (the aggregates test compares them on real traces).

What each holds (``dsprof/schema/`` and ``docs/format.md`` have the columns):

* ``rank_totals``: one row per ingested rank (also the marker that a run has aggregates): op
  and kernel counts, ops inside steps, and the ``ProfilerStep#N`` names the rank has (how many,
  and the first), which HTA's last-step convention needs over all ranks.
* ``kernel_time``: per rank, the ns during which exactly a given set of kernel types ran
  (COMPUTATION=1, COMMUNICATION=2, MEMORY=4, OTHER=8; set 0 is idle inside the rank's kernel
  span), once over every kernel and once with HTA's last-step convention applied to the rank.
  HTA's kernel-type and temporal breakdowns both add these up.
* ``op_time``: per rank and ``cpu_op`` name, calls, self and total ns, inside and outside steps.
* ``phase_time``: per rank, ns of its profiled steps' wall time owned by each phase.

:func:`compute_aggregates` takes Arrow tables with the columns of ``SOURCE_COLUMNS`` (one rank
at ingest, all ranks on the fly) and works rank by rank with numpy and Arrow compute over whole
columns (no loop per event: at ingest it costs a few percent of the rank's ingest time). Sums
over ranks of these rows are what the readers compute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsprof.vocabulary import PHASES

AGGREGATE_TABLES = ("rank_totals", "kernel_time", "op_time", "phase_time")
# the columns of the source tables that the aggregates are computed from
SOURCE_COLUMNS = {
    "ops": ("rank", "id", "parent_id", "name", "cat", "phase", "step", "start_ns", "dur_ns",
            "self_ns"),
    "kernels": ("rank", "kind", "start_ns", "dur_ns", "launch_id"),
    "steps": ("rank", "step", "start_ns", "end_ns", "profiled"),
}
SOURCE_TABLES = tuple(SOURCE_COLUMNS)

# Kernel type bits in HTA's label order: COMPUTATION=1, COMMUNICATION=2, MEMORY=4; OTHER=8
# never names a label (busy time in the temporal breakdown only).
KERNEL_TYPES = ("COMPUTATION", "COMMUNICATION", "MEMORY")
KIND_BIT = {"compute": 0, "communication": 1, "memcpy": 2, "memset": 2}
OTHER_BIT = 3
N_TYPE_BITS = 4
PROFILER_STEP = "ProfilerStep#"  # HTA's step annotations: ops named ProfilerStep#<N>

COLUMNS = {
    "rank_totals": ("rank", "ops", "ops_in_steps", "profiler_step_names", "first_profiler_step",
                    "kernels"),
    "kernel_time": ("rank", "last_step_dropped", "types", "ns"),
    "op_time": ("rank", "name", "in_step", "calls", "self_ns", "dur_ns"),
    "phase_time": ("rank", "phase", "ns"),
}


def compute_aggregates(sources: dict[str, pa.Table],
                       ranks: list[int] | None = None) -> dict[str, dict[str, list[Any]]]:
    """Every aggregate table's columns.

    Args:
        sources: Arrow tables by name, those of ``SOURCE_TABLES`` that exist (a CPU run has no
            kernels), each with at least the columns of ``SOURCE_COLUMNS``.
        ranks: ranks that must have a ``rank_totals`` row even without ops (ingest of a rank).
    """
    out: dict[str, dict[str, list[Any]]] = {n: {c: [] for c in COLUMNS[n]} for n in COLUMNS}
    every = set(ranks or [])
    for data in sources.values():
        every.update(pc.unique(data["rank"]).drop_null().to_pylist())
    for rank in sorted(every):
        mine = {n: _rank_rows(t, rank) for n, t in sources.items()}
        for name, rows in (("rank_totals", [rank_totals(mine, rank)]),
                           ("kernel_time", kernel_time(mine, rank)),
                           ("op_time", op_time(mine, rank)),
                           ("phase_time", phase_time(mine, rank))):
            for row in rows:
                for column, value in zip(COLUMNS[name], row):
                    out[name][column].append(value)
    return out


def rank_aggregates(sources: dict[str, pa.Table], rank: int) -> dict[str, dict[str, list[Any]]]:
    """The aggregates of one rank being ingested, from its Arrow tables ``sources`` (those of
    ``SOURCE_TABLES`` that have rows, every column of the schema)."""
    return compute_aggregates({n: t.select(list(SOURCE_COLUMNS[n])) for n, t in sources.items()},
                              [rank])


def _rank_rows(table: pa.Table, rank: int) -> pa.Table:
    if _one_rank(table, rank):
        return table  # ingest: the rank's own tables
    return table.filter(pc.fill_null(pc.equal(table["rank"], rank), False))


def _one_rank(table: pa.Table, rank: int) -> bool:
    lo_hi = pc.min_max(table["rank"])
    return (table["rank"].null_count == 0
            and lo_hi["min"].as_py() == rank == lo_hi["max"].as_py())


def _ints(column: Any, fill: int = 0) -> np.ndarray:
    return np.asarray(pc.fill_null(column, fill).to_numpy(), dtype=np.int64)


def _profiler_steps(ops: pa.Table) -> np.ndarray:
    """Mask of the ops that are ProfilerStep annotations (SQL ``name LIKE 'ProfilerStep#%'``)."""
    return np.asarray(pc.fill_null(pc.starts_with(ops["name"], PROFILER_STEP), False)
                      .to_numpy(zero_copy_only=False), dtype=bool)


def rank_totals(src: dict[str, pa.Table], rank: int) -> tuple[Any, ...]:
    ops, kernels = src.get("ops"), src.get("kernels")
    n_ops = in_steps = n_names = 0
    first = None
    if ops is not None:
        n_ops = ops.num_rows
        in_steps = n_ops - ops["step"].null_count
        names = pc.unique(ops["name"].filter(pa.array(_profiler_steps(ops))))
        n_names = len(names)
        first = pc.min(names).as_py() if n_names else None
    return (rank, n_ops, in_steps, n_names, first, 0 if kernels is None else kernels.num_rows)


def kernel_rows(kernels: pa.Table, ops: pa.Table | None,
                drop_last_step: bool) -> tuple[np.ndarray, ...]:
    """(rank, type bit, start, end) int64 arrays of the kernels kept: all of them, or with
    ``drop_last_step`` those whose launching runtime call (``launch_id``) exists and started
    before the start of its rank's last ProfilerStep (a rank without one keeps every linked
    kernel). Negative durations count as 0."""
    rank = _ints(kernels["rank"])
    bit = np.full(len(rank), OTHER_BIT, np.int64)
    kinds = list(KIND_BIT)
    code = _ints(pc.index_in(kernels["kind"], value_set=pa.array(kinds)), -1)
    known = code >= 0
    bit[known] = np.array([KIND_BIT[k] for k in kinds], np.int64)[code[known]]
    start = _ints(kernels["start_ns"])
    end = start + np.maximum(_ints(kernels["dur_ns"]), 0)
    if not drop_last_step:
        return rank, bit, start, end
    keep = np.zeros(len(rank), bool)
    if ops is None or not ops.num_rows:
        return rank[keep], bit[keep], start[keep], end[keep]
    for r in np.unique(rank).tolist():
        in_rank = rank == r
        mine = _rank_rows(ops, r)
        ids, starts = _ints(mine["id"], -1), _ints(mine["start_ns"])
        if not len(ids):
            continue
        order = np.argsort(ids, kind="stable")
        ids, starts = ids[order], starts[order]
        launch = kernels["launch_id"].filter(pa.array(in_rank))
        lid = _ints(launch, -1)
        pos = _position(ids, lid)
        ok = _bools(launch.is_valid()) & (ids[pos] == lid)
        steps = _profiler_steps(mine)
        if steps.any():
            ok &= starts[pos] < _ints(mine["start_ns"])[steps].max()
        keep[np.flatnonzero(in_rank)[ok]] = True
    return rank[keep], bit[keep], start[keep], end[keep]


def _position(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``min(searchsorted(ids, values), len(ids) - 1)`` for sorted, non-empty ``ids``; where
    they are consecutive (an ingested rank's ops ids always are), by subtraction instead of a
    binary search per value (the callers check ``ids[pos] == value`` either way)."""
    last = len(ids) - 1
    if int(ids[-1]) - int(ids[0]) == last and bool((np.diff(ids) == 1).all()):
        return np.clip(values - ids[0], 0, last)
    return np.minimum(np.searchsorted(ids, values), last)


def _bools(arr: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def type_sweep(rank: np.ndarray, bit: np.ndarray, start: np.ndarray,
               end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ns per (rank, set of active type bits).

    Returns (ranks, table) where table[i, mask] is the time rank ranks[i] spent with exactly
    the types in ``mask`` running (mask 0: nothing running, between its first and last event).
    """
    ranks, r_idx = np.unique(rank, return_inverse=True)
    n = len(start)
    # Endpoints: +1 at a start, -1 at an end, of the kernel's type.
    t = np.concatenate([start, end])
    r = np.concatenate([r_idx, r_idx])
    b = np.concatenate([bit, bit])
    delta = np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)])
    order = np.lexsort((t, r))
    t, r, b, delta = t[order], r[order], b[order], delta[order]
    # Running count of kernels of each type after each endpoint -> bitmask of active types.
    mask = np.zeros(len(t), dtype=np.int64)
    for i in range(N_TYPE_BITS):
        active = np.cumsum(np.where(b == i, delta, 0)) > 0
        mask |= active.astype(np.int64) << i
    # The segment after endpoint j runs to endpoint j+1 of the same rank.
    seg = np.zeros(len(t), dtype=np.int64)
    same = r[1:] == r[:-1]
    seg[:-1] = np.where(same, t[1:] - t[:-1], 0)
    size = 1 << N_TYPE_BITS
    table = np.bincount(r * size + mask, weights=seg, minlength=len(ranks) * size)
    return ranks, np.rint(table).astype(np.int64).reshape(len(ranks), size)


def kernel_time(src: dict[str, pa.Table], rank: int) -> list[tuple[Any, ...]]:
    kernels, ops = src.get("kernels"), src.get("ops")
    rows: list[tuple[Any, ...]] = []
    if kernels is None or not kernels.num_rows:
        return rows
    for dropped in (False, True):
        if dropped and ops is None:
            continue  # no launching ops: HTA's join keeps nothing; readers fall back
        _, table = type_sweep(*kernel_rows(kernels, ops, dropped))
        for row in table:
            # set 0 always: a rank whose kept kernels all last 0 ns still has a span
            rows += [(rank, dropped, m, int(ns)) for m, ns in enumerate(row.tolist())
                     if ns or m == 0]
    return rows


def op_time(src: dict[str, pa.Table], rank: int) -> list[tuple[Any, ...]]:
    ops = src.get("ops")
    if ops is None:
        return []
    cpu = ops.filter(pc.fill_null(pc.equal(ops["cat"], "cpu_op"), False))
    if not cpu.num_rows:
        return []
    # group by (name, in step) through the names' dictionary codes (null name: code -1)
    names = pc.dictionary_encode(cpu["name"].combine_chunks())
    code = _ints(names.indices, -1)
    key = (code + 1) * 2 + _bools(cpu["step"].is_valid())
    keys, group = np.unique(key, return_inverse=True)
    calls = np.bincount(group, minlength=len(keys))
    sums = []
    for column in ("self_ns", "dur_ns"):
        total = np.zeros(len(keys), np.int64)
        np.add.at(total, group, _ints(cpu[column]))
        valid = np.bincount(group, weights=_bools(cpu[column].is_valid()), minlength=len(keys))
        # SQL's sum: null when every value of the group is null
        sums.append([int(t) if v else None for t, v in zip(total.tolist(), valid.tolist())])
    dictionary = names.dictionary.to_pylist()
    rows = [(rank, dictionary[k // 2 - 1] if k >= 2 else None, bool(k % 2), int(c), sn, dn)
            for k, c, sn, dn in zip(keys.tolist(), calls.tolist(), *sums)]
    return sorted(rows, key=lambda r: (r[1] is None, r[1] or "", r[2]))


def phase_time(src: dict[str, pa.Table], rank: int) -> list[tuple[Any, ...]]:
    """ns of the rank's profiled steps owned by each phase (the priority sweep below)."""
    ops, steps = src.get("ops"), src.get("steps")
    if ops is None or steps is None or not ops.num_rows:
        return []
    phase_code = _ints(pc.index_in(ops["phase"], value_set=pa.array(PHASES)),
                       PHASES.index("other"))
    ids = _ints(ops["id"], -1)
    # the spans where a phase begins: the parent has another phase, or there is no parent
    # (a parent whose phase or own phase is null does not differ: SQL's <> on a null)
    order = np.argsort(ids, kind="stable")
    parent = _ints(ops["parent_id"], -1)
    has_parent_id = _bools(ops["parent_id"].is_valid())
    pos = _position(ids[order], parent)
    p_idx = order[pos]
    has_parent = has_parent_id & (ids[p_idx] == parent)
    p_phase_str = ops["phase"].take(pa.array(p_idx))
    differs = _bools(pc.not_equal(p_phase_str, ops["phase"]))
    begins = ~has_parent | differs
    cat_ok = _bools(pc.is_in(ops["cat"], value_set=pa.array(["cpu_op", "user_annotation",
                                                             "module"])))
    starts_ok = ~_profiler_steps(ops)
    sel = np.flatnonzero(begins & cat_ok & starts_ok & _bools(ops["step"].is_valid())
                         & _bools(ops["start_ns"].is_valid()) & _bools(ops["dur_ns"].is_valid()))
    if not len(sel):
        return []
    prof = steps.filter(_bools(steps["profiled"]))
    if not prof.num_rows:
        return []
    # pair each selected op with its rank's profiled step(s) of the same number (a number
    # that occurs twice pairs twice, as a join would): one pass per profiled step
    op_step = _ints(ops["step"])[sel]
    pairs = [(sel[op_step == st], s0, s1) for st, s0, s1 in zip(
        _ints(prof["step"]).tolist(), _ints(prof["start_ns"]).tolist(),
        _ints(prof["end_ns"]).tolist())]
    i = np.concatenate([p for p, _, _ in pairs])
    if not len(i):
        return []
    s_start = np.concatenate([np.full(len(p), s0, np.int64) for p, s0, _ in pairs])
    s_end = np.concatenate([np.full(len(p), s1, np.int64) for p, _, s1 in pairs])
    o_start = _ints(ops["start_ns"])[i]
    o_end = o_start + _ints(ops["dur_ns"])[i]
    inside = (o_end > s_start) & (o_start < s_end)
    if not inside.any():
        return []
    # spans are clipped to their step: the last span of a window can run on past it (dsprof
    # stops the profiler inside the optimizer's step span, which then also times the stop)
    arr = np.stack([np.full(int(inside.sum()), rank, np.int64), phase_code[i][inside],
                    np.maximum(o_start, s_start)[inside], np.minimum(o_end, s_end)[inside]],
                   axis=1)
    per_phase = priority_sweep(arr)
    return [(rank, p, int(per_phase[k])) for k, p in enumerate(PHASES) if per_phase[k]]


# When phases overlap in time (backward on the autograd thread while the main thread waits in
# "other"), each instant goes to one phase, in this order, so the phases add up to wall time.
_PRIORITY = (PHASES.index("backward"), PHASES.index("forward"), PHASES.index("optimizer"),
             PHASES.index("data"), PHASES.index("other"))


def priority_sweep(rows: np.ndarray) -> np.ndarray:
    """ns per phase for one rank's (rank, phase, start, end) rows, one phase per instant."""
    n_phase = len(PHASES)
    times = np.concatenate([rows[:, 2], rows[:, 3]])
    delta = np.zeros((len(times), n_phase), np.int64)
    idx = np.arange(len(rows))
    delta[idx, rows[:, 1]] = 1
    delta[len(rows) + idx, rows[:, 1]] = -1
    order = np.argsort(times, kind="stable")
    times, delta = times[order], delta[order]
    active = np.cumsum(delta, axis=0)[:-1] > 0
    seg = np.diff(times)
    owner = np.full(len(seg), -1)
    for k in reversed(_PRIORITY):
        owner[active[:, k]] = k
    out = np.zeros(n_phase, np.int64)
    has = owner >= 0
    np.add.at(out, owner[has], seg[has])
    return out
