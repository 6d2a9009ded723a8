"""Findings figures: estimated savings, the checkpointing Pareto front, predicted against
measured.

The checkpointing finding's ``data`` (analyzers/checkpointing.py) holds ``front``: plans
``{"peak": bytes, "cost_s": seconds added per step, "freed", "modules"}``, and ``advised``: the
recommended one. Predicted vs measured comes from ``dsprof.apply.verify`` (a run made with
``--apply``) or ``dsprof.reports.diff`` (Compare).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from dsprof.dashboard.text import a_per, fmt_bytes, plain, saving_per
from dsprof.findings import Finding

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 320}


def savings_figure(findings: Sequence[Finding], top: int = 10) -> go.Figure:
    """Estimated saving (ms) of the top findings, as ranked by the registry, per step (or per
    capture / iteration on a trace without steps: each finding's ``data.saving_per``)."""
    rows = [f for f in findings if f.saving_s > 0][:top]
    pers = [saving_per(f) for f in rows]
    fig = go.Figure(go.Bar(
        x=[f.saving_s * 1e3 for f in rows], y=[plain(f.title) for f in rows], orientation="h",
        text=[f"{f.share * 100:.1f} % of {a_per(per)}" if f.share else f"{f.saving_s * 1e3:.3g} ms"
              for f, per in zip(rows, pers)],
        textposition="auto", customdata=pers, marker_color="#0072B2",
        hovertemplate="%{y}: %{x:.2f} ms per %{customdata}<extra></extra>"))
    unit = " and ".join(sorted(set(pers), key=pers.index)) or "step"
    # one bar as tall as ten would be: the chart grows with the findings it lists
    fig.update_layout(title=f"Estimated time saved per {unit}", xaxis_title=f"ms per {unit}",
                      yaxis={"autorange": "reversed"},
                      **{**_LAYOUT, "height": min(320, 110 + 32 * max(len(rows), 1))})
    return fig


def has_pareto(finding: Finding) -> bool:
    front = finding.data.get("front") if isinstance(finding.data, dict) else None
    return bool(front) and all(isinstance(p, dict) and "peak" in p and "cost_s" in p
                               for p in front)


def pareto_figure(finding: Finding) -> go.Figure:
    """Peak memory against added step time for every plan on the front; the advised plan
    marked."""
    pts: list[dict[str, Any]] = sorted(finding.data["front"], key=lambda p: p["cost_s"])
    fig = go.Figure(go.Scatter(
        x=[p["cost_s"] * 1e3 for p in pts], y=[p["peak"] for p in pts],
        mode="lines+markers", name="Pareto front", line={"shape": "hv"},
        hovertext=[plain(f"peak {fmt_bytes(p['peak'])}: " + (", ".join(p.get("modules") or [])
                                                              or "nothing checkpointed"))
                   for p in pts], hoverinfo="text+x"))
    advised = finding.data.get("advised")
    if isinstance(advised, dict) and "peak" in advised and "cost_s" in advised:
        fig.add_trace(go.Scatter(
            x=[advised["cost_s"] * 1e3], y=[advised["peak"]], mode="markers", name="advised",
            marker={"size": 14, "symbol": "star", "color": "#d62728"}))
    target = finding.data.get("target")
    if isinstance(target, (int, float)) and target > 0:
        fig.add_hline(y=target, line_dash="dot", line_color="#555",
                      annotation_text=f"target {fmt_bytes(target)}")
    fig.update_layout(title="Checkpointing plans: peak memory vs added step time",
                      xaxis_title="ms added per step", yaxis_title="peak bytes", **_LAYOUT)
    return fig


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
