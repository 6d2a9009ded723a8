"""Communication time, exposed communication and compute/communication overlap, per rank and
step, computed in DuckDB over every rank's Parquet (no per-rank data is loaded into Python).

Definitions (HTA's ``get_comm_comp_overlap``, hta/analyzers/communication_analysis.py):

* GPU runs (the ``kernels`` table has communication kernels): comm = the union of the
  communication kernels' intervals, compute = the union of the compute kernels' intervals, both
  per rank (memcpy, memset and sync count as neither); overlap = |comm ∩ compute|;
  ``overlap_pct`` = 100 x overlap / |comm|; exposed = |comm| - overlap. With
  ``include_last_step=False`` (HTA's default) a kernel counts only when its launching runtime
  call started before the rank's last ``ProfilerStep`` (unlinked kernels are dropped, as HTA's
  correlation join drops them), and only when the trace has two or more ProfilerSteps.
* CPU runs (gloo): comm = the union of the ``comms`` rows' transfer spans (gloo worker
  threads); compute = the union of top-level ``cpu_op`` spans on every other thread that are
  not collectives themselves (``c10d::*``, ``record_param_comms``) nor waits for one, less the
  time those spans spend blocked in a functional collective's wait
  (``_c10d_functional::wait_tensor``, nested in the first op that reads the result). A
  thread that waits is not computing: DTensor's tensor parallelism on 2 gloo ranks spent
  4.2 ms of a 20 ms step inside ``aten::sub`` and autograd nodes waiting for the all-reduces
  that run meanwhile, which read as 27-80 % overlapped a step when almost none of it was.

The interval arithmetic is a sweep in SQL: every interval contributes +1 at its start and -1
at its end to a comm or a compute counter; running sums over time (peers at one instant share
a sum, so ties are exact) say what is active until the next instant.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

_SWEEP = """
    ev AS (
        SELECT rank, grp, start_ns AS t, is_comm::INT AS dcomm,
               CASE WHEN is_comm THEN 0 ELSE w END AS dcomp
        FROM iv WHERE end_ns > start_ns
        UNION ALL
        SELECT rank, grp, end_ns, -(is_comm::INT), CASE WHEN is_comm THEN 0 ELSE -w END
        FROM iv WHERE end_ns > start_ns),
    run AS (
        SELECT rank, grp, t,
               sum(dcomm) OVER w AS comm, sum(dcomp) OVER w AS comp,
               lead(t) OVER (PARTITION BY rank, grp ORDER BY t) AS nxt
        FROM ev WINDOW w AS (PARTITION BY rank, grp ORDER BY t))
    SELECT rank, grp,
           sum(CASE WHEN comm > 0 THEN nxt - t ELSE 0 END)::BIGINT AS comm_ns,
           sum(CASE WHEN comm > 0 AND comp > 0 THEN nxt - t ELSE 0 END)::BIGINT AS overlap_ns
    FROM run WHERE nxt IS NOT NULL
    GROUP BY rank, grp ORDER BY rank, grp
"""


@dataclass(frozen=True)
class Overlap:
    """Communication of one rank (and step, or all its steps when ``step`` is None)."""

    rank: int
    step: int | None
    comm_ns: int
    overlap_ns: int

    @property
    def exposed_ns(self) -> int:
        return self.comm_ns - self.overlap_ns

    @property
    def overlap_pct(self) -> float:
        return 100.0 * self.overlap_ns / self.comm_ns if self.comm_ns else 0.0


def _has(con: Any, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()[0])


def device_comm_present(con: Any) -> bool:
    return _has(con, "kernels") and bool(con.execute(
        "SELECT EXISTS (SELECT 1 FROM kernels WHERE kind = 'communication')").fetchone()[0])


def _gpu_intervals(con: Any, by_step: bool, include_last_step: bool) -> str:
    grp = "k.step" if by_step else "NULL::BIGINT"
    base = (f"SELECT k.rank, {grp} AS grp, k.kind = 'communication' AS is_comm, k.start_ns, "
            "k.start_ns + greatest(k.dur_ns, 0) AS end_ns, 1 AS w FROM kernels k")
    kinds = "k.kind IN ('communication', 'compute')"
    n_steps = con.execute("SELECT count(DISTINCT name) FROM ops "
                          "WHERE name LIKE 'ProfilerStep#%'").fetchone()[0] \
        if _has(con, "ops") else 0
    if include_last_step or n_steps < 2:
        return f"iv AS ({base} WHERE {kinds}{' AND k.step IS NOT NULL' if by_step else ''}),"
    return f"""
        last AS (SELECT rank, max(start_ns) AS last_start FROM ops
                 WHERE name LIKE 'ProfilerStep#%' GROUP BY rank),
        iv AS ({base} JOIN ops o ON o.rank = k.rank AND o.id = k.launch_id
               LEFT JOIN last l ON l.rank = k.rank
               WHERE {kinds} AND (l.last_start IS NULL OR o.start_ns < l.last_start)
               {'AND k.step IS NOT NULL' if by_step else ''}),"""


def _cpu_intervals(by_step: bool) -> str:
    """Comm spans (+1 comm), top-level compute spans (+1 compute) and the waits nested in
    them (-1 compute: blocked, not computing), as ``iv`` rows with a compute weight ``w``."""
    grp = "step" if by_step else "NULL::BIGINT"
    need_step = "AND step IS NOT NULL" if by_step else ""
    return f"""
        comm_threads AS (
            SELECT DISTINCT rank, thread FROM ops
            WHERE cat = 'user_annotation' AND (name LIKE 'gloo:%' OR name LIKE 'nccl:%')),
        compute AS (
            SELECT o.rank, o.step, o.thread, o.start_ns, o.start_ns + o.dur_ns AS end_ns
            FROM ops o ANTI JOIN comm_threads c ON c.rank = o.rank AND c.thread = o.thread
            WHERE o.cat = 'cpu_op' AND o.depth = 0 AND o.name NOT LIKE 'c10d::%'
              AND o.name <> 'record_param_comms' AND o.name NOT LIKE {_WAIT}
              {'AND o.step IS NOT NULL' if by_step else ''}),
        waits AS (
            SELECT DISTINCT c.rank, c.step, w.id, w.start_ns, w.start_ns + w.dur_ns AS end_ns
            FROM ops w JOIN compute c
              ON c.rank = w.rank AND c.thread = w.thread
             AND w.start_ns >= c.start_ns AND w.start_ns + w.dur_ns <= c.end_ns
            WHERE w.cat = 'cpu_op' AND w.depth > 0 AND w.name LIKE {_WAIT}
              AND NOT EXISTS (SELECT 1 FROM ops p WHERE p.rank = w.rank AND p.id = w.parent_id
                              AND p.name LIKE {_WAIT})),
        iv AS (
            SELECT rank, {grp} AS grp, true AS is_comm, start_ns, end_ns, 0 AS w FROM (
                SELECT rank, step, start_ns, start_ns + dur_ns AS end_ns FROM comms
                WHERE true {need_step})
            UNION ALL
            SELECT rank, {grp}, false, start_ns, end_ns, 1 FROM compute
            UNION ALL
            SELECT rank, {grp}, false, start_ns, end_ns, -1 FROM waits),"""


# A functional collective's wait (``torch.ops._c10d_functional.wait_tensor``; the legacy
# ``c10d_functional`` namespace too): the thread is blocked until the collective ends.
_WAIT = "'%c10d_functional::wait_tensor'"


def comm_overlap(con: Any, *, by_step: bool = True, include_last_step: bool = False
                 ) -> list[Overlap]:
    """Per (rank, step) -- or per rank with ``by_step=False`` -- communication, overlap and
    exposed time. Empty when the run has no communication.

    Computed once per connection and arguments (a run's views do not change while it is
    open; the rows are frozen): ``dsprof import`` asks four times (comm_bound twice,
    comm_overlap, unbucketed_comms, the summary's comms section), each a sweep of every kernel.
    """
    key = (by_step, include_last_step)
    try:
        per_con = _OVERLAPS.setdefault(con, {})
    except TypeError:  # a connection type that cannot be weakly referenced: no cache
        per_con = {}
    if key not in per_con:
        per_con[key] = _comm_overlap(con, by_step, include_last_step)
    return list(per_con[key])


_OVERLAPS: weakref.WeakKeyDictionary[Any, dict[tuple[bool, bool], list[Overlap]]] = (
    weakref.WeakKeyDictionary())


def _comm_overlap(con: Any, by_step: bool, include_last_step: bool) -> list[Overlap]:
    if device_comm_present(con):
        ivs = _gpu_intervals(con, by_step, include_last_step)
    elif _has(con, "comms") and _has(con, "ops"):
        ivs = _cpu_intervals(by_step)
    else:
        return []
    rows = con.execute(f"WITH {ivs} {_SWEEP}").fetchall()
    return [Overlap(int(r), None if g is None else int(g), int(c), int(o))
            for r, g, c, o in rows if c]
