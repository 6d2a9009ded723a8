"""The dashboard in a real headless Chromium, on a real CPU run and an imported GPU trace.

Every page is loaded and its content asserted; the timeline is zoomed and must redraw from
the server; a finding's evidence link must jump the timeline to its ops; untrusted text must
show literally; any browser console error or off-host request fails the test.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from dsprof.dashboard.app import create_app
from dsprof.dashboard.server import DashboardServer
from dsprof.dashboard.source import RunSource
from dsprof.ingest.importer import import_traces
from tests.browser.runs import HOSTILE, cpu_run, write_findings
from tests.conftest import trace_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GRAPH = "#{} .js-plotly-plot .main-svg"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    cpu = cpu_run(root)
    cpu_finding = write_findings(cpu, "aten::mm", with_pareto=True)
    gpu, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], root / "gpu")
    write_findings(gpu.path, "aten::mm", with_pareto=False)
    return {"cpu": cpu, "gpu": gpu.path, "finding": cpu_finding}


@pytest.fixture(scope="module")
def cpu_server(runs):
    """The CPU run as A and the GPU run as B (for Compare)."""
    a, b = RunSource(runs["cpu"], "A"), RunSource(runs["gpu"], "B")
    server = DashboardServer(create_app(a, b)).start()
    server.source = a
    yield server
    server.stop()
    a.close()
    b.close()


@pytest.fixture(scope="module")
def gpu_server(runs):
    a = RunSource(runs["gpu"], "A")
    server = DashboardServer(create_app(a)).start()
    server.source = a
    yield server
    server.stop()
    a.close()


def nav(p, page_id: str) -> None:
    """Go to a page by its header link (client-side: plotly.js is not loaded again)."""
    p.page.click(f"#nav-{page_id}")


def gd_eval(p, graph_id: str, expr: str):
    return p.page.evaluate(
        f"() => {{ const gd = document.querySelector('#{graph_id} .js-plotly-plot'); "
        f"return {expr}; }}")


def title(p, graph_id: str) -> str:
    return gd_eval(p, graph_id, "gd.layout.title.text")


def test_every_page_on_a_cpu_run(cpu_server, open_page):
    p = open_page(cpu_server)
    page = p.page
    page.goto(cpu_server.url)
    # Overview: facts, step chart with the outlier/median marks, phases, findings
    page.wait_for_selector(GRAPH.format("overview-steps"))
    assert "mlp" in page.inner_text("#run-facts")
    # no toolbar button uploads a chart or selects with box/lasso (nothing reads a selection)
    page.hover(GRAPH.format("overview-steps"))
    page.wait_for_selector("#overview-steps .modebar-btn")
    titles = page.eval_on_selector_all("#overview-steps .modebar-btn",
                                       "els => els.map(e => e.getAttribute('data-title'))")
    assert titles and not [t for t in titles if re.search(r"share|cloud|lasso|box select",
                                                           t or "", re.IGNORECASE)], titles
    assert gd_eval(p, "overview-steps", "gd.data.length") >= 2
    page.wait_for_selector(GRAPH.format("overview-phases"))
    assert "forward" in str(gd_eval(p, "overview-phases", "gd.data[0].y"))
    assert page.is_visible("#missing-kernels")  # a CPU run says what would collect kernels
    page.wait_for_selector(GRAPH.format("overview-samples"))  # CPU utilization, sampled
    assert "Fuse the ops around aten::mm" in page.inner_text("#overview-findings")
    # Timeline: lanes for steps and host ops, bars drawn
    nav(p, "timeline")
    page.wait_for_selector(GRAPH.format("timeline-graph") + " .barlayer .point")
    ticks = gd_eval(p, "timeline-graph", "gd.layout.yaxis.ticktext")
    assert "r0 steps" in ticks and "r0 cpu0 d0" in ticks
    # Operators: the grid lists aten::mm; regrouping by phase shows the phases
    nav(p, "operators")
    page.wait_for_selector("#ops-grid .ag-row")
    assert "aten::mm" in page.inner_text("#ops-grid")
    page.click("#ops-group input[value=phase]")
    page.wait_for_function(
        "() => document.querySelector('#ops-grid').innerText.includes('backward')")
    assert page.is_visible("#missing-kernels")
    # Memory: by category over time, what held the peak, activations per module
    nav(p, "memory")
    page.wait_for_selector(GRAPH.format("memory-over-time") + " .scatterlayer .trace")
    names = str(gd_eval(p, "memory-over-time", "gd.data.map(t => t.name)"))
    assert "parameter" in names and "optimizer_state" in names
    page.wait_for_selector(GRAPH.format("memory-peak-category"))
    page.wait_for_selector("#memory-sites .ag-row")
    page.wait_for_selector(GRAPH.format("memory-modules"))
    # Communication: nothing collected on one process; says which command would
    nav(p, "comms")
    page.wait_for_selector("#missing-comms")
    assert "torch.distributed" in page.inner_text("#missing-comms")
    # Findings: fix, verify, the checkpointing Pareto front
    nav(p, "findings")
    fid = cpu_server.source.findings[0].id
    card = page.wait_for_selector(f"#finding-{fid}")
    text = card.inner_text()
    assert "torch.compile(model)" in text and "dsprof run --apply" in text
    page.wait_for_selector(GRAPH.format(f"pareto-{fid}") + " .scatterlayer .trace")
    assert gd_eval(p, f"pareto-{fid}", "gd.data.map(t => t.name).join(',')") == \
        "Pareto front,advised"
    # untrusted text is shown as written and never run
    assert HOSTILE in text
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(f"#finding-{fid} img").count() == 0
    # Compare: the CPU run against the GPU run
    nav(p, "compare")
    page.wait_for_selector("#compare-facts")
    assert "median step" in page.inner_text("#compare-facts")
    page.wait_for_selector(GRAPH.format("compare-ops"))
    p.check_clean()


def dash_requests(p) -> list[str]:
    """Records every request the page makes to Dash's callback endpoint."""
    seen: list[str] = []
    p.page.on("request", lambda r: "_dash-update-component" in r.url and seen.append(r.url))
    return seen


def x_range(p) -> list[float]:
    """The range shown (the full layout's: the matched axes' layout.range can be stale)."""
    return gd_eval(p, "timeline-graph", "gd._fullLayout.xaxis.range")


def test_timeline_zoom_in_the_browser_and_from_the_server(cpu_server, open_page):
    p = open_page(cpu_server)
    page = p.page
    src = cpu_server.source
    requests = dash_requests(p)
    page.goto(cpu_server.url + "timeline")
    page.wait_for_selector(GRAPH.format("timeline-graph") + " .barlayer .point")
    before = title(p, "timeline-graph")
    n_before = int(re.match(r"([\d,]+) spans", before).group(1).replace(",", ""))
    t0 = src.timeline.t0_ns
    # the timeline opens on the profiled steps (with a margin), not on the whole run
    lo, hi = src.sql("SELECT min(start_ns), max(end_ns) FROM steps WHERE profiled")[0]
    opened = x_range(p)
    assert opened[0] <= (lo - t0) / 1e6 and opened[1] >= (hi - t0) / 1e6
    assert opened[1] - opened[0] < src.timeline.span_ns / 1e6
    meta = gd_eval(p, "timeline-graph", "gd.layout.meta")
    assert meta["fetched"][0] < opened[0] and meta["fetched"][1] > opened[1]
    # WHEN zooming in a little and panning, inside the fetched range
    page.wait_for_timeout(300)  # the page's own start-up callbacks are done
    sent = len(requests)
    w = opened[1] - opened[0]
    a_ms, b_ms = opened[0] + 0.3 * w, opened[0] + 0.9 * w
    page.evaluate(f"dsprofSetRange({a_ms}, {b_ms})")
    page.wait_for_function("() => window.dsprofTimeline && window.dsprofTimeline.local == 1")
    page.click("#timeline-help")  # focus the page, not an input
    page.keyboard.press("d")  # WASD pan: a fifth of the view to the right
    page.wait_for_function("() => window.dsprofTimeline.local == 2")
    page.wait_for_timeout(500)
    # THEN the browser redrew it: no request to the server, same figure, the new range
    assert len(requests) == sent, requests[sent:]
    assert title(p, "timeline-graph") == before
    rng = x_range(p)
    assert rng[0] > a_ms and rng[1] > b_ms, (rng, a_ms, b_ms)
    assert rng[1] - rng[0] == pytest.approx(b_ms - a_ms, rel=1e-3), (rng, a_ms, b_ms)
    # WHEN zooming to the neighbourhood of one addmm of a profiled step (much finer than the
    # fetched figure is faithful at: its sub-pixel ops were widened to a pixel)
    assert meta["res_ms"] > 0, meta
    # (the longest addmm whose neighbourhood is a zoom of more than 3x: the figure holds
    # exact bars for that much, so a smaller zoom would stay in the browser)
    start, dur = src.sql("SELECT start_ns, dur_ns FROM ops WHERE name = 'aten::addmm' "
                         "AND step IS NOT NULL AND dur_ns < ? ORDER BY dur_ns DESC LIMIT 1",
                         [int(w * 1e6 / 12)])[0]
    a_ms, b_ms = (start - t0 - dur) / 1e6, (start - t0 + 2 * dur) / 1e6
    page.evaluate(f"dsprofSetRange({a_ms}, {b_ms})")
    # THEN the server answers with a figure for that range only
    page.wait_for_function(
        "t => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text != t",
        arg=before)
    assert len(requests) > sent
    after = title(p, "timeline-graph")
    n_after = int(re.match(r"([\d,]+) spans", after).group(1).replace(",", ""))
    assert 0 < n_after < n_before, (before, after)
    drawn = gd_eval(p, "timeline-graph", "gd.data.reduce((n, t) => n + (t.base ? "
                    "(t.base.length || t.base.bdata && 1 || 0) : 0), 0)")
    assert drawn > 0
    rng = x_range(p)
    assert rng[0] == pytest.approx(a_ms, rel=1e-6) and rng[1] == pytest.approx(b_ms, rel=1e-6)
    # AND zoomed in, spans are labelled with their names inside the bars
    labels = page.evaluate("""() => [...document.querySelectorAll(
        '#timeline-graph .barlayer .point text')].filter(e => {
            const b = e.getBoundingClientRect();
            return b.width > 0 && getComputedStyle(e).opacity !== '0'
                && getComputedStyle(e).display !== 'none'; }).map(e => e.textContent)""")
    assert any("aten::addmm" in s for s in labels), labels[:20]
    # WHEN a span is clicked, THEN its details (name, module, shapes) show
    x, y = page.evaluate("""() => {
        const area = document.querySelector('#timeline-graph .nsewdrag').getBoundingClientRect();
        let best = [null, null];  // the lowest wide bar: an op, not the steps lane on top
        const spans = [...document.querySelectorAll('#timeline-graph .barlayer .trace')]
            .filter(t => !['idle', 'busy (aggregated)'].includes(t.__data__[0].trace.name));
        for (const el of spans.flatMap(t => [...t.querySelectorAll('.point path')])) {
            const b = el.getBoundingClientRect();
            const cx = b.x + b.width / 2, cy = b.y + b.height / 2;
            if (b.width > 4 && cx > area.left + 2 && cx < area.right - 2
                && cy > area.top && cy < area.bottom && (best[1] === null || cy > best[1]))
                best = [cx, cy];
        }
        return best; }""")
    assert x is not None, "no bar wide enough to click in the zoomed view"
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(
        "() => document.querySelector('#timeline-details').innerText.includes('rank: 0')")
    assert "name: " in page.inner_text("#timeline-details")
    # WHEN W is pressed (keyboard zoom, as in Perfetto) THEN the view narrows around its centre
    page.click("#timeline-help")  # focus the page, not an input
    before_w = x_range(p)
    page.keyboard.press("w")
    page.wait_for_function("""w => { const gd = document.querySelector(
        '#timeline-graph .js-plotly-plot'); const ax = gd._fullLayout.xaxis;
        return ax.range[1] - ax.range[0] < 0.9 * w; }""", arg=before_w[1] - before_w[0])
    # WHEN searching for an op by name THEN the timeline opens on it, the matches outlined
    page.fill("#timeline-search", "addmm")
    page.press("#timeline-search", "Enter")
    page.wait_for_function("() => document.querySelector('#timeline-search-result')"
                           ".innerText.includes('match')")
    page.wait_for_function("() => document.querySelector('#timeline-graph .js-plotly-plot')"
                           ".data.some(t => t.name == 'search match')")
    # centred on the first match
    first = src.sql("SELECT start_ns, dur_ns FROM ops WHERE name ILIKE '%addmm%' "
                    "ORDER BY start_ns LIMIT 1")[0]
    page.wait_for_function("() => document.querySelector('#timeline-search-result')"
                           ".innerText.includes('centred')")
    rng = x_range(p)
    assert (rng[0] + rng[1]) / 2 == pytest.approx((first[0] + first[1] / 2 - t0) / 1e6,
                                                  abs=1e-3)
    # WHEN a time range is box-selected THEN the summary says what it holds, per op
    gd_eval(p, "timeline-graph", "Plotly.relayout(gd, {dragmode: 'select'})")
    page.wait_for_function("() => document.querySelector('#timeline-graph .js-plotly-plot')"
                           "._fullLayout.dragmode == 'select'")
    page.wait_for_timeout(300)  # Dash writes the relayout back into the figure and redraws
    area = page.locator("#timeline-graph .nsewdrag[data-subplot=xy]").bounding_box()
    y = area["y"] + area["height"] / 2
    page.mouse.move(area["x"] + 0.05 * area["width"], y)
    page.mouse.down()
    page.mouse.move(area["x"] + 0.5 * area["width"], y, steps=5)
    page.mouse.move(area["x"] + 0.95 * area["width"], y, steps=5)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#timeline-range-summary')"
                           ".innerText.includes('In the selected range')")
    assert "aten::addmm" in page.inner_text("#timeline-range-summary")
    p.check_clean()


def test_finding_evidence_jumps_the_timeline(cpu_server, open_page, runs):
    p = open_page(cpu_server)
    page = p.page
    src = cpu_server.source
    # a finding whose first evidence names ops and whose second names a time range (which
    # finding ranks first depends on this machine's timings)
    finding = next(f for f in src.findings if len(f.evidence) > 1 and f.evidence[0].op_ids
                   and f.evidence[1].start_ns is not None and f.evidence[1].end_ns is not None
                   and not f.evidence[1].op_ids)
    page.goto(cpu_server.url + "findings")
    # WHEN the evidence naming the op is clicked
    page.click(f"#ev-{finding.id}-0")
    # THEN the timeline opens around that op, with the op outlined
    page.wait_for_selector(GRAPH.format("timeline-graph") + " .barlayer .point")
    assert "/timeline?" in page.url and f"ops={finding.evidence[0].op_ids[0]}" in page.url
    op = src.timeline
    hl = gd_eval(p, "timeline-graph",
                 "gd.data.filter(t => t.name == 'finding evidence').length")
    assert hl == 1
    # AND the outline is told by pattern and border, not by hue: black, cross-hatched, a thick
    # border, unlike every category (the red highlight once matched communication kernels)
    marker = gd_eval(p, "timeline-graph",
                     "gd.data.find(t => t.name == 'finding evidence').marker")
    assert marker["color"] == "#000000" and marker["pattern"]["shape"] == "x"
    assert marker["line"]["width"] >= 2
    named = gd_eval(p, "timeline-graph", "gd.data.find(t => t.name == 'finding evidence').text")
    op_name = src.sql("SELECT name FROM ops WHERE id = ? AND rank = ?",
                      [finding.evidence[0].op_ids[0], finding.evidence[0].rank])[0][0]
    assert named == [op_name]  # the outlined op keeps its name
    others = gd_eval(p, "timeline-graph", "gd.data.filter(t => t.type == 'bar' && "
                     "t.name != 'finding evidence').map(t => [t.marker.color, "
                     "(t.marker.pattern || {}).shape || ''])")
    # (idle gaps are hatched '/' on no fill; nothing else is black or cross-hatched)
    assert others and all(c != "#000000" and shape != "x" for c, shape in others), others
    # drawn as such: the highlighted bar's SVG fill is the pattern
    fills = page.eval_on_selector_all(
        "#timeline-graph .barlayer .trace .point path",
        "els => els.map(e => e.style.fill || '')")
    assert any("url(" in f for f in fills), fills[:5]
    start, dur = src.sql("SELECT start_ns, dur_ns FROM ops WHERE id = ? AND rank = ?",
                         [finding.evidence[0].op_ids[0], finding.evidence[0].rank])[0]
    rng = x_range(p)
    lo, hi = (start - op.t0_ns) / 1e6, (start + dur - op.t0_ns) / 1e6
    assert rng[0] < lo and rng[1] > hi
    assert (rng[1] - rng[0]) < (hi - lo) * 3 + 0.01  # zoomed to the op, not the whole run
    # WHEN the evidence naming a time range is clicked THEN that range is outlined
    nav(p, "findings")
    page.click(f"#ev-{finding.id}-1")
    page.wait_for_function("() => { const gd = document.querySelector("
                           "'#timeline-graph .js-plotly-plot'); return gd && gd.layout.shapes"
                           " && gd.layout.shapes.some(s => s.name == 'evidence range'); }")
    ev = finding.evidence[1]
    shape = gd_eval(p, "timeline-graph",
                    "gd.layout.shapes.find(s => s.name == 'evidence range')")
    assert shape["x0"] == pytest.approx((ev.start_ns - op.t0_ns) / 1e6, abs=1e-6)
    assert shape["x1"] == pytest.approx((ev.end_ns - op.t0_ns) / 1e6, abs=1e-6)
    assert shape["line"]["color"] == "#000000" and shape["line"]["dash"] == "dash"
    # AND a range change plotly made before the page's relayout listener was bound (a graph
    # just purged and redrawn: the race that left a zoom out unfetched) is still fetched
    before = title(p, "timeline-graph")
    gd_eval(p, "timeline-graph", "(gd.removeAllListeners('plotly_relayout'), "
            f"Plotly.relayout(gd, {{'xaxis.range': [0, {op.span_ns / 2e6}]}}))")
    page.wait_for_function(
        "t => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text != t",
        arg=before, timeout=10_000)
    assert x_range(p) == pytest.approx([0, op.span_ns / 2e6], abs=1e-6)
    # AND it stays outlined in figures the server sends after a zoom out (through the page's
    # own path, dsprofSetRange, as the W/S keys take)
    before = title(p, "timeline-graph")
    page.evaluate(f"dsprofSetRange(0, {op.span_ns / 1e6})")
    page.wait_for_function(
        "t => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text != t",
        arg=before, timeout=10_000)
    assert gd_eval(p, "timeline-graph",
                   "gd.layout.shapes.filter(s => s.name == 'evidence range').length") == 1
    p.check_clean()


def test_every_page_on_an_imported_gpu_trace(gpu_server, open_page):
    p = open_page(gpu_server)
    page = p.page
    page.goto(gpu_server.url)
    page.wait_for_selector(GRAPH.format("overview-kernel-types"))
    labels = str(gd_eval(p, "overview-kernel-types", "gd.data[0].labels"))
    assert "COMPUTATION" in labels and "COMMUNICATION" in labels
    page.wait_for_selector(GRAPH.format("overview-kernel-categories"))
    assert "Tensor Cores:" in page.inner_text("#tensor-core-share")
    nav(p, "timeline")
    page.wait_for_selector(GRAPH.format("timeline-graph") + " .barlayer .point")
    ticks = " ".join(gd_eval(p, "timeline-graph", "gd.layout.yaxis.ticktext"))
    assert "r0 gpu" in ticks and "r1 gpu" in ticks  # both ranks' streams
    nav(p, "operators")
    page.wait_for_selector("#kernels-grid .ag-row")
    assert "nccl" in page.inner_text("#kernels-grid").lower()
    # grids show units and readable headers, not raw field names and integers
    assert " ms" in page.inner_text("#kernels-grid") and "total_ms" not in \
        page.inner_text("#kernels-grid")
    nav(p, "memory")
    page.wait_for_selector("#missing-memory")
    nav(p, "comms")
    page.wait_for_selector(GRAPH.format("comms-overlap"))
    assert "r1" in str(gd_eval(p, "comms-overlap", "gd.data[0].x"))  # both ranks, per step
    page.wait_for_selector(GRAPH.format("comms-bandwidth"))
    page.wait_for_selector("#comms-bandwidth-grid .ag-row")
    grid = page.inner_text("#comms-bandwidth-grid")
    assert "GB/s" in grid and "MiB" in grid and "bus bandwidth" in grid
    assert "busbw_gbps" not in grid and not re.search(r"\b\d{7,}\b", grid)
    nav(p, "findings")
    page.wait_for_selector(".finding")
    nav(p, "compare")
    page.wait_for_selector("#missing-run-b")
    p.check_clean()


def test_a_run_made_with_apply_shows_predicted_vs_measured(runs, tmp_path):
    """No browser: the Findings page of a run whose meta says which findings were applied."""
    import shutil

    from dsprof.dashboard.app import AppContext
    from dsprof.dashboard.pages import findings as findings_page
    from dsprof.rundir import RunDir

    # GIVEN a run recorded with --apply (a copy of the CPU run, its meta naming the baseline)
    applied = tmp_path / "applied"
    shutil.copytree(runs["cpu"], applied)
    f = runs["finding"]
    RunDir(applied).update_meta(applied={
        "baseline": str(runs["cpu"]), "baseline_step_s": None,
        "findings": [{"id": f.id, "kind": f.kind, "title": f.title, "saving_s": f.saving_s,
                      "saving_bytes": f.saving_bytes, "apply": f.apply}],
        "predicted_saving_s": f.saving_s, "predicted_saving_bytes": f.saving_bytes,
        "env": f.apply})
    src = RunSource(applied)
    try:
        # WHEN its Findings page is laid out
        layout = findings_page.layout(AppContext(src), {})
        text = str(layout.to_plotly_json())
        # THEN the applied finding is listed with predicted vs measured (same steps: ~0 saved)
        assert "Applied in this run: predicted vs measured" in text
        assert "applied-predicted-measured" in text
    finally:
        src.close()


def test_clicking_a_kernel_draws_an_arrow_from_its_op(gpu_server, open_page):
    from dsprof.dashboard.timeline import KERNEL

    p = open_page(gpu_server)
    page = p.page
    src = gpu_server.source
    index = src.timeline
    # GIVEN the longest kernel that knows the op that launched it
    kern = np.flatnonzero(index.kind == KERNEL)
    pos = int(kern[np.argmax((index.end - index.start)[kern])])
    a_ms, b_ms = index.start[pos] / 1e6, index.end[pos] / 1e6
    page.goto(gpu_server.url + "timeline")
    page.wait_for_selector(GRAPH.format("timeline-graph") + " .barlayer .point")
    before = title(p, "timeline-graph")
    pad = (b_ms - a_ms) / 2
    page.evaluate(f"dsprofSetRange({a_ms - pad}, {b_ms + pad})")
    page.wait_for_function(
        "t => document.querySelector('#timeline-graph .js-plotly-plot').layout.title.text != t",
        arg=before)
    # WHEN it is clicked (its centre, in pixels, from plotly's own axis mapping)
    x, y = page.evaluate("""([xm, lane]) => {
        const gd = document.querySelector('#timeline-graph .js-plotly-plot');
        const fl = gd._fullLayout, r = gd.getBoundingClientRect();
        const row = gd.layout.meta.lanes.indexOf(lane);  // empty lanes are hidden
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(xm),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(row)]; }""",
                         [(a_ms + b_ms) / 2, int(index.lane[pos])])
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    # THEN an arrow from the launching op is drawn
    page.wait_for_function("() => document.querySelector('#timeline-graph .js-plotly-plot')"
                           ".data.some(t => t.name == 'launch')")
    # (the details come from their own callback, which may answer after the arrow's)
    page.wait_for_function("() => document.querySelector('#timeline-details')"
                           ".innerText.includes('launched by')")
    p.check_clean()
