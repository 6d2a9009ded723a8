"""The scripts every dashboard page loads: only what the page draws with.

Measured on the Timeline's first render (headless Chromium, 2 cores, CDP sampling profile):
page CPU ~1.0 s, of which plotly.js ~0.43 s (needed), @babel/polyfill ~0.06 s, dash-renderer
~0.06 s, react-dom ~0.04 s; dash-ag-grid's bundle was evaluated on every page.

* AG Grid: Dash puts every imported component library's bundle in every page's ``<script>``
  tags, so the Timeline (no grid) evaluated dash-ag-grid's 1.3 MB bundle. Dash 4 has no switch
  for a library loaded on demand (only a library's own ``async`` chunks are), so the bundle is
  marked ``dynamic`` (Dash still serves it, at the same URL, but leaves it out of the page) and
  ``assets/lazy_grid.js`` stands in for ``dash_ag_grid.AgGrid``: the first grid a page renders
  loads the bundle, then renders the real component with the same props.
* @babel/polyfill: Dash loads it for browsers without ES2015+ (IE 11); plotly.js 3 does not
  run there anyway. Its one use in a current browser is the global ``regeneratorRuntime`` that
  Dash's lazy components call, which ``assets/a-regenerator-runtime.js`` (regenerator-runtime
  0.14.1, 25 KB unminified, MIT) provides.

Both lists are module-global in Dash: every app in this process gets them, which is what the
dashboard wants (one app per process; the tests build several, all dsprof's).
"""

from __future__ import annotations

import dash_ag_grid
from dash import _dash_renderer

from dsprof.log import logger

BUNDLE = "dash_ag_grid.min.js"
POLYFILL = "polyfill@"


def defer_grid_bundle() -> None:
    """Leave dash-ag-grid's main bundle out of the pages' script tags (idempotent)."""
    dist = [dict(r, dynamic=True) if r.get("relative_package_path") == BUNDLE else r
            for r in dash_ag_grid._js_dist]
    dash_ag_grid._js_dist = dist
    for name in dash_ag_grid.__all__:
        getattr(dash_ag_grid, name)._js_dist = dist


def drop_polyfill() -> None:
    """Leave @babel/polyfill out of the pages (idempotent)."""
    for dep in _dash_renderer._js_dist_dependencies:
        for key in ("relative_package_path", "external_url"):
            paths = dep.get(key)
            if isinstance(paths, dict):
                dep[key] = {mode: [p for p in files if POLYFILL not in p]
                            for mode, files in paths.items()}


def trim_page_scripts() -> None:
    """Both trims reach into Dash's own lists: a Dash or dash-ag-grid whose internals moved
    keeps its default scripts (slower first render, same pages) rather than failing to start."""
    for trim in (defer_grid_bundle, drop_polyfill):
        try:
            trim()
        except (AttributeError, TypeError, KeyError) as exc:
            logger.debug("dashboard: %s skipped (%s: %s)", trim.__name__, type(exc).__name__, exc)
