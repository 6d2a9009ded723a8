"""Small layout pieces shared by the pages. Every string is passed as a Dash child, which
React renders as text: trace-derived names are never interpreted as HTML."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

# Every chart's toolbar: no Plotly logo, and no button that talks to Plotly's cloud ("Share
# chart", "Edit in Chart Studio"): the dashboard fetches and sends nothing over the network.
# Box and lasso select are removed because no page reads a selection.
GRAPH_CONFIG = {
    "displaylogo": False,
    "showSendToCloud": False,
    "showEditInChartStudio": False,
    "showLink": False,
    "modeBarButtonsToRemove": ["sendDataToCloud", "editInChartStudio", "select2d", "lasso2d"],
}


def graph(graph_id: str, figure: Any) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=figure, config=GRAPH_CONFIG)


def missing(text: str, table: str = "") -> html.Div:
    """A notice naming what is missing and the command that collects it."""
    return html.Div(text, className="missing", **({"id": f"missing-{table}"} if table else {}))


def section(title: str, *children: Any, sid: str | None = None) -> html.Section:
    kw = {"id": sid} if sid else {}
    return html.Section([html.H3(title), *children], **kw)


def kv_table(rows: dict[str, Any], tid: str | None = None) -> html.Table:
    kw = {"id": tid} if tid else {}
    return html.Table([html.Tr([html.Th(str(k)), html.Td(_text(v))]) for k, v in rows.items()],
                      className="kv", **kw)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
