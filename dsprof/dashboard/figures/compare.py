"""Compare figures: two runs side by side (the closed loop: before and after a fix), drawn from
``dsprof.reports.diff.RunDiff`` and both runs' summaries."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from dsprof.dashboard.palette import BAD, BAD_PATTERN, GOOD
from dsprof.dashboard.text import plain
from dsprof.reports.diff import Applied, Delta
from dsprof.reports.summary import PhaseTime

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 340}


def phases_compare_figure(a: Sequence[PhaseTime], b: Sequence[PhaseTime],
                          labels: tuple[str, str] = ("A", "B")) -> go.Figure:
    """Time by phase of both runs, grouped."""
    order = list(dict.fromkeys([p.phase for p in a] + [p.phase for p in b]))
    fig = go.Figure()
    for label, phases in zip(labels, (a, b)):
        ms = {p.phase: p.ms for p in phases}
        fig.add_trace(go.Bar(x=order, y=[ms.get(p, 0.0) for p in order], name=plain(label),
                             marker_color="#0072B2" if label == labels[0] else "#E69F00"))
    fig.update_layout(title="Time by phase (profiled steps)", barmode="group", yaxis_title="ms",
                      **_LAYOUT)
    return fig


def delta_figure(deltas: Sequence[Delta], what: str = "op") -> go.Figure:
    """Self time per profiled step, B - A, per op (or module); each bar says "faster" or
    "slower" in its text, and slower bars are also hatched (not told by colour alone)."""
    rows = list(deltas)
    fig = go.Figure(go.Bar(
        x=[d.delta_ms for d in rows], y=[plain(d.name) for d in rows], orientation="h",
        marker={"color": [GOOD if d.delta_ms < 0 else BAD for d in rows],
                "pattern": {**BAD_PATTERN,
                            "shape": ["" if d.delta_ms < 0 else "/" for d in rows]}},
        text=[f"{'faster' if d.delta_ms < 0 else 'slower'} {abs(d.delta_ms):.3f} ms"
              for d in rows], textposition="auto", cliponaxis=False,
        customdata=[[d.a_ms, d.b_ms] for d in rows],
        hovertemplate="%{y}: %{customdata[0]:.3f} -> %{customdata[1]:.3f} ms per step"
                      "<extra></extra>"))
    fig.update_layout(title=f"Self time per step by {what}, B - A (below 0: B faster)",
                      xaxis_title="ms", yaxis={"autorange": "reversed"},
                      **{**_LAYOUT, "margin": {**_LAYOUT["margin"], "r": 110}})  # outside text
    return fig


def applied_pairs(applied: Applied) -> dict[str, tuple[float, float]]:
    """{quantity: (predicted, measured)} of an applied finding, in seconds and bytes, for
    :func:`~dsprof.dashboard.figures.findings.predicted_measured_figure`."""
    out: dict[str, tuple[float, float]] = {}
    if applied.measured_saving_ms is not None:
        out["saving_s"] = (applied.predicted_saving_ms / 1e3, applied.measured_saving_ms / 1e3)
    if applied.predicted_saving_bytes and applied.measured_saving_bytes is not None:
        out["saving_bytes"] = (float(applied.predicted_saving_bytes),
                               float(applied.measured_saving_bytes))
    return out
