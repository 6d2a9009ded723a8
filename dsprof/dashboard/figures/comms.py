"""Communication figures from the ``comms`` table (one row per collective call) and the
communication analyzers (``comm_overlap``, ``comm_skew``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa

from dsprof.dashboard.palette import BAD, BAD_PATTERN, GOOD, distinct_colors
from dsprof.dashboard.text import plain
from dsprof.metrics.comm.overlap import Overlap
from dsprof.metrics.comm.skew import RankSkew
from dsprof.units import MIB

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 340}


def bandwidth_figure(comms: pa.Table) -> go.Figure:
    """Bus bandwidth of every call against its size, one colour per collective.

    Args:
        comms: collective, in_bytes, busbw_gbps (calls without one are left out).
    """
    fig = go.Figure()
    coll = np.asarray(comms.column("collective").to_pylist(), dtype=object)
    size = comms.column("in_bytes").to_numpy(zero_copy_only=False).astype(float)
    bw = comms.column("busbw_gbps").to_numpy(zero_copy_only=False).astype(float)
    names = sorted({c for c in coll if c is not None})
    colors = distinct_colors(names)
    symbols = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
    for k, name in enumerate(names):
        m = (coll == name) & np.isfinite(bw)
        if m.any():  # colour and marker shape both tell the collectives apart
            fig.add_trace(go.Scatter(x=size[m] / MIB, y=bw[m], mode="markers", name=plain(name),
                                     marker={"color": colors[name],
                                             "symbol": symbols[k % len(symbols)], "size": 8},
                                     hovertemplate="%{x:,.2f} MiB: %{y:.2f} GB/s"))
    # sizes in MiB (binary, as every other size on the dashboard); bandwidth in GB/s
    # (decimal, as NCCL's tests and link specs state it)
    fig.update_layout(title="Bus bandwidth per call",
                      xaxis={"type": "log", "title": "message size (MiB)", "tickformat": ",~g"},
                      yaxis_title="bus bandwidth (GB/s)", **_LAYOUT)
    return fig


def per_rank_step_figure(per_rank: pa.Table) -> go.Figure:
    """Time in collectives per step and rank; a rank that waits longer stands out.

    Args:
        per_rank: rank, step, comm_ns.
    """
    fig = go.Figure()
    rank = per_rank.column("rank").to_numpy(zero_copy_only=False)
    step = per_rank.column("step").to_numpy(zero_copy_only=False)
    ms = per_rank.column("comm_ns").to_numpy(zero_copy_only=False) / 1e6
    colors = distinct_colors([f"rank {r}" for r in np.unique(rank)])
    for r in np.unique(rank):
        m = rank == r
        # steps as categories: a numeric axis put ticks at steps 3.5, 4.5, ...
        fig.add_trace(go.Bar(x=[str(s) if s >= 0 else "no step" for s in step[m]], y=ms[m],
                             name=f"rank {r}", marker_color=colors[f"rank {r}"]))
    fig.update_layout(title="Time in collectives per step, by rank", barmode="group",
                      xaxis_title="step", yaxis_title="ms", **_LAYOUT)
    fig.update_xaxes(type="category")
    return fig


def overlap_figure(overlaps: Sequence[Overlap]) -> go.Figure:
    """Per rank and step: communication overlapped by compute and communication exposed
    (``comm_overlap``), stacked."""
    label = [f"r{o.rank} s{o.step}" if o.step is not None else f"r{o.rank}" for o in overlaps]
    fig = go.Figure([
        go.Bar(x=label, y=[o.overlap_ns / 1e6 for o in overlaps], name="overlapped by compute",
               marker_color=GOOD, text=[f"hidden {o.overlap_pct:.0f} %" for o in overlaps],
               textposition="inside"),
        # exposed is hatched and says so in its text: colour is never the only cue
        go.Bar(x=label, y=[o.exposed_ns / 1e6 for o in overlaps], name="exposed (hatched)",
               marker={"color": BAD, "pattern": BAD_PATTERN},
               text=[f"exposed {100 - o.overlap_pct:.0f} %" for o in overlaps],
               textposition="inside"),
    ])
    fig.update_layout(title="Communication per rank and step: overlapped vs exposed",
                      barmode="stack", yaxis_title="ms", **_LAYOUT)
    return fig


def skew_figure(skews: Sequence[RankSkew]) -> go.Figure:
    """Per rank: time it waited for later ranks, and the delay it caused when it came last
    (``comm_skew``)."""
    ranks = [f"rank {s.rank}" for s in skews]
    fig = go.Figure([
        go.Bar(x=ranks, y=[s.wait_ns / 1e6 for s in skews], name="waited for others",
               marker_color="#56B4E9"),
        go.Bar(x=ranks, y=[s.gap_caused_ns / 1e6 for s in skews],
               name="delay caused (last, hatched)",
               marker={"color": BAD, "pattern": BAD_PATTERN},
               text=[f"last {s.times_last}/{s.collectives}" for s in skews],
               textposition="auto"),
    ])
    fig.update_layout(title="Arrival skew per rank", barmode="group", yaxis_title="ms",
                      **_LAYOUT)
    return fig
