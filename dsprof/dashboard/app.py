"""Build the Dash app over one or two runs.

The app reads only the run directories it is given. Pages are addressed by path (``/``,
``/timeline``, ...), so a finding's evidence is an ordinary link (``/timeline?start=...``)
that jumps the timeline. Scripts and styles are served from the installed packages and
``assets/`` (Dash's default ``serve_locally``); nothing is fetched from the network.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from dash import Dash, Input, Output, dcc, html

from dsprof.dashboard.page_scripts import trim_page_scripts
from dsprof.dashboard.pages import (
    comms,
    compare,
    findings,
    memory,
    operators,
    overview,
    timeline,
)
from dsprof.dashboard.source import RunSource
from dsprof.errors import DsprofError
from dsprof.sqlsafe import damaged_run

PAGES = (overview, timeline, operators, memory, comms, findings, compare)


@dataclass
class AppContext:
    """The runs the app serves: ``a`` is shown on every page, ``b`` only in Compare."""

    a: RunSource
    b: RunSource | None = None


def import_pandas_before_serving() -> None:
    """Import pandas now when it is installed, before the background load starts.

    pyarrow imports pandas, where it is installed, at its first conversion of a numpy array
    (``pa.array``/``pa.table`` ask whether it is a pandas categorical), which the background
    load makes (``timeline_load``). Meanwhile the first request's plotly JSON encoder looks
    pandas up in ``sys.modules`` without the import lock: it found the module half imported
    and the page failed, "partially initialized module 'pandas' has no attribute 'NaT'" (HTTP
    500 on ``/_dash-layout``, one start in four on this machine with pandas 3.1). Imported
    here, in the main thread, it is whole before the server answers anything.
    """
    if importlib.util.find_spec("pandas") is not None:
        import pandas  # noqa: F401


def create_app(run_a: str | Path | RunSource, run_b: str | Path | RunSource | None = None,
               ) -> Dash:
    """The dashboard app for ``run_a`` (and ``run_b`` for the Compare page)."""
    a = run_a if isinstance(run_a, RunSource) else RunSource(run_a, "A")
    b = None
    if run_b is not None:
        b = run_b if isinstance(run_b, RunSource) else RunSource(run_b, "B")
    ctx = AppContext(a, b)
    import_pandas_before_serving()
    for src in (a, b):
        if src is not None:
            src.warm()
    trim_page_scripts()  # pages load only what they draw with (no grid on the Timeline)
    app = Dash(__name__, title=f"dsprof: {a.name}", update_title=None,
               suppress_callback_exceptions=True)
    nav = [html.Span("dsprof", className="brand")]
    nav += [dcc.Link(p.TITLE, href=p.PATH, id=f"nav-{p.PATH.strip('/') or 'overview'}")
            for p in PAGES]
    nav.append(html.Span(f"run: {a.name}" + (f"  vs  {b.name}" if b else ""),
                         id="run-names", style={"marginLeft": "auto"}))
    app.layout = html.Div([dcc.Location(id="url"), html.Header(nav),
                           html.Main(id="page")])

    by_path = {p.PATH: p for p in PAGES}

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"))
    def render(pathname: str | None, search: str | None) -> Any:
        page = by_path.get(pathname or "/")
        if page is None:
            return html.Div(f"No page at {pathname}.", id="not-found")
        query = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
        try:
            return page.layout(ctx, query)
        except DsprofError as exc:  # a damaged run: say what, never a 500
            return html.Div(f"This page cannot be shown: {exc}", id="page-error",
                            className="missing")
        except Exception as exc:
            if (damaged := damaged_run(exc)) is None:
                raise
            return html.Div(f"This page cannot be shown: {damaged}", id="page-error",
                            className="missing")

    for page in PAGES:
        page.register(app, ctx)
    return app
