"""Findings figures: estimated savings, a Pareto front, predicted against measured.

The ``data`` keys drawn here (documented in docs/dashboard.md):

* ``pareto``: a list of points ``{"added_s": seconds added per step, "peak_bytes": predicted
  peak, "label": what is checkpointed, "chosen": true for the recommended point}``.
* ``measured``: ``{"saving_s": ..., "saving_bytes": ...}`` measured after the fix was applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from dsprof.dashboard.text import fmt_bytes, plain
from dsprof.findings import Finding

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 320}


def savings_figure(findings: Sequence[Finding], top: int = 10) -> go.Figure:
    """Estimated saving per step (ms) of the top findings, as ranked by the registry."""
    rows = [f for f in findings if f.saving_s > 0][:top]
    fig = go.Figure(go.Bar(
        x=[f.saving_s * 1e3 for f in rows], y=[plain(f.title) for f in rows], orientation="h",
        text=[f"{f.share * 100:.1f} % of a step" for f in rows], textposition="auto",
        hovertemplate="%{y}: %{x:.2f} ms per step<extra></extra>"))
    fig.update_layout(title="Estimated time saved per step", xaxis_title="ms",
                      yaxis={"autorange": "reversed"}, **_LAYOUT)
    return fig


def has_pareto(finding: Finding) -> bool:
    pts = finding.data.get("pareto") if isinstance(finding.data, dict) else None
    return bool(pts) and all(isinstance(p, dict) and "peak_bytes" in p and "added_s" in p
                             for p in pts)


def pareto_figure(finding: Finding) -> go.Figure:
    """Peak memory against added step time for every plan on the front; the chosen one
    marked."""
    pts: list[dict[str, Any]] = sorted(finding.data["pareto"], key=lambda p: p["added_s"])
    fig = go.Figure(go.Scatter(
        x=[p["added_s"] * 1e3 for p in pts], y=[p["peak_bytes"] for p in pts],
        mode="lines+markers", name="Pareto front", line={"shape": "hv"},
        hovertext=[plain(f"{p.get('label', '')} peak {fmt_bytes(p['peak_bytes'])}")
                   for p in pts], hoverinfo="text+x"))
    chosen = [p for p in pts if p.get("chosen")]
    if chosen:
        fig.add_trace(go.Scatter(
            x=[p["added_s"] * 1e3 for p in chosen], y=[p["peak_bytes"] for p in chosen],
            mode="markers", name="recommended",
            marker={"size": 14, "symbol": "star", "color": "#d62728"}))
    fig.update_layout(title="Peak memory vs added step time", xaxis_title="ms added per step",
                      yaxis_title="peak bytes", **_LAYOUT)
    return fig


def predicted_measured(finding: Finding) -> dict[str, tuple[float, float]]:
    """{quantity: (predicted, measured)} for what the finding's ``data["measured"]`` holds."""
    measured = finding.data.get("measured") if isinstance(finding.data, dict) else None
    out: dict[str, tuple[float, float]] = {}
    if not isinstance(measured, dict):
        return out
    if measured.get("saving_s") is not None:
        out["saving_s"] = (finding.saving_s, float(measured["saving_s"]))
    if measured.get("saving_bytes") is not None:
        out["saving_bytes"] = (float(finding.saving_bytes), float(measured["saving_bytes"]))
    return out


def predicted_measured_figure(pairs: dict[str, tuple[float, float]]) -> go.Figure:
    """Predicted and measured saving side by side (ms per step, MiB of peak)."""
    scale = {"saving_s": (1e3, "ms per step"), "saving_bytes": (1 / 2**20, "MiB of peak")}
    labels = [scale[k][1] for k in pairs]
    fig = go.Figure([
        go.Bar(x=labels, y=[v[0] * scale[k][0] for k, v in pairs.items()], name="predicted"),
        go.Bar(x=labels, y=[v[1] * scale[k][0] for k, v in pairs.items()], name="measured"),
    ])
    fig.update_layout(title="Predicted vs measured saving", barmode="group", **_LAYOUT)
    return fig
