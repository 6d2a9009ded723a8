"""Operators and kernels: sortable, filterable grids, ops grouped by name, module or phase."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import Input, Output, dcc, html

from dsprof.dashboard.grid_columns import GRID_DEFAULTS, column, columns_for
from dsprof.dashboard.op_tables import kernel_rows, op_rows
from dsprof.dashboard.pages.common import missing, section

PATH = "/operators"
TITLE = "Operators & kernels"

KERNEL_GROUPS = {"name": "by name", "op": "by name and the op that launched them"}
GROUPS = {"name": "by name", "shape": "by name and input shapes", "module": "by module",
          "phase": "by phase"}
OP_COLUMNS = [
    column("key", filter="agTextColumnFilter", flex=3),
    column("input_shapes", headerName="input shapes", filter="agTextColumnFilter", flex=3),
    column("count", headerName="calls"), column("self_ms", sort="desc"), column("total_ms"), column("mean_us"),
    column("flops"), column("gpu_ms"), column("tensor_core_pct"),
]
KERNEL_COLUMNS = [
    column("name", filter="agTextColumnFilter", flex=4, minWidth=280),
    column("op", headerName="launched by", filter="agTextColumnFilter", flex=2, minWidth=180),
    column("category", filter="agTextColumnFilter", minWidth=130),
    column("count", headerName="calls", minWidth=90), column("total_ms", sort="desc"),
    column("mean_us"), column("percent", headerName="% of kernel time"),
    column("tensor_core", headerName="Tensor Cores"),
    column("occupancy_pct", headerName="occupancy", minWidth=125,
           headerTooltip="est. achieved occupancy (Kineto), mean weighted by duration"),
    column("blocks_per_sm", headerName="blocks per SM",
           headerTooltip="grid blocks / SMs (Kineto), mean weighted by duration"),
    column("registers", headerName="registers", type="numericColumn", minWidth=120,
           headerTooltip="registers per thread (largest launch)"),
    column("shared_mem_bytes", headerName="shared mem", minWidth=115,
           headerTooltip="shared memory per block (largest launch)"),
]
_GRID = {"defaultColDef": GRID_DEFAULTS,
         "dashGridOptions": {"animateRows": False, "pagination": True,
                             "paginationPageSize": 50}, "style": {"height": "520px"}}


def _present(columns: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return columns_for(rows, columns)


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Operators and kernels")]
    if src.has("ops"):
        by = query.get("by", "name") if query.get("by") in GROUPS else "name"
        rows = op_rows(src, by)
        out.append(section("Host ops (cpu_op)", dcc.RadioItems(
            id="ops-group", options=[{"label": v, "value": k} for k, v in GROUPS.items()],
            value=by, inline=True, inputStyle={"marginRight": "4px", "marginLeft": "12px"}),
            dag.AgGrid(id="ops-grid", rowData=rows, columnDefs=_op_columns(by, rows),
                       **_GRID)))
    else:
        out.append(section("Host ops", missing(src.missing("ops"), "ops")))
    if src.has("kernels"):
        rows = kernel_rows(src)
        tc = src.gpu.tensor_core
        note = (f"Tensor Cores ran {tc['of_kernels'] * 100:.1f} % of compute-kernel time "
                f"({tc['of_matrix'] * 100:.1f} % of gemm/conv/attention kernel time)." if tc
                else "")
        out.append(section("GPU kernels", html.P(note, id="kernels-tensor-core"),
                           dcc.RadioItems(id="kernels-group", value="name", inline=True,
                                          options=[{"label": v, "value": k}
                                                   for k, v in KERNEL_GROUPS.items()],
                                          inputStyle={"marginRight": "4px",
                                                      "marginLeft": "12px"}),
                           dag.AgGrid(
            id="kernels-grid", rowData=rows, columnDefs=_present(KERNEL_COLUMNS, rows),
            **_GRID)))
    else:
        out.append(section("GPU kernels", missing(src.missing("kernels"), "kernels")))
    return html.Div(out)


def register(app: Any, ctx: Any) -> None:
    _kernel_callbacks(app, ctx)

    @app.callback(Output("ops-grid", "rowData"), Output("ops-grid", "columnDefs"),
                  Input("ops-group", "value"), prevent_initial_call=True)
    def regroup(by: str) -> Any:
        by = by if by in GROUPS else "name"
        rows = op_rows(ctx.a, by)
        return rows, _op_columns(by, rows)


def _kernel_callbacks(app: Any, ctx: Any) -> None:
    @app.callback(Output("kernels-grid", "rowData"), Output("kernels-grid", "columnDefs"),
                  Input("kernels-group", "value"), prevent_initial_call=True)
    def regroup_kernels(by: str) -> Any:
        rows = kernel_rows(ctx.a, by if by in KERNEL_GROUPS else "name")
        return rows, _present(KERNEL_COLUMNS, rows)


def _op_columns(by: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The op grid's columns: the key column named after the grouping."""
    name = {"name": "op", "shape": "op", "module": "module", "phase": "phase"}[by]
    return _present([dict(c, headerName=name) if c["field"] == "key" else c
                     for c in OP_COLUMNS], rows)
