"""Operators and kernels: sortable, filterable grids, ops grouped by name, module or phase."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import Input, Output, dcc, html

from dsprof.dashboard.grid_columns import column, columns_for
from dsprof.dashboard.op_tables import kernel_rows, op_rows
from dsprof.dashboard.pages.common import missing, section

PATH = "/operators"
TITLE = "Operators & kernels"

OP_COLUMNS = [
    column("key", filter="agTextColumnFilter", flex=3),
    column("count"), column("self_ms", sort="desc"), column("total_ms"), column("mean_us"),
    column("flops"), column("gpu_ms"), column("tensor_core_pct"),
]
KERNEL_COLUMNS = [
    column("name", filter="agTextColumnFilter", flex=4),
    column("kind", filter="agTextColumnFilter"),
    column("category", filter="agTextColumnFilter"),
    column("count"), column("total_ms", sort="desc"), column("mean_us"), column("percent"),
    column("tensor_core", headerName="Tensor Core"),
]
_GRID = {"defaultColDef": {"sortable": True, "resizable": True, "filter": True, "flex": 1},
         "dashGridOptions": {"animateRows": False, "pagination": True,
                             "paginationPageSize": 50}, "style": {"height": "520px"}}


def _present(columns: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return columns_for(rows, columns)


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Operators and kernels")]
    if src.has("ops"):
        by = query.get("by", "name") if query.get("by") in ("name", "module", "phase") else "name"
        rows = op_rows(src, by)
        out.append(section("Host ops (cpu_op)", dcc.RadioItems(
            id="ops-group", options=[{"label": f"by {k}", "value": k}
                                     for k in ("name", "module", "phase")],
            value=by, inline=True),
            dag.AgGrid(id="ops-grid", rowData=rows, columnDefs=_present(OP_COLUMNS, rows),
                       **_GRID)))
    else:
        out.append(section("Host ops", missing(src.missing("ops"), "ops")))
    if src.has("kernels"):
        rows = kernel_rows(src)
        out.append(section("GPU kernels", dag.AgGrid(
            id="kernels-grid", rowData=rows, columnDefs=_present(KERNEL_COLUMNS, rows),
            **_GRID)))
    else:
        out.append(section("GPU kernels", missing(src.missing("kernels"), "kernels")))
    return html.Div(out)


def register(app: Any, ctx: Any) -> None:
    @app.callback(Output("ops-grid", "rowData"), Output("ops-grid", "columnDefs"),
                  Input("ops-group", "value"), prevent_initial_call=True)
    def regroup(by: str) -> Any:
        rows = op_rows(ctx.a, by if by in ("name", "module", "phase") else "name")
        cols = [dict(c, headerName=by) if c["field"] == "key" else c for c in OP_COLUMNS]
        return rows, _present(cols, rows)
