"""A shared run directory is data: a hostile Parquet column name never reaches SQL, the
server answers only its own Host name, and no chart offers to upload itself to Plotly's cloud.
All through real HTTP requests to a real dashboard server."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from dsprof.dashboard.app import create_app
from dsprof.dashboard.pages.common import GRAPH_CONFIG
from dsprof.dashboard.server import DashboardServer, allowed_host_names, host_allowed
from dsprof.dashboard.timeline import COMM
from tests.security.hostile_runs import comms_rows, make_run, steps_rows, with_column


def _request(server: DashboardServer, method: str, path: str, body: dict | None = None,
             host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if host is not None:
        headers["Host"] = host
    conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


@pytest.fixture
def hostile_run(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "pwned.txt"
    evil = f"0; COPY (SELECT 'x') TO '{target}'; SELECT 1"
    comms = comms_rows()
    comms = with_column(comms, evil, [1, 2, 3])
    comms = with_column(comms, 'x" FROM comms; COPY (SELECT 1) TO \'' + str(target) + "'; --",
                        [1, 2, 3])
    return make_run(tmp_path / "run", {"comms": comms, "steps": steps_rows()}), target


def test_clicking_a_collective_with_hostile_column_names_writes_nothing(hostile_run):
    # GIVEN a run whose comms table carries column names that are SQL statements
    run, target = hostile_run
    app = create_app(run)
    server = DashboardServer(app).start()
    try:
        from dsprof.dashboard.source import RunSource

        src = RunSource(run)
        try:
            index = src.timeline
            pos = int(next(i for i in range(len(index)) if index.kind[i] == COMM))
        finally:
            src.close()
        # WHEN the browser reports a click on that collective (the real callback request)
        status, body = _request(server, "POST", "/_dash-update-component", {
            "output": "timeline-details.children",
            "outputs": {"id": "timeline-details", "property": "children"},
            "inputs": [{"id": "timeline-graph", "property": "clickData",
                        "value": {"points": [{"customdata": pos}]}}],
            "changedPropIds": ["timeline-graph.clickData"], "state": []})
    finally:
        server.stop()
    # THEN the details show the schema's columns, and no statement ran
    assert status == 200, body[:500]
    text = body.decode()
    assert "collective: all_reduce" in text
    assert "COPY" not in text
    assert not target.exists()


def test_hostile_host_header_is_refused(hostile_run):
    run, _ = hostile_run
    server = DashboardServer(create_app(run)).start()
    try:
        ok, _ = _request(server, "GET", "/", host=f"127.0.0.1:{server.port}")
        local, _ = _request(server, "GET", "/", host=f"localhost:{server.port}")
        rebound, _ = _request(server, "GET", "/", host=f"attacker.example:{server.port}")
        api, _ = _request(server, "GET", "/_dash-layout", host="attacker.example")
        empty, _ = _request(server, "GET", "/", host="")
    finally:
        server.stop()
    assert (ok, local) == (200, 200)
    assert (rebound, api, empty) == (403, 403, 403)


def test_host_names_accepted():
    names = allowed_host_names("127.0.0.1")
    assert host_allowed("[::1]:8050", names)
    assert host_allowed("10.1.2.3:8050", names)  # an IP literal names no domain to rebind
    assert not host_allowed("127.0.0.1.attacker.example:8050", names)
    assert not host_allowed("localhost.attacker.example", names)


def test_no_chart_can_be_sent_to_the_cloud_or_lasso_selected(hostile_run):
    run, _ = hostile_run
    server = DashboardServer(create_app(run)).start()
    try:
        status, body = _request(server, "POST", "/_dash-update-component", {
            "output": "page.children",
            "outputs": {"id": "page", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": "/timeline"},
                       {"id": "url", "property": "search", "value": ""}],
            "changedPropIds": ["url.pathname"], "state": []})
    finally:
        server.stop()
    assert status == 200
    graphs = []
    stack = [json.loads(body)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "Graph":
                graphs.append(node["props"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert graphs
    for props in graphs:
        config = props["config"]
        assert config["displaylogo"] is False
        assert config["showSendToCloud"] is False and config["showEditInChartStudio"] is False
        assert {"sendDataToCloud", "lasso2d"} <= set(config["modeBarButtonsToRemove"])
        # box select only where a selection is read: the timeline's range summary
        if props.get("id") != "timeline-graph":
            assert "select2d" in config["modeBarButtonsToRemove"]
    assert GRAPH_CONFIG["showLink"] is False
