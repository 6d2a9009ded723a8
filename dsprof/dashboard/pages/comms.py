"""Communication: per-collective bandwidth (``comm_bandwidth``), communication overlapped vs
exposed per rank and step (``comm_overlap``), per-rank arrival skew (``comm_skew``) and time in
collectives per rank and step."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
from dash import html

from dsprof.dashboard.figures.comms import (
    bandwidth_figure,
    overlap_figure,
    per_rank_step_figure,
    skew_figure,
)
from dsprof.dashboard.grid_columns import GRID_DEFAULTS, columns_for
from dsprof.dashboard.pages.common import graph, missing, section
from dsprof.metrics.comm.bandwidth import bandwidth_summary
from dsprof.metrics.comm.overlap import comm_overlap
from dsprof.metrics.comm.skew import collective_skew, rank_skew

PATH = "/comms"
TITLE = "Communication"
_GRID = {"defaultColDef": GRID_DEFAULTS,
         "style": {"height": "300px"}}


def _grid(grid_id: str, rows: list[dict[str, Any]]) -> dag.AgGrid:
    rows = [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    if len(rows) <= 20:  # a few rows: as tall as they are, no empty box under them
        return dag.AgGrid(id=grid_id, rowData=rows, columnDefs=columns_for(rows),
                          defaultColDef=GRID_DEFAULTS, dashGridOptions={"domLayout": "autoHeight"},
                          style={"height": None})
    return dag.AgGrid(id=grid_id, rowData=rows, columnDefs=columns_for(rows), **_GRID)


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Communication")]
    with src.lock:
        con, meta = src.run.con, src.run.meta
        overlaps = comm_overlap(con, by_step=True)
        if src.has("comms"):
            bandwidth = bandwidth_summary(con, meta)
            skews = rank_skew(con, meta)
            worst = collective_skew(con, meta)
    if src.has("comms"):
        calls = src.arrow("SELECT collective, in_bytes, busbw_gbps FROM comms")
        out.append(section("Bandwidth per collective", graph("comms-bandwidth",
                                                             bandwidth_figure(calls)),
                           _grid("comms-bandwidth-grid", bandwidth)))
        per_rank = src.arrow("""
            SELECT rank, coalesce(step, -1) AS step, sum(dur_ns)::BIGINT AS comm_ns FROM comms
            GROUP BY ALL ORDER BY rank, step""")
        out.append(section("Time in collectives per rank and step",
                           graph("comms-per-rank", per_rank_step_figure(per_rank))))
        if skews:
            out.append(section("Skew across ranks", graph("comms-skew", skew_figure(skews)),
                               _grid("comms-skew-grid", [_sized(r) for r in worst])))
    else:
        out.append(section("Collectives", missing(src.missing("comms"), "comms")))
    if overlaps:
        out.append(section("Overlap with compute", graph("comms-overlap",
                                                         overlap_figure(overlaps))))
    elif src.has("comms") or src.has("kernels"):
        out.append(section("Overlap with compute",
                           html.P("No communication ran in this run.", id="comms-none")))
    return html.Div(out)


def register(app: Any, ctx: Any) -> None:
    """No callbacks."""


def _sized(row: dict[str, Any]) -> dict[str, Any]:
    """The skew analysis keys a collective as ``all_reduce/22866616`` (type / input bytes);
    the grid shows the type and the size in binary units apart."""
    name, _, size = str(row.get("collective", "")).rpartition("/")
    if not name or not size.isdigit():
        return row
    out = {k: v for k, v in row.items() if k != "collective"}
    return {"collective": name, "message_bytes": int(size), **out}
