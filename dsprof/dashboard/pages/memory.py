"""Memory: over time by category, what was live at the peak, activations per module, top
allocation sites, and the memory findings (leaks, OOM reports) when the analyzers made any."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import html

from dsprof.dashboard.figures.memory import (
    memory_over_time_figure,
    module_activation_figure,
    peak_breakdown_figure,
)
from dsprof.dashboard.pages.common import graph, missing, section
from dsprof.dashboard.pages.findings import finding_card

PATH = "/memory"
TITLE = "Memory"


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Memory")]
    series = src.memory_series if src.has("memory") else []
    if series:
        out.append(section("Memory over time", graph("memory-over-time",
                                                     memory_over_time_figure(series))))
        if not any(s.categories for s in series):
            out.append(missing("The memory events carry no categories (parameter, activation, "
                               "...): only the total is drawn. Categories come from "
                               "`dsprof run SCRIPT` with the memory collector.", "categories"))
    else:
        out.append(section("Memory over time", missing(src.missing("memory"), "memory")))
    peaks = src.summary.memory
    if peaks:
        out.append(section("Peak memory", graph("memory-peaks", peak_breakdown_figure(peaks))))
    if src.has("modules") and "activation_bytes" in src.columns("modules"):
        modules = src.arrow("SELECT * FROM modules")
        out.append(section("Activations per module",
                           graph("memory-modules", module_activation_figure(modules))))
    else:
        out.append(section("Activations per module", missing(src.missing("modules"), "modules")))
    out.append(section("Top allocation sites", _sites(src)))
    mem_findings = [f for f in src.findings if f.kind.startswith(("memory.", "oom."))]
    if mem_findings:
        out.append(section("Memory findings (leaks, OOM)",
                           *[finding_card(f) for f in mem_findings]))
    return html.Div(out)


def _sites(src: Any) -> Any:
    if not (src.has("stacks") and "stack_id" in src.columns("memory")):
        return missing(src.missing("stacks"), "stacks")
    frames = "frames" if "frames" in src.columns("stacks") else "NULL"
    rows = src.arrow(f"""
        SELECT m.stack_id, any_value(s.{frames})::VARCHAR AS site, count(*) AS allocations,
               (sum(m.bytes) FILTER (WHERE m.bytes > 0))::DOUBLE AS allocated_bytes
        FROM memory m LEFT JOIN stacks s ON s.stack_id = m.stack_id
        WHERE m.stack_id IS NOT NULL GROUP BY m.stack_id
        ORDER BY allocated_bytes DESC NULLS LAST LIMIT 200""").to_pylist()
    cols = [{"field": "site", "flex": 4}, {"field": "allocations"},
            {"field": "allocated_bytes", "headerName": "bytes allocated", "sort": "desc"}]
    return dag.AgGrid(id="memory-sites", rowData=rows, columnDefs=cols,
                      defaultColDef={"sortable": True, "filter": True, "resizable": True,
                                     "flex": 1}, style={"height": "360px"})


def register(app: Any, ctx: Any) -> None:
    """No callbacks."""
