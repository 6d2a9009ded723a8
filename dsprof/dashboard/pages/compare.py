"""Compare: two runs side by side, as ``dsprof diff`` reports them (``reports/diff.py``):
step time, throughput, peak memory, time by phase, per-op and per-module change, findings
resolved / new / remaining, and each applied finding's predicted vs measured saving."""

from __future__ import annotations

from typing import Any

from dash import html

from dsprof.dashboard.figures.compare import applied_pairs, delta_figure, phases_compare_figure
from dsprof.dashboard.figures.findings import predicted_measured_figure
from dsprof.dashboard.pages.common import graph, missing, section
from dsprof.dashboard.text import fmt_bytes, fmt_ms
from dsprof.reports.diff import LoopDelta, Side, diff

PATH = "/compare"
TITLE = "Compare"


def _change(a: float | None, b: float | None) -> str:
    return f"{(b / a - 1) * 100:+.1f} %" if a and b is not None else ""


def facts_table(a: Side, b: Side) -> html.Table:
    rows = [("median step", fmt_ms(a.median_ms), fmt_ms(b.median_ms),
             _change(a.median_ms, b.median_ms)),
            ("mean step", fmt_ms(a.step_ms), fmt_ms(b.step_ms), _change(a.step_ms, b.step_ms)),
            ("steps", str(a.steps), str(b.steps), ""),
            ("samples/s", f"{a.samples_per_s:.1f}" if a.samples_per_s else "-",
             f"{b.samples_per_s:.1f}" if b.samples_per_s else "-",
             _change(a.samples_per_s, b.samples_per_s)),
            ("peak memory", f"{fmt_bytes(a.peak_bytes)} ({a.peak_source or '-'})",
             f"{fmt_bytes(b.peak_bytes)} ({b.peak_source or '-'})",
             _change(a.peak_bytes, b.peak_bytes)),
            ("command", a.command or "-", b.command or "-", "")]
    head = html.Tr([html.Th(h) for h in ("", "A", "B", "change")])
    return html.Table([head] + [html.Tr([html.Th(r[0])] + [html.Td(c) for c in r[1:]])
                                for r in rows], id="compare-facts", className="kv")


def _loops_table(loops: list[LoopDelta]) -> html.Table:
    """Loop by loop by position, where both runs held several one after another."""
    head = html.Tr([html.Th(h) for h in ("loop", "steps A / B", "median A", "median B",
                                         "change")])
    rows = [html.Tr([html.Td(str(r.loop)), html.Td(f"{r.a_steps} / {r.b_steps}"),
                     html.Td(fmt_ms(r.a_median_ms)), html.Td(fmt_ms(r.b_median_ms)),
                     html.Td(_change(r.a_median_ms, r.b_median_ms))]) for r in loops]
    return html.Table([head, *rows], id="compare-loops", className="kv")


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    out: list[Any] = [html.H2("Compare")]
    a, b = ctx.a, ctx.b
    if b is None:
        out.append(missing("Only one run was given. Compare two runs (before and after a fix) "
                           "with `dsprof dashboard RUN_A RUN_B`.", "run-b"))
        return html.Div(out)
    out.append(html.P(f"A: {a.path}    B: {b.path}"))
    unanalyzed = [s for s in (a, b) if s.analysis is None]
    if unanalyzed:
        # diff() would run the analyzers and write findings.json; the dashboard only reads.
        out.append(missing("Run " + " and ".join(s.label for s in unanalyzed) + " was never "
                           "analyzed: `dsprof analyze RUN` writes its findings, then this page "
                           "compares them (`dsprof diff RUN_A RUN_B` does both).", "findings"))
        return html.Div(out)
    with a.lock, b.lock:
        d = diff(a.run, b.run)
    out.append(facts_table(d.a, d.b))
    for w in d.warnings:
        out.append(html.Div(f"warning: {w}", className="missing"))  # the notice style
    if d.loops:
        out.append(section("Step time by loop", _loops_table(d.loops)))
    if a.summary.phases or b.summary.phases:
        out.append(graph("compare-phases",
                         phases_compare_figure(a.summary.phases, b.summary.phases)))
    if d.ops:
        out.append(section("Per-op change", graph("compare-ops", delta_figure(d.ops, "op"))))
    if d.modules:
        out.append(section("Per-module change",
                           graph("compare-modules", delta_figure(d.modules, "module"))))
    parts: list[Any] = []
    for label, rows in (("Resolved in B", d.resolved), ("New in B", d.new),
                        ("Still there", d.remaining)):
        key = label.split()[0].lower()
        parts += [html.H4(f"{label} ({len(rows)})"),
                  html.Ul([html.Li(r["title"]) for r in rows], id=f"findings-{key}")]
    for applied in d.applied:
        pairs = applied_pairs(applied)
        parts.append(html.H4(f"Applied in B: {applied.title}"))
        if pairs:
            parts.append(graph(f"compare-pm-{applied.id}", predicted_measured_figure(pairs)))
    out.append(section("Findings", *parts))
    return html.Div(out)


def register(app: Any, ctx: Any) -> None:
    """No callbacks."""
