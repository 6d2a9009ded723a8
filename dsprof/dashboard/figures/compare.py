"""Compare figures: two runs side by side (the closed loop: before and after a fix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from dsprof.analyzers.breakdown import OpTime, PhaseTime
from dsprof.dashboard.text import plain
from dsprof.findings import Finding

_LAYOUT = {"margin": {"l": 70, "r": 20, "t": 40, "b": 40}, "height": 340}


def phases_compare_figure(a: Sequence[PhaseTime], b: Sequence[PhaseTime],
                          labels: tuple[str, str] = ("A", "B")) -> go.Figure:
    """Time by phase of both runs, grouped."""
    order = list(dict.fromkeys([p.phase for p in a] + [p.phase for p in b]))
    fig = go.Figure()
    for label, phases in zip(labels, (a, b)):
        ms = {p.phase: p.ms for p in phases}
        fig.add_trace(go.Bar(x=order, y=[ms.get(p, 0.0) for p in order], name=plain(label)))
    fig.update_layout(title="Time by phase (profiled steps)", barmode="group", yaxis_title="ms",
                      **_LAYOUT)
    return fig


def op_deltas(a: Sequence[OpTime], b: Sequence[OpTime]) -> list[dict[str, Any]]:
    """Per op name: self ms in A and B and the change, largest change first."""
    am = {o.name: o for o in a}
    bm = {o.name: o for o in b}
    rows = []
    for name in set(am) | set(bm):
        sa = am[name].self_ms if name in am else 0.0
        sb = bm[name].self_ms if name in bm else 0.0
        rows.append({"name": name, "self_ms_a": round(sa, 3), "self_ms_b": round(sb, 3),
                     "delta_ms": round(sb - sa, 3),
                     "count_a": am[name].count if name in am else 0,
                     "count_b": bm[name].count if name in bm else 0})
    return sorted(rows, key=lambda r: (-abs(r["delta_ms"]), r["name"]))


def op_delta_figure(rows: Sequence[dict[str, Any]], top: int = 15) -> go.Figure:
    rows = list(rows)[:top]
    fig = go.Figure(go.Bar(
        x=[r["delta_ms"] for r in rows], y=[plain(r["name"]) for r in rows], orientation="h",
        marker_color=["#2ca02c" if r["delta_ms"] < 0 else "#d62728" for r in rows],
        hovertemplate="%{y}: %{x:+.3f} ms self (B - A)<extra></extra>"))
    fig.update_layout(title="Self time change per op (B - A; green is faster)",
                      xaxis_title="ms", yaxis={"autorange": "reversed"}, **_LAYOUT)
    return fig


def findings_diff(a: Sequence[Finding], b: Sequence[Finding]) -> dict[str, list[Finding]]:
    """Findings by id: resolved (only in A), new (only in B), remaining (in both, B's copy)."""
    ids_a = {f.id for f in a}
    ids_b = {f.id for f in b}
    return {"resolved": [f for f in a if f.id not in ids_b],
            "new": [f for f in b if f.id not in ids_a],
            "remaining": [f for f in b if f.id in ids_a]}


def applied_findings(a: Sequence[Finding], b_env: dict[str, str]) -> list[Finding]:
    """Findings of A whose knobs (``apply``) are all set, to the same values, in B's env."""
    return [f for f in a if f.apply and all(b_env.get(k) == v for k, v in f.apply.items())]
