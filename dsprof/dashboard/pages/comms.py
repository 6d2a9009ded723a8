"""Communication: per-collective bandwidth, per-rank time in collectives per step (skew), and
how much of the communication overlapped compute on the device."""

from __future__ import annotations

from typing import Any

from dash import html

from dsprof.analyzers.gpu_breakdown import KernelTypeShare
from dsprof.dashboard.figures.comms import bandwidth_figure, overlap_figure, per_rank_step_figure
from dsprof.dashboard.pages.common import graph, missing, section

PATH = "/comms"
TITLE = "Communication"


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Communication")]
    cols = src.columns("comms")
    if src.has("comms"):
        if {"collective", "in_bytes"} <= cols and cols & {"busbw", "algbw"}:
            table = src.arrow(f"""SELECT collective, in_bytes,
                {'busbw' if 'busbw' in cols else 'algbw'} FROM comms""")
            out.append(section("Bandwidth", graph("comms-bandwidth", bandwidth_figure(table))))
        per_rank = src.arrow("""
            SELECT rank, coalesce(step, -1) AS step, sum(dur_ns)::BIGINT AS comm_ns FROM comms
            GROUP BY ALL ORDER BY rank, step""")
        out.append(section("Per rank and step",
                           graph("comms-per-rank", per_rank_step_figure(per_rank))))
    else:
        out.append(section("Collectives", missing(src.missing("comms"), "comms")))
        if src.has("kernels"):
            per_rank = src.arrow("""
                SELECT rank, coalesce(step, -1) AS step, sum(dur_ns)::BIGINT AS comm_ns FROM kernels
                WHERE kind = 'communication' GROUP BY ALL ORDER BY rank, step""")
            if per_rank.num_rows:
                out.append(section("Communication kernels per rank and step",
                                   graph("comms-per-rank", per_rank_step_figure(per_rank))))
    shares = [KernelTypeShare(**k) for k in src.summary.kernel_types]
    if any("COMMUNICATION" in s.kernel_type for s in shares):
        out.append(section("Overlap with compute (device time)",
                           graph("comms-overlap", overlap_figure(shares))))
    elif not src.has("kernels"):
        out.append(section("Overlap with compute", missing(src.missing("kernels"), "kernels")))
    else:
        out.append(section("Overlap with compute",
                           html.P("No communication kernels ran on the device in this run.")))
    return html.Div(out)


def register(app: Any, ctx: Any) -> None:
    """No callbacks."""
