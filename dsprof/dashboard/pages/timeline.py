"""Timeline: steps, ops, kernels, collectives, idle gaps and memory on lanes.

Query parameters (all optional), used by finding evidence links:
``start``/``end`` (ns on the run clock), ``step``, ``rank`` and ``ops`` (comma-separated
``ops.id`` values to outline). The server sends the level-of-detail figure (at most 1,000
shapes; 2,000 for the whole run) for the view plus half a view on each side. Pan and zoom inside that fetched range
redraw in the browser with no request (``assets/timeline_view.js`` decides); the server is
asked again only when the view leaves it or needs finer detail than it holds. A box selection
summarizes its range (server side, on the whole index); a click shows the span's details.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dash import Input, Output, Patch, State, dcc, html, no_update

from dsprof.dashboard.figures.timeline import parse_range, timeline_figure
from dsprof.dashboard.pages.common import GRAPH_CONFIG, missing
from dsprof.dashboard.source import RunSource
from dsprof.dashboard.text import fmt_ns
from dsprof.dashboard.timeline import COMM, KERNEL, OP, STEP, fetch_range
from dsprof.dashboard.timeline_queries import SEARCH_LIMIT, launch_flow, range_summary, search_spans
from dsprof.sqlsafe import idents

PATH = "/timeline"
TITLE = "Timeline"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def highlight_indices(src: RunSource, rank: int | None, op_ids: list[int]) -> np.ndarray:
    """Timeline positions of the given ops (of ``rank``, or any rank when None)."""
    index = src.timeline
    if not op_ids:
        return np.zeros(0, np.int64)
    mask = (index.kind == OP) & np.isin(index.ref, np.asarray(op_ids, np.int64))
    if rank is not None:
        mask &= index.rank == rank
    return np.flatnonzero(mask)


def initial_range(src: RunSource, query: dict[str, str],
                  highlight: np.ndarray) -> tuple[int | None, int | None]:
    """The range to open at (ns since t0), from the most precise thing the query names: a
    start/end, else the highlighted ops, else a step (of ``rank``), else an instant (1 ms
    around ``start``); padded by a tenth on each side so the context shows. (None, None) for
    the whole run."""
    index = src.timeline
    start, end = _int(query.get("start")), _int(query.get("end"))
    step, rank = _int(query.get("step")), _int(query.get("rank"))
    if start is not None and end is not None and end >= start:
        x0, x1 = start, end
    elif len(highlight):
        x0 = int(index.start[highlight].min()) + index.t0_ns
        x1 = int(index.end[highlight].max()) + index.t0_ns
    elif step is not None and src.has("steps"):
        rows = src.sql("SELECT min(start_ns), max(end_ns) FROM steps WHERE step = ? "
                       "AND (? IS NULL OR rank = ?)", [step, rank, rank])
        if rows[0][0] is None:
            return None, None
        x0, x1 = int(rows[0][0]), int(rows[0][1])
    elif start is not None:
        x0, x1 = start - 1_000_000, start + 1_000_000
    else:
        return src.profiled_window
    pad = max((x1 - x0) // 10, 1000)
    return x0 - pad - index.t0_ns, x1 + pad - index.t0_ns


def flow_trace(src: RunSource, flow: tuple[int, int], lanes: list[int] | None = None) -> Any:
    """An arrow from the launching op's start to the kernel's start (ms since t0); ``lanes``
    is the figure's drawn lanes (row k shows lane ``lanes[k]``), None when every lane is
    drawn. None when either end's lane is hidden."""
    import plotly.graph_objects as go

    index = src.timeline
    op, kernel = flow
    xs = [float(index.start[op]) / 1e6, float(index.start[kernel]) / 1e6]
    ys = [int(index.lane[op]), int(index.lane[kernel])]
    if lanes is not None:
        if ys[0] not in lanes or ys[1] not in lanes:
            return None
        ys = [lanes.index(y) for y in ys]
    return go.Scatter(x=xs, y=ys, mode="lines+markers", name="launch", hoverinfo="skip",
                      line={"color": "#000000", "width": 1.5},
                      marker={"symbol": "arrow", "angleref": "previous", "size": [0, 12],
                              "color": "#000000"})


def profiled_window(src: RunSource) -> tuple[int | None, int | None]:
    """The profiled steps (ns since t0, padded by a tenth): where the ops and kernels are. A
    run's whole span is mostly unprofiled steps, in which the window is a sliver. (None, None)
    when no step is marked profiled, or every span falls in the window anyway."""
    index = src.timeline
    if not src.has("steps") or "profiled" not in src.columns("steps"):
        return None, None
    lo, hi = src.sql("SELECT min(start_ns), max(end_ns) FROM steps WHERE profiled")[0]
    if lo is None or hi is None or hi <= lo:
        return None, None
    x0, x1 = int(lo) - index.t0_ns, int(hi) - index.t0_ns
    span = int(index.end.max()) if len(index) else 0
    if x0 <= 0 and x1 >= span:
        return None, None
    pad = max((x1 - x0) // 10, 1000)
    return x0 - pad, x1 + pad


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    index = src.timeline
    if len(index) == 0:
        return html.Div([html.H2("Timeline"), missing(src.missing("ops"), "ops")])
    ops = [int(x) for x in query.get("ops", "").split(",") if x.strip().lstrip("-").isdigit()]
    hl = highlight_indices(src, _int(query.get("rank")), ops)
    step, rank = _int(query.get("step")), _int(query.get("rank"))
    if not len(hl) and step is not None:
        # a link to a whole step outlines that step's span, so the eye finds it
        mask = (index.kind == STEP) & (index.ref == step)
        if rank is not None:
            mask &= index.rank == rank
        hl = np.flatnonzero(mask)
    x0, x1 = initial_range(src, query, hl)
    start, end = _int(query.get("start")), _int(query.get("end"))
    evidence = (start - index.t0_ns, end - index.t0_ns) \
        if start is not None and end is not None and end >= start else None
    if not len(hl) and evidence is None and (x0, x1) == src.profiled_window:
        fig = src.opening_timeline  # the plain page: built in the background at start
    else:
        fig = view_figure(src, x0, x1, hl, evidence_range=evidence)
    notes = [missing(src.missing(t), t) for t in ("kernels", "comms") if not src.has(t)]
    return html.Div([
        html.H2("Timeline"),
        html.P(f"{len(index):,} spans on {len(index.lane_labels)} lanes. Opens on the profiled "
               "steps. Drag or scroll to zoom, W/S zoom and A/D pan, double-click to see the "
               "whole run; box select (toolbar) a range to summarize it; click a span for its "
               "details. Hatched bars are idle time.", id="timeline-help"),
        html.Div([dcc.Input(id="timeline-search", type="search", debounce=True,
                            placeholder="find a span by name (Enter)"),
                  html.Span(id="timeline-search-result")], className="search"),
        dcc.Graph(id="timeline-graph", figure=fig, config=TIMELINE_CONFIG),
        dcc.Store(id="timeline-highlight", data=hl.tolist()),
        dcc.Store(id="timeline-highlight-name", data="finding evidence"),
        dcc.Store(id="timeline-evidence", data=list(evidence) if evidence else None),
        dcc.Store(id="timeline-lanes", data=fig.layout.meta["lanes"]),
        dcc.Store(id="timeline-range"),
        html.Div(_summary_list(range_summary(src, x0, x1), "In the opened range"),
                 id="timeline-range-summary"),
        html.Div("Click a span to see its details.", id="timeline-details"),
        *notes,
    ])


# The timeline reads a box selection (the range summary), so it keeps the select button that
# the other charts leave out; lasso selects nothing on lanes.
TIMELINE_CONFIG = {**GRAPH_CONFIG, "scrollZoom": True,
                   "modeBarButtonsToRemove": [b for b in GRAPH_CONFIG["modeBarButtonsToRemove"]
                                              if b != "select2d"]}


FETCH_BUDGET = 1000
"""Shapes per fetched figure. Plotly draws every bar of a figure, in view or not, at each
redraw (about 0.2-0.5 ms a bar in headless Chromium on 2 shared cores), and a fetch costs a
redraw of the old figure at the new range (plotly's own, before the page sees the event) and
the drawing of the new one."""


def view_figure(src: RunSource, x0: int | None, x1: int | None, highlight: np.ndarray,
                highlight_name: str = "finding evidence",
                evidence_range: tuple[int, int] | None = None) -> Any:
    """The figure for a view of [x0, x1] (ns since t0; None: the whole run), holding the
    fetched range around it."""
    index = src.timeline
    if x0 is None or x1 is None:
        win, view = index.window(), None
    else:
        # twice the view's width: twice the bins, so the view keeps its resolution
        win = index.window(*fetch_range(x0, x1, index.span_ns), budget=FETCH_BUDGET,
                           bins=1200)
        view = (x0, x1)
    return timeline_figure(index, win, view=view, highlight=highlight,
                           highlight_name=highlight_name, evidence_range=evidence_range,
                           memory=src.memory_series)


def _summary_list(lines: list[str], heading: str) -> list[Any]:
    return [html.H4(heading), html.Ul([html.Li(line) for line in lines])]


def selected_range(selected: dict | None) -> tuple[float, float] | None:
    """The x range (ms) of a plotly box selection, else None."""
    for key, value in ((selected or {}).get("range") or {}).items():
        if key.startswith("x") and isinstance(value, list) and len(value) == 2:
            return float(min(value)), float(max(value))
    return None


def details(src: RunSource, kind: int, rank: int, ref: int) -> list[str]:
    """Lines describing one span: its row of steps, ops, kernels or comms."""
    if kind == OP:
        cols = src.columns("ops")
        want = [c for c in ("name", "cat", "module", "phase", "step", "thread", "dur_ns",
                            "self_ns", "input_shapes", "dtypes", "flops", "id", "parent_id")
                if c in cols]
        rows = src.sql(f"SELECT {idents(want)} FROM ops WHERE rank = ? AND id = ?",
                       [rank, ref])
    elif kind == KERNEL:
        want = ["name", "kind", "device", "stream", "step", "dur_ns", "grid", "block",
                "registers", "shared_mem", "occupancy", "op_id"]
        want += [c for c in ("category", "tensor_core") if c in src.columns("kernels")]
        rows = src.sql(f"SELECT {idents(want)} FROM kernels WHERE rank = ? AND start_ns = ? "
                       "LIMIT 1", [rank, ref])
        if rows and "op_id" in want and rows[0][want.index("op_id")] is not None:
            op = src.sql("SELECT name FROM ops WHERE rank = ? AND id = ?",
                         [rank, rows[0][want.index("op_id")]])
            if op:
                want, rows = [*want, "launched by"], [(*rows[0], op[0][0])]
    elif kind == STEP:
        want = [c for c in ("step", "dur_ns", "cpu_ns", "profiled", "device_peak_bytes",
                            "rss_bytes", "source") if c in src.columns("steps")]
        rows = src.sql(f"SELECT {idents(want)} FROM steps WHERE rank = ? AND step = ?",
                       [rank, ref])
    elif kind == COMM:
        want = sorted(src.columns("comms") - {"rank", "start_ns"})
        rows = src.sql(f"SELECT {idents(want)} FROM comms WHERE rank = ? AND start_ns = ? "
                       "LIMIT 1", [rank, ref])
    else:
        return []
    if not rows:
        return []
    lines = [f"rank: {rank}"]
    for col, value in zip(want, rows[0]):
        if value is None:
            continue
        lines.append(f"{col.removesuffix('_ns')}: {fmt_ns(value) if col.endswith('_ns') else value}")
    return lines


def register(app: Any, ctx: Any) -> None:
    # The browser decides whether a range change needs the server (assets/timeline_view.js
    # listens to plotly's relayout event and sets "timeline-range" only then): inside the
    # fetched range, plotly has already redrawn it and nothing is sent. Resizes
    # ({"autosize": true}) never go either: they would supersede a pending zoom request and
    # Dash would drop the zoom's answer.

    @app.callback(Output("timeline-range-summary", "children"),
                  Input("timeline-graph", "selectedData"), prevent_initial_call=True)
    def summarize_selection(selected: dict | None) -> Any:
        picked = selected_range(selected)
        if picked is None:
            return no_update
        x0, x1 = int(picked[0] * 1e6), int(picked[1] * 1e6)
        return _summary_list(range_summary(ctx.a, x0, x1),
                             f"In the selected range ({fmt_ns(x1 - x0)})")

    @app.callback(Output("timeline-graph", "figure"), Output("timeline-lanes", "data"),
                  Input("timeline-range", "data"),
                  State("timeline-highlight", "data"), State("timeline-highlight-name", "data"),
                  State("timeline-evidence", "data"), prevent_initial_call=True)
    def zoom(relayout: dict | None, highlight: list[int] | None,
             highlight_name: str | None, evidence: list[int] | None) -> Any:
        asked = parse_range(relayout)
        if asked is None:
            return no_update, no_update
        x0 = x1 = None
        if asked != "reset":
            x0, x1 = int(asked[0] * 1e6), int(asked[1] * 1e6)
        fig = view_figure(ctx.a, x0, x1, np.asarray(highlight or [], np.int64),
                          highlight_name or "finding evidence",
                          tuple(evidence) if evidence else None)
        return fig, fig.layout.meta["lanes"]

    @app.callback(Output("timeline-graph", "figure", allow_duplicate=True),
                  Output("timeline-highlight", "data"),
                  Output("timeline-highlight-name", "data"),
                  Output("timeline-search-result", "children"),
                  Output("timeline-lanes", "data", allow_duplicate=True),
                  Input("timeline-search", "value"), prevent_initial_call=True)
    def search(text: str | None) -> Any:
        src = ctx.a
        index = src.timeline
        hits = search_spans(src, text)
        if not (text or "").strip():
            return no_update, [], no_update, "", no_update
        if not len(hits):
            return no_update, no_update, no_update, f"no span's name contains {text!r}", \
                no_update
        # open on the first match, with as much context again on each side; outline them all
        first = int(hits[0])
        dur = max(int(index.end[first] - index.start[first]), 1000)
        x0, x1 = int(index.start[first]) - dur, int(index.end[first]) + dur
        fig = view_figure(src, x0, x1, hits, "search match")
        more = f" (the first {SEARCH_LIMIT})" if len(hits) == SEARCH_LIMIT else ""
        return fig, hits.tolist(), "search match", \
            f"{len(hits):,} spans match{more}; showing the first, centred and outlined", \
            fig.layout.meta["lanes"]

    @app.callback(Output("timeline-details", "children"), Input("timeline-graph", "clickData"),
                  prevent_initial_call=True)
    def click(data: dict | None) -> Any:
        point = (data or {}).get("points", [{}])[0]
        pos = point.get("customdata")
        index = ctx.a.timeline
        if not isinstance(pos, int) or not 0 <= pos < len(index):
            return no_update
        lines = details(ctx.a, int(index.kind[pos]), int(index.rank[pos]), int(index.ref[pos]))
        return html.Pre("\n".join(lines) or "no details recorded for this span")

    @app.callback(Output("timeline-graph", "figure", allow_duplicate=True),
                  Input("timeline-graph", "clickData"), State("timeline-lanes", "data"),
                  prevent_initial_call=True)
    def launch_arrow(data: dict | None, lanes: list[int] | None) -> Any:
        """A clicked kernel: an arrow from the op that launched it, added to the drawn figure
        (row 1) without redrawing it."""
        pos = (data or {}).get("points", [{}])[0].get("customdata")
        flow = launch_flow(ctx.a, pos) if isinstance(pos, int) else None
        arrow = flow_trace(ctx.a, flow, lanes) if flow is not None else None
        if arrow is None:
            return no_update
        fig = Patch()
        fig["data"].append(arrow.to_plotly_json())
        return fig
