"""Overview: run facts, step time across the run, time by phase, GPU kernel types and
Tensor Core share, peak memory, and the top findings with their savings."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dsprof.dashboard.figures.overview import (
    SAMPLED,
    kernel_category_figure,
    kernel_type_figure,
    phase_figure,
    samples_figure,
    step_breakdown_figure,
    step_time_figure,
    top_ops_figure,
)
from dsprof.dashboard.pages.common import graph, kv_table, missing, section
from dsprof.dashboard.pages.overview_tiles import headline_tiles
from dsprof.dashboard.text import fmt_bytes, fmt_ms, fmt_saving
from dsprof.metrics.step_breakdown import StepBreakdown

PATH = "/"
TITLE = "Overview"


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    s = src.summary
    facts = {k: v for k, v in s.facts.items() if k != "run"}
    # Above the fold at 1440x900: the headline numbers, what to change first, and where each
    # step's time went; the run's facts (a long table) go last.
    bd = _breakdown(src)
    out: list[Any] = [html.H2(f"Run {src.name}", id="overview-title"), headline_tiles(src, bd)]
    out += [html.Div(n, className="missing") for n in s.notes]
    out.append(section("Top findings", _findings(src), sid="overview-findings"))
    if src.has("steps"):
        wait = ", data_wait_ns" if "data_wait_ns" in src.columns("steps") else ""
        steps = src.arrow(f"SELECT rank, step, dur_ns, profiled{wait} FROM steps "
                          "ORDER BY rank, step")
        row = [graph("overview-breakdown", step_breakdown_figure(bd)) if len(bd)
               else missing(_no_breakdown(src), "breakdown"),
               graph("overview-steps", step_time_figure(steps, s.steps))]
        out.append(section("Where each step went", html.Div(row, className="grid2"),
                           _average_step(bd), *_loops(s.loops), sid="overview-step-time"))
    else:
        out.append(section("Step time", missing(src.missing("steps"), "steps")))
    row: list[Any] = []
    # a CPU run's own steps, timed (reports/full_speed_phases.py), before the profiler's view
    row.append(graph("overview-phases", phase_figure(
        s.full_speed_phases, f"Time by phase at full speed (mean of {s.full_speed_steps} "
                             "steps, ms a step)")) if s.full_speed_phases
               else graph("overview-phases", phase_figure(s.phases)) if s.phases
               else missing(src.missing("ops"), "ops"))
    row.append(graph("overview-top-ops", top_ops_figure(s.top_ops)) if s.top_ops
               else html.Div())
    out.append(section("Where the time went", html.Div(row, className="grid2")))
    if s.kernel_types:
        out.append(section("GPU", *_gpu(src, s.kernel_types)))
    else:
        out.append(section("GPU", missing(src.missing("kernels"), "kernels")))
    cols = [c for c, _ in SAMPLED if c in src.columns("device_samples")]
    if cols:
        samples = src.arrow(f"""
            SELECT rank, (ts_ns - min(ts_ns) OVER ()) / 1e6 AS t_ms, {', '.join(cols)}
            FROM device_samples ORDER BY rank, ts_ns""")
        fig = samples_figure(samples)
        if fig.data:
            out.append(section("Utilization", graph("overview-samples", fig)))
    if s.memory:
        out.append(section("Peak memory", kv_table(
            {f"rank {p.rank} {p.device} ({p.source})": fmt_bytes(p.peak_bytes)
             for p in s.memory}, "memory-peaks")))
    else:
        out.append(section("Peak memory", missing(src.missing("memory"), "memory")))
    out.append(section("Run", kv_table(readable_facts(facts), "run-facts")))
    return html.Div(out)


def _loops(loops: list[Any]) -> list[Any]:
    """Each loop's step time side by side, where the run held several one after another (a
    sweep's configurations, an LR range test): the summary's "Step time by loop"."""
    if len(loops) < 2:
        return []
    head = ["loop", "steps", "marked by", "counted", "median", "mean", "min"]
    rates = any(loop.samples_per_s for loop in loops)
    head += ["samples/s"] if rates else []
    rows = [html.Tr([html.Th(h) for h in head])]
    for loop in loops:
        cells = [f"{loop.loop}{' (profiled)' if loop.recorded else ''}",
                 f"{loop.first_step}-{loop.last_step}", loop.source,
                 loop.counted,
                 *(fmt_ms(v) if v is not None else "-"
                   for v in (loop.median_ms, loop.mean_ms, loop.min_ms))]
        cells += [f"{loop.samples_per_s:,.1f}" if loop.samples_per_s else "-"] if rates else []
        rows.append(html.Tr([html.Td(c) for c in cells]))
    return [html.H4("Step time by loop"),
            html.Table(rows, id="overview-loops", className="kv"),
            html.P("The profiled loop is the one the step time, the timeline's window and the "
                   "op-level findings are of; each loop's steps are counted by the same rule "
                   "(its own first two and those dsprof disturbed left out).")]


def _no_breakdown(src: Any) -> str:
    if not src.has("ops"):
        return "No step breakdown: " + src.missing("ops")
    return ("No step breakdown: no step was profiled op by op (a `dsprof run` records ops in "
            "its profiler windows, --wait/--active; an imported trace needs ProfilerStep "
            "annotations).")


def _average_step(bd: StepBreakdown) -> Any:
    """The breakdown of the average profiled step in words, largest first (TensorBoard's
    overview table), so the answer does not depend on reading colours."""
    if not len(bd):
        return html.Div()
    mean = bd.ns.mean(axis=0) / 1e6
    total = float(bd.dur_ns.mean()) / 1e6
    parts = [f"{cat} {fmt_ms(ms)} ({100 * ms / total:.1f} %)"
             for ms, cat in sorted(zip(mean, bd.categories), reverse=True) if ms > 0]
    return html.P(f"Average profiled step, {fmt_ms(total)}: " + ", ".join(parts) + ".",
                  id="overview-breakdown-average")


def _breakdown(src: Any) -> StepBreakdown:
    """The run's (``RunSource.step_breakdown``: computed once, in the background)."""
    return src.step_breakdown


def _gpu(src: Any, kernel_types: list[dict[str, Any]]) -> list[Any]:
    rep = src.gpu
    row: list[Any] = [graph("overview-kernel-types", kernel_type_figure(kernel_types))]
    if rep.categories and any(c.get("category") for c in rep.categories):
        row.append(graph("overview-kernel-categories", kernel_category_figure(rep.categories)))
    tc = rep.tensor_core
    text = (f"Tensor Cores: {tc['of_matrix'] * 100:.1f} % of gemm/conv/attention kernel time, "
            f"{tc['of_kernels'] * 100:.1f} % of compute-kernel time." if tc
            else "Tensor Core share: this run's kernels carry no tensor_core flag.")
    return [html.Div(row, className="grid2"), html.P(text, id="tensor-core-share"),
            html.Ul([html.Li(line) for line in gpu_headlines(rep)], id="gpu-headlines"),
            *[html.P(n, className="missing") for n in rep.notes]]


def readable_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """The run's facts with words for keys and units for values: ``step_median_s 0.0148``
    reads ``step median 14.87 ms``, ``peak_bytes 4800712`` reads ``peak 4.6 MiB``."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key.endswith("_s"):
                key, value = key[:-2], fmt_ms(value * 1e3)
            elif key.endswith("_bytes"):
                key, value = key[:-6], fmt_bytes(value)
            elif isinstance(value, int) and abs(value) >= 10_000:
                value = f"{value:,}"
        out[key.replace("_", " ")] = value
    return out


def gpu_headlines(rep: Any) -> list[str]:
    """What matters most on a GPU run, in words: why the GPU sat idle, MFU, launches."""
    lines = []
    for r in rep.idle:
        idle_ms = sum(r[f"{c}_ms"] for c in ("host_wait", "kernel_wait", "other"))
        lines.append(f"rank {r['rank']}: GPU idle {fmt_ms(idle_ms)}, of which "
                     f"{r['host_wait_pct']:.0f} % waiting for the host to launch work")
    mfu = [s["mfu"] for s in rep.steps if s.get("mfu") is not None]
    if mfu:
        lines.append(f"MFU per step: median {100 * sorted(mfu)[len(mfu) // 2]:.1f} % of the "
                     "device's peak for the dtype used")
    for s in rep.launch:
        lines.append(f"rank {s['rank']}: {s['launches']:,} kernel launches, "
                     f"{s['cpu_mean_ns'] / 1e3:.1f} us each on the CPU, launch-to-start delay "
                     f"median {fmt_ms(s['delay_median_ns'] / 1e6)}")
    return lines


def _findings(src: Any) -> Any:
    if src.analysis is None:
        return missing(src.missing("findings"), "findings")
    if not src.findings:
        return html.P("The analyzers found nothing to change.")
    items = []
    for f in src.findings[:5]:
        saving = []
        if f.saving_s:
            saving.append(fmt_saving(f))
        if f.saving_bytes:
            saving.append(fmt_bytes(f.saving_bytes))
        items.append(html.Li([dcc.Link(f.title, href=f"/findings?id={f.id}"),
                              html.Span(f"  [{f.severity}] saves " + (", ".join(saving) or "-"))]))
    return html.Ol(items)


def register(app: Any, ctx: Any) -> None:
    """No callbacks: the page is drawn once per visit."""
