"""The Overview's row of headline numbers: what a step costs and where it goes, in one line.

GPU runs: median step, GPU idle (with how much of it waited for the host), MFU (or "unknown"
with why and the FLOP coverage), kernel launches per step, Tensor Core share of compute-kernel
time, communication share. CPU runs show the host's equivalents and no GPU-only tile: median
step, CPU busy, untraced time (Python between ops, waiting), waiting for data, FLOP/s, peak
memory.
"""

from __future__ import annotations

from typing import Any

from dash import html

from dsprof.dashboard.text import fmt_bytes, fmt_ms
from dsprof.metrics.step_breakdown import StepBreakdown

_ROW = {"display": "flex", "flexWrap": "wrap", "gap": "10px", "margin": "6px 0 4px"}
_TILE = {"border": "1px solid #d0d7de", "borderRadius": "6px", "padding": "6px 10px",
         "flex": "1 1 0", "minWidth": "140px", "background": "#f6f8fa"}
_VALUE = {"fontSize": "22px", "fontWeight": 600}
_LABEL = {"fontSize": "13px", "color": "#444"}
_NOTE = {"fontSize": "12px", "color": "#666"}


def tile(slug: str, label: str, value: str, note: str = "") -> html.Div:
    return html.Div([html.Div(label, style=_LABEL), html.Div(value, style=_VALUE,
                                                             className="tile-value"),
                     html.Div(note, style=_NOTE)],
                    id=f"tile-{slug}", className="tile", style=_TILE)


def headline_tiles(src: Any, bd: StepBreakdown) -> html.Div:
    s = src.summary
    tiles: list[Any] = []
    if s.steps is not None:
        tiles.append(tile("step", "median step", fmt_ms(s.steps.median_ms),
                          f"{s.steps.count} steps counted"))
    tiles += _gpu_tiles(src, bd) if bd.gpu else _cpu_tiles(src, bd)
    return html.Div(tiles, id="overview-tiles", style=_ROW)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _gpu_tiles(src: Any, bd: StepBreakdown) -> list[Any]:
    rep = src.gpu
    out = []
    idle = bd.gpu_idle_share()
    if idle is not None:
        idle_ms = sum(sum(r[f"{c}_ms"] for c in ("host_wait", "kernel_wait", "other"))
                      for r in rep.idle)
        host_ms = sum(r["host_wait_ms"] for r in rep.idle)
        note = "of profiled step time with no kernel, copy or collective running"
        if idle_ms:
            note += f"; {100 * host_ms / idle_ms:.0f} % of the gaps wait for the host"
        out.append(tile("gpu-idle", "GPU idle", _pct(idle),
                        note))
    mfu = sorted(st["mfu"] for st in rep.steps if st.get("mfu") is not None)
    coverage = rep.tensor_core.get("flops_coverage")
    cov = (f"FLOPs known for {100 * coverage:.0f} % of matrix-kernel time"
           if coverage is not None else "no FLOPs recorded (record_shapes=True)")
    if mfu and (coverage is None or coverage >= 0.1):
        # FLOPs missing for part of the matrix kernels: MFU can only be more than shown
        low = coverage is not None and coverage < 0.9
        out.append(tile("mfu", "MFU (median step)",
                        ("at least " if low else "") + _pct(mfu[len(mfu) // 2]), cov))
    else:
        # why it is unknown: no peak for the device, too few FLOPs, or both
        peak = next((st.get("peak_note") for st in rep.steps if st.get("peak_note")), "")
        peak = peak or ("" if rep.device else rep.peak_note)
        out.append(tile("mfu", "MFU", "unknown", "; ".join(w for w in (peak, cov) if w)))
    if rep.launch:
        launches = sum(r["launches"] for r in rep.launch)
        steps = max(len(bd), 1)
        cpu_us = sum(r["cpu_mean_ns"] * r["launches"] for r in rep.launch) / max(launches, 1) / 1e3
        delay = sorted(r["delay_median_ns"] for r in rep.launch)[len(rep.launch) // 2] / 1e6
        out.append(tile("launches", "kernel launches per step", f"{launches / steps:,.0f}",
                        f"{cpu_us:.1f} us each on the CPU; launch-to-start median "
                        f"{fmt_ms(delay)}"))
    tc = rep.tensor_core
    if tc:
        out.append(tile("tensor-cores", "Tensor Cores", _pct(tc["of_kernels"]),
                        f"of compute-kernel time ({_pct(tc['of_matrix'])} of gemm/conv/"
                        "attention)"))
    comm = bd.share("communication") if len(bd) else 0.0
    if comm:
        out.append(tile("comm", "exposed communication", _pct(comm),
                        "of step time: collectives with no kernel or copy beside them"))
    return out


def _cpu_tiles(src: Any, bd: StepBreakdown) -> list[Any]:
    rep = src.gpu
    out = []
    cpu = rep.samples.get("cpu_util_avg")
    if cpu is not None:
        out.append(tile("cpu-busy", "CPU busy (sampled)", f"{cpu:.0f} %",
                        "of one core, averaged over the run"))
    if len(bd):
        out.append(tile("untraced", "outside any op", _pct(bd.share("untraced")),
                        "of profiled step time: Python between ops, waiting"))
        out.append(tile("data-wait", "waiting for data", _pct(bd.share("data loading")),
                        "of profiled step time"))
        comm = bd.share("communication")
        if comm:
            out.append(tile("comm", "exposed communication", _pct(comm),
                            "of profiled step time: collectives with no forward, backward or "
                            "optimizer op beside them"))
    rates = sorted(st["flops_per_s"] for st in rep.steps if st.get("flops_per_s"))
    if rates:
        out.append(tile("flops", "FLOP/s (median step)", f"{rates[len(rates) // 2] / 1e9:,.1f} G",
                        "from op shapes; no MFU on a CPU (no peak to compare with)"))
    peaks = [p.peak_bytes for p in src.summary.memory if p.peak_bytes]
    if peaks:
        out.append(tile("peak-memory", "peak memory", fmt_bytes(max(peaks)),
                        "largest of the run's devices"))
    return out
