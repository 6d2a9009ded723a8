"""Overview figures: step time across the run, time by phase, GPU time by kernel type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa

from dsprof.dashboard.palette import BAD, color_for, distinct_colors
from dsprof.dashboard.text import plain
from dsprof.metrics.step_breakdown import StepBreakdown
from dsprof.reports.summary import PhaseTime, StepStats

# the order a CPU step runs in, bottom-up in its stacked bar
CPU_STACK = ("forward", "backward", "communication", "optimizer", "data loading", "other ops",
             "untraced")

_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "height": 320}


def step_time_figure(steps: pa.Table, stats: StepStats | None) -> go.Figure:
    """Step duration (ms) per step and rank; outlier steps (from ``summarize``) marked.

    Args:
        steps: rank, step, dur_ns, profiled [, data_wait_ns] (all steps of the run); the
            time waiting for DataLoader batches is drawn as its own line when recorded.
        stats: the analyzer's step statistics (outliers, excluded step 0), or None.
    """
    fig = go.Figure()
    rank = steps.column("rank").to_numpy(zero_copy_only=False)
    step = steps.column("step").to_numpy(zero_copy_only=False)
    ms = steps.column("dur_ns").to_numpy(zero_copy_only=False) / 1e6
    profiled = np.asarray(steps.column("profiled").to_pylist(), dtype=bool)
    # plain SVG scatter: the dashboard ships plotly.js's basic bundle (no WebGL traces); past
    # 5,000 steps a line without markers (one SVG path whatever the length)
    scatter = go.Scatter
    many = len(ms) > 5000
    colors = distinct_colors([f"rank {r}" for r in np.unique(rank)])
    for r in np.unique(rank):
        m = rank == r
        fig.add_trace(scatter(x=step[m], y=ms[m], mode="lines" if many else "lines+markers",
                              name=f"rank {r}", marker={"size": 5},
                              line_color=colors[f"rank {r}"],
                              hovertemplate="step %{x}: %{y:.2f} ms"))
    if "data_wait_ns" in steps.column_names:
        wait = steps.column("data_wait_ns").to_numpy(zero_copy_only=False).astype(float) / 1e6
        if np.isfinite(wait).any() and np.nansum(wait) > 0:
            fig.add_trace(scatter(x=step, y=wait, mode="lines", name="waiting for data",
                                  line={"dash": "dash", "color": "#7F7F7F"},
                                  hovertemplate="step %{x}: %{y:.2f} ms waiting for data"))
    if profiled.any():
        fig.add_trace(scatter(x=step[profiled], y=ms[profiled], mode="markers",
                              name="profiled (op by op)",
                              marker={"symbol": "square-open", "size": 9, "color": "#333"}))
    if stats and stats.outliers:
        xs, ys = zip(*stats.outliers)
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="markers", name="outlier",
                                 marker={"symbol": "x", "size": 11, "color": BAD}))
    if stats:
        fig.add_hline(y=stats.median_ms, line_dash="dot", line_color="#555",
                      annotation_text=f"median {stats.median_ms:.2f} ms")
        if stats.excluded and stats.median_ms:
            # step 0 (setup + first iteration) would flatten the rest of the chart
            top = max(stats.max_ms, stats.median_ms) * 1.3
            if max(ms) > top:
                fig.update_yaxes(range=[0, top])
    # whole steps only: plotly would otherwise tick 551.2, 551.4 between two steps
    span = int(step.max() - step.min()) if len(step) else 0
    fig.update_xaxes(tick0=int(step.min()) if len(step) else 0, dtick=max(1, -(-span // 10)))
    fig.update_layout(title="Step time", xaxis_title="step", yaxis_title="ms", **_LAYOUT)
    return fig


def step_breakdown_figure(bd: StepBreakdown, max_bars: int = 120) -> go.Figure:
    """Each profiled step's wall time as a stack of categories (``step_breakdown``), one bar
    per (rank, step); a category's colour is fixed (``palette``), untraced time is hatched
    grey so it reads without colour.

    More bars than ``max_bars`` (SVG bars cost ~0.3 ms each in the browser): the ranks of a
    step are averaged into one bar, and if the steps alone are still too many, every k-th
    step is drawn; the title says which.
    """
    rank, step, dur, ns = bd.rank, bd.step, bd.dur_ns, bd.ns
    ranks = np.unique(rank)
    note = ""
    if len(bd) > max_bars and len(ranks) > 1:
        steps, inv = np.unique(step, return_inverse=True)
        count = np.bincount(inv, minlength=len(steps))
        ns = np.stack([np.bincount(inv, weights=ns[:, k], minlength=len(steps)) / count
                       for k in range(ns.shape[1])], axis=1)
        dur = np.bincount(inv, weights=dur, minlength=len(steps)) / count
        step, rank = steps, np.zeros(len(steps), np.int64)
        note, ranks = f", mean of {len(np.unique(bd.rank))} ranks", ranks[:1]
    if len(step) > max_bars:
        every = -(-len(step) // max_bars)
        rank, step, dur, ns = rank[::every], step[::every], dur[::every], ns[::every]
        note += f", one step in {every}"
    x = [f"r{r} s{s}" if len(ranks) > 1 else str(s) for r, s in zip(rank, step)]
    fig = go.Figure()
    # stacked bottom-up in the order a step runs (CPU) or busiest first (GPU); the priority
    # order that assigned each instant is the breakdown's own
    order = bd.categories if bd.gpu else CPU_STACK
    for cat in order:
        k = bd.categories.index(cat)
        ms = ns[:, k] / 1e6
        if not ms.any():
            continue
        pct = 100 * ns[:, k] / np.maximum(dur, 1)
        quiet = k == len(bd.categories) - 1  # untraced
        fig.add_trace(go.Bar(
            x=x, y=ms, name=cat, customdata=pct,
            marker={"color": color_for(cat), "line": {"width": 0},
                    **({"pattern": {"shape": ".", "fgcolor": "#777", "size": 6}} if quiet
                       else {})},
            hovertemplate=f"{cat}: %{{y:,.2f}} ms (%{{customdata:.1f}} %)<extra>%{{x}}</extra>"))
    what = "GPU run: device first" if bd.gpu else "CPU run: by phase"
    fig.update_layout(title=f"Step time breakdown ({what}{note})", barmode="stack",
                      xaxis={"title": "rank, step" if len(ranks) > 1 else "step",
                             "type": "category"},
                      yaxis_title="ms", legend={"traceorder": "normal"}, **_LAYOUT)
    return fig


def phase_figure(phases: Sequence[PhaseTime],
                 title: str = "Time by phase (profiled steps)") -> go.Figure:
    """Time by phase (ms and percent): over the profiled steps, or a full-speed step's."""
    fig = go.Figure(go.Bar(
        x=[p.ms for p in phases], y=[p.phase for p in phases], orientation="h",
        text=[f"{p.percent:.1f} %" for p in phases], textposition="auto",
        marker={"color": "#1f77b4"}, hovertemplate="%{y}: %{x:.2f} ms<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="ms",
                      yaxis={"autorange": "reversed"}, **_LAYOUT)
    return fig


def kernel_type_figure(kernel_types: Sequence[dict[str, Any]]) -> go.Figure:
    """GPU time by kernel type (HTA's interval-merged breakdown)."""
    colors = distinct_colors([k["kernel_type"] for k in kernel_types])
    fig = go.Figure(go.Pie(
        labels=[plain(k["kernel_type"]) for k in kernel_types],
        marker={"colors": [colors[k["kernel_type"]] for k in kernel_types]},
        values=[k["total_ns"] / 1e6 for k in kernel_types], hole=0.4, sort=False,
        hovertemplate="%{label}: %{value:.2f} ms (%{percent})<extra></extra>"))
    fig.update_layout(title="GPU time by kernel type", **_LAYOUT)
    return fig


def top_ops_figure(top_ops: Sequence[Any], n: int = 10) -> go.Figure:
    """Self time of the top ops (``summarize``'s top_ops)."""
    ops = list(top_ops)[:n]
    fig = go.Figure(go.Bar(
        x=[o.self_ms for o in ops], y=[plain(o.name) for o in ops], orientation="h",
        text=[f"{o.percent:.1f} %" for o in ops], textposition="auto",
        hovertemplate="%{y}: %{x:.2f} ms self<extra></extra>"))
    fig.update_layout(title="Top ops by self time", xaxis_title="ms",
                      yaxis={"autorange": "reversed"}, **_LAYOUT)
    return fig


def kernel_category_figure(categories: Sequence[dict[str, Any]]) -> go.Figure:
    """GPU time by kernel category (``gpu_report``), each bar labelled with the share of its
    time on Tensor Cores."""
    fig = go.Figure(go.Bar(
        x=[c["gpu_ms"] for c in categories], y=[plain(c["category"]) for c in categories],
        orientation="h", textposition="auto",
        text=[f"{c['share'] * 100:.1f} % | Tensor Cores {c['tensor_core_share'] * 100:.0f} %"
              for c in categories],
        hovertemplate="%{y}: %{x:.2f} ms<extra></extra>"))
    fig.update_layout(title="GPU time by kernel category", xaxis_title="ms",
                      yaxis={"autorange": "reversed"}, **_LAYOUT)
    return fig


SAMPLED = (("cpu_util", "CPU % (of one core)"), ("gpu_util", "GPU busy %"),
           ("mem_util", "GPU memory bandwidth %"), ("tensor_util", "Tensor Core %"),
           ("sm_util", "SMs busy %"))


def samples_figure(samples: pa.Table) -> go.Figure:
    """Sampled utilizations over time (``device_samples``), one line per metric and rank;
    columns that are all null (no GPU, no NVML) are left out.

    Args:
        samples: rank, t_ms (ms since the run's first sample) and any of the SAMPLED columns.
    """
    fig = go.Figure()
    rank = samples.column("rank").to_numpy(zero_copy_only=False)
    t = samples.column("t_ms").to_numpy(zero_copy_only=False)
    colors = distinct_colors([f"{col} r{r}" for col, _ in SAMPLED for r in np.unique(rank)])
    for col, label in SAMPLED:
        if col not in samples.column_names:
            continue
        y = samples.column(col).to_numpy(zero_copy_only=False).astype(float)
        for r in np.unique(rank):
            m = (rank == r) & np.isfinite(y)
            if m.any():
                fig.add_trace(go.Scatter(x=t[m], y=y[m], mode="lines",
                                         line_color=colors[f"{col} r{r}"],
                                         name=f"{label} r{r}" if len(np.unique(rank)) > 1
                                         else label))
    fig.update_layout(title="Sampled utilization", xaxis_title="ms", yaxis_title="%",
                      **_LAYOUT)
    return fig
