"""Load the AG Grid bundle only on pages that draw a grid.

Dash puts every imported component library's bundle in every page's ``<script>`` tags, so the
Timeline (no grid) evaluated dash-ag-grid's 1.3 MB bundle before anything drew: 0.1-0.2 s of
the first render's CPU (measured in headless Chromium on 2 cores). Dash 4 has no switch for a
library loaded on demand (only a library's own ``async`` chunks are), so the bundle is marked
``dynamic`` (Dash still serves it, at the same URL, but leaves it out of the page) and
``assets/lazy_grid.js`` stands in for ``dash_ag_grid.AgGrid``: the first grid a page renders
loads the bundle, then renders the real component with the same props.
"""

from __future__ import annotations

import dash_ag_grid

BUNDLE = "dash_ag_grid.min.js"


def defer_grid_bundle() -> None:
    """Leave dash-ag-grid's main bundle out of the pages' script tags (idempotent). The
    library's resource list is module-global: every app in this process gets it, which is what
    the dashboard wants (one app per process; the tests build several, all dsprof's)."""
    dist = [dict(r, dynamic=True) if r.get("relative_package_path") == BUNDLE else r
            for r in dash_ag_grid._js_dist]
    dash_ag_grid._js_dist = dist
    for name in dash_ag_grid.__all__:
        getattr(dash_ag_grid, name)._js_dist = dist
