"""Terminal rendering of a :class:`GpuReport` (rich). Presents only; computes nothing."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dsprof.render.layout import name_width, print_titled, shorten_module
from dsprof.render.safe_text import esc, plain
from dsprof.render.summary import fmt_bytes
from dsprof.reports.gpu_data import GpuReport
from dsprof.units import fmt_flops


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mfu(x: float | None) -> str:
    """MFU, or "unknown" when FLOPs or the device's peak are not known (never a 0.0 %)."""
    return "unknown" if x is None else f"{100 * x:.1f}%"


def _table(title: str, *cols: str) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def render_gpu(rep: GpuReport, console: Console) -> None:
    console.print(f"device: {esc(rep.device or 'none recorded')}"
                  + (f"  [yellow]({esc(rep.peak_note)})[/]" if rep.peak_note else ""))
    over = f", summed over {rep.window}" if rep.window else ""
    if rep.categories:
        t = _table(f"GPU time by kernel category{over}", "category", "kernels", "ms", "share",
                   "on Tensor Cores")
        for c in rep.categories:
            t.add_row(plain(c["category"]), str(c["kernels"]), f"{c['gpu_ms']:.2f}", _pct(c["share"]),
                      _pct(c["tensor_core_share"]))
        print_titled(console, t)
        tc = rep.tensor_core
        console.print(f"Tensor Cores: {_pct(tc['of_matrix'])} of gemm/conv/attention time, "
                      f"{_pct(tc['of_kernels'])} of compute-kernel time")
    if not rep.flops_known and (rep.steps or rep.modules):
        cover = rep.tensor_core.get("flops_coverage", 0.0)
        console.print(f"FLOP/s and MFU: unknown (FLOPs are known for {100 * cover:.0f}% of the "
                      "gemm/conv/attention kernel time)")
    if rep.steps and rep.flops_known:
        t = _table("FLOP/s and MFU per step", "step", "FLOP", "step ms", "FLOP/s", "MFU")
        for s in rep.steps:
            t.add_row(plain(s["key"]), fmt_flops(s["flops"]), f"{s['time_ns'] / 1e6:.1f}",
                      fmt_flops(s["flops_per_s"]) + "/s", _mfu(s["mfu"]))
        print_titled(console, t)
    if rep.modules and rep.flops_known:
        n = len(rep.steps)
        per = (f"per step (mean of the {n} step{'s' if n != 1 else ''} above)" if rep.steps
               else f"summed over {rep.window or 'the capture'}")
        t = _table(f"FLOP/s and MFU per module, {per}", "module", "FLOP", "GPU ms",
                   "FLOP/s", "MFU")
        width = name_width(console.width, 40)
        for s in rep.modules:
            t.add_row(plain(shorten_module(s["key"], width)), fmt_flops(s["flops"]),
                      f"{s['time_ns'] / 1e6:.2f}", fmt_flops(s["flops_per_s"]) + "/s",
                      _mfu(s["mfu"]))
        print_titled(console, t)
    if rep.tc_misses:
        t = _table(f"Matrix ops and Tensor Cores{over}", "verdict", "ops", "ms", "from")
        for m in rep.tc_misses:
            t.add_row(plain(m["reason"]), str(m["ops"]), f"{m['ms']:.2f}",
                      "kernels" if m.get("measured") else "dtype/shape")
        print_titled(console, t)
    if rep.module_phase:
        t = _table(f"GPU time by module (with submodules) and phase{over}", "module", "phase",
                   "ms", "share")
        for g in rep.module_phase:
            t.add_row(plain(shorten_module(g["module"], name_width(console.width, 36))),
                      plain(g["phase"]), f"{g['gpu_ns'] / 1e6:.2f}", _pct(g["share"]))
        print_titled(console, t)
    if rep.idle:
        t = _table(f"GPU idle time by cause{over} ({rep.convention})", "rank", "host wait",
                   "kernel-kernel", "other")
        for r in rep.idle:
            t.add_row(str(r["rank"]), *(f"{r[c + '_ms']:.1f} ms ({r[c + '_pct']:.1f}%)"
                                        for c in ("host_wait", "kernel_wait", "other")))
        print_titled(console, t)
    if rep.launch:
        t = _table(f"Kernel launches{over}", "rank", "launches", "CPU mean us", "delay median us",
                   "GPU<CPU", "CPU>50us", "delay>100us")
        for s in rep.launch:
            t.add_row(str(s["rank"]), str(s["launches"]), f"{s['cpu_mean_ns'] / 1e3:.1f}",
                      f"{s['delay_median_ns'] / 1e3:.1f}", str(s["gpu_shorter_than_cpu"]),
                      str(s["runtime_outliers"]), str(s["delay_outliers"]))
        print_titled(console, t)
    if rep.queue:
        t = _table(f"Launch queue length per stream{over.replace('summed ', '')}",
                   "rank/stream", "mean", "p50",
                   "max", "ms at 1024")
        for q in rep.queue:
            t.add_row(f"{q['rank']}/{q['stream']}", f"{q['mean']:.2f}", f"{q['p50']:.0f}",
                      str(q["max"]), f"{q['max_ns_at_limit'] / 1e6:.2f}")
        print_titled(console, t)
    if rep.samples:
        s = rep.samples
        parts = [f"{s['samples']} samples", f"CPU {s.get('cpu_util_avg', 0):.0f}%",
                 f"RSS max {fmt_bytes(s.get('rss_max'))}"]
        if "gpu_util_avg" in s:
            parts += [f"GPU util {s['gpu_util_avg']:.0f}%",
                      f"memory used max {fmt_bytes(s.get('mem_used_max'))}"]
        if "power_w_avg" in s:
            parts.append(f"power {s['power_w_avg']:.0f} W")
        if "tensor_util_avg" in s:
            parts.append(f"tensor activity {s['tensor_util_avg']:.0f}%")
        console.print("device samples: " + ", ".join(parts))
    for note in rep.notes:
        console.print(f"[yellow]note:[/] {esc(note)}")
