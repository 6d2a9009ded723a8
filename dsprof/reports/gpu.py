"""The facts behind ``dsprof gpu RUN``: kernels by category, Tensor Core share, FLOP/s and
MFU, GPU time by module and phase, Tensor Core misses by reason, HTA's idle split, launch
statistics and queue lengths, and the sampled device metrics. Reads tables only.

Conventions: shares of GPU time sum kernel durations (overlapping streams both count). Every
figure is either per step (the FLOP/s tables: rank 0's profiled steps, modules as the mean per
step over the same steps) or summed over the capture (``window`` says what that is).
FLOP/s and MFU are withheld (``flops_known`` False, MFU None) when FLOPs are known for less than
``MIN_FLOP_COVERAGE`` of the matrix kernels' time: a figure that counts a sliver of the work
would read as a measurement ("MFU 0.0 %"). The
idle split, launch stats and queue lengths use HTA's default convention (kernels launched in
the last ProfilerStep dropped), at nanosecond resolution unless ``hta_rounding`` asks for HTA's
microsecond view (:mod:`dsprof.metrics.gpu.hta_view`) to compare with a report HTA made.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from dsprof.metrics.gpu import attribution as ga
from dsprof.metrics.gpu import idle as gpu_idle
from dsprof.metrics.gpu.hta_view import hta_rounded
from dsprof.metrics.gpu.tc_eligibility import verdicts
from dsprof.reports.gpu_data import GpuReport
from dsprof.run import Run

# GpuReport lives in gpu_data (no run layer) so that rendering a stored report stays light
__all__ = ["MIN_FLOP_COVERAGE", "GpuReport", "gpu_report"]

MIN_FLOP_COVERAGE = 0.5
"""Share of gemm/conv/attention kernel time whose FLOPs must be known for FLOP/s and MFU."""


def gpu_report(run: Run, *, top: int = 10, hta_rounding: bool = False) -> GpuReport:
    peak, note = ga.peak_for(run.meta)
    convention = ("HTA: last ProfilerStep's launches dropped; "
                  + ("HTA's microsecond rounding" if hta_rounding else "ns resolution"))
    rep = GpuReport(ga.device_name(run.meta), note, convention)
    has_kernels = run.has("kernels") and run.sql("SELECT count(*) FROM kernels")[0][0] > 0
    rep.window = _window(run)
    if run.has("ops") and run.sql("SELECT count(*) FROM ops WHERE flops IS NOT NULL")[0][0]:
        rep.steps = [asdict(t) for t in ga.throughput_per_step(run.con, peak)]
        # per step like the table beside it (rank 0's steps); summed over a trace without steps
        steps = [int(s["key"]) for s in rep.steps] or None
        rep.modules = [asdict(t) for t in ga.throughput_per_module(
            run.con, peak, rank=0 if steps else None, steps=steps)[:top]]
        _misses(rep, run)
    if not has_kernels:
        rep.notes.append("no GPU kernels in this run (CPU run, or a trace without device "
                         "activity): Tensor Core verdicts are predicted from dtypes and shapes")
        _samples(rep, run)
        return rep
    _categories(rep, run)
    _flops_coverage(rep, run)
    if rep.tensor_core.get("flops_coverage", 1.0) < MIN_FLOP_COVERAGE:
        rep.flops_known = False
        for row in rep.steps + rep.modules:
            row["mfu"] = None
    rep.module_phase = [asdict(g) for g in ga.gpu_time_by_module(run.con, rollup=True)[:top]]
    con = hta_rounded(run) if hta_rounding else run.con
    rep.idle = _idle(con)
    rep.launch = [asdict(s) for s in gpu_idle.launch_stats(con, include_last_step=False)]
    rep.queue = [asdict(q) for q in gpu_idle.queue_length(con, include_last_step=False)]
    _samples(rep, run)
    return rep


def _categories(rep: GpuReport, run: Run) -> None:
    rows = run.sql("""
        SELECT category, count(*), sum(dur_ns)::BIGINT,
               coalesce(sum(dur_ns) FILTER (WHERE tensor_core), 0)::BIGINT
        FROM kernels WHERE kind <> 'sync' GROUP BY category ORDER BY sum(dur_ns) DESC""")
    total = sum(r[2] for r in rows) or 1
    rep.categories = [{"category": c, "kernels": n, "gpu_ms": ns / 1e6, "share": ns / total,
                       "tensor_core_share": tc / ns if ns else 0.0} for c, n, ns, tc in rows]
    (r,) = ga.tensor_core_share(run.con, "run") or [ga.TensorCoreShare("run", 0, 0, 0)]
    rep.tensor_core = {
        "of_kernels": r.of_kernels, "of_matrix": r.of_matrix, "tc_ms": r.tc_ns / 1e6,
        "per_step": {s.key: s.of_matrix for s in ga.tensor_core_share(run.con, "step")},
        "per_module": [{"module": m.key, "of_matrix": m.of_matrix, "matrix_ms": m.matrix_ns / 1e6}
                       for m in ga.tensor_core_share(run.con, "module") if m.matrix_ns][:10],
    }


def _window(run: Run) -> str:
    if not run.has("steps"):
        return "the whole trace (it marks no steps)"
    n = run.sql("SELECT count(DISTINCT step) FROM steps")[0][0]
    ranks = run.sql("SELECT count(DISTINCT rank) FROM steps")[0][0]
    return (f"the capture ({n} step{'s' if n != 1 else ''}"
            + (f", {ranks} ranks" if ranks > 1 else "") + ")")


def _flops_coverage(rep: GpuReport, run: Run) -> None:
    """Say so when FLOPs are known for only part of the matrix kernels' time: MFU undercounts."""
    matrix_ms = sum(c["gpu_ms"] for c in rep.categories
                    if c["category"] in ga.MATRIX_CATEGORIES)
    if not matrix_ms:
        return
    covered_ms = sum((o["gpu_ns"] or 0) for o in ga.flop_ops(run.con)) / 1e6
    rep.tensor_core["flops_coverage"] = min(covered_ms / matrix_ms, 1.0)
    if covered_ms < 0.9 * matrix_ms:
        effect = ("FLOP/s and MFU undercount" if covered_ms >= MIN_FLOP_COVERAGE * matrix_ms
                  else "FLOP/s and MFU are unknown")
        rep.notes.append(f"FLOPs are known for {100 * covered_ms / matrix_ms:.0f}% of the "
                         "gemm/conv/attention kernel time (shapes, or convolution parameters, "
                         f"missing from the trace): {effect}")


def _misses(rep: GpuReport, run: Run) -> None:
    by_reason: dict[str, dict[str, Any]] = defaultdict(lambda: {"ops": 0, "ms": 0.0})
    for v in verdicts(ga.flop_ops(run.con), run.meta):
        key = "tensor cores" if v.tensor_core else v.reason or "?"
        by_reason[key]["ops"] += 1
        by_reason[key]["ms"] += v.time_ns / 1e6
        by_reason[key]["measured"] = v.measured
    rep.tc_misses = sorted(({"reason": k, **d} for k, d in by_reason.items()),
                           key=lambda d: -d["ms"])


def _idle(con: Any) -> list[dict[str, Any]]:
    totals = gpu_idle.idle_totals(gpu_idle.idle_breakdown(con, include_last_step=False))
    out = []
    for rank, per in sorted(totals.items()):
        total = sum(per.values()) or 1
        out.append({"rank": rank, **{f"{c}_ms": per[c] / 1e6 for c in gpu_idle.IDLE_CATEGORIES},
                    **{f"{c}_pct": 100 * per[c] / total for c in gpu_idle.IDLE_CATEGORIES}})
    return out


def _samples(rep: GpuReport, run: Run) -> None:
    if not run.has("device_samples"):
        return
    row = run.sql("""
        SELECT count(*), avg(cpu_util), max(rss_bytes), avg(gpu_util), avg(mem_util),
               max(mem_used), avg(power_w), max(temp_c), avg(tensor_util)
        FROM device_samples""")[0]
    keys = ("samples", "cpu_util_avg", "rss_max", "gpu_util_avg", "mem_util_avg",
            "mem_used_max", "power_w_avg", "temp_c_max", "tensor_util_avg")
    rep.samples = {k: v for k, v in zip(keys, row) if v is not None}
