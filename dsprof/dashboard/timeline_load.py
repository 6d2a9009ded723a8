"""Read a run's steps, ops, kernels and collectives into a :class:`TimelineIndex`.

One query per table, with the lane of every span computed by DuckDB (a join on a small lane
table), so loading 10 M spans is one columnar scan per table and no Python loop per row.
ProfilerStep annotations are left out of the op lanes: the steps lane shows the same spans.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from dsprof.dashboard.duck import arrow, settle
from dsprof.dashboard.timeline import COMM, KERNEL, MAX_DEPTH, OP, STEP, TimelineIndex, build_index
from dsprof.run import Run
from dsprof.sqlsafe import table_columns
from dsprof.vocabulary import KERNEL_CATEGORIES as ALL_KERNEL_CATEGORIES
from dsprof.vocabulary import KERNEL_KINDS

PHASE_CLASSES = ("forward", "backward", "optimizer", "data", "other")
KERNEL_CLASSES = KERNEL_KINDS
# kernels.category when the run has it (what the kernel does, from its name): finer colours
KERNEL_CATEGORIES = tuple(c for c in ALL_KERNEL_CATEGORIES if c != "other")


def load_timeline(run: Run) -> TimelineIndex:
    # (rank, order within rank, label, key); key = (kind, rank, a, b), joined on in DuckDB as
    # integers (string keys cost seconds at 10 M rows).
    lanes: list[tuple[int, int, str, tuple[int, int, int, int]]] = []
    kernel_classes = (KERNEL_CATEGORIES if "category" in _columns(run, "kernels")
                      else KERNEL_CLASSES)
    classes = ["step", *(f"op {p}" for p in PHASE_CLASSES),
               *(f"kernel {k}" for k in kernel_classes), "kernel other", "collective"]
    cls_of = {c: i for i, c in enumerate(classes)}
    con = run.con
    if run.has("steps"):
        for (rank,) in run.sql("SELECT DISTINCT rank FROM steps"):
            lanes.append((rank, 0, f"r{rank} steps", (STEP, rank, 0, 0)))
    if run.has("ops"):
        rows = run.sql(f"""
            SELECT rank, thread, least(depth, {MAX_DEPTH}) AS d, min(min(start_ns))
                   OVER (PARTITION BY rank, thread) AS first
            FROM ops GROUP BY rank, thread, d ORDER BY rank, first, thread, d""")
        thread_no: dict[tuple[int, int], int] = {}
        for rank, thread, depth, _ in rows:
            k = thread_no.setdefault((rank, thread), len([t for t in thread_no if t[0] == rank]))
            lanes.append((rank, 1 + k * (MAX_DEPTH + 1) + depth,
                          f"r{rank} cpu{k} d{depth}", (OP, rank, thread, depth)))
    if run.has("kernels"):
        for rank, device, stream in run.sql(
                "SELECT DISTINCT rank, device, stream FROM kernels ORDER BY ALL"):
            lanes.append((rank, 10_000 + (device or 0) * 100_000 + (stream or 0),
                          f"r{rank} gpu{device} s{stream}",
                          (KERNEL, rank, device if device is not None else -1,
                           stream if stream is not None else -1)))
    if run.has("comms"):
        for (rank,) in run.sql("SELECT DISTINCT rank FROM comms"):
            lanes.append((rank, 10**12, f"r{rank} comms", (COMM, rank, 0, 0)))
    lanes.sort(key=lambda lane: (lane[0], lane[1]))
    keys = np.array([lane[3] for lane in lanes], np.int64).reshape(-1, 4)
    lane_table = pa.table({"kind": keys[:, 0], "rank": keys[:, 1], "a": keys[:, 2],
                           "b": keys[:, 3], "lane": np.arange(len(lanes), dtype=np.int32)})
    settle(run)
    con.register("_dash_lanes", lane_table)
    try:
        parts = _spans(run, cls_of, kernel_classes)
    finally:
        con.unregister("_dash_lanes")
    idle_kinds = {k: "GPU stream" if key[0] == KERNEL else "host thread"
                  for k, (*_, key) in enumerate(lanes)
                  if key[0] == KERNEL or (key[0] == OP and key[3] == 0)}
    return build_index(parts, [lane[2] for lane in lanes], classes, idle_kinds)


def _columns(run: Run, table: str) -> set[str]:
    return table_columns(run, table)


def _spans(run: Run, cls_of: dict[str, int],
           kernel_classes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {}

    def case(column: str, prefix: str, values: tuple[str, ...]) -> str:
        whens = " ".join(f"WHEN '{v}' THEN {cls_of[f'{prefix} {v}']}" for v in values)
        return f"CASE {column} {whens} ELSE {cls_of[f'{prefix} other']} END"

    if run.has("steps"):
        parts["steps"] = _fetch(run, f"""
            SELECT s.start_ns, s.end_ns, l.lane, {STEP} AS kind, {cls_of['step']} AS cls,
                   'step ' || s.step AS name, s.step AS ref, s.rank
            FROM steps s JOIN _dash_lanes l ON l.kind = {STEP} AND l.rank = s.rank""")
    if run.has("ops"):
        parts["ops"] = _fetch(run, f"""
            SELECT o.start_ns, o.start_ns + coalesce(o.dur_ns, 0) AS end_ns, l.lane, {OP} AS kind,
                   {case('o.phase', 'op', PHASE_CLASSES)} AS cls, o.name, o.id AS ref, o.rank
            FROM ops o JOIN _dash_lanes l
              ON l.kind = {OP} AND l.rank = o.rank AND l.a = o.thread
                 AND l.b = least(o.depth, {MAX_DEPTH})
            WHERE o.name NOT LIKE 'ProfilerStep#%'""")
    if run.has("kernels"):
        kernel_col = "k.category" if kernel_classes is KERNEL_CATEGORIES else "k.kind"
        parts["kernels"] = _fetch(run, f"""
            SELECT k.start_ns, k.start_ns + coalesce(k.dur_ns, 0) AS end_ns, l.lane, {KERNEL} AS kind,
                   {case(kernel_col, 'kernel', kernel_classes)} AS cls, k.name,
                   k.start_ns AS ref, k.rank
            FROM kernels k JOIN _dash_lanes l
              ON l.kind = {KERNEL} AND l.rank = k.rank AND l.a = coalesce(k.device, -1)
                 AND l.b = coalesce(k.stream, -1)""")
    if run.has("comms"):
        parts["comms"] = _fetch(run, f"""
            SELECT c.start_ns, c.start_ns + coalesce(c.dur_ns, 0) AS end_ns, l.lane, {COMM} AS kind,
                   {cls_of['collective']} AS cls, c.collective AS name, c.start_ns AS ref, c.rank
            FROM comms c JOIN _dash_lanes l ON l.kind = {COMM} AND l.rank = c.rank""")
    return parts


def _fetch(run: Run, sql: str) -> dict[str, Any]:
    table = arrow(run, f"SELECT * FROM ({sql}) WHERE start_ns IS NOT NULL")
    out: dict[str, Any] = {}
    for col in ("start_ns", "end_ns", "lane", "kind", "cls", "ref", "rank"):
        out[col] = table.column(col).to_numpy(zero_copy_only=False)
    out["name"] = table.column("name").cast(pa.string()).combine_chunks()
    return out
