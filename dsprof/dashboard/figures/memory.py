"""Memory figures: over time (stacked by category when known), what held the peak, modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa

from dsprof.dashboard.memseries import DeviceSeries
from dsprof.dashboard.palette import MEMORY_COLORS, distinct_colors
from dsprof.dashboard.text import fmt_bytes, plain
from dsprof.reports.memory import DevicePeak
from dsprof.reports.summary import MemoryPeak
from dsprof.units import MIB

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 360}
CATEGORY_COLORS = MEMORY_COLORS
# MiB axes: plain numbers with thousands separators ("1,536"), never plotly's SI "1.5k"
# beside a MiB title (a kilo of mebibytes reads as a decimal unit)
MIB_AXIS = {"title": "MiB", "tickformat": ",~g", "rangemode": "tozero"}


def memory_over_time_figure(series: Sequence[DeviceSeries], x0: int | None = None,
                            x1: int | None = None, points: int = 1000) -> go.Figure:
    """Bytes allocated over time per rank/device, stacked by category when the run has them;
    ``points`` bins per series, each drawn at its peak (see memseries)."""
    fig = go.Figure()
    totals = distinct_colors([s.label for s in series])  # one fixed colour per device
    for s in series:
        if not len(s.ts):
            continue
        lo = int(s.ts[0]) if x0 is None else x0
        hi = int(s.ts[-1]) + 1 if x1 is None else x1
        at = s.sample(lo, hi, points)
        t_ms = s.ts[at] / 1e6
        cats = s.live_by_category(at) if s.categories else {}
        if cats:
            for name, live in cats.items():
                fig.add_trace(go.Scatter(
                    x=t_ms, y=live / MIB, mode="lines", stackgroup=s.label, line={"shape": "hv"},
                    name=plain(f"{s.label} {name}"),
                    line_color=CATEGORY_COLORS.get(name), hovertemplate="%{y:,.1f} MiB"))
        fig.add_trace(go.Scatter(
            x=t_ms, y=s.total[at] / MIB, mode="lines", line={"shape": "hv", "width": 1.5,
                                                        "color": "#000" if cats and
                                                        len(series) == 1 else totals[s.label]},
            name=plain(f"{s.label} allocated"), hovertemplate="%{y:,.1f} MiB"))
    fig.update_layout(title="Memory over time", xaxis_title="ms since the run's first span",
                      yaxis=MIB_AXIS, hovermode="x unified", **_LAYOUT)
    return fig


def peak_breakdown_figure(peaks: Sequence[MemoryPeak]) -> go.Figure:
    """What was live at each device's peak, by category (``summarize``'s memory peaks)."""
    fig = go.Figure()
    with_cats = [p for p in peaks if p.by_category]
    for p in with_cats:
        for cat, nbytes in p.by_category.items():
            fig.add_trace(go.Bar(x=[nbytes / MIB], y=[plain(f"r{p.rank} {p.device}")],
                                 orientation="h", name=plain(cat),
                                 marker_color=CATEGORY_COLORS.get(cat),
                                 hovertemplate=f"{plain(cat)}: {fmt_bytes(nbytes)}"
                                               "<extra></extra>"))
    others = [p for p in peaks if not p.by_category]
    if others:
        fig.add_trace(go.Bar(x=[p.peak_bytes / MIB for p in others],
                             y=[plain(f"r{p.rank} {p.device} ({p.source})") for p in others],
                             orientation="h", name="peak", marker_color="#7f7f7f",
                             text=[fmt_bytes(p.peak_bytes) for p in others]))
    fig.update_layout(title="Peak memory", barmode="stack", xaxis=MIB_AXIS, **_LAYOUT)
    return fig


def module_activation_figure(modules: pa.Table, top: int = 20) -> go.Figure:
    """Activation bytes saved for backward per module (``modules`` table), largest first."""
    rows = sorted(modules.to_pylist(), key=lambda r: -(r.get("activation_bytes") or 0))[:top]
    fig = go.Figure(go.Bar(
        x=[(r.get("activation_bytes") or 0) / MIB for r in rows],
        y=[plain(f"r{r.get('rank', 0)} {r.get('name')}") for r in rows], orientation="h",
        text=[fmt_bytes(r.get("activation_bytes")) for r in rows], textposition="auto",
        textangle=0, marker_color="#0072B2", insidetextanchor="end",
        hovertemplate="%{y}: %{x:,.1f} MiB<extra></extra>"))
    fig.update_layout(title="Activations per module", xaxis=MIB_AXIS,
                      yaxis={"autorange": "reversed"}, **_LAYOUT)
    return fig


SERIES_CATEGORIES = ("parameter", "gradient", "optimizer_state", "activation", "input",
                     "temporary", "other")


def memory_series_figure(series: pa.Table) -> go.Figure:
    """Live bytes by category over time, stacked, per rank/device, from the precomputed
    ``memory_series`` table (already a few thousand points per capture, peaks kept).

    Args:
        series: rank, device, t_ms (ms since the run's first span), total and any of
            SERIES_CATEGORIES.
    """
    fig = go.Figure()
    rank = series.column("rank").to_numpy(zero_copy_only=False)
    device = np.asarray(series.column("device").to_pylist(), dtype=object)
    t = series.column("t_ms").to_numpy(zero_copy_only=False)
    keys = sorted({(int(r), str(d)) for r, d in zip(rank, device)})
    totals = distinct_colors([f"r{r} {d}" for r, d in keys])
    for r, d in keys:
        m = (rank == r) & (device == d)
        label = f"r{r} {d}"
        for cat in SERIES_CATEGORIES:
            if cat not in series.column_names:
                continue
            y = series.column(cat).to_numpy(zero_copy_only=False)[m].astype(float) / MIB
            if np.nansum(y) > 0:
                fig.add_trace(go.Scatter(x=t[m], y=y, mode="lines", stackgroup=label,
                                         line={"shape": "hv", "width": 0.5},
                                         line_color=CATEGORY_COLORS.get(cat),
                                         name=plain(f"{label} {cat}"),
                                         hovertemplate="%{y:,.1f} MiB"))
        total = series.column("total").to_numpy(zero_copy_only=False)[m].astype(float) / MIB
        fig.add_trace(go.Scatter(x=t[m], y=total, mode="lines", name=plain(f"{label} total"),
                                 line={"shape": "hv", "width": 1.5,
                                       "color": "#000" if len(keys) == 1 else totals[label]},
                                 hovertemplate="%{y:,.1f} MiB"))
    fig.update_layout(title="Memory over time by category",
                      xaxis_title="ms since the run's first span", yaxis=MIB_AXIS,
                      hovermode="x unified", **_LAYOUT)
    return fig


def peak_holdings_figure(peaks: Sequence[DevicePeak], by: str = "category",
                         top: int = 10) -> go.Figure:
    """What was live at each device's peak (``memory_report``), by category or module, as
    stacked bars; the unattributed rest in grey. Modules past the ``top`` largest are summed
    into "other modules", so no two of the drawn ones share a colour."""
    fig = go.Figure()
    held: dict[str, list[float]] = {}  # key -> MiB per peak
    for k, p in enumerate(peaks):
        for h in getattr(p, f"by_{by}"):
            held.setdefault(h.key, [0.0] * len(peaks))[k] += h.bytes / MIB
    if by != "category" and len(held) > top:
        ranked = sorted(held, key=lambda key: -sum(held[key]))
        rest = [sum(held[key][k] for key in ranked[top:]) for k in range(len(peaks))]
        held = {key: held[key] for key in ranked[:top]}
        held[f"other modules ({len(ranked) - top})"] = rest
    colors = MEMORY_COLORS if by == "category" else distinct_colors(list(held))
    ys = [plain(f"r{p.rank} {p.device}") for p in peaks]
    for key, xs in held.items():
        color = "#999999" if key.startswith("other modules (") else colors.get(key)
        fig.add_trace(go.Bar(x=xs, y=ys, orientation="h", name=plain(key), marker_color=color,
                             hovertemplate=f"{plain(key)}: %{{x:,.1f}} MiB<extra></extra>"))
    if any(p.unattributed for p in peaks):
        fig.add_trace(go.Bar(x=[p.unattributed / MIB for p in peaks],
                             y=[plain(f"r{p.rank} {p.device}") for p in peaks],
                             orientation="h", name="unattributed",
                             marker_color=MEMORY_COLORS["unattributed"]))
    # the legend names the colours even with one trace ("unknown", "(no module)")
    fig.update_layout(title=f"Live at the peak, by {by}", barmode="stack", xaxis=MIB_AXIS,
                      showlegend=True, **_LAYOUT)
    return fig
