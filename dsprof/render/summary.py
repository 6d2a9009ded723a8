"""Terminal rendering of a :class:`RunSummary` (rich). Presents only; computes nothing."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console
from rich.table import Table

from dsprof.facts import FULL_SPEED
from dsprof.findings_file import Analysis
from dsprof.render.layout import print_titled
from dsprof.render.safe_text import esc, plain
from dsprof.reports.summary_data import PhaseTime, RunSummary, StepStats
from dsprof.units import fmt_bytes, fmt_ms, fmt_rate

__all__ = ["fmt_bytes", "fmt_ms", "render_full"]


def render_full(summary: RunSummary, console: Console) -> None:
    _facts(summary, console)
    _steps(summary, console)
    _loops(summary, console)
    _phases(summary, console)
    _top_ops(summary, console)
    _kernels(summary, console)
    _comms(summary, console)
    _memory(summary, console)
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {esc(note)}")


def render_short(summary: RunSummary, console: Console, run_path: str,
                 findings: Analysis | None = None) -> None:
    """The few lines ``dsprof run`` prints at exit, with the top findings."""
    s = summary.steps
    console.rule("[bold]dsprof")
    ended = how_it_ended(summary.facts)
    if ended:
        console.print(f"[yellow]{esc(ended)}[/]")
    if s is not None:
        # a run too short for a full-speed step (Lightning's fast_dev_run: one step, with the
        # session's setup in it) says which steps its figures are
        counted = "" if s.rule == FULL_SPEED else f" ({s.rule}: none ran at full speed)"
        console.print(f"steps: {step_count(s, 'timed')}{counted}, median {fmt_ms(s.median_ms)}, "
                      f"p90 {fmt_ms(s.p90_ms)}"
                      + (f", {len(s.outliers)} outlier(s)" if s.outliers else "")
                      + f"; {summary.profiled_steps} profiled in detail")
    if summary.full_speed_phases:
        # the script's own steps, timed: the profiled split below is the profiler's picture
        console.print("phases at full speed: " + ", ".join(
            f"{esc(p.phase)} {p.percent:.0f}%" for p in summary.full_speed_phases
            if p.percent >= 0.5))
    if summary.phases:
        console.print(("phases in the profiled steps (profiling slows forward most): "
                       if summary.full_speed_phases else "phases: ")
                      + ", ".join(f"{esc(p.phase)} {p.percent:.0f}%" for p in summary.phases
                                  if p.percent >= 0.5))
    if summary.top_ops:
        console.print("top ops: " + ", ".join(f"{esc(o.name)} {o.percent:.0f}%"
                                              for o in summary.top_ops[:3]))
    ranks = {m.rank for m in summary.memory}
    for m in summary.memory:
        if m.source in ("device_peak", "timeline"):
            who = f"rank {m.rank}, {esc(m.device)}" if len(ranks) > 1 else esc(m.device)
            if m.window:
                who += f", {esc(m.window)}"
            console.print(f"peak memory ({who}): {fmt_bytes(m.peak_bytes)}")
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {esc(note)}")
    if findings is not None:
        from dsprof.render.findings import render_findings_short

        render_findings_short(findings, console)
    _next_steps(run_path, findings, console)


def how_it_ended(facts: dict[str, Any]) -> str | None:
    """A line for a run whose script did not end well (its traceback scrolled above dsprof's
    lines): what follows covers what it ran until then. None for a clean exit."""
    status, reason = facts.get("exit_status"), facts.get("exit_reason")
    if not status:
        return None
    error = facts.get("exit_error")
    if reason == "interrupt":
        # no status: the process ends as the plain interpreter's would (1 once torch._dynamo
        # is loaded, else killed by SIGINT; cli/interrupted.py), which this line cannot know
        # ("exit status 130" beside a shell's 1)
        return ("the script was interrupted (Ctrl-C): the report covers what it ran until "
                "then, saved as it ended")
    what = {"exception": f"the script raised {error or 'an exception'}",
            "rank failed": "a rank failed"}.get(str(reason), "the script exited")
    return (f"{what} (exit status {status}): the report covers what it ran until then, "
            "saved as it ended")


def _next_steps(run_path: str, findings: Analysis | None, console: Console) -> None:
    """Where to go from here: the report, every finding with its fix, the timeline, and
    measuring the top finding's fix (when it has one that can be applied)."""
    path = shlex.quote(run_path)
    lines = [(f"dsprof summary {path}", "the report"),
             (f"dsprof analyze {path}", "findings with evidence and fixes"),
             (f"dsprof dashboard {path}", "timeline and charts in a browser")]
    # a ranked finding's fix: an unranked one (an info, "inside the noise") is no next step,
    # and pointing at it under a larger finding with no knob read as "the top fix"
    ranked = [f for f in (findings.findings if findings else []) if f.severity != "info"]
    top = next((f for f in ranked if f.apply), None)
    if top is not None:
        lines.append((f"dsprof verify {path} {top.id}",
                      "rerun with the top fix, measured" if top is ranked[0] else
                      "rerun with this finding's fix, measured (those above it have no "
                      "knob)"))
    width = max(len(cmd) for cmd, _ in lines)
    for i, (cmd, what) in enumerate(lines):
        # one command per line, never wrapped inside the path, so it can be copied whole
        console.print(f"{'next:' if i == 0 else '':<6}[bold]{esc(cmd)}[/]"
                      f"{'':<{width - len(cmd) + 2}}[dim]{what}[/]", soft_wrap=True)


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
            t.add_row(label, plain(_text(f[key])))
    print_titled(console, t)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _steps(summary: RunSummary, console: Console) -> None:
    s = summary.steps
    if s is None:
        console.print("\n[bold]Step time[/]: no steps (no ProfilerStep annotations, no boundaries)")
        return
    console.print(f"\n[bold]Step time[/] over {step_count(s, 'steps')}: median "
                  f"{fmt_ms(s.median_ms)}, mean {fmt_ms(s.mean_ms)}, p90 {fmt_ms(s.p90_ms)}")
    console.print(f"  min {fmt_ms(s.min_ms)}, max {fmt_ms(s.max_ms)}")
    if s.excluded:
        shown = ", ".join(f"{step} ({fmt_ms(ms)})" for step, ms in s.excluded[:8])
        more = f" and {len(s.excluded) - 8} more" if len(s.excluded) > 8 else ""
        why = ("setup, compiling, or disturbed by dsprof" if not s.other_loop else
               f"setup, compiling, disturbed by dsprof, or of the other loop: {s.other_loop} "
               "steps")
        console.print(f"  counted: {s.rule}; left out ({why}): step {shown}{more}")
    if s.outliers:
        console.print("  outliers: " + ", ".join(
            f"{_rank_label(s, i)}step {k} ({fmt_ms(ms)})" for i, (k, ms) in enumerate(s.outliers)))


def _loops(summary: RunSummary, console: Console) -> None:
    """Each loop's step time, where the run held several one after another (a sweep's
    configurations, an LR range test, fine-tuning after pre-training)."""
    if len(summary.loops) < 2:
        return
    t = Table(title="Step time by loop", title_justify="left")
    # samples/s where a DataLoader gave batch sizes (a sweep over batch sizes)
    rates = any(loop.samples_per_s for loop in summary.loops)
    for col, just in (("loop", "right"), ("steps", "left"), ("marked by", "left"),
                      ("counted", "right"), ("median", "right"), ("mean", "right"),
                      ("min", "right"), *((("samples/s", "right"),) if rates else ())):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for loop in summary.loops:
        rate = [f"{loop.samples_per_s:,.1f}" if loop.samples_per_s else "-"] if rates else []
        t.add_row(f"{loop.loop}{' *' if loop.recorded else ''}",
                  f"{loop.first_step}-{loop.last_step}", plain(loop.source), plain(loop.counted),
                  *(fmt_ms(v) if v is not None else "-"
                    for v in (loop.median_ms, loop.mean_ms, loop.min_ms)), *rate)
    console.print()
    print_titled(console, t)
    console.print("  * the loop the step time above, the profiler window and op-level findings "
                  "are of. Each loop's steps are counted as the run's are: full-speed steps, "
                  "its own first two and those dsprof disturbed left out")


def step_count(s: StepStats, noun: str) -> str:
    """Steps per rank, not summed over ranks: a 20-step script on 2 ranks timed 20 steps."""
    if s.ranks <= 1:
        return f"{s.count} {noun}"
    lo, hi = s.per_rank
    return f"{lo if lo == hi else f'{lo}-{hi}'} {noun} per rank ({s.ranks} ranks)"


def _rank_label(s: StepStats, i: int) -> str:
    return f"rank {s.outlier_ranks[i]} " if s.ranks > 1 and i < len(s.outlier_ranks) else ""


def _phases(summary: RunSummary, console: Console) -> None:
    if summary.full_speed_phases:
        _phase_table(console, f"Time by phase at full speed (mean of "
                              f"{summary.full_speed_steps} steps, timed in each)",
                     "a step", summary.full_speed_phases)
    if summary.phases:
        _phase_table(console, f"Time by phase ({summary.profiled_steps} profiled steps, "
                              f"{fmt_ms(summary.profiled_ms)})", "time", summary.phases)


def _phase_table(console: Console, title: str, time_column: str,
                 phases: list[PhaseTime]) -> None:
    t = Table(title=title, title_justify="left")
    t.add_column("phase")
    t.add_column(time_column, justify="right")
    t.add_column("%", justify="right")
    for p in phases:
        t.add_row(plain(p.phase), fmt_ms(p.ms), f"{p.percent:.1f}")
    console.print()
    print_titled(console, t)


def _top_ops(summary: RunSummary, console: Console) -> None:
    if not summary.top_ops:
        return
    t = Table(title="Top ops by self time", title_justify="left")
    for col, just in (("op", "left"), ("count", "right"), ("self", "right"),
                      ("total", "right"), ("% self", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in summary.top_ops:
        t.add_row(plain(o.name), str(o.count), fmt_ms(o.self_ms), fmt_ms(o.total_ms), f"{o.percent:.1f}")
    console.print()
    print_titled(console, t)


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
        t.add_row(plain(k["kernel_type"]), fmt_ms(k["total_ns"] / 1e6), f"{k['percent']:.1f}",
                  "-" if h is None else f"{h:.1f}")
    console.print()
    print_titled(console, t)
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
        t.add_row(str(m.rank), plain(m.device), fmt_bytes(m.peak_bytes),
                  plain(explain.get(m.source, m.source)
                        + (f" over {m.window}" if m.window else "")))
    console.print()
    print_titled(console, t)
    for m in summary.memory:
        if m.by_category:
            console.print(f"  at the peak on {esc(m.device)}: " + ", ".join(
                f"{esc(c)} {fmt_bytes(b)}" for c, b in m.by_category.items()))


def _comms(summary: RunSummary, console: Console) -> None:
    c = summary.comms
    if c is None or not c.collectives:
        return
    per = "/step" if c.steps else ""
    t = Table(title=f"Collectives ({c.ranks} rank{'s' if c.ranks > 1 else ''}, "
                    f"{c.steps} step{'s' if c.steps != 1 else ''})", title_justify="left")
    t.add_column("collective")
    t.add_column("calls", justify="right")
    t.add_column("per step" if c.steps else "per rank", justify="right")
    t.add_column("bytes/call", justify="right")
    t.add_column("total bytes", justify="right")
    t.add_column("busbw", justify="right")
    for k in c.collectives:
        bw = k["busbw_gbps"]
        t.add_row(plain(k["collective"]), f"{k['calls']:,}", f"{k['calls_per_step']:.1f}",
                  fmt_bytes(k["bytes_per_call"]), fmt_bytes(k["bytes"]),
                  fmt_rate(bw, 1))
    console.print()
    print_titled(console, t)
    for o in c.overlap:
        console.print(f"  rank {o['rank']}: comm {fmt_ms(o['comm_ms'])}{per}, exposed "
                      f"{fmt_ms(o['exposed_ms'])}, overlapped {fmt_ms(o['overlapped_ms'])} "
                      f"({o['overlap_pct']:.0f}%)")
    for s in c.skew:
        console.print(f"  rank {s['rank']}: waited {fmt_ms(s['wait_ms_per_step'])} per step "
                      f"for later ranks; last at {s['times_last']} of {s['collectives']} "
                      "collectives")
