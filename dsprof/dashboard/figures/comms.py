"""Communication figures from the ``comms`` table (one row per collective call) and, for
traces without it, from communication kernels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa

from dsprof.analyzers.gpu_breakdown import KernelTypeShare
from dsprof.dashboard.text import plain

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 340}


def bandwidth_figure(comms: pa.Table) -> go.Figure:
    """Bus bandwidth of every call against its size, one colour per collective.

    Args:
        comms: collective, in_bytes, busbw (GB/s) [, algbw].
    """
    fig = go.Figure()
    coll = np.asarray(comms.column("collective").to_pylist(), dtype=object)
    size = comms.column("in_bytes").to_numpy(zero_copy_only=False).astype(float)
    bw_col = "busbw" if "busbw" in comms.column_names else "algbw"
    bw = comms.column(bw_col).to_numpy(zero_copy_only=False).astype(float)
    for name in sorted({c for c in coll if c is not None}):
        m = coll == name
        fig.add_trace(go.Scatter(x=size[m], y=bw[m], mode="markers", name=plain(name),
                                 hovertemplate="%{x:,.0f} B: %{y:.2f} GB/s"))
    fig.update_layout(title=f"Bandwidth per collective ({bw_col})", xaxis_type="log",
                      xaxis_title="message bytes", yaxis_title="GB/s", **_LAYOUT)
    return fig


def per_rank_step_figure(per_rank: pa.Table) -> go.Figure:
    """Time in collectives (or communication kernels) per step and rank; a rank that waits
    longer stands out.

    Args:
        per_rank: rank, step, comm_ns.
    """
    fig = go.Figure()
    rank = per_rank.column("rank").to_numpy(zero_copy_only=False)
    step = per_rank.column("step").to_numpy(zero_copy_only=False)
    ms = per_rank.column("comm_ns").to_numpy(zero_copy_only=False) / 1e6
    for r in np.unique(rank):
        m = rank == r
        fig.add_trace(go.Bar(x=step[m], y=ms[m], name=f"rank {r}"))
    fig.update_layout(title="Time in collectives per step, by rank", barmode="group",
                      xaxis_title="step", yaxis_title="ms", **_LAYOUT)
    return fig


def overlap_figure(shares: Sequence[KernelTypeShare]) -> go.Figure:
    """How much communication ran alone and how much overlapped compute (device time)."""
    comm = [s for s in shares if "COMMUNICATION" in s.kernel_type]
    fig = go.Figure(go.Bar(
        x=[s.total_ns / 1e6 for s in comm], y=[plain(s.kernel_type) for s in comm],
        orientation="h", text=[f"{s.percent:.1f} %" for s in comm], textposition="auto",
        hovertemplate="%{y}: %{x:.2f} ms<extra></extra>"))
    fig.update_layout(title="Communication time: alone vs overlapped", xaxis_title="ms",
                      **_LAYOUT)
    return fig
