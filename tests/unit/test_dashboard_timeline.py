"""The timeline's level of detail: exact below the budget, bounded and faithful above it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dsprof.dashboard.figures.timeline import parse_range, timeline_figure
from dsprof.dashboard.timeline import OP, build_index


def synthetic(n: int, lanes: int = 4, seed: int = 0, long_spans: int = 3):
    """n back-to-back spans per lane (ns), plus a few very long ones on lane 0."""
    rng = np.random.default_rng(seed)
    lane = rng.integers(0, lanes, n)
    dur = rng.lognormal(8, 1.0, n).astype(np.int64) + 1
    start = np.zeros(n, np.int64)
    for k in range(lanes):
        m = lane == k
        step = dur[m] + rng.integers(0, 2000, m.sum())
        start[m] = np.concatenate([[0], np.cumsum(step)[:-1]])
    end = start + dur
    if long_spans:
        start[:long_spans] = 0
        end[:long_spans] = end.max()
    names = pa.array([f"op{i % 7}" for i in range(n)])
    cols = {"ops": {"start_ns": start + 10**18, "end_ns": end + 10**18, "lane": lane,
                    "kind": np.full(n, OP), "cls": np.ones(n), "name": names,
                    "ref": np.arange(n), "rank": np.zeros(n)}}
    return build_index(cols, [f"lane {k}" for k in range(lanes)], ["step", "op forward"]), \
        start, end, lane


def test_visible_equals_brute_force():
    # GIVEN spans including a few that cover the whole run
    index, start, end, _ = synthetic(20_000)
    rng = np.random.default_rng(1)
    for _ in range(50):
        # WHEN asking for a random range
        x0 = int(rng.integers(0, index.span_ns))
        x1 = x0 + int(rng.integers(1, index.span_ns // 5))
        got = np.sort(index.ref[index.visible(x0, x1)])
        # THEN exactly the spans that overlap it come back
        want = np.flatnonzero((start <= x1) & (end >= x0))
        np.testing.assert_array_equal(got, want)


def test_window_is_exact_under_the_budget_and_bounded_over_it():
    index, *_ = synthetic(50_000)
    # a narrow range: every span drawn one by one
    x0, x1 = index.span_ns // 2, index.span_ns // 2 + index.span_ns // 1000
    small = index.window(x0, x1, budget=2000)
    assert not small.aggregated and len(small.exact) == small.visible <= 2000
    # the whole run: aggregated, at most the budget, every span accounted for
    whole = index.window(budget=2000)
    assert whole.aggregated and whole.visible == len(index)
    assert len(whole.exact) + len(whole.runs["lane"]) <= 2000
    assert int(whole.runs["spans"].sum()) == whole.visible
    # the long spans are wider than two bins, so they are drawn exactly
    assert set(range(3)) <= set(index.ref[whole.exact].tolist())
    # every visible span lies inside a busy run of its lane
    runs = whole.runs
    for i in np.random.default_rng(2).choice(len(index), 300, replace=False):
        on_lane = runs["lane"] == index.lane[i]
        covered = (runs["start"][on_lane] <= index.start[i] + 1) & \
                  (runs["end"][on_lane] >= index.end[i] - whole.bin_ns - 1)
        assert covered.any()


def test_figure_draws_bars_with_escaped_names_and_positions():
    index, *_ = synthetic(500, long_spans=0)
    index.names[0] = '<img src=x onerror="alert(1)">'
    win = index.window(budget=2000)
    fig = timeline_figure(index, win, highlight=np.array([0, 1]))
    bars = [t for t in fig.data if t.type == "bar"]
    assert sum(len(t.base) for t in bars) == 500 + 2
    hover = " ".join(h for t in bars for h in t.hovertext)
    assert "<img" not in hover and "&lt;img" in hover
    hl = next(t for t in bars if t.name == "finding evidence")
    assert list(hl.customdata) == [0, 1]
    assert fig.layout.yaxis.ticktext == tuple(f"lane {k}" for k in range(4))
    assert fig.layout.xaxis.range == (0.0, index.span_ns / 1e6)


def test_parse_range():
    assert parse_range({"xaxis.range[0]": 1, "xaxis.range[1]": 2.5}) == (1.0, 2.5)
    assert parse_range({"xaxis2.range": [3, 4]}) == (3.0, 4.0)
    assert parse_range({"xaxis.autorange": True}) == "reset"
    assert parse_range({"autosize": True}) is None
    assert parse_range(None) is None


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_indexes(n):
    index, *_ = synthetic(n, long_spans=0) if n else (build_index({}, [], ["step"]),)
    win = index.window()
    assert win.visible == n and not win.aggregated
    timeline_figure(index, win)  # draws without error


def test_fetched_range_is_the_view_and_half_a_view_each_side():
    from dsprof.dashboard.timeline import fetch_range

    assert fetch_range(400, 600, 10_000) == (300, 700)
    assert fetch_range(0, 1000, 1200) == (0, 1200)  # clipped to the run
    index, *_ = synthetic(5000, long_spans=0)
    a, b = index.span_ns // 2, index.span_ns // 2 + index.span_ns // 200
    f0, f1 = fetch_range(a, b, index.span_ns)
    fig = timeline_figure(index, index.window(f0, f1), view=(a, b))
    # THEN the figure shows the view, and says what it holds for the browser's pan/zoom
    assert fig.layout.xaxis.range == (a / 1e6, b / 1e6)
    assert fig.layout.meta["fetched"] == [f0 / 1e6, f1 / 1e6]
    assert fig.layout.meta["lanes"] == [0, 1, 2, 3]
    whole = timeline_figure(index, index.window(budget=500), view=None)
    assert whole.layout.meta["res_ms"] > 0  # aggregated: finer zooms need the server


def _gappy(idle: bool):
    """Two lanes: lane 0 spans [0,100) [100,200) [500,600) (and a nested [20,50)); lane 1 the
    same shifted by 1000. Only lane 0 is an idle lane when ``idle``."""
    start = np.array([0, 20, 100, 500, 1000, 1100, 1500])
    end = np.array([100, 50, 200, 600, 1100, 1200, 1600])
    lane = np.array([0, 0, 0, 0, 1, 1, 1])
    n = len(start)
    cols = {"ops": {"start_ns": start, "end_ns": end, "lane": lane, "kind": np.full(n, OP),
                    "cls": np.ones(n), "name": pa.array(["a"] * n), "ref": np.arange(n),
                    "rank": np.zeros(n)}}
    return build_index(cols, ["cpu0 d0", "other"], ["step", "op forward"],
                       {0: "host thread"} if idle else None)


def test_idle_gaps_are_the_holes_of_idle_lanes_only():
    from dsprof.dashboard.timeline import idle_gaps

    index = _gappy(idle=True)
    win = index.window()
    gaps = idle_gaps(index, win, min_gap_ns=10)
    # THEN lane 0's hole [200, 500) is idle; the nested span makes no gap; lane 1 is not an
    # idle lane (its hole [1200, 1500) is not drawn)
    assert gaps["lane"].tolist() == [0]
    assert (gaps["start"].tolist(), gaps["end"].tolist()) == ([200.0], [500.0])
    assert len(idle_gaps(index, win, min_gap_ns=301)["lane"]) == 0  # narrower than asked
    assert len(idle_gaps(_gappy(idle=False), win, 10)["lane"]) == 0
    # AND the figure draws it hatched, with what idles in its hover
    fig = timeline_figure(index, win)
    idle = next(t for t in fig.data if t.name == "idle")
    assert idle.marker.pattern.shape == "/" and "host thread idle" in idle.hovertext[0]
    # aggregated (a budget of 1 shape): the gap between busy runs, to a bin's precision
    agg = index.window(budget=1, bins=32)
    assert agg.aggregated
    g = idle_gaps(index, agg, min_gap_ns=10)
    assert g["lane"].tolist() == [0]
    assert abs(g["start"][0] - 200) <= agg.bin_ns and abs(g["end"][0] - 500) <= agg.bin_ns


def test_lanes_empty_in_the_fetched_range_are_hidden():
    index = _gappy(idle=False)
    fig = timeline_figure(index, index.window(0, 700))
    # THEN only lane 0 has a row; its bars sit on row 0
    assert fig.layout.meta["lanes"] == [0]
    assert fig.layout.yaxis.ticktext == ("cpu0 d0",)
    assert {y for t in fig.data if t.type == "bar" for y in t.y} == {0}
    fig = timeline_figure(index, index.window(1000, 1700))
    assert fig.layout.meta["lanes"] == [1] and fig.layout.yaxis.ticktext == ("other",)
    assert {y for t in fig.data if t.type == "bar" for y in t.y} == {0}


def test_an_evidence_range_is_outlined():
    index = _gappy(idle=False)
    fig = timeline_figure(index, index.window(), evidence_range=(100, 200))
    (shape,) = [s for s in fig.layout.shapes if s.name == "evidence range"]
    assert (shape.x0, shape.x1) == (100 / 1e6, 200 / 1e6) and shape.line.width >= 2
    assert shape.line.color == "#000000" and shape.line.dash == "dash"  # never a hue alone


def test_selected_range_reads_a_box_selection():
    from dsprof.dashboard.pages.timeline import selected_range

    assert selected_range({"range": {"x": [3.5, 1.0], "y": [0, 4]}}) == (1.0, 3.5)
    assert selected_range({"range": {"x2": [1, 2]}}) == (1.0, 2.0)
    assert selected_range({"points": []}) is None and selected_range(None) is None


def test_only_bars_that_can_get_wide_enough_carry_a_label():
    index = _gappy(idle=False)
    # a view where every span is at least ~28 pixels wide: all labelled
    fig = timeline_figure(index, index.window())
    assert {s for t in fig.data if t.type == "bar" for s in t.text} == {"a"}
    assert fig.layout.meta["res_ms"] == 0  # exact, none widened or unlabelled: any zoom
    # a view 100 times wider (spans of 30-100 ns, a pixel is 100 ns): none is
    fig = timeline_figure(index, index.window(), view=(0, 150_000))
    assert {s for t in fig.data if t.type == "bar" for s in t.text} == {""}
    # so the browser may zoom in only so far (a third of a pixel) before asking again
    assert fig.layout.meta["res_ms"] == pytest.approx(150_000 / 1e6 / 1500 / 3)


def test_at_most_label_max_bars_carry_a_label_the_widest():
    from dsprof.dashboard.figures.timeline import LABEL_MAX

    # GIVEN 800 spans on 4 lanes, all drawn exactly and each many pixels wide in the view
    index, _, end, _ = synthetic(800, long_spans=0)
    win = index.window(budget=1000)
    assert not win.aggregated and len(win.exact) == 800
    fig = timeline_figure(index, win, view=(0, int(end.max()) // 20))
    labelled = [d for t in fig.data if t.type == "bar" and t.text is not None
                for d, s in zip(t.x, t.text) if s]
    unlabelled = [d for t in fig.data if t.type == "bar" and t.text is not None
                  for d, s in zip(t.x, t.text) if not s]
    # THEN the LABEL_MAX widest carry their name, the rest none (drawing a label costs the
    # page about as much as four bars), and the browser asks again before zooming far
    assert len(labelled) == LABEL_MAX
    assert min(labelled) >= max(unlabelled)
    assert fig.layout.meta["res_ms"] > 0
