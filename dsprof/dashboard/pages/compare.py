"""Compare: two runs side by side: step time, phases, per-op change, peak memory, findings
resolved and new, and for a finding of A applied in B, its predicted vs measured saving."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import html

from dsprof.dashboard.figures.compare import (
    applied_findings,
    findings_diff,
    op_delta_figure,
    op_deltas,
    phases_compare_figure,
)
from dsprof.dashboard.figures.findings import predicted_measured_figure
from dsprof.dashboard.pages.common import graph, missing, section
from dsprof.dashboard.text import fmt_bytes, fmt_ms

PATH = "/compare"
TITLE = "Compare"


def _peak(src: Any) -> int | None:
    peaks = [p.peak_bytes for p in src.summary.memory if p.source != "rss"]
    return max(peaks) if peaks else None


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    out: list[Any] = [html.H2("Compare")]
    a, b = ctx.a, ctx.b
    if b is None:
        out.append(missing("Only one run was given. Compare two runs (before and after a fix) "
                           "with `dsprof dashboard RUN_A RUN_B`.", "run-b"))
        return html.Div(out)
    sa, sb = a.summary, b.summary
    med_a = sa.steps.median_ms if sa.steps else None
    med_b = sb.steps.median_ms if sb.steps else None
    rows = [("run", a.name, b.name, ""),
            ("median step", fmt_ms(med_a), fmt_ms(med_b),
             f"{(med_b / med_a - 1) * 100:+.1f} %" if med_a and med_b else "")]
    if sa.steps and sb.steps:
        rows.append(("p90 step", fmt_ms(sa.steps.p90_ms), fmt_ms(sb.steps.p90_ms), ""))
    pa_, pb_ = _peak(a), _peak(b)
    rows.append(("peak memory", fmt_bytes(pa_), fmt_bytes(pb_),
                 f"{(pb_ / pa_ - 1) * 100:+.1f} %" if pa_ and pb_ else ""))
    out.append(html.Table([html.Tr([html.Th(h) for h in ("", "A", "B", "change")])] +
                          [html.Tr([html.Th(r[0])] + [html.Td(c) for c in r[1:]]) for r in rows],
                          id="compare-facts", className="kv"))
    if sa.phases or sb.phases:
        out.append(graph("compare-phases", phases_compare_figure(sa.phases, sb.phases)))
    deltas = op_deltas(sa.top_ops, sb.top_ops)
    if deltas:
        out.append(section("Per-op change", graph("compare-ops", op_delta_figure(deltas)),
                           dag.AgGrid(id="compare-ops-grid", rowData=deltas,
                                      columnDefs=[{"field": k} for k in deltas[0]],
                                      defaultColDef={"sortable": True, "filter": True,
                                                     "flex": 1},
                                      style={"height": "300px"})))
    out.append(section("Findings", _findings(a, b, med_a, med_b, pa_, pb_)))
    return html.Div(out)


def _findings(a: Any, b: Any, med_a: float | None, med_b: float | None,
              peak_a: int | None, peak_b: int | None) -> Any:
    if a.analysis is None or b.analysis is None:
        which = "A" if a.analysis is None else "B"
        return missing(f"Run {which} has no findings.json: `dsprof analyze RUN` writes it.",
                       "findings")
    diff = findings_diff(a.findings, b.findings)
    parts: list[Any] = []
    for label, key in (("Resolved in B", "resolved"), ("New in B", "new"),
                       ("Still there", "remaining")):
        items = [html.Li(f.title) for f in diff[key]]
        parts += [html.H4(f"{label} ({len(items)})"), html.Ul(items, id=f"findings-{key}")]
    env = (b.run.meta.get("env") or {})
    for f in applied_findings(a.findings, env):
        pairs: dict[str, tuple[float, float]] = {}
        if f.saving_s and med_a and med_b:
            pairs["saving_s"] = (f.saving_s, (med_a - med_b) / 1e3)
        if f.saving_bytes and peak_a and peak_b:
            pairs["saving_bytes"] = (float(f.saving_bytes), float(peak_a - peak_b))
        if pairs:
            parts += [html.H4(f"Applied in B: {f.title}"),
                      graph(f"compare-pm-{f.id}", predicted_measured_figure(pairs))]
    return html.Div(parts)


def register(app: Any, ctx: Any) -> None:
    """No callbacks."""
