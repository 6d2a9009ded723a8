"""Memory: over time by category, what was live at the peak by category, module and site
(``memory_report``, the facts behind ``dsprof memory``), activations per module, the OOM
post-mortem, and the memory findings (leaks, fragmentation, budget) when there are any."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import html

from dsprof.dashboard.figures.memory import (
    SERIES_CATEGORIES,
    memory_over_time_figure,
    memory_series_figure,
    module_activation_figure,
    peak_breakdown_figure,
    peak_holdings_figure,
)
from dsprof.dashboard.grid_columns import GRID_DEFAULTS, column, columns_for
from dsprof.dashboard.pages.common import graph, missing, section
from dsprof.dashboard.pages.findings import finding_card
from dsprof.dashboard.text import fmt_bytes
from dsprof.reports.memory import MemoryReport, memory_report

PATH = "/memory"
TITLE = "Memory"


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Memory")]
    if not src.has("memory"):
        out.append(section("Memory over time", missing(src.missing("memory"), "memory")))
        if src.summary.memory:
            out.append(section("Peak memory", graph("memory-peaks",
                                                    peak_breakdown_figure(src.summary.memory))))
        return html.Div(out)
    out.append(section("Memory over time", graph("memory-over-time", _over_time(src))))
    with src.lock:
        report = memory_report(src.run)
    if report.oom:
        budget = f" (budget {fmt_bytes(report.budget)})" if report.budget else ""
        out.append(html.Div(f"The script died of {report.oom}{budget}: below is what held "
                            "memory at the peak.", className="missing", id="memory-oom"))
    if report.peaks:
        out.append(section("What held memory at the peak", *_peaks(report)))
    if src.has("modules") and "activation_bytes" in src.columns("modules"):
        modules = src.arrow("SELECT rank, name, activation_bytes FROM modules "
                            "WHERE activation_bytes > 0")
        out.append(section("Activations per module",
                           graph("memory-modules", module_activation_figure(modules))))
    else:
        out.append(section("Activations per module", missing(src.missing("modules"), "modules")))
    mem_findings = [f for f in src.findings if f.kind.startswith(("memory.", "oom."))]
    if mem_findings:
        out.append(section("Memory findings", *[finding_card(f) for f in mem_findings]))
    return html.Div(out)


def _over_time(src: Any) -> Any:
    if src.has("memory_series"):
        t0 = src.timeline.t0_ns if len(src.timeline) else None
        cols = [c for c in SERIES_CATEGORIES if c in src.columns("memory_series")]
        origin = str(t0) if t0 is not None else "min(ts_ns) OVER ()"
        series = src.arrow(f"""
            SELECT rank, device, (ts_ns - {origin}) / 1e6 AS t_ms, total, {', '.join(cols)}
            FROM memory_series ORDER BY rank, device, ts_ns""")
        return memory_series_figure(series)
    return memory_over_time_figure(src.memory_series)


def _peaks(report: MemoryReport) -> list[Any]:
    parts: list[Any] = [html.Div([
        graph("memory-peak-category", peak_holdings_figure(report.peaks, "category")),
        graph("memory-peak-module", peak_holdings_figure(report.peaks, "module")),
    ], className="grid2")]
    rows = [{"rank": p.rank, "device": p.device, "site": h.key, "bytes": h.bytes,
             "tensors": h.count} for p in report.peaks for h in p.by_site]
    parts.append(html.H4("Top allocation sites live at the peak"))
    parts.append(dag.AgGrid(
        id="memory-sites", rowData=rows,
        columnDefs=columns_for(rows, [column("site", flex=4), column("bytes", sort="desc"),
                                      column("tensors"), column("device"), column("rank")]),
        defaultColDef=GRID_DEFAULTS,
        style={"height": "320px"}))
    alloc = [f"r{p.rank} {p.device}: " + ", ".join(f"{k} {_value(k, v)}"
                                                   for k, v in p.allocator.items())
             for p in report.peaks if p.allocator]
    if alloc:
        parts += [html.H4("Allocator"), html.Ul([html.Li(a) for a in alloc])]
    return parts


def _value(key: str, value: int) -> str:
    return fmt_bytes(value) if key.endswith(("_peak", "largest_free")) else str(value)


def register(app: Any, ctx: Any) -> None:
    """No callbacks."""
