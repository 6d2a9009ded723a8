"""The pages other than the timeline in a real headless Chromium at 1440x900, on a real CPU
`dsprof run` and an imported 2-rank NCCL trace: the Overview answers above the fold, the
operator view groups by input shape, the kernel view shows occupancy, colours are fixed and
units readable.
"""

from __future__ import annotations

import re

import pytest

from dsprof.dashboard.app import create_app
from dsprof.dashboard.server import DashboardServer
from dsprof.dashboard.source import RunSource
from dsprof.ingest.importer import import_traces
from tests.browser.runs import cpu_run, write_findings
from tests.browser.test_dashboard import GRAPH, gd_eval, nav
from tests.conftest import trace_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FOLD = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    cpu = cpu_run(root)  # `dsprof run` analyzes: findings.json is there
    gpu, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], root / "gpu")
    write_findings(gpu.path, "aten::mm", with_pareto=False)
    out = {}
    for name, path in (("cpu", cpu), ("gpu", gpu.path)):
        src = RunSource(path)
        out[name] = DashboardServer(create_app(src)).start()
        out[name].source = src
    yield out
    for server in out.values():
        server.stop()
        server.source.close()


def box(p, selector: str) -> dict:
    return p.page.eval_on_selector(selector, "e => e.getBoundingClientRect().toJSON()")


def breakdown_colors(p) -> list[str]:
    return gd_eval(p, "overview-breakdown", "gd.data.map(t => t.marker.color)")


def test_overview_answers_above_the_fold(servers, open_page):
    for name in ("cpu", "gpu"):
        server = servers[name]
        p = open_page(server)
        page = p.page
        page.set_viewport_size(FOLD)
        page.goto(server.url)
        page.wait_for_selector(GRAPH.format("overview-breakdown") + " .barlayer .point")
        # findings first, then the per-step breakdown, both above the fold at 1440x900
        findings, chart = box(p, "#overview-findings"), box(p, "#overview-breakdown")
        assert page.locator("#overview-findings li").count() >= 1
        assert findings["bottom"] <= chart["top"] and chart["bottom"] <= FOLD["height"], \
            (name, findings, chart)
        tiles = box(p, "#overview-tiles")
        assert tiles["bottom"] <= findings["top"]
        # one stacked bar per profiled (rank, step), categories summing to the step
        src = server.source
        profiled = src.sql("SELECT count(*) FROM steps WHERE profiled")[0][0]
        xs = gd_eval(p, "overview-breakdown", "gd.data[0].x")
        assert len(xs) == profiled
        assert gd_eval(p, "overview-breakdown", "gd.layout.barmode") == "stack"
        colors = breakdown_colors(p)
        assert len(set(colors)) == len(colors), colors  # no two categories share a colour
        text = page.inner_text("#overview-tiles")
        if name == "cpu":
            # the CPU equivalents, and no GPU-only tile on a CPU run
            for tile in ("tile-gpu-idle", "tile-mfu", "tile-launches", "tile-tensor-cores"):
                assert page.locator(f"#{tile}").count() == 0, tile
            assert page.is_visible("#tile-untraced") and page.is_visible("#tile-step")
            names = gd_eval(p, "overview-breakdown", "gd.data.map(t => t.name)")
            assert "forward" in names and "backward" in names
        else:
            assert re.search(r"GPU idle\s+\d+\.\d %", text), text
            assert "unknown" in page.inner_text("#tile-mfu")  # no deviceProperties: no peak
            assert "FLOPs known for" in page.inner_text("#tile-mfu")
            assert "launches" in page.inner_text("#tile-launches")
            assert "of compute-kernel time" in page.inner_text("#tile-tensor-cores")
            names = gd_eval(p, "overview-breakdown", "gd.data.map(t => t.name)")
            assert {"kernel", "communication", "runtime", "untraced"} <= set(names)
            # colours stay put when the page is drawn again
            nav(p, "operators")
            page.wait_for_selector("#ops-grid .ag-row")
            nav(p, "overview")
            page.wait_for_selector(GRAPH.format("overview-breakdown") + " .barlayer .point")
            assert breakdown_colors(p) == colors
        p.check_clean()


def test_operator_view_by_input_shape_and_kernel_view_with_occupancy(servers, open_page):
    server = servers["gpu"]
    p = open_page(server)
    page = p.page
    page.set_viewport_size(FOLD)
    page.goto(server.url + "operators")
    page.wait_for_selector("#kernels-grid .ag-row")
    # the kernel view carries Kineto's occupancy, blocks per SM and registers
    headers = page.inner_text("#kernels-grid .ag-header")
    for h in ("occupancy", "blocks per SM", "registers", "shared mem", "% of kernel time"):
        assert h in headers, headers
    assert not re.search(r"_ms|_us|_pct|_bytes", headers)
    cells = page.inner_text("#kernels-grid .ag-center-cols-container")
    assert re.search(r"\d+\.\d %", cells) and " ms" in cells and "KiB" in cells
    assert not re.search(r"\b\d{7,}\b", cells.replace(",", ""))
    assert "of compute-kernel time" in page.inner_text("#kernels-tensor-core")
    # WHEN kernels are grouped by the op that launched them THEN that column appears
    page.click("#kernels-group input[value=op]")
    page.wait_for_function("() => document.querySelector('#kernels-grid .ag-header')"
                           ".innerText.includes('launched by')")
    assert "nccl:all_to_all" in page.inner_text("#kernels-grid .ag-center-cols-container")
    # WHEN the ops are grouped by input shape THEN a shapes column appears, aten::mm split
    page.click("#ops-group input[value=shape]")
    page.wait_for_function("() => document.querySelector('#ops-grid .ag-header')"
                           ".innerText.includes('input shapes')")
    grid = page.inner_text("#ops-grid .ag-center-cols-container")
    assert re.search(r"\[\d+, \d+\]", grid), grid[:300]
    # every (op, shapes) pair is its own row: aten::mm shows once per shape it ran with
    shapes = page.evaluate("""() => { const out = [];
        dash_ag_grid.getApi('ops-grid').forEachNode(
            n => { if (n.data.key === 'aten::mm') out.push(n.data.input_shapes); });
        return out; }""")
    assert len(shapes) > 1 and len(set(shapes)) == len(shapes), shapes
    p.check_clean()


def test_memory_and_comms_units_and_colour_cues(servers, open_page):
    p = open_page(servers["cpu"])
    page = p.page
    page.goto(servers["cpu"].url + "memory")
    page.wait_for_selector(GRAPH.format("memory-over-time") + " .scatterlayer .trace")
    # MiB axis, plain thousands (no SI "k"/"M" beside a binary unit)
    axis = gd_eval(p, "memory-over-time", "gd.layout.yaxis")
    assert axis["title"]["text"] == "MiB" and axis["tickformat"] == ",~g"
    ticks = page.eval_on_selector_all("#memory-over-time .ytick text",
                                      "els => els.map(e => e.textContent)")
    assert ticks and not [t for t in ticks if re.search(r"[kMG]$", t)], ticks
    page.wait_for_selector("#memory-sites .ag-row")
    assert re.search(r"\d (KiB|MiB)", page.inner_text("#memory-sites"))
    p.check_clean()
    q = open_page(servers["gpu"])
    page = q.page
    page.goto(servers["gpu"].url + "comms")
    page.wait_for_selector(GRAPH.format("comms-overlap") + " .barlayer .point")
    # exposed communication: hatched and named, not told by red alone
    exposed = gd_eval(q, "comms-overlap", "gd.data.find(t => t.name.startsWith('exposed'))")
    assert exposed["marker"]["pattern"]["shape"] == "/"
    assert all(t.startswith("exposed ") for t in exposed["text"])
    page.wait_for_selector("#comms-skew-grid .ag-row")
    skew = page.inner_text("#comms-skew-grid")
    assert "message size" in skew and "MiB" in skew
    assert not re.search(r"\b\d{7,}\b", skew.replace(",", "")), skew
    assert gd_eval(q, "comms-bandwidth", "gd.layout.xaxis.title.text") == "message size (MiB)"
    q.check_clean()
