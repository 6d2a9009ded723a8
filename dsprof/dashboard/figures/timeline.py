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
from dsprof.dashboard.text import fmt_ms, plain, plain_all
from dsprof.dashboard.timeline import TimelineIndex, Window, idle_gaps
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
HIGHLIGHT = "#000000"
"""Spans a finding (or a search) points at: black, cross-hatched in white, with a thick black
border. No category is black or patterned, and where a dark category (a collective) leaves
black too close, the white hatch is not: the outline never rests on a hue (red beside the red
communication kernels was missed), and reads the same to colour-blind eyes."""
HIGHLIGHT_PATTERN = {"shape": "x", "fgcolor": "#FFFFFF", "size": 6, "solidity": 0.25}
HIGHLIGHT_BORDER = {"width": 2.5, "color": "#000000"}
EVIDENCE_LINE = {"color": "#000000", "width": 2.5, "dash": "dash"}
"""A time range a finding points at: a dashed black frame over every lane, lightly shaded."""
MEMORY_COLORS = ("#333333", "#8c564b", "#6a3d9a", "#b15928")
UIREVISION = "timeline"
PLOT_PX = 1500
"""About the plot's width in pixels: what "a pixel" of a view is, on server and browser."""
LABEL_MIN_PX = 20
"""Bars narrower than this many pixels of the server's view carry no label (laying out a label
costs about four bars' drawing); zoomed in the browser LOCAL_ZOOM times, a bar that did not
get one is at most 60 px wide, after which the server is asked for a labelled figure."""
LABEL_MAX = 200
"""At most this many bars carry a label, the widest (measured in headless Chromium on 2 cores:
a 10 M-span run's 0.01 % view, ~1,000 bars of which 625 labelled, took 180-220 ms of the
page's CPU to draw, 90-100 ms without labels, 130-160 ms with these 200). A bar left without one makes the figure "unlabelled" (see
LOCAL_ZOOM), so a closer zoom fetches a figure that labels it."""
LOCAL_ZOOM = 3
FINEST_BIN_PX = 6
IDLE_MIN_PX = 3
"""Idle gaps narrower than this many pixels of the view are not drawn."""


def timeline_figure(index: TimelineIndex, win: Window, *,
                    view: tuple[int, int] | None = None,
                    highlight: np.ndarray | None = None, highlight_name: str = "finding evidence",
                    evidence_range: tuple[int, int] | None = None,
                    memory: Sequence[DeviceSeries] = (), memory_points: int = 800) -> go.Figure:
    """Args:
        index: the run's spans.
        win: what the server sends (from ``index.window``): the fetched range, which may be
            wider than the view so the browser can pan and zoom in it without asking again.
        view: the x range shown (ns since t0); the window's range when None.
        highlight: indices into ``index`` to draw on top, outlined (a finding's ops).
        evidence_range: a time range (ns since t0) a finding points at, outlined.
        memory: series to draw under the lanes, sampled for the same range.

    ``layout.meta`` tells the page's browser code what it holds: ``fetched`` and ``view``
    (ms: what was sent, what it was drawn for), ``res_ms``
    (the finest view, in ms per pixel, the drawing is faithful at; 0 at any zoom) and ``lanes``
    (the index lane of each drawn row: lanes with nothing in the fetched range are hidden).
    """
    view = view or (win.x0, win.x1)
    rows = 2 if memory else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[0.78, 0.22] if rows == 2 else [1.0])
    view_ms = (view[1] - view[0]) / 1e6
    min_ms = view_ms / PLOT_PX  # a span narrower than about a pixel is drawn a pixel wide
    exact = win.exact
    hl = highlight if highlight is not None else np.zeros(0, np.int64)
    runs = win.runs if win.aggregated else {}
    shown = np.unique(np.concatenate([index.lane[exact], index.lane[hl],
                                      runs.get("lane", np.zeros(0, np.int64))]).astype(np.int64))
    if not len(shown):
        shown = np.arange(len(index.lane_labels))
    row_of = np.full(len(index.lane_labels) + 1, -1, np.int64)
    row_of[shown] = np.arange(len(shown))
    if len(runs.get("lane", ())):
        fig.add_trace(go.Bar(
            base=runs["start"] / 1e6, x=(runs["end"] - runs["start"]) / 1e6,
            y=row_of[runs["lane"]], orientation="h", width=0.8, name="busy (aggregated)",
            # grey, so it reads as "many spans here", never as a light-blue elementwise kernel
            marker={"color": "rgba(127,127,127,0.3)", "line": {"width": 0}},
            customdata=runs["spans"], hovertemplate="%{customdata:,} spans<extra>busy</extra>"),
            row=1, col=1)
    gaps = idle_gaps(index, win, IDLE_MIN_PX * min_ms * 1e6)
    if len(gaps["lane"]):
        what = [index.idle_kinds.get(int(k), "") for k in gaps["lane"]]
        fig.add_trace(go.Bar(
            base=gaps["start"] / 1e6, x=(gaps["end"] - gaps["start"]) / 1e6,
            y=row_of[gaps["lane"]], orientation="h", width=0.5, name="idle",
            # hatched and thin: an absence of work, never mistaken for a span
            marker={"color": "rgba(0,0,0,0)", "line": {"width": 0},
                    "pattern": {"shape": "/", "fgcolor": "#9a9a9a", "size": 6}},
            hovertext=[f"{w} idle {fmt_ms(d)}" for w, d in
                       zip(what, (gaps["end"] - gaps["start"]) / 1e6)],
            hoverinfo="text"), row=1, col=1)
    widened = unlabelled = False
    label_ms = _label_min_ms(index, exact, LABEL_MIN_PX * min_ms)
    for k, cls in enumerate(index.classes):
        sel = exact[index.cls[exact] == k]
        if len(sel):
            bars = _bars(index, sel, cls, COLORS.get(cls, "#7f7f7f"), min_ms, row_of)
            widened |= bool(((index.end[sel] - index.start[sel]) / 1e6 < min_ms).any())
            # a bar carries its name (the steps lane: its step number), shown inside it once
            # the zoom makes it wide enough (uniformtext hides labels that do not fit). Only
            # bars that can get that wide before the browser asks for finer detail carry one:
            # laying out a label costs about as much as drawing four bars.
            labels = [str(int(r)) for r in index.ref[sel]] if cls == "step" else \
                plain_all(index.names[index.name[sel]])
            wide = ((index.end[sel] - index.start[sel]) / 1e6 >= label_ms) \
                | (cls == "step")  # few, and their numbers are how a lane is read
            bars.text = [t if w else "" for t, w in zip(labels, wide)]
            unlabelled |= not wide.all()
            bars.textposition = "inside"
            bars.insidetextanchor = "middle"
            # never turned on its side to fit a narrow bar (a step number read vertically):
            # a label that does not fit level is hidden (uniformtext)
            bars.textangle = 0
            bars.textfont = {"color": "#000000" if cls == "step" else "#ffffff"}
            fig.add_trace(bars, row=1, col=1)
    if len(hl):
        bars = _bars(index, hl, highlight_name, HIGHLIGHT, min_ms, row_of)
        bars.marker.line = HIGHLIGHT_BORDER
        bars.marker.pattern = HIGHLIGHT_PATTERN
        # named in white on the black (hidden, as other labels, where it does not fit): the
        # outlined op is the one the finding is about
        bars.text = plain_all(index.names[index.name[hl]])
        bars.textposition = "inside"
        bars.insidetextanchor = "middle"
        bars.textangle = 0
        bars.textfont = {"color": "#ffffff"}
        fig.add_trace(bars, row=1, col=1)
    if evidence_range is not None:
        # the range a finding points at, outlined over every lane (and shaded lightly)
        fig.add_shape(type="rect", x0=evidence_range[0] / 1e6, x1=evidence_range[1] / 1e6,
                      y0=0, y1=1, yref="y domain", xref="x", name="evidence range",
                      line=EVIDENCE_LINE, fillcolor="rgba(0,0,0,0.05)", layer="above")
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
    n_rows = len(shown)
    title = (f"{win.visible:,} spans in the fetched range: "
             f"{len(runs.get('lane', ())):,} busy runs + {len(exact):,} longest spans"
             if win.aggregated else f"{win.visible:,} spans in the fetched range (all drawn)")
    # the finest view (ms per pixel) this drawing is faithful at, below which the browser asks
    # again: aggregated bins at most FINEST_BIN_PX wide; exact bars zoomed at most LOCAL_ZOOM
    # times (a pixel-wide sliver stays narrow, an unlabelled bar does not grow wide enough
    # for its name), or any zoom when nothing was widened or left unlabelled
    if win.aggregated:
        res_ms = win.bin_ns / 1e6 / FINEST_BIN_PX
    else:
        res_ms = min_ms / LOCAL_ZOOM if widened or unlabelled else 0.0
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 13}}, barmode="overlay",
        height=max(320, 22 * n_rows + 160 + (140 if rows == 2 else 0)),
        margin={"l": 130, "r": 20, "t": 40, "b": 40}, uirevision=UIREVISION,
        legend={"orientation": "h", "y": -0.08}, hovermode="closest", dragmode="zoom",
        # box select (the toolbar) picks a time range for the range summary
        selectdirection="h",
        uniformtext={"mode": "hide", "minsize": 9},
        meta={"fetched": [win.x0 / 1e6, win.x1 / 1e6], "view": [view[0] / 1e6, view[1] / 1e6],
              "res_ms": res_ms,
              "lanes": shown.tolist()})
    fig.update_yaxes(tickvals=list(range(n_rows)),
                     ticktext=plain_all(index.lane_labels[k] for k in shown),
                     # fixed, top row first: autorange left empty rows above the lanes
                     range=[n_rows - 0.5, -0.5], fixedrange=True, row=1, col=1)
    # ms with thousands separators and the unit on every tick (`21,850 ms`, never `21.85k`);
    # no axis title, which overlapped the legend below the plot
    fig.update_xaxes(range=[view[0] / 1e6, view[1] / 1e6], row=rows, col=1, tickformat=",~r",
                     ticksuffix=" ms", exponentformat="none")
    if rows == 2:
        fig.update_yaxes(title_text="MiB", fixedrange=True, tickformat=",~r",
                         exponentformat="none", row=2, col=1)
    return fig


def _label_min_ms(index: TimelineIndex, exact: np.ndarray, floor_ms: float) -> float:
    """The narrowest bar (ms) that carries a label: ``floor_ms``, raised so that at most
    LABEL_MAX bars other than steps get one."""
    step = np.asarray([c == "step" for c in index.classes], bool)
    dur = (index.end[exact] - index.start[exact]) / 1e6
    dur = dur[~step[index.cls[exact]] & (dur >= floor_ms)]
    if len(dur) <= LABEL_MAX:
        return floor_ms
    return float(np.partition(dur, len(dur) - LABEL_MAX)[len(dur) - LABEL_MAX])


def _bars(index: TimelineIndex, sel: np.ndarray, name: str, color: str,
          min_ms: float, row_of: np.ndarray) -> go.Bar:
    start_ms = index.start[sel] / 1e6
    dur_ms = (index.end[sel] - index.start[sel]) / 1e6
    hover = [f"{plain(n)}<br>{d:.3f} ms" for n, d in zip(index.names[index.name[sel]], dur_ms)]
    # a thin white border between neighbouring spans wide enough to keep their colour, so
    # back-to-back ops do not merge into one block
    border = np.where(dur_ms > 4 * min_ms, 0.6, 0.0)
    # selected/unselected: a box selection (for the range summary) must not dim the bars
    return go.Bar(base=start_ms, x=np.maximum(dur_ms, min_ms), y=row_of[index.lane[sel]],
                  selected={"marker": {"opacity": 1}}, unselected={"marker": {"opacity": 1}},
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
