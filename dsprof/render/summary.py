"""Terminal rendering of a :class:`RunSummary` (rich). Presents only; computes nothing."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from dsprof.analyzers.breakdown import RunSummary
from dsprof.analyzers.registry import Analysis


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def fmt_ms(ms: float) -> str:
    return f"{ms:,.3f} ms" if ms < 10 else f"{ms:,.1f} ms"


def render_full(summary: RunSummary, console: Console) -> None:
    _facts(summary, console)
    _steps(summary, console)
    _phases(summary, console)
    _top_ops(summary, console)
    _kernels(summary, console)
    _memory(summary, console)
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")


def render_short(summary: RunSummary, console: Console, run_path: str,
                 findings: Analysis | None = None) -> None:
    """The few lines ``dsprof run`` prints at exit, with the top findings."""
    s = summary.steps
    console.rule("[bold]dsprof")
    if s is not None:
        console.print(f"steps: {s.count} timed, median {fmt_ms(s.median_ms)}, "
                      f"p90 {fmt_ms(s.p90_ms)}"
                      + (f", {len(s.outliers)} outlier(s)" if s.outliers else "")
                      + f"; {summary.profiled_steps} profiled in detail")
    if summary.phases:
        console.print("phases: " + ", ".join(f"{p.phase} {p.percent:.0f}%" for p in summary.phases
                                             if p.percent >= 0.5))
    if summary.top_ops:
        console.print("top ops: " + ", ".join(f"{o.name} {o.percent:.0f}%"
                                              for o in summary.top_ops[:3]))
    for m in summary.memory:
        if m.source in ("device_peak", "timeline"):
            console.print(f"peak memory ({m.device}): {fmt_bytes(m.peak_bytes)}")
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    if findings is not None:
        from dsprof.render.findings import render_findings_short

        render_findings_short(findings, console)
    console.print(f"more: [bold]dsprof summary {run_path}[/]", soft_wrap=True)


def _facts(summary: RunSummary, console: Console) -> None:
    f = summary.facts
    t = Table(title="Run", show_header=False, title_justify="left", box=None)
    t.add_column(style="bold")
    t.add_column()
    labels = [("run", "run"), ("source", "source"), ("target", "command"), ("inputs", "inputs"),
              ("status", "status"), ("exit_status", "exit status"), ("exit_reason", "exit"),
              ("torch", "torch"), ("devices", "devices"), ("ranks", "ranks"),
              ("world_size", "world size"), ("steps_source", "step boundaries"),
              ("windows", "profiled windows"), ("events", "trace events"), ("tables", "tables")]
    for key, label in labels:
        if key in f:
            t.add_row(label, _text(f[key]))
    console.print(t)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _steps(summary: RunSummary, console: Console) -> None:
    s = summary.steps
    if s is None:
        console.print("\n[bold]Step time[/]: no steps (no ProfilerStep annotations, no boundaries)")
        return
    console.print(f"\n[bold]Step time[/] over {s.count} steps: mean {fmt_ms(s.mean_ms)}, "
                  f"median {fmt_ms(s.median_ms)}, p90 {fmt_ms(s.p90_ms)}, "
                  f"min {fmt_ms(s.min_ms)}, max {fmt_ms(s.max_ms)}")
    for step, ms in s.excluded:
        console.print(f"  step {step} left out (setup + first iteration): {fmt_ms(ms)}")
    for step, ms in s.compiled:
        console.print(f"  step {step} left out (torch.compile compiled in it): {fmt_ms(ms)}")
    if s.outliers:
        console.print("  outliers: " + ", ".join(f"step {k} ({fmt_ms(ms)})" for k, ms in s.outliers))


def _phases(summary: RunSummary, console: Console) -> None:
    if not summary.phases:
        return
    t = Table(title=f"Time by phase ({summary.profiled_steps} profiled steps, "
                    f"{fmt_ms(summary.profiled_ms)})", title_justify="left")
    t.add_column("phase")
    t.add_column("time", justify="right")
    t.add_column("%", justify="right")
    for p in summary.phases:
        t.add_row(p.phase, fmt_ms(p.ms), f"{p.percent:.1f}")
    console.print()
    console.print(t)


def _top_ops(summary: RunSummary, console: Console) -> None:
    if not summary.top_ops:
        return
    t = Table(title="Top ops by self time", title_justify="left")
    for col, just in (("op", "left"), ("count", "right"), ("self", "right"),
                      ("total", "right"), ("% self", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in summary.top_ops:
        t.add_row(o.name, str(o.count), fmt_ms(o.self_ms), fmt_ms(o.total_ms), f"{o.percent:.1f}")
    console.print()
    console.print(t)


def _kernels(summary: RunSummary, console: Console) -> None:
    if not summary.kernel_types:
        return
    hta = {k["kernel_type"]: k["percent"] for k in summary.kernel_types_hta}
    t = Table(title="GPU time by kernel type (interval-merged, as HTA)", title_justify="left")
    t.add_column("kernel type")
    t.add_column("time", justify="right")
    t.add_column("% all kernels", justify="right")
    t.add_column("% HTA default", justify="right")
    for k in summary.kernel_types:
        h = hta.get(k["kernel_type"])
        t.add_row(k["kernel_type"], fmt_ms(k["total_ns"] / 1e6), f"{k['percent']:.1f}",
                  "-" if h is None else f"{h:.1f}")
    console.print()
    console.print(t)
    console.print("  HTA default: kernels launched in the last ProfilerStep are left out")
    for r in summary.temporal:
        console.print(f"  rank {r['rank']}: GPU idle {r['idle_pct']:.1f}%, compute "
                      f"{r['compute_pct']:.1f}%, non-compute {r['non_compute_pct']:.1f}%")


def _memory(summary: RunSummary, console: Console) -> None:
    if not summary.memory:
        return
    t = Table(title="Peak memory", title_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("device")
    t.add_column("peak", justify="right")
    t.add_column("measured as")
    explain = {
        "allocator_total": "profiler allocator total (from capture start)",
        "timeline": "memory timeline (all live tensors)",
        "device_peak": "allocator peak over the run",
        "rss": "process RSS, max at step ends",
    }
    for m in summary.memory:
        t.add_row(str(m.rank), m.device, fmt_bytes(m.peak_bytes), explain.get(m.source, m.source))
    console.print()
    console.print(t)
    for m in summary.memory:
        if m.by_category:
            console.print(f"  at the peak on {m.device}: " + ", ".join(
                f"{c} {fmt_bytes(b)}" for c, b in m.by_category.items()))
