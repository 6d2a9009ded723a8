"""The comms section of ``dsprof summary``: what the collectives of a run cost per step.

Built from the metrics the analyzers and the dashboard use (bandwidth, overlap, skew), so the
summary says the same numbers as the comm findings and the Comms page.
"""

from __future__ import annotations

from dsprof.metrics.comm.bandwidth import bandwidth_summary
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.metrics.comm.skew import rank_skew
from dsprof.reports.summary_data import CommsSummary
from dsprof.run import Run

__all__ = ["CommsSummary", "comms_summary"]


def comms_summary(run: Run) -> CommsSummary | None:
    """None when the run recorded no collective."""
    if not run.has("comms"):
        return None
    ranks, steps = run.sql("SELECT count(DISTINCT rank), count(DISTINCT step) FROM comms")[0]
    if not ranks:
        return None
    ranks, steps = int(ranks), int(steps)
    per = max(steps, 1) * ranks  # calls of one rank in one step
    colls = [{"collective": b["collective"], "calls": b["calls"],
              "calls_per_step": b["calls"] / per, "bytes": b["bytes"],
              "bytes_per_call": b["bytes"] / b["calls"] if b["calls"] else 0,
              "busbw_gbps": b["busbw_gbps"]}
             for b in bandwidth_summary(run.con, run.meta)]
    overlap = []
    for o in comm_overlap(run.con, by_step=False, include_last_step=True):
        div = max(steps, 1) * 1e6
        overlap.append({"rank": o.rank, "comm_ms": o.comm_ns / div,
                        "exposed_ms": o.exposed_ns / div, "overlapped_ms": o.overlap_ns / div,
                        "overlap_pct": o.overlap_pct})
    skew = [{"rank": s.rank, "wait_ms_per_step": s.wait_ns / max(s.steps, 1) / 1e6,
             "times_last": s.times_last, "collectives": s.collectives}
            for s in rank_skew(run.con, run.meta)] if ranks > 1 else []
    return CommsSummary(ranks, steps, colls, overlap, skew)
