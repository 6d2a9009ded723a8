"""The dashboard's last points in a real headless Chromium at 1440x900: a short table ends at
its last row, and a trace without steps states its savings per capture (or iteration), never
per step."""

from __future__ import annotations

import pytest

from dsprof.dashboard.app import create_app
from dsprof.dashboard.server import DashboardServer
from dsprof.dashboard.source import RunSource
from tests.browser.test_dashboard import GRAPH, gd_eval
from tests.conftest import trace_dir
from tests.integration.helpers import dsprof

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FOLD = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    root = tmp_path_factory.mktemp("last")
    started = []

    def start(trace: str):
        # as a user does: `dsprof import` analyzes, so findings.json is there
        res = dsprof("import", str(trace_dir(trace)), "-o", str(root / trace))
        assert res.code == 0, res.stderr
        src = RunSource(root / trace)
        server = DashboardServer(create_app(src)).start()
        server.source = src
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        server.source.close()


def test_a_short_comms_table_leaves_no_empty_box(serve, open_page):
    # GIVEN the imported A100 NCCL trace: two collectives, a two-row bandwidth table
    server = serve("hta_a100_2rank_nccl_r0")
    p = open_page(server)
    p.page.set_viewport_size(FOLD)
    p.page.goto(server.url + "comms")
    p.page.wait_for_selector("#comms-bandwidth-grid .ag-row")
    rows = p.page.eval_on_selector_all(
        "#comms-bandwidth-grid .ag-center-cols-container .ag-row",
        "els => els.map(e => e.getBoundingClientRect().bottom)")
    grid = p.page.eval_on_selector("#comms-bandwidth-grid",
                                   "e => e.getBoundingClientRect().bottom")
    # THEN the grid ends at its last row (ag-grid's 150 px minimum body left ~50 px empty)
    assert 1 <= len(rows) <= 20
    assert grid - max(rows) <= 6, (grid, rows)
    # AND the per-step chart's axis names whole steps (no tick at step 4.5)
    assert gd_eval(p, "comms-per-rank", "gd.layout.xaxis.type") == "category"
    p.check_clean()


def test_a_trace_without_steps_states_savings_per_capture(serve, open_page):
    # GIVEN a trace with no ProfilerStep spans (the analyzers set data.saving_per)
    server = serve("kineto_resnet50_v100_autograd")
    pers = {f.data.get("saving_per") for f in server.source.findings if f.saving_s > 0}
    assert pers and "step" not in pers and None not in pers, pers
    p = open_page(server)
    page = p.page
    page.set_viewport_size(FOLD)
    page.goto(server.url + "findings")
    page.wait_for_selector(GRAPH.format("findings-savings") + " .barlayer .point")
    # THEN every saving the dashboard states is per capture (or iteration), as the terminal
    # prints it (an analyzer's own evidence text is the analyzer's)
    metas = page.eval_on_selector_all(".finding-meta", "els => els.map(e => e.textContent)")
    timed = [m for m in metas if " ms per " in m]
    assert timed and any("ms per capture" in m for m in timed), metas
    assert not [m for m in timed if "per step" in m or "of a step" in m], timed
    fig_title = gd_eval(p, "findings-savings", "gd.layout.title.text")
    assert "per step" not in fig_title and "capture" in fig_title
    # (the run gives no share of a capture: no "0.0 % of a capture", which reads as nothing)
    bars = gd_eval(p, "findings-savings", "gd.data[0].text")
    assert bars and not [t for t in bars if "step" in t or t.startswith("0.0 %")], bars
    assert not [m for m in timed if "(0.0 %" in m], timed
    # AND on the Overview's findings list
    page.goto(server.url)
    page.wait_for_selector("#overview-findings li")
    listed = page.inner_text("#overview-findings")
    assert "ms/capture" in listed and "ms/step" not in listed, listed
    p.check_clean()


def test_pages_load_only_the_scripts_they_draw_with(serve, open_page):
    # GIVEN the imported 2-rank NCCL trace (its Communication page has grids)
    server = serve("hta_sampled_2rank_nccl")
    p = open_page(server)
    page = p.page
    bundles, scripts = [], []
    page.on("request", lambda r: "dash_ag_grid" in r.url and bundles.append(r.url))
    page.on("request", lambda r: r.resource_type == "script" and scripts.append(r.url))
    # WHEN the Timeline opens THEN AG Grid's bundle is neither in the page nor fetched
    page.goto(server.url + "timeline")
    page.wait_for_selector(GRAPH.format("timeline-graph") + " .barlayer .point")
    assert bundles == []
    # AND no @babel/polyfill (for pre-ES2015 browsers); its regeneratorRuntime, which Dash's
    # lazy components call (the graph just drawn is one), comes from the assets
    assert scripts and not [u for u in scripts if "polyfill" in u], scripts
    assert page.evaluate("() => typeof window.regeneratorRuntime.mark") == "function"
    assert page.evaluate("() => window.dash_ag_grid.AgGrid.name") == "LazyAgGrid"
    # WHEN a page with a grid is opened (client-side, as the header links do) THEN the bundle
    # is loaded once and the grid is the real one, with rows, sortable
    page.click("#nav-comms")
    page.wait_for_selector("#comms-bandwidth-grid .ag-row")
    assert len([u for u in bundles if u.endswith(".min.js")]) == 1, bundles
    assert "all_reduce" in page.inner_text("#comms-bandwidth-grid") or \
        "send" in page.inner_text("#comms-bandwidth-grid").lower()
    page.click("#comms-bandwidth-grid .ag-header-cell-label >> nth=0")
    page.wait_for_selector("#comms-bandwidth-grid .ag-header-cell[aria-sort='ascending']")
    # AND a second grid page in the same tab does not fetch it again
    page.click("#nav-operators")
    page.wait_for_selector("#ops-grid .ag-row")
    assert len([u for u in bundles if u.endswith(".min.js")]) == 1, bundles
    p.check_clean()
