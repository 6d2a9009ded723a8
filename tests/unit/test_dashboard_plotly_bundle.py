"""The dashboard ships plotly.js's basic bundle (assets/plotly-basic.min.js: scatter, bar, pie;
1.2 MB, evaluated in ~0.3 s in headless Chromium on 2 cores against ~2.7 s for the full 4.8 MB
bundle that dcc.Graph would load otherwise). It must be the plotly.js version the installed
plotly package writes figures for, and no figure may use a trace type outside it."""

from __future__ import annotations

import re
from pathlib import Path

import plotly

DASHBOARD = Path(__file__).resolve().parents[2] / "dsprof" / "dashboard"
BASIC_TRACES = {"Scatter", "Bar", "Pie"}


def _version(path: Path) -> str:
    head = path.read_text(encoding="utf-8", errors="replace")[:400]
    return re.search(r"plotly\.js.*? v(\d+\.\d+\.\d+)", head).group(1)


def test_the_vendored_bundle_matches_the_plotly_package():
    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    basic = DASHBOARD / "assets" / "plotly-basic.min.js"
    assert "(basic - minified)" in basic.read_text(encoding="utf-8")[:200]
    assert _version(basic) == _version(full)


def test_figures_use_only_the_basic_bundle_trace_types():
    used = set()
    for path in DASHBOARD.rglob("*.py"):
        used |= set(re.findall(r"\bgo\.([A-Z][A-Za-z]+)\b", path.read_text(encoding="utf-8")))
    assert used - {"Figure"} <= BASIC_TRACES, used
