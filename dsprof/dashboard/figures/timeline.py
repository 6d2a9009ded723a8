"""The timeline figure for one :class:`~dsprof.dashboard.timeline.Window`.

Spans are horizontal bars (``base`` = start, ``x`` = duration) on numbered lanes, one trace per
class (op phase, kernel kind, step, collective) so the legend explains the colours. Each bar's
customdata is its position in the index (a small int: JavaScript cannot hold an int64 ns
time or id exactly; a plain list, since plotly leaves typed-array customdata out of click
events), which the page maps back to the span when it is clicked. An aggregated window adds light "busy" bars per lane
whose hover says how many spans they stand for. Memory, when given, is a second row sharing the
time axis, in MiB. Times are milliseconds since the run's first span.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dsprof.dashboard.memseries import DeviceSeries
from dsprof.dashboard.text import plain, plain_all
from dsprof.dashboard.timeline import TimelineIndex, Window
from dsprof.units import MIB

COLORS = {
    "step": "#b0b0b0", "op forward": "#1f77b4", "op backward": "#ff7f0e",
    "op optimizer": "#2ca02c", "op data": "#9467bd", "op other": "#7f7f7f",
    "kernel compute": "#17becf", "kernel communication": "#d62728", "kernel memcpy": "#bcbd22",
    "kernel memset": "#8c564b", "kernel sync": "#e377c2", "kernel other": "#c7c7c7",
    # a collective (host-side call) is not a communication kernel: its own colour
    "collective": "#8c1d40",
    # kernels.category
    "kernel gemm": "#17becf", "kernel conv": "#1f9e89", "kernel attention": "#6a3d9a",
    "kernel elementwise": "#aec7e8", "kernel reduction": "#ffbb78", "kernel norm": "#98df8a",
}
HIGHLIGHT = "#e41a1c"
MEMORY_COLORS = ("#333333", "#8c564b", "#6a3d9a", "#b15928")
UIREVISION = "timeline"


def timeline_figure(index: TimelineIndex, win: Window, *,
                    highlight: np.ndarray | None = None, highlight_name: str = "finding evidence",
                    memory: Sequence[DeviceSeries] = (), memory_points: int = 800) -> go.Figure:
    """Args:
        index: the run's spans.
        win: what is visible (from ``index.window``).
        highlight: indices into ``index`` to draw on top, outlined (a finding's ops).
        memory: series to draw under the lanes, sampled for the same range.
    """
    rows = 2 if memory else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.78, 0.22] if rows == 2 else [1.0])
    x0_ms, x1_ms = win.x0 / 1e6, win.x1 / 1e6
    min_ms = (x1_ms - x0_ms) / 1500  # a span narrower than about a pixel is drawn a pixel wide
    if win.aggregated and len(win.runs.get("lane", ())):
        runs = win.runs
        fig.add_trace(go.Bar(
            base=runs["start"] / 1e6, x=(runs["end"] - runs["start"]) / 1e6, y=runs["lane"],
            orientation="h", width=0.8, name="busy (aggregated)",
            # grey, so it reads as "many spans here", never as a light-blue elementwise kernel
            marker={"color": "rgba(127,127,127,0.3)", "line": {"width": 0}},
            customdata=runs["spans"], hovertemplate="%{customdata:,} spans<extra>busy</extra>"),
            row=1, col=1)
    exact = win.exact
    for k, cls in enumerate(index.classes):
        sel = exact[index.cls[exact] == k]
        if len(sel):
            bars = _bars(index, sel, cls, COLORS.get(cls, "#7f7f7f"), min_ms)
            # every bar carries its name (the steps lane: its step number), shown inside it
            # once the zoom makes it wide enough; uniformtext hides labels that do not fit
            bars.text = [str(int(r)) for r in index.ref[sel]] if cls == "step" else \
                plain_all(index.names[index.name[sel]])
            bars.textposition = "inside"
            bars.insidetextanchor = "middle"
            bars.textfont = {"color": "#000000" if cls == "step" else "#ffffff"}
            fig.add_trace(bars, row=1, col=1)
    if highlight is not None and len(highlight):
        bars = _bars(index, highlight, highlight_name, HIGHLIGHT, min_ms)
        bars.marker.line = {"width": 2, "color": "#000000"}
        fig.add_trace(bars, row=1, col=1)
    for k, series in enumerate(memory):
        at = series.sample(win.x0, win.x1, memory_points)
        # a fixed colour per series: plotly's default follows the trace's position, which
        # changes between redraws as other traces come and go
        fig.add_trace(go.Scatter(
            x=series.ts[at] / 1e6, y=series.total[at] / MIB, mode="lines",
            line={"shape": "hv", "color": MEMORY_COLORS[k % len(MEMORY_COLORS)]},
            name=plain(f"memory {series.label}"),
            hovertemplate="%{y:,.1f} MiB<extra></extra>"),
            row=2, col=1)
    n_lanes = len(index.lane_labels)
    title = (f"{win.visible:,} spans in view: {len(win.runs.get('lane', ())):,} busy runs + "
             f"{len(exact):,} longest spans" if win.aggregated
             else f"{win.visible:,} spans in view (all drawn)")
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 13}}, barmode="overlay",
        height=max(320, 22 * n_lanes + 160 + (140 if rows == 2 else 0)),
        margin={"l": 130, "r": 20, "t": 40, "b": 40}, uirevision=UIREVISION,
        legend={"orientation": "h", "y": -0.08}, hovermode="closest", dragmode="zoom",
        uniformtext={"mode": "hide", "minsize": 9})
    fig.update_yaxes(tickvals=list(range(n_lanes)), ticktext=plain_all(index.lane_labels),
                     autorange="reversed", fixedrange=True, row=1, col=1)
    # ms with thousands separators and the unit on every tick (`21,850 ms`, never `21.85k`);
    # no axis title, which overlapped the legend below the plot
    fig.update_xaxes(range=[x0_ms, x1_ms], row=rows, col=1, tickformat=",~r",
                     ticksuffix=" ms", exponentformat="none")
    if rows == 2:
        fig.update_yaxes(title_text="MiB", fixedrange=True, tickformat=",~r",
                         exponentformat="none", row=2, col=1)
    return fig


def _bars(index: TimelineIndex, sel: np.ndarray, name: str, color: str,
          min_ms: float) -> go.Bar:
    start_ms = index.start[sel] / 1e6
    dur_ms = (index.end[sel] - index.start[sel]) / 1e6
    hover = [f"{plain(n)}<br>{d:.3f} ms" for n, d in zip(index.names[index.name[sel]], dur_ms)]
    # a thin white border between neighbouring spans wide enough to keep their colour, so
    # back-to-back ops do not merge into one block
    border = np.where(dur_ms > 4 * min_ms, 0.6, 0.0)
    return go.Bar(base=start_ms, x=np.maximum(dur_ms, min_ms), y=index.lane[sel],
                  orientation="h", width=0.8, name=plain(name), customdata=sel.tolist(),
                  hovertext=hover, hoverinfo="text",
                  marker={"color": color, "line": {"width": border.tolist(), "color": "#ffffff"}})


def parse_range(relayout: dict | None) -> tuple[float, float] | None | str:
    """The x range (ms) a plotly relayout event asks for, "reset" for autorange, else None."""
    if not relayout:
        return None
    for key, value in relayout.items():
        if key.startswith("xaxis") and key.endswith(".range[0]"):
            other = relayout.get(key.replace("[0]", "[1]"))
            if other is not None:
                return float(value), float(other)
        if key.startswith("xaxis") and key.endswith(".range") and len(value) == 2:
            return float(value[0]), float(value[1])
        if key.startswith("xaxis") and key.endswith(".autorange") and value:
            return "reset"
    return None
