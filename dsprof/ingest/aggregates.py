"""Per-rank aggregates: the small tables that ``summary`` reads instead of rescanning the big ones.

Ingest writes them with each rank's other tables (``tables/<name>/rank<R>.parquet``), from that
rank's ops, kernels and steps; a run ingested before they existed gets the same rows computed
from its tables when a command first asks (:meth:`dsprof.run.Run.aggregate`). Both go through
:func:`compute_aggregates`, so a stored aggregate and one computed on the fly are the same rows
by construction (the aggregates test compares them on real traces).

What each holds (``dsprof/schema.py`` and ``docs/format.md`` have the columns):

* ``rank_totals``: one row per ingested rank (also the marker that a run has aggregates): op
  and kernel counts, ops inside steps, and the ``ProfilerStep#N`` names the rank has (how many,
  and the first), which HTA's last-step convention needs over all ranks.
* ``kernel_time``: per rank, the ns during which exactly a given set of kernel types ran
  (COMPUTATION=1, COMMUNICATION=2, MEMORY=4, OTHER=8; set 0 is idle inside the rank's kernel
  span), once over every kernel and once with HTA's last-step convention applied to the rank.
  HTA's kernel-type and temporal breakdowns both add these up.
* ``op_time``: per rank and ``cpu_op`` name, calls, self and total ns, inside and outside steps.
* ``phase_time``: per rank, ns of its profiled steps' wall time owned by each phase.

Every function here takes a DuckDB connection with views ``ops``, ``kernels`` and ``steps`` (the
ones in ``present``) and returns rows for every rank in them: one rank at ingest, all ranks on
the fly. Sums over ranks of these rows are what the readers compute.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsprof.schema import PHASES

AGGREGATE_TABLES = ("rank_totals", "kernel_time", "op_time", "phase_time")
# tables the aggregates are computed from
SOURCE_TABLES = ("ops", "kernels", "steps")

# Kernel type bits in HTA's label order: COMPUTATION=1, COMMUNICATION=2, MEMORY=4; OTHER=8
# never names a label (busy time in the temporal breakdown only).
KERNEL_TYPES = ("COMPUTATION", "COMMUNICATION", "MEMORY")
KIND_BIT = {"compute": 0, "communication": 1, "memcpy": 2, "memset": 2}
OTHER_BIT = 3
N_TYPE_BITS = 4

# rank -> start of its last ProfilerStep: launches at or after it are dropped by HTA's default
LAST_STEP_CTE = """last_step AS (
    SELECT rank, max(start_ns) AS last_start FROM ops
    WHERE name LIKE 'ProfilerStep#%' GROUP BY rank)"""


def compute_aggregates(con: Any, present: set[str] | frozenset[str],
                       ranks: list[int] | None = None) -> dict[str, dict[str, list[Any]]]:
    """Every aggregate table's columns, from the source tables in ``present``.

    Args:
        con: a DuckDB connection with a view per table of ``present``.
        present: which of ``SOURCE_TABLES`` exist (a CPU run has no kernels).
        ranks: ranks that must have a ``rank_totals`` row even without ops (ingest of a rank).
    """
    return {
        "rank_totals": rank_totals(con, present, ranks or []),
        "kernel_time": kernel_time(con, present),
        "op_time": op_time(con, present),
        "phase_time": phase_time(con, present),
    }


def rank_aggregates(sources: dict[str, Any], rank: int) -> dict[str, dict[str, list[Any]]]:
    """The aggregates of one rank being ingested, from its Arrow tables ``sources`` (those of
    ``SOURCE_TABLES`` that have rows)."""
    import duckdb

    con = duckdb.connect()
    try:
        for name, data in sources.items():
            con.register(name, data)
        return compute_aggregates(con, frozenset(sources), [rank])
    finally:
        con.close()


def _columns(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {n: [r[i] for r in rows] for i, n in enumerate(names)}


def rank_totals(con: Any, present: set[str] | frozenset[str],
                ranks: list[int]) -> dict[str, list[Any]]:
    per: dict[int, list[Any]] = {int(r): [int(r), 0, 0, 0, None, 0] for r in ranks}
    if "ops" in present:
        for rank, n, in_steps, names, first in con.execute("""
                SELECT rank, count(*), count(step),
                       count(DISTINCT name) FILTER (WHERE name LIKE 'ProfilerStep#%'),
                       min(name) FILTER (WHERE name LIKE 'ProfilerStep#%')
                FROM ops GROUP BY rank""").fetchall():
            row = per.setdefault(int(rank), [int(rank), 0, 0, 0, None, 0])
            row[1:5] = [int(n), int(in_steps), int(names), first]
    if "kernels" in present:
        for rank, n in con.execute("SELECT rank, count(*) FROM kernels GROUP BY rank").fetchall():
            per.setdefault(int(rank), [int(rank), 0, 0, 0, None, 0])[5] = int(n)
    return _columns(("rank", "ops", "ops_in_steps", "profiler_step_names",
                     "first_profiler_step", "kernels"), [per[r] for r in sorted(per)])


def kernel_rows(con: Any, drop_last_step: bool) -> tuple[np.ndarray, ...]:
    """(rank, type bit, start, end) int64 arrays of the kernels kept: all of them, or with
    ``drop_last_step`` those whose launching runtime call exists and started before its rank's
    last ProfilerStep (a rank without ProfilerStep keeps every linked kernel)."""
    bit = " ".join(f"WHEN '{k}' THEN {b}" for k, b in KIND_BIT.items())
    base = (f"SELECT k.rank::BIGINT AS rank, CASE k.kind {bit} ELSE {OTHER_BIT} END AS bit, "
            "k.start_ns, k.start_ns + greatest(k.dur_ns, 0) AS end_ns FROM kernels k")
    if not drop_last_step:
        sql = base
    else:
        sql = f"""
            WITH {LAST_STEP_CTE}
            {base}
            JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id
            LEFT JOIN last_step l ON l.rank = k.rank
            WHERE l.last_start IS NULL OR o.start_ns < l.last_start"""
    cols = con.execute(sql).fetchnumpy()
    return tuple(np.asarray(cols[c], dtype=np.int64) for c in ("rank", "bit", "start_ns", "end_ns"))


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


def kernel_time(con: Any, present: set[str] | frozenset[str]) -> dict[str, list[Any]]:
    rows: list[tuple[int, bool, int, int]] = []
    if "kernels" in present:
        for dropped in (False, True):
            if dropped and "ops" not in present:
                continue  # no launching ops: HTA's join keeps nothing; readers fall back
            ranks, table = type_sweep(*kernel_rows(con, dropped))
            for rank, row in zip(ranks.tolist(), table):
                # set 0 always: a rank whose kept kernels all last 0 ns still has a span
                rows += [(int(rank), dropped, m, int(ns)) for m, ns in enumerate(row.tolist())
                         if ns or m == 0]
    return _columns(("rank", "last_step_dropped", "types", "ns"), rows)


def op_time(con: Any, present: set[str] | frozenset[str]) -> dict[str, list[Any]]:
    rows: list[tuple[Any, ...]] = []
    if "ops" in present:
        rows = con.execute("""
            SELECT rank, name, step IS NOT NULL AS in_step, count(*), sum(self_ns)::BIGINT,
                   sum(dur_ns)::BIGINT
            FROM ops WHERE cat = 'cpu_op' GROUP BY ALL ORDER BY rank, name, in_step""").fetchall()
    return _columns(("rank", "name", "in_step", "calls", "self_ns", "dur_ns"), rows)


def phase_time(con: Any, present: set[str] | frozenset[str]) -> dict[str, list[Any]]:
    """ns of each rank's profiled steps owned by each phase (the priority sweep below)."""
    out: list[tuple[int, str, int]] = []
    if "ops" not in present or "steps" not in present:
        return _columns(("rank", "phase", "ns"), out)
    # Spans are clipped to their step: the last span of a window can run on past it (dsprof
    # stops the profiler inside the optimizer's step span, which then also times the stop).
    rows = con.execute("""
        SELECT o.rank, o.phase, greatest(o.start_ns, s.start_ns),
               least(o.start_ns + o.dur_ns, s.end_ns)
        FROM ops o
        JOIN steps s ON s.rank = o.rank AND s.step = o.step AND s.profiled
        LEFT JOIN ops p ON o.parent_id = p.id AND o.rank = p.rank
        WHERE o.cat IN ('cpu_op', 'user_annotation', 'module')
          AND o.name NOT LIKE 'ProfilerStep#%'
          AND (p.id IS NULL OR p.phase <> o.phase)
          AND o.start_ns + o.dur_ns > s.start_ns AND o.start_ns < s.end_ns
    """).fetchall()
    if not rows:
        return _columns(("rank", "phase", "ns"), out)
    arr = np.array([(r[0], PHASES.index(r[1]) if r[1] in PHASES else 4, r[2], r[3])
                    for r in rows], dtype=np.int64)
    for rank in np.unique(arr[:, 0]).tolist():
        per_phase = priority_sweep(arr[arr[:, 0] == rank])
        out += [(int(rank), p, int(per_phase[k])) for k, p in enumerate(PHASES) if per_phase[k]]
    return _columns(("rank", "phase", "ns"), out)


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
